package rqgo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rqgo/rqgo/internal/redistest"
)

// aclRules is the least privilege rqgo needs, for the key prefix "rqgo":
// its keys and channels, and only the commands the library and the rqgo
// command send, including those its Lua scripts call. The README prints
// this line. CONFIG GET is left out: it would let the user read every
// setting, passwords included; without it the worker only skips its check
// of maxmemory-policy.
const aclRules = "on ~rqgo:* resetchannels &rqgo:* -@all " +
	"+ping +evalsha +eval +publish +subscribe +watch +unwatch +multi +exec " +
	"+get +set +del +exists +type +pexpire +pexpireat +pttl +persist +incrby " +
	"+hget +hmget +hset +hsetnx +hdel +hexists +hgetall +hincrby " +
	"+lpush +rpush +lpop +blpop +llen +lrange +lrem +ltrim " +
	"+sadd +srem +smembers " +
	"+zadd +zrem +zscore +zcard +zcount +zrange +zrevrange +zrangebyscore " +
	"+time"

// aclScenario uses every part of rqgo's API that touches Redis, on queues
// "acl-a" and "acl-b" under the prefix "rqgo", and returns the first error.
func aclScenario(t *testing.T, rdb redis.UniversalClient) error {
	ctx := t.Context()
	qa, qb := NewQueue("acl-a", rdb), NewQueue("acl-b", rdb)
	ok, err := qa.EnqueueContext(ctx, "ok", 1)
	if err != nil {
		return err
	}
	bad, err := qb.EnqueueContext(ctx, "bad", nil, RetryIntervals(time.Millisecond), Retry(1))
	if err != nil {
		return err
	}
	if _, err := qa.EnqueueContext(ctx, "ok", 2, In(50*time.Millisecond)); err != nil {
		return err
	}
	canceled, err := qb.EnqueueContext(ctx, "ok", 3)
	if err != nil {
		return err
	}
	// A batch, and concurrent enqueues (they may share a round trip).
	if _, err := qa.EnqueueMany(ctx, []EnqueueRequest{{Func: "ok", Args: 4}, {Func: "ok", Args: 5}}); err != nil {
		return err
	}
	errs := make(chan error, 8)
	for i := range 8 {
		go func() {
			_, err := qa.EnqueueContext(ctx, "ok", 10+i)
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			return err
		}
	}
	if err := qb.Cancel(ctx, canceled.ID); err != nil {
		return err
	}
	w := NewWorker(rdb, WorkerOptions{Queues: []string{"acl-a", "acl-b"}, Lease: time.Second, Burst: true, Logger: testLogger(t)})
	w.Register("ok", func(ctx context.Context, j *Job) (any, error) {
		if _, err := Workers(ctx, rdb, ""); err != nil {
			return nil, err
		}
		return "done", nil
	})
	w.Register("bad", func(ctx context.Context, j *Job) (any, error) { return nil, errors.New("bad") })
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := w.Run(rctx); err != nil {
		return err
	}
	if j, err := qa.FetchJob(ctx, ok.ID); err != nil || j.Status != StatusFinished {
		return fmt.Errorf("job %s: %v, %v; want finished", ok.ID, j, err)
	}
	if j, err := qb.FetchJob(ctx, bad.ID); err != nil || j.Status != StatusFailed || j.Attempt != 2 {
		return fmt.Errorf("job %s: %v, %v; want failed after 2 attempts", bad.ID, j, err)
	}
	for _, q := range []*Queue{qa, qb} {
		if _, err := q.Counts(ctx); err != nil {
			return err
		}
		for _, st := range Statuses {
			if _, err := q.Jobs(ctx, st, 0, 10); err != nil {
				return err
			}
		}
	}
	if n, err := qb.Requeue(ctx, canceled.ID); err != nil || n != 1 {
		return fmt.Errorf("Requeue = %d, %v; want 1", n, err)
	}
	if n, err := qb.RequeueFailed(ctx); err != nil || n != 1 {
		return fmt.Errorf("RequeueFailed = %d, %v; want 1", n, err)
	}
	if n, err := qb.Empty(ctx); err != nil || n != 2 {
		return fmt.Errorf("Empty = %d, %v; want 2", n, err)
	}
	// A worker that finds its queues empty and waits for jobs (BLPOP): an
	// enqueue wakes it, or is what its BLPOP finds at once.
	w = NewWorker(rdb, WorkerOptions{Queues: []string{"acl-a", "acl-b"}, Logger: testLogger(t)})
	ran := make(chan struct{})
	w.Register("ok", func(ctx context.Context, j *Job) (any, error) { close(ran); return nil, nil })
	stop := start(t, w)
	if _, err := qb.EnqueueContext(ctx, "ok", nil); err != nil {
		return err
	}
	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		return errors.New("the waiting worker never ran the job")
	}
	stop()
	if err := aclNextLayer(t, rdb); err != nil {
		return err
	}
	if _, err := Queues(ctx, rdb, ""); err != nil {
		return err
	}
	if _, err := Workers(ctx, rdb, ""); err != nil {
		return err
	}
	s := NewScheduler(rdb, SchedulerOptions{Logger: testLogger(t)})
	if err := s.AddEntry(ScheduleEntry{Name: "acl", Cron: "@every 1s", Func: "ok", Queue: "acl-a"}); err != nil {
		return err
	}
	if err := s.Tick(ctx); err != nil {
		return err
	}
	if _, err := Schedules(ctx, rdb, ""); err != nil {
		return err
	}
	return rdb.Ping(ctx).Err() // the rqgo command's first call
}

