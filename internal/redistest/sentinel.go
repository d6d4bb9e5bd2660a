package redistest

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// MasterName is the name the sentinels of [StartSentinel] monitor.
const MasterName = "mymaster"

// DownAfter is how long the sentinels of [StartSentinel] wait before
// declaring an unanswering master down.
const DownAfter = 1000 * time.Millisecond

// Sentinel is a local Sentinel setup: one master, one replica, three
// sentinels with a quorum of two.
type Sentinel struct {
	Master, Replica *Server
	Sentinels       []*Server
	t               testing.TB
}

// StartSentinel starts the setup and waits until every sentinel knows the
// replica and the two other sentinels, so that a failover can happen. It
// runs redis-sentinel when installed, else redis-server --sentinel.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	st := &Sentinel{t: t}
	st.Master = StartServer(t, "--repl-diskless-sync-delay", "0")
	st.Replica = StartServer(t, "--replicaof", "127.0.0.1", strconv.Itoa(st.Master.Port), "--repl-diskless-sync-delay", "0")
	st.Master.mustReady(func(ctx context.Context) error {
		rdb := redis.NewClient(&redis.Options{Addr: st.Master.Addr, MaxRetries: -1})
		defer rdb.Close()
		repl, err := rdb.Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		return replicasOnline(repl, 1)
	})
	for range 3 {
		st.Sentinels = append(st.Sentinels, retryPorts(t, func() (*Server, error) {
			port := FreePort(t)
			dir := t.TempDir()
			conf := writeFile(t, dir, "sentinel.conf", fmt.Sprintf(
				"port %d\nbind 127.0.0.1\ndir %s\n"+
					"sentinel monitor %s 127.0.0.1 %d 2\n"+
					"sentinel down-after-milliseconds %s %d\n"+
					"sentinel failover-timeout %s 10000\n"+
					"sentinel parallel-syncs %s 1\n",
				port, dir, MasterName, st.Master.Port, MasterName, DownAfter.Milliseconds(), MasterName, MasterName))
			s := launchSentinel(t, conf, port, dir)
			return s, s.waitReady(func(ctx context.Context) error { return ping(ctx, s.Addr) })
		}))
	}
	for _, s := range st.Sentinels {
		s.mustReady(func(ctx context.Context) error {
			rdb := redis.NewSentinelClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
			defer rdb.Close()
			m, err := rdb.Master(ctx, MasterName).Result()
			if err != nil {
				return err
			}
			if m["num-slaves"] != "1" || m["num-other-sentinels"] != "2" {
				return fmt.Errorf("sentinel sees %s replicas and %s other sentinels", m["num-slaves"], m["num-other-sentinels"])
			}
			return nil
		})
	}
	return st
}

// launchSentinel starts a sentinel with its own (rewritable) config file.
func launchSentinel(t testing.TB, conf string, port int, dir string) *Server {
	t.Helper()
	var s *Server
	if _, err := exec.LookPath("redis-sentinel"); err == nil {
		s = launchBin(t, "redis-sentinel", dir, port, []string{conf})
	} else {
		s = launchBin(t, "redis-server", dir, port, []string{conf, "--sentinel"})
	}
	return s
}

// Addrs returns the sentinels' addresses, for redis.FailoverOptions.
func (st *Sentinel) Addrs() []string {
	addrs := make([]string, len(st.Sentinels))
	for i, s := range st.Sentinels {
		addrs[i] = s.Addr
	}
	return addrs
}

// Client returns a failover client of the setup, closed when the test ends.
func (st *Sentinel) Client() *redis.Client {
	rdb := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: MasterName, SentinelAddrs: st.Addrs()})
	st.t.Cleanup(func() { rdb.Close() })
	return rdb
}

// MasterAddr asks the first answering sentinel for the master's address.
func (st *Sentinel) MasterAddr(ctx context.Context) (string, error) {
	var err error
	for _, s := range st.Sentinels {
		rdb := redis.NewSentinelClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
		var addr []string
		addr, err = rdb.GetMasterAddrByName(ctx, MasterName).Result()
		rdb.Close()
		if err == nil && len(addr) == 2 {
			return addr[0] + ":" + addr[1], nil
		}
	}
	return "", fmt.Errorf("no sentinel names the master: %v", err)
}

// Failover asks a sentinel to fail the master over to the replica
// (SENTINEL FAILOVER) and waits until every sentinel names the replica as
// the master and it has taken the role.
func (st *Sentinel) Failover(ctx context.Context) error {
	rdb := redis.NewSentinelClient(&redis.Options{Addr: st.Sentinels[0].Addr})
	defer rdb.Close()
	if err := rdb.Failover(ctx, MasterName).Err(); err != nil {
		return fmt.Errorf("SENTINEL FAILOVER: %w", err)
	}
	return st.WaitMaster(ctx, st.Replica)
}

// WaitMaster waits until every live sentinel names s as the master and s
// reports role:master.
func (st *Sentinel) WaitMaster(ctx context.Context, s *Server) error {
	for {
		err := st.isMaster(ctx, s)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not become master: %v", s.Addr, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (st *Sentinel) isMaster(ctx context.Context, s *Server) error {
	for _, sn := range st.Sentinels {
		rdb := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr, MaxRetries: -1})
		addr, err := rdb.GetMasterAddrByName(ctx, MasterName).Result()
		rdb.Close()
		if err != nil {
			return err
		}
		if len(addr) != 2 || addr[1] != strconv.Itoa(s.Port) {
			return fmt.Errorf("sentinel %s names %v", sn.Addr, addr)
		}
	}
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer rdb.Close()
	repl, err := rdb.Info(ctx, "replication").Result()
	if err != nil {
		return err
	}
	if r := infoField(repl, "role"); r != "master" {
		return fmt.Errorf("role:%s", r)
	}
	return nil
}

// WaitReplicaOnline waits until master streams to one online replica, so
// that the replica has its data and can take over.
func (st *Sentinel) WaitReplicaOnline(ctx context.Context, master *Server) error {
	rdb := redis.NewClient(&redis.Options{Addr: master.Addr, MaxRetries: -1})
	defer rdb.Close()
	for {
		repl, err := rdb.Info(ctx, "replication").Result()
		if err == nil {
			if err = replicasOnline(repl, 1); err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no online replica of %s: %v", master.Addr, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
