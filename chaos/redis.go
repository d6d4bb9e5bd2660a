package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

var errNoRedisServer = errors.New("redis-server is not in PATH")

// redisServer is a redis-server process of the harness's own, persisting
// every acknowledged write to an append-only file in dir. It refuses writes
// rather than evict keys when it is out of memory (noeviction), and it
// takes DEBUG commands (DEBUG SLEEP stalls it).
type redisServer struct {
	bin     string
	version string // "7.0.15"
	dir     string
	port    int
	cmd     *exec.Cmd
	exit    chan struct{}
}

func (s *redisServer) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// startRedis starts redis-server on a free port with its data in dir.
func startRedis(dir string) (*redisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errNoRedisServer
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("redis-server --version: %w", err)
	}
	// "Redis server v=7.0.15 sha=…"
	_, version, _ := strings.Cut(string(out), "v=")
	version, _, _ = strings.Cut(version, " ")
	var last error
	for range 5 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s := &redisServer{bin: bin, version: version, dir: dir, port: port}
		if last = s.start(); last == nil {
			return s, nil
		}
	}
	return nil, last
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start starts the server on its port and waits until it answers PING
// (after loading its append-only file).
func (s *redisServer) start() error {
	argv := []string{
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "yes", "--appendfsync", "always",
		"--maxmemory-policy", "noeviction",
		"--dir", s.dir, "--logfile", filepath.Join(s.dir, "redis.log")}
	if major, _, _ := strings.Cut(s.version, "."); atoi(major) >= 7 {
		// Redis 7 turned DEBUG off by default; older servers take it and
		// do not know the option.
		argv = append(argv, "--enable-debug-command", "yes")
	}
	s.cmd = exec.Command(s.bin, argv...)
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("starting redis-server: %w", err)
	}
	s.exit = make(chan struct{})
	go func(cmd *exec.Cmd, exit chan struct{}) { cmd.Wait(); close(exit) }(s.cmd, s.exit)
	rdb := redis.NewClient(&redis.Options{Addr: s.addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer rdb.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := rdb.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-s.exit:
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			return fmt.Errorf("redis-server on port %d exited at start: %s", s.port, tail(string(log), 500))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.kill()
			return fmt.Errorf("redis-server on port %d did not answer within 30s: %v", s.port, err)
		}
	}
}

// shutdown stops the server with SHUTDOWN, which flushes the append-only
// file, and waits for the process to exit.
func (s *redisServer) shutdown() error {
	rdb := redis.NewClient(&redis.Options{Addr: s.addr(), MaxRetries: -1})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rdb.Do(ctx, "SHUTDOWN") // the reply is the connection closing
	select {
	case <-s.exit:
		return nil
	case <-time.After(15 * time.Second):
		s.kill()
		return fmt.Errorf("redis-server did not exit within 15s of SHUTDOWN")
	}
}

func (s *redisServer) kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		<-s.exit
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// atoi is strconv.Atoi for numbers known to be well formed; 0 otherwise.
func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