// aclNextLayer uses flow control (limits, limit keys, pause, snooze),
// workflows across queues, unique and debounced jobs, progress and waiting
// for a job, on queues "acl-c" and "acl-d", and returns the first error.
func aclNextLayer(t *testing.T, rdb redis.UniversalClient) error {
	ctx := t.Context()
	qc, qd := NewQueue("acl-c", rdb), NewQueue("acl-d", rdb)
	if err := qc.SetLimits(ctx, Limits{Concurrency: 2, KeyConcurrency: 1, Rate: 1000, Per: time.Second}); err != nil {
		return err
	}
	if err := qc.UpdateLimits(ctx, func(l *Limits) { l.KeyRate, l.KeyPer = 1000, time.Second }); err != nil {
		return err
	}
	if _, err := qc.Limits(ctx); err != nil {
		return err
	}
	if err := qc.Pause(ctx); err != nil {
		return err
	}
	if _, err := qc.Paused(ctx); err != nil {
		return err
	}
	if err := qc.Resume(ctx); err != nil {
		return err
	}
	var jobs []*Job
	for i := range 3 { // the second and third park behind the first
		j, err := qc.EnqueueContext(ctx, "step", i, LimitKey("tenant"))
		if err != nil {
			return err
		}
		jobs = append(jobs, j)
	}
	parent, err := qd.EnqueueContext(ctx, "step", "parent")
	if err != nil {
		return err
	}
	child, err := qc.EnqueueContext(ctx, "step", "child", DependsOn(parent, jobs[0]))
	if err != nil {
		return err
	}
	if _, err := qd.EnqueueContext(ctx, "step", "once", Unique(UniqueOpts{Key: "once", For: time.Minute})); err != nil {
		return err
	}
	if _, err := qd.EnqueueContext(ctx, "step", "later", Debounce(10*time.Millisecond, time.Second)); err != nil {
		return err
	}
	snoozed := false
	w := NewWorker(rdb, WorkerOptions{Queues: []string{"acl-c", "acl-d"}, Lease: time.Second, Burst: true, Logger: testLogger(t)})
	var mu sync.Mutex
	w.Register("step", func(ctx context.Context, j *Job) (any, error) {
		if err := j.SetProgress(ctx, 50); err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		if !snoozed {
			snoozed = true
			return nil, Snooze(time.Millisecond)
		}
		return "done", nil
	})
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := w.Run(rctx); err != nil {
		return err
	}
	if j, err := qc.Wait(ctx, child.ID); err != nil || j.Status != StatusFinished {
		return fmt.Errorf("Wait for the dependent %s: %v, %v; want finished", child.ID, j, err)
	}
	return nil
}

