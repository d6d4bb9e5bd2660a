// Package redistest starts real local Redis topologies for tests: a single
// server, a Redis Cluster, a Sentinel setup and a TLS server, each on free
// ports of 127.0.0.1, with data in a temporary directory.
//
// Every process is killed and every directory removed when the test ends
// (t.Cleanup). When redis-server (or redis-cli, for a cluster) is not
// installed the test is skipped with a message, unless RQGO_REQUIRE_REDIS=1,
// when it fails instead.
package redistest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// startTimeout bounds how long a process may take to answer.
const startTimeout = 15 * time.Second

// Server is one redis-server (or sentinel) process.
type Server struct {
	Addr string // 127.0.0.1:port
	Port int
	Dir  string // working directory: data, config, log

	t    testing.TB
	bin  string
	argv []string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{} // closed when the process has exited
}

// Binary returns the path of the named Redis program. When it is missing
// the test is skipped, or failed when RQGO_REQUIRE_REDIS=1.
func Binary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("RQGO_REQUIRE_REDIS") == "1" {
		t.Fatalf("%s not found and RQGO_REQUIRE_REDIS=1: %v", name, err)
	}
	t.Skipf("%s not found (%v); install Redis 7 to run this test", name, err)
	return ""
}

var (
	portsMu sync.Mutex
	given   = map[int]bool{} // ports FreePort returned in this process
)

// FreePort returns a TCP port of 127.0.0.1 that was free a moment ago and
// that FreePort has not returned before in this process.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("finding a free port: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		portsMu.Lock()
		fresh := !given[port]
		given[port] = true
		portsMu.Unlock()
		if fresh {
			return port
		}
	}
	t.Fatal("finding a free port: no new port in 100 tries")
	return 0
}

// errPortTaken says a process exited at start because another process took
// one of its ports between FreePort and its start.
var errPortTaken = errors.New("port taken")

// retryPorts calls start, which starts a process on fresh ports and waits
// for it, again while a port it was given turns out to be taken.
func retryPorts(t testing.TB, start func() (*Server, error)) *Server {
	t.Helper()
	for range 5 {
		s, err := start()
		if err == nil {
			return s
		}
		t.Logf("%s: %v; retrying on other ports", s.Addr, err)
	}
	t.Fatal("5 starts failed on ports taken meanwhile")
	return nil
}

// StartServer starts redis-server on a free port, without persistence, with
// extra arguments appended to its command line (e.g. "--maxmemory-policy",
// "noeviction"), and waits until it answers PING.
func StartServer(t testing.TB, args ...string) *Server {
	t.Helper()
	return retryPorts(t, func() (*Server, error) {
		port := FreePort(t)
		s := launch(t, port, append([]string{"--port", strconv.Itoa(port)}, args...))
		return s, s.waitReady(func(ctx context.Context) error { return ping(ctx, s.Addr) })
	})
}

// launch starts redis-server with args in a temporary directory, without
// persistence.
func launch(t testing.TB, port int, args []string) *Server {
	t.Helper()
	dir := t.TempDir()
	argv := []string{"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir}
	return launchBin(t, "redis-server", dir, port, append(argv, args...))
}

// launchBin starts a Redis program in dir.
func launchBin(t testing.TB, name, dir string, port int, argv []string) *Server {
	t.Helper()
	s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Port: port, Dir: dir,
		t: t, bin: Binary(t, name), argv: argv, out: &syncBuffer{}}
	s.spawn()
	t.Cleanup(s.Kill)
	return s
}

// spawn starts the process with the server's command line.
func (s *Server) spawn() {
	s.t.Helper()
	s.done = make(chan struct{})
	s.cmd = exec.Command(s.bin, s.argv...)
	s.cmd.Dir = s.Dir
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	// Its own process group, so Kill reaches a snapshot fork too; killed
	// with the test binary should that die without running its cleanups
	// (a -timeout panic, a signal).
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("starting %s %s: %v", s.bin, strings.Join(s.argv, " "), err)
	}
	cmd, done := s.cmd, s.done
	go func() { _ = cmd.Wait(); close(done) }()
}

// Shutdown stops the server with SHUTDOWN, which writes out an append-only
// file when it has one, and waits for the process to exit.
func (s *Server) Shutdown() {
	s.t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer c.Close()
	c.Do(context.Background(), "SHUTDOWN") // answered by the connection closing
	select {
	case <-s.done:
	case <-time.After(startTimeout):
		s.t.Fatalf("redis-server on %s did not exit within %s of SHUTDOWN", s.Addr, startTimeout)
	}
}

// Restart starts a server that has exited again, on the same port, in the
// same directory and with the same command line (so with the same data when
// it persists any), and waits until it answers PING.
func (s *Server) Restart() {
	s.t.Helper()
	if !s.Exited() {
		s.t.Fatalf("redis-server on %s: Restart while it runs", s.Addr)
	}
	s.spawn()
	s.mustReady(func(ctx context.Context) error { return ping(ctx, s.Addr) })
}

// waitReady polls ready (nothing signals a server's readiness) until it
// succeeds. It returns errPortTaken when the process exited because a port
// was taken, and fails the test when it exited otherwise or time runs out.
func (s *Server) waitReady(ready func(ctx context.Context) error) error {
	s.t.Helper()
	deadline := time.Now().Add(startTimeout)
	var err error
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			if strings.Contains(s.Output(), "Address already in use") {
				return errPortTaken
			}
			s.t.Fatalf("redis-server on %s exited at start:\n%s", s.Addr, s.Output())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err = ready(ctx)
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.t.Fatalf("redis-server on %s not ready after %s: %v\n%s", s.Addr, startTimeout, err, s.Output())
	return nil
}

// mustReady is waitReady for a process that is already up: a port clash
// cannot happen any more.
func (s *Server) mustReady(ready func(ctx context.Context) error) {
	s.t.Helper()
	if err := s.waitReady(ready); err != nil {
		s.t.Fatalf("redis-server on %s: %v", s.Addr, err)
	}
}

// Kill stops the process with SIGKILL, as a crash would, and waits for it
// to exit. It is safe to call more than once.
func (s *Server) Kill() {
	if s.cmd.Process != nil {
		// The whole process group: a fork saving a snapshot goes too.
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	}
	<-s.done
}

// Exited says whether the process has ended.
func (s *Server) Exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Output returns what the process printed so far (its log).
func (s *Server) Output() string { return s.out.String() }

// Client returns a client of this server, closed when the test ends.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	s.t.Cleanup(func() { c.Close() })
	return c
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// infoField returns one "name:value" field of an INFO or CLUSTER INFO reply.
func infoField(info, name string) string {
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), name+":"); ok {
			return v
		}
	}
	return ""
}

// writeFile writes a file into dir and returns its path.
func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatalf("writing %s: %v", p, err)
	}
	return p
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
