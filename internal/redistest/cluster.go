package redistest

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// NodeTimeout is the cluster-node-timeout of clusters started here: a
// master that does not answer for this long is failed over to its replica.
const NodeTimeout = 1000 * time.Millisecond

// Cluster is a local Redis Cluster.
type Cluster struct {
	// Nodes are every node, masters first (in the order given to
	// redis-cli --cluster create, which makes the first ones masters).
	Nodes []*Server
	t     testing.TB
}

// StartCluster starts a Redis Cluster of masters masters, each with
// replicasPerMaster replicas, and waits until every node reports
// cluster_state:ok and every replica is in sync with its master.
func StartCluster(t testing.TB, masters, replicasPerMaster int) *Cluster {
	t.Helper()
	if masters < 3 {
		t.Fatalf("StartCluster: a Redis Cluster needs at least 3 masters, got %d", masters)
	}
	cli := Binary(t, "redis-cli")
	c := &Cluster{t: t}
	n := masters * (1 + replicasPerMaster)
	for range n {
		s := retryPorts(t, func() (*Server, error) {
			port, bus := FreePort(t), FreePort(t)
			s := launch(t, port, []string{"--port", strconv.Itoa(port),
				"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
				"--cluster-port", strconv.Itoa(bus),
				"--cluster-node-timeout", strconv.Itoa(int(NodeTimeout.Milliseconds())),
				"--repl-diskless-sync-delay", "0",
				// Tests kill masters: let a replica take over however stale.
				"--cluster-replica-validity-factor", "0"})
			return s, s.waitReady(func(ctx context.Context) error { return ping(ctx, s.Addr) })
		})
		c.Nodes = append(c.Nodes, s)
	}
	args := []string{"--cluster", "create"}
	for _, s := range c.Nodes {
		args = append(args, s.Addr)
	}
	args = append(args, "--cluster-replicas", strconv.Itoa(replicasPerMaster), "--cluster-yes")
	out, err := exec.Command(cli, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	for _, s := range c.Nodes {
		s.mustReady(func(ctx context.Context) error { return nodeReady(ctx, s.Addr, n, replicasPerMaster) })
	}
	return c
}

func ping(ctx context.Context, addr string) error {
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer rdb.Close()
	return rdb.Ping(ctx).Err()
}

// nodeReady checks that a node sees a healthy cluster of n nodes and, if it
// is a master with slots, that its replicas are online.
func nodeReady(ctx context.Context, addr string, n, replicas int) error {
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer rdb.Close()
	ci, err := rdb.ClusterInfo(ctx).Result()
	if err != nil {
		return err
	}
	if st := infoField(ci, "cluster_state"); st != "ok" {
		return fmt.Errorf("cluster_state:%s", st)
	}
	if k := infoField(ci, "cluster_known_nodes"); k != strconv.Itoa(n) {
		return fmt.Errorf("cluster_known_nodes:%s, want %d", k, n)
	}
	repl, err := rdb.Info(ctx, "replication").Result()
	if err != nil {
		return err
	}
	if infoField(repl, "role") == "master" {
		return replicasOnline(repl, replicas)
	}
	return nil
}

// replicasOnline checks, in a master's INFO replication, that n replicas
// are online: the master streams writes to them. (A replica reports its
// link up as soon as it loaded the master's snapshot, a moment before the
// master starts sending it what was written meanwhile; writes made in
// between are lost if the master dies then.)
func replicasOnline(repl string, n int) error {
	if got := infoField(repl, "connected_slaves"); got != strconv.Itoa(n) {
		return fmt.Errorf("connected_slaves:%s, want %d", got, n)
	}
	for i := range n {
		if st := infoField(repl, fmt.Sprintf("slave%d", i)); !strings.Contains(st, "state=online") {
			return fmt.Errorf("replica %d: %s", i, st)
		}
	}
	return nil
}

// Addrs returns every node's address, for redis.ClusterOptions.Addrs.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, s := range c.Nodes {
		addrs[i] = s.Addr
	}
	return addrs
}

// Options returns cluster client options naming every node.
func (c *Cluster) Options() *redis.ClusterOptions {
	return &redis.ClusterOptions{Addrs: c.Addrs()}
}

// Client returns a cluster client of this cluster with the given options
// (nil: [Cluster.Options]), closed when the test ends.
func (c *Cluster) Client(opts ...*redis.ClusterOptions) *redis.ClusterClient {
	o := c.Options()
	if len(opts) > 0 && opts[0] != nil {
		o = opts[0]
	}
	rdb := redis.NewClusterClient(o)
	c.t.Cleanup(func() { rdb.Close() })
	return rdb
}

// NodeFor returns the live node that is master of key's slot now, as that
// node itself reports.
func (c *Cluster) NodeFor(ctx context.Context, key string) (*Server, error) {
	for _, s := range c.Nodes {
		if s.Exited() {
			continue
		}
		rdb := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
		slot, err := rdb.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			rdb.Close()
			continue
		}
		slots, err := rdb.ClusterSlots(ctx).Result()
		rdb.Close()
		if err != nil {
			continue
		}
		for _, r := range slots {
			if int64(r.Start) <= slot && slot <= int64(r.End) && len(r.Nodes) > 0 {
				for _, n := range c.Nodes {
					if n.Addr == r.Nodes[0].Addr {
						return n, nil
					}
				}
			}
		}
	}
	return nil, fmt.Errorf("no live node owns the slot of %q", key)
}

// WaitHealthy waits until every live node reports cluster_state:ok again
// (after a failover) and key's slot is served by a live master.
func (c *Cluster) WaitHealthy(ctx context.Context, key string) (*Server, error) {
	for {
		ok := true
		for _, s := range c.Nodes {
			if s.Exited() {
				continue
			}
			rdb := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
			ci, err := rdb.ClusterInfo(ctx).Result()
			rdb.Close()
			if err != nil || infoField(ci, "cluster_state") != "ok" {
				ok = false
				break
			}
		}
		if ok {
			if m, err := c.NodeFor(ctx, key); err == nil && !m.Exited() {
				return m, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("cluster not healthy again: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