// aclUser starts a Redis, creates the user "rqgo" with rules and returns a
// client logged in as that user.
func aclUser(t *testing.T, rules string) (*redistest.Server, *redis.Client) {
	t.Helper()
	s := redistest.StartServer(t)
	admin := s.Client()
	args := []any{"ACL", "SETUSER", "rqgo", "reset", ">secret"}
	for _, r := range strings.Fields(rules) {
		args = append(args, r)
	}
	if err := admin.Do(t.Context(), args...).Err(); err != nil {
		t.Fatalf("ACL SETUSER rqgo %s: %v", rules, err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr, Username: "rqgo", Password: "secret", MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	return s, rdb
}

// TestACLCommands runs the scenario as the default user while MONITOR
// records every command, those of Lua scripts included, and checks that
// aclRules allows each.
func TestACLCommands(t *testing.T) {
	skipShort(t)
	s := redistest.StartServer(t)
	conn, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	rd := bufio.NewReader(conn)
	if _, err := conn.Write([]byte("MONITOR\r\n")); err != nil {
		t.Fatal(err)
	}
	if l, err := rd.ReadString('\n'); err != nil || l != "+OK\r\n" {
		t.Fatalf("MONITOR: %q, %v", l, err)
	}
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		for {
			l, err := rd.ReadString('\n')
			if err != nil {
				return
			}
			lines <- l
		}
	}()
	rdb := s.Client()
	if err := aclScenario(t, rdb); err != nil {
		t.Fatal(err)
	}
	// A last command marks the end of the scenario's.
	if err := rdb.Echo(t.Context(), "rqgo-acl-end").Err(); err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{}
	for _, r := range strings.Fields(aclRules) {
		if c, ok := strings.CutPrefix(r, "+"); ok {
			allowed[c] = true
		}
	}
	seen := map[string]bool{}
	for l := range lines {
		// +1700000000.123456 [0 127.0.0.1:1234] "cmd" "arg" ...  ([0 lua] in scripts)
		_, rest, ok := strings.Cut(l, "] \"")
		if !ok {
			continue
		}
		cmd, args, _ := strings.Cut(rest, "\"")
		cmd = strings.ToLower(cmd)
		if cmd == "echo" && strings.Contains(args, "rqgo-acl-end") {
			break
		}
		if cmd == "client" || cmd == "config" || cmd == "script" {
			sub := strings.Split(args, "\"")
			if len(sub) > 1 {
				cmd += "|" + strings.ToLower(sub[1])
			}
		}
		seen[cmd] = true
	}
	allowed["hello"] = true // Redis never refuses HELLO
	var extra []string
	for c := range seen {
		if !allowed[c] && !allowed[strings.Split(c, "|")[0]] {
			extra = append(extra, c)
		}
	}
	t.Logf("commands rqgo sent: %v", slices.Sorted(maps.Keys(seen)))
	if len(extra) > 0 {
		slices.Sort(extra)
		t.Errorf("rqgo sent commands the ACL rules do not allow: %v; add them to aclRules and to the README's ACL SETUSER line", extra)
	}
}

// rqgo works as a user limited to its key prefix and the commands in
// aclRules; without one of them the error reaches the caller and names the
// command Redis refused.
func TestACL(t *testing.T) {
	skipShort(t)
	t.Run("least privilege", func(t *testing.T) {
		_, rdb := aclUser(t, aclRules)
		if err := aclScenario(t, rdb); err != nil {
			t.Fatalf("rqgo as the ACL user: %v", err)
		}
	})
	for _, c := range []struct {
		name, without string
		want          string // in the error
		object        string // what the ACL log names
		call          func(t *testing.T, rdb *redis.Client) error
	}{
		{"no scripts", "-evalsha -eval", "NOPERM this user has no permissions to run the 'evalsha' command", "evalsha", enqueueOne},
		// Redis 7.0 does not name a command refused inside a script in its
		// reply; its ACL LOG does.
		{"no command in a script", "-hsetnx -hset", "The user executing the script can't run this command", "hset", enqueueOne},
		{"no sadd", "-sadd", "NOPERM this user has no permissions to run the 'sadd' command", "sadd", runWorker},
		{"other keys", "resetkeys ~other:*", "NOPERM this user has no permissions to access one of the keys", "", enqueueOne},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, rdb := aclUser(t, aclRules+" "+c.without)
			err := c.call(t, rdb)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("with %q: error %v; want one saying %q", c.without, err, c.want)
			}
			t.Logf("with %q: %v", c.without, err)
			if c.object == "" {
				return
			}
			log, err := s.Client().ACLLog(t.Context(), 1).Result()
			if err != nil || len(log) != 1 || log[0].Object != c.object || log[0].Username != "rqgo" {
				t.Errorf("ACL LOG = %+v, %v; want user rqgo refused %s", log, err, c.object)
			}
		})
	}
}

func enqueueOne(t *testing.T, rdb *redis.Client) error {
	_, err := NewQueue("acl", rdb).EnqueueContext(t.Context(), "f", nil)
	return err
}

func runWorker(t *testing.T, rdb *redis.Client) error {
	w := NewWorker(rdb, WorkerOptions{Queues: []string{"acl"}, Burst: true, Logger: testLogger(t)})
	return w.Run(t.Context())
}

// On a Redis Cluster the client also needs CLUSTER SLOTS, which go-redis
// reads to route commands. (It also tries COMMAND, and does without.)
const aclClusterRules = "+cluster|slots"

// The same least-privilege user works on a Redis Cluster, with the cluster
// rules added, the user created on every node.
func TestACLCluster(t *testing.T) {
	skipShort(t)
	c := redistest.StartCluster(t, 3, 0)
	for _, n := range c.Nodes {
		args := []any{"ACL", "SETUSER", "rqgo", "reset", ">secret"}
		for _, r := range strings.Fields(aclRules + " " + aclClusterRules) {
			args = append(args, r)
		}
		if err := n.Client().Do(t.Context(), args...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	opts := c.Options()
	opts.Username, opts.Password = "rqgo", "secret"
	rdb := c.Client(opts)
	if err := aclScenario(t, rdb); err != nil {
		for _, n := range c.Nodes {
			log, _ := n.Client().ACLLog(t.Context(), 5).Result()
			for _, l := range log {
				t.Logf("%s refused %s (%s)", n.Addr, l.Object, l.Reason)
			}
		}
		t.Fatalf("rqgo as the ACL user on the cluster: %v", err)
	}
}
