package rqgo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rqgo/rqgo/internal/redistest"
)

// The tests in this file run rqgo on a local Redis Cluster started by
// internal/redistest. They need redis-server and redis-cli, and are skipped
// with -short.

func skipShort(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts its own Redis processes; skipped with -short")
	}
}

// clusterEnv is a testEnv on a cluster client, with a fresh prefix whose
// keys are deleted from every master when the test ends.
func clusterEnv(t *testing.T, c *redistest.Cluster, opts ...*redis.ClusterOptions) *testEnv {
	t.Helper()
	rdb := c.Client(opts...)
	e := &testEnv{rdb: rdb, prefix: testPrefix(t), addr: c.Nodes[0].Addr}
	t.Cleanup(func() { deleteClusterPrefix(t, rdb, e.prefix) })
	return e
}

// deleteClusterPrefix removes every key under prefix from every master: a
// SCAN sees one node's keys only, and a DEL of several keys must stay in
// one slot, so keys go one by one, pipelined.
func deleteClusterPrefix(t testing.TB, rdb *redis.ClusterClient, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := rdb.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		iter := m.Scan(ctx, 0, prefix+":*", 1000).Iterator()
		p := m.Pipeline()
		for iter.Next(ctx) {
			p.Unlink(ctx, iter.Val())
		}
		if err := iter.Err(); err != nil {
			return err
		}
		_, err := p.Exec(ctx)
		if errors.Is(err, redis.ErrClosed) || (err != nil && p.Len() == 0) {
			return nil
		}
		return err
	})
	if err != nil && !errors.Is(err, redis.ErrClosed) {
		t.Logf("cleaning up %s on the cluster: %v", prefix, err)
	}
}

// logRecorder keeps the text of every warning and error a worker logged,
// and logs it to the test as well.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *logRecorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, strings.TrimSpace(string(p)))
	return len(p), nil
}

func (r *logRecorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.lines...)
}

// matching returns the recorded lines that contain any of the words.
func (r *logRecorder) matching(words ...string) []string {
	var out []string
	for _, l := range r.all() {
		for _, w := range words {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	return out
}

func recordingLogger(t *testing.T) (*slog.Logger, *logRecorder) {
	tw := &testWriter{t: t}
	t.Cleanup(tw.close)
	rec := &logRecorder{}
	return slog.New(slog.NewTextHandler(io.MultiWriter(tw, rec), &slog.HandlerOptions{Level: slog.LevelWarn})), rec
}

// slotErrors are the words of Redis's errors for commands or scripts that
// span slots or reach the wrong node.
var slotErrors = []string{"CROSSSLOT", "same slot", "non local key", "MOVED", "ASK ", "CLUSTERDOWN"}

// queuesOnShards picks perMaster queue names for each master of the
// cluster, by the slot of their keys under prefix, and returns them with
// the address of the master that holds each.
func queuesOnShards(t testing.TB, c *redistest.Cluster, prefix string, perMaster int) ([]string, map[string]string) {
	t.Helper()
	ctx := t.Context()
	byMaster := map[string][]string{}
	shard := map[string]string{}
	var names []string
	for i := 0; len(names) < 3*perMaster; i++ {
		if i > 1000 {
			t.Fatalf("no spread of queues over 3 masters: %v", byMaster)
		}
		name := fmt.Sprintf("q%d", i)
		m, err := c.NodeFor(ctx, newKeys(prefix, name).pending())
		if err != nil {
			t.Fatal(err)
		}
		if len(byMaster[m.Addr]) < perMaster {
			byMaster[m.Addr] = append(byMaster[m.Addr], name)
			shard[name] = m.Addr
			names = append(names, name)
		}
	}
	return names, shard
}

// Jobs of queues on every shard of a cluster all run on one worker, and
// every queue operation works there; nothing logs a slot error (CROSSSLOT,
// a script touching keys of two slots, MOVED) or any warning but the
// failures of the jobs made to fail.
func TestClusterQueuesOnEveryShard(t *testing.T) {
	skipShort(t)
	c := redistest.StartCluster(t, 3, 0)
	e := clusterEnv(t, c)
	ctx := t.Context()
	names, shard := queuesOnShards(t, c, e.prefix, 2)
	t.Logf("queues and their masters: %v", shard)

	log, rec := recordingLogger(t)
	var (
		ok      = map[string][]string{}
		bad     = map[string]string{}
		delayed = map[string]string{}
	)
	// 20 jobs per queue from concurrent goroutines (concurrent enqueues to
	// a queue share round trips), and a batch of 5 per queue.
	queues := map[string]*Queue{}
	for _, name := range names {
		queues[name] = e.queue(name)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, name := range names {
		for i := range 20 {
			wg.Go(func() {
				j, err := queues[name].EnqueueContext(ctx, "ok", i)
				if err != nil {
					t.Errorf("enqueue to %s (on %s): %v", name, shard[name], err)
					return
				}
				mu.Lock()
				ok[name] = append(ok[name], j.ID)
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for _, name := range names {
		q := queues[name]
		jobs, err := q.EnqueueMany(ctx, []EnqueueRequest{{Func: "ok"}, {Func: "ok"}, {Func: "ok"}, {Func: "ok"}, {Func: "ok"}})
		if err != nil {
			t.Fatalf("EnqueueMany to %s (on %s): %v", name, shard[name], err)
		}
		for _, j := range jobs {
			ok[name] = append(ok[name], j.ID)
		}
		j, err := q.EnqueueContext(ctx, "flaky", nil, RetryIntervals(10*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		ok[name] = append(ok[name], j.ID)
		if j, err = q.EnqueueContext(ctx, "ok", -1, In(200*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		delayed[name] = j.ID
		if j, err = q.EnqueueContext(ctx, "bad", nil); err != nil {
			t.Fatal(err)
		}
		bad[name] = j.ID
		if j, err = q.EnqueueContext(ctx, "ok", nil); err != nil {
			t.Fatal(err)
		}
		if err := q.Cancel(ctx, j.ID); err != nil {
			t.Fatalf("cancel on %s: %v", name, err)
		}
	}
	// A queue nobody listens to, emptied by hand.
	idle := e.queue("idle")
	for range 5 {
		if _, err := idle.EnqueueContext(ctx, "ok", nil); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := idle.Empty(ctx); err != nil || n != 5 {
		t.Fatalf("Empty = %d, %v; want 5", n, err)
	}

	w := e.worker(t, WorkerOptions{Queues: names, Concurrency: 8, Logger: log})
	tries := map[string]int{}
	w.Register("ok", func(ctx context.Context, j *Job) (any, error) { return "done", nil })
	w.Register("flaky", func(ctx context.Context, j *Job) (any, error) {
		mu.Lock()
		defer mu.Unlock()
		if tries[j.ID]++; tries[j.ID] == 1 {
			return nil, errors.New("first attempt fails")
		}
		return "done", nil
	})
	w.Register("bad", func(ctx context.Context, j *Job) (any, error) { return nil, SkipRetry(errors.New("bad job")) })
	start(t, w)

	for _, name := range names {
		q := e.queue(name)
		for _, id := range append(ok[name], delayed[name]) {
			waitJob(t, q, id, StatusFinished)
		}
		waitJob(t, q, bad[name], StatusFailed)
	}
	workers, err := Workers(ctx, e.rdb, e.prefix)
	if err != nil || len(workers) != 1 || workers[0].ID != w.ID() {
		t.Errorf("Workers = %v, %v; want the one worker %s", workers, err, w.ID())
	}
	for _, name := range names {
		q := e.queue(name)
		got, err := q.Counts(ctx)
		if want := (Counts{Finished: 27, Failed: 1, Canceled: 1}); err != nil || got != want {
			t.Errorf("%s: Counts = %+v, %v; want %+v", name, got, err, want)
		}
		jobs, err := q.Jobs(ctx, StatusFailed, 0, 10)
		if err != nil || len(jobs) != 1 || jobs[0].ID != bad[name] {
			t.Fatalf("%s: failed jobs = %v, %v; want %s", name, jobs, err, bad[name])
		}
		if n, err := q.RequeueFailed(ctx); err != nil || n != 1 {
			t.Fatalf("%s: RequeueFailed = %d, %v; want 1", name, n, err)
		}
	}
	for _, name := range names {
		if j := waitJob(t, e.queue(name), bad[name], StatusFailed); j.Attempt != 1 {
			t.Errorf("requeued job %s: attempt %d, want 1 (attempts reset)", j.ID, j.Attempt)
		}
	}

	// The scheduler's script touches one queue's slot too.
	s := NewScheduler(e.rdb, SchedulerOptions{Prefix: e.prefix, Logger: log})
	for _, name := range names[:3] {
		if err := s.AddEntry(ScheduleEntry{Name: "every-" + name, Cron: "@every 1s", Func: "ok", Queue: name}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Tick(ctx); err != nil {
		t.Fatalf("Scheduler.Tick on the cluster: %v", err)
	}
	infos, err := Schedules(ctx, e.rdb, e.prefix)
	if err != nil || len(infos) != 3 {
		t.Errorf("Schedules = %v, %v; want 3 entries", infos, err)
	}

	known, err := Queues(ctx, e.rdb, e.prefix)
	if err != nil || len(known) != len(names)+1 {
		t.Errorf("Queues = %v, %v; want the %d queues", known, err, len(names)+1)
	}
	var unexpected []string
	for _, l := range rec.all() {
		if !strings.Contains(l, `msg="job failed"`) { // the bad jobs
			unexpected = append(unexpected, l)
		}
	}
	if len(unexpected) > 0 {
		t.Errorf("the worker logged %d warnings on the cluster, want none:\n%s", len(unexpected), strings.Join(unexpected, "\n"))
	}
}

// An idle worker whose queues live on three different masters, where no
// BLPOP can take their keys, waits for the wake channels' messages and is
// woken by an enqueue on any of them: its idle wait is an hour, so only a
// wake-up can start these jobs.
func TestClusterIdleWorkerWakesForEachShard(t *testing.T) {
	skipShort(t)
	c := redistest.StartCluster(t, 3, 0)
	e := clusterEnv(t, c)
	names, _ := queuesOnShards(t, c, e.prefix, 1)
	log, rec := recordingLogger(t)
	w := e.worker(t, WorkerOptions{Queues: names, Logger: log})
	w.maxBlock = time.Hour
	if !w.subscribed {
		t.Fatal("a Cluster worker of three queues does not wait on the wake channels")
	}
	var waits atomic.Int64
	w.waiting = func() { waits.Add(1) }
	seen := int64(0)
	stop := expectWakeUps(t, e, w, []string{names[2], names[0], names[1], names[2]}, func() {
		waitFor(t, 5*time.Second, "the worker waiting again", func() bool {
			n := waits.Load()
			if n > seen {
				seen = n
				return true
			}
			return false
		})
	})
	stop() // returns without the hour passing: shutdown ends the wait
	if lines := rec.matching(slotErrors...); len(lines) > 0 {
		t.Errorf("slot errors logged:\n%s", strings.Join(lines, "\n"))
	}
}

func init() { childModes["cluster-worker"] = childClusterWorker }

// childClusterWorker runs a worker on a cluster client, in its own process,
// for TestClusterKilledWorkerJobsRunAgain. Its "hold" handler prints
// "started <id>" and holds the job until the process is killed.
func childClusterWorker() int {
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(os.Getenv("RQGO_TEST_ADDRS"), ",")})
	defer rdb.Close()
	lease, _ := time.ParseDuration(os.Getenv("RQGO_TEST_LEASE"))
	w := NewWorker(rdb, WorkerOptions{
		Prefix: os.Getenv("RQGO_TEST_PREFIX"),
		Queues: strings.Split(os.Getenv("RQGO_TEST_QUEUES"), ","),
		Lease:  lease,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	return runUntilKilled(w, "hold")
}

// A worker killed with SIGKILL while it runs jobs of queues on three
// masters loses none: once the leases expire, another worker's reaper on
// each shard puts them back and they run again.
func TestClusterKilledWorkerJobsRunAgain(t *testing.T) {
	skipShort(t)
	c := redistest.StartCluster(t, 3, 0)
	e := clusterEnv(t, c)
	ctx := t.Context()
	names, _ := queuesOnShards(t, c, e.prefix, 1)
	ids := map[string]string{}
	for _, name := range names {
		j, err := e.queue(name).EnqueueContext(ctx, "hold", nil)
		if err != nil {
			t.Fatal(err)
		}
		ids[name] = j.ID
	}
	const lease = 300 * time.Millisecond
	cmd, lines := startChildMode(t, "cluster-worker",
		"RQGO_TEST_ADDRS="+strings.Join(c.Addrs(), ","), "RQGO_TEST_PREFIX="+e.prefix,
		"RQGO_TEST_QUEUES="+strings.Join(names, ","), "RQGO_TEST_LEASE="+lease.String())
	for range names {
		expectLine(t, lines, "") // the child started a job
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	log, rec := recordingLogger(t)
	w := e.worker(t, WorkerOptions{Queues: names, Lease: lease, Logger: log})
	w.Register("hold", func(ctx context.Context, j *Job) (any, error) { return "recovered", nil })
	start(t, w)
	for _, name := range names {
		got := waitJob(t, e.queue(name), ids[name], StatusFinished)
		if got.Attempt != 2 || got.Error != "lease expired" {
			t.Errorf("%s: recovered job attempt %d, error %q; want attempt 2, \"lease expired\"", name, got.Attempt, got.Error)
		}
	}
	if lines := rec.matching(slotErrors...); len(lines) > 0 {
		t.Errorf("slot errors logged:\n%s", strings.Join(lines, "\n"))
	}
	if n := len(rec.matching("recovered jobs whose lease expired")); n != len(names) {
		t.Errorf("worker logged %d lease recoveries, want %d (one per shard)", n, len(names))
	}
}

// failoverRun is a busy queue processed by a worker while its Redis master
// is replaced; it counts what happened to every job.
type failoverRun struct {
	t        *testing.T
	q        *Queue
	mu       sync.Mutex
	runs     map[string]int // handler calls per job id
	done     chan struct{}  // closed once `until` jobs have run
	n, until int

	acked   []string // ids whose enqueue Redis acknowledged
	refused int      // enqueues that returned an error (nothing to lose)
	stop    func()
}

// startFailoverRun starts w with a "work" handler and a producer enqueuing
// to q about once a millisecond until stop is called.
func startFailoverRun(t *testing.T, q *Queue, w *Worker) *failoverRun {
	r := &failoverRun{t: t, q: q, runs: map[string]int{}}
	w.Register("work", func(ctx context.Context, j *Job) (any, error) {
		r.mu.Lock()
		r.runs[j.ID]++
		r.n++
		r.mu.Unlock()
		time.Sleep(2 * time.Millisecond)
		return nil, nil
	})
	start(t, w)
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for ctx.Err() == nil {
			c, cc := context.WithTimeout(ctx, 2*time.Second)
			j, err := q.EnqueueContext(c, "work", nil)
			cc()
			r.mu.Lock()
			if err != nil {
				r.refused++
			} else {
				r.acked = append(r.acked, j.ID)
			}
			r.mu.Unlock()
			sleepCtx(ctx, time.Millisecond)
		}
	}()
	r.stop = func() { cancel(); <-stopped }
	t.Cleanup(r.stop)
	return r
}

func (r *failoverRun) runCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// waitRuns polls until the handler has run n times.
func (r *failoverRun) waitRuns(n int) {
	r.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for r.runCount() < n {
		if time.Now().After(deadline) {
			r.t.Fatalf("the worker ran %d jobs, want %d within 15s", r.runCount(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// after enqueues n jobs, retrying each enqueue until Redis takes it, and
// waits for each to finish. It returns how long the first enqueue took to
// succeed (the client may still route to the dead master for a while) and
// how long until that job finished.
func (r *failoverRun) after(n int) (enqueued, finished time.Duration) {
	r.t.Helper()
	began := time.Now()
	deadline := began.Add(30 * time.Second)
	for i := range n {
		var (
			j   *Job
			err error
		)
		for {
			if j, err = r.q.EnqueueContext(r.t.Context(), "work", nil); err == nil {
				break
			}
			if time.Now().After(deadline) {
				r.t.Fatalf("enqueue after the failover still fails after 30s: %v", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if i == 0 {
			enqueued = time.Since(began)
		}
		waitJob(r.t, r.q, j.ID, StatusFinished)
		if i == 0 {
			finished = time.Since(began)
		}
	}
	return enqueued, finished
}

// mark returns how many enqueues Redis has acknowledged so far, to tell
// apart, in [failoverRun.settle]'s report, jobs enqueued in different
// phases.
func (r *failoverRun) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.acked)
}

// failoverReport is what happened to the jobs of a failoverRun.
type failoverReport struct {
	acked, refused, again int
	lost                  []int // indexes in acknowledgement order of lost jobs
}

// lostIn counts the lost jobs acknowledged between marks from and to.
func (f failoverReport) lostIn(from, to int) int {
	n := 0
	for _, i := range f.lost {
		if from <= i && i < to {
			n++
		}
	}
	return n
}

// settle stops the producer, waits until the queue has nothing queued or
// running (jobs whose outcome the old master lost are reaped when their
// lease expires) and reports, for every acknowledged enqueue, whether the
// job finished, was lost, or ran more than once.
func (r *failoverRun) settle() failoverReport {
	r.t.Helper()
	r.stop()
	ctx := r.t.Context()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := r.q.Counts(ctx)
		if err == nil && c.Queued == 0 && c.Started == 0 && c.Scheduled == 0 {
			break
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("queue never settled after the failover: %+v, %v", c, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.mu.Lock()
	ids := append([]string(nil), r.acked...)
	rep := failoverReport{acked: len(ids), refused: r.refused}
	r.mu.Unlock()
	for i, id := range ids {
		j, err := r.q.FetchJob(ctx, id)
		switch {
		case errors.Is(err, ErrJobNotFound):
			rep.lost = append(rep.lost, i)
		case err != nil:
			r.t.Fatalf("reading job %s: %v", id, err)
		case j.Status != StatusFinished:
			r.t.Errorf("job %s is %s after the queue settled, want finished", id, j.Status)
		}
	}
	r.mu.Lock()
	for _, n := range r.runs {
		if n > 1 {
			rep.again++
		}
	}
	r.mu.Unlock()
	return rep
}

// The master holding a busy queue is killed (SIGKILL) mid-run; its replica
// takes over, and the worker reconnects and goes on: jobs enqueued after
// the failover finish, and every job that survived finishes. Replication is
// asynchronous, so writes the dead master acknowledged but had not yet
// sent may be lost; the test reports them rather than forbidding them.
func TestClusterFailoverWorkerGoesOn(t *testing.T) {
	skipShort(t)
	c := redistest.StartCluster(t, 3, 1)
	// go-redis (v9.22 and later) reloads the slot map every 60s by default
	// and not when a node refuses connections (go-redis#3979): without a
	// short interval the client goes on dialing the dead master for up to a
	// minute after its replica took over.
	opts := c.Options()
	opts.ClusterStateReloadInterval = time.Second
	e := clusterEnv(t, c, opts)
	ctx := t.Context()
	names, _ := queuesOnShards(t, c, e.prefix, 1)
	q := e.queue(names[0])
	log, rec := recordingLogger(t)
	w := e.worker(t, WorkerOptions{Queues: names, Concurrency: 10, Lease: 3 * time.Second, Logger: log})
	r := startFailoverRun(t, q, w)
	r.waitRuns(300)

	old, err := c.NodeFor(ctx, q.k.pending())
	if err != nil {
		t.Fatal(err)
	}
	old.Kill()
	killed := time.Now()
	hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	promoted, err := c.WaitHealthy(hctx, q.k.pending())
	if err != nil {
		t.Fatal(err)
	}
	healthy := time.Since(killed)
	enq, fin := r.after(50)
	rep := r.settle()
	t.Logf("cluster failover: master %s killed; replica %s serving the queue after %v; "+
		"then an enqueue succeeded after %v more and its job finished after %v; "+
		"%d enqueues acknowledged, %d refused during the outage, %d acknowledged jobs lost, %d jobs ran more than once; "+
		"the worker logged %d warnings",
		old.Addr, promoted.Addr, healthy.Round(time.Millisecond), enq.Round(time.Millisecond), fin.Round(time.Millisecond),
		rep.acked, rep.refused, len(rep.lost), rep.again, len(rec.all()))
	if lines := rec.matching("CROSSSLOT", "same slot", "non local key"); len(lines) > 0 {
		t.Errorf("slot errors logged:\n%s", strings.Join(lines, "\n"))
	}
}

// With go-redis's default cluster options the worker still finds the new
// master soon after a failover: go-redis reloads its slot map every 60s and
// not when a node refuses connections (go-redis#3979), so rqgo asks it to
// reload after a failed command.
func TestClusterFailoverDefaultClientOptions(t *testing.T) {
	skipShort(t)
	c := redistest.StartCluster(t, 3, 1)
	e := clusterEnv(t, c) // default options
	ctx := t.Context()
	names, _ := queuesOnShards(t, c, e.prefix, 1)
	w := e.worker(t, WorkerOptions{Queues: names[:1], Lease: 3 * time.Second})
	ran := make(chan string, 16)
	w.Register("f", func(ctx context.Context, j *Job) (any, error) { ran <- j.ID; return nil, nil })
	start(t, w)
	q := e.queue(names[0])
	if _, err := q.EnqueueContext(ctx, "f", nil); err != nil {
		t.Fatal(err)
	}
	<-ran
	old, err := c.NodeFor(ctx, q.k.pending())
	if err != nil {
		t.Fatal(err)
	}
	old.Kill()
	hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := c.WaitHealthy(hctx, q.k.pending()); err != nil {
		t.Fatal(err)
	}
	// A fresh client knows the new master; the worker's must find it too.
	fresh := NewQueue(names[0], c.Client(), WithPrefix(e.prefix))
	j, err := fresh.EnqueueContext(ctx, "f", nil)
	if err != nil {
		t.Fatalf("enqueue through a fresh client after the failover: %v", err)
	}
	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		t.Fatalf("job %s enqueued after the failover did not run within 10s: the worker still dials the dead master", j.ID)
	}
}

// benchJobs is how many jobs one round of BenchmarkTopologyThroughput
// enqueues and processes.
const benchJobs = 20000

// BenchmarkTopologyThroughput enqueues benchJobs jobs over 6 queues (from
// 50 goroutines), then processes them with one burst worker of
// concurrency 50, on a single redis-server and on a 3-master cluster with
// the queues spread 2 per master. It reports jobs/s for each phase. Run
// with -benchtime=1x.
func BenchmarkTopologyThroughput(b *testing.B) {
	if testing.Short() {
		b.Skip("starts its own Redis processes; skipped with -short")
	}
	b.Run("single", func(b *testing.B) {
		s := redistest.StartServer(b)
		names := []string{"q0", "q1", "q2", "q3", "q4", "q5"}
		benchThroughput(b, s.Client(), names)
	})
	b.Run("cluster-3-masters", func(b *testing.B) {
		c := redistest.StartCluster(b, 3, 0)
		names, _ := queuesOnShards(b, c, DefaultPrefix, 2)
		benchThroughput(b, c.Client(), names)
	})
}

func benchThroughput(b *testing.B, rdb redis.UniversalClient, names []string) {
	ctx := b.Context()
	queues := make([]*Queue, len(names))
	for i, n := range names {
		queues[i] = NewQueue(n, rdb)
	}
	var enq, proc time.Duration
	var cpu float64
	for b.Loop() {
		cpu -= redisCPU(b, rdb)
		began := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, 50)
		for g := range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := g; i < benchJobs; i += 50 {
					if _, err := queues[i%len(queues)].EnqueueContext(ctx, "noop", nil, ResultTTL(time.Minute)); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
		enq += time.Since(began)
		w := NewWorker(rdb, WorkerOptions{Queues: names, Concurrency: 50, Burst: true,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		w.Register("noop", func(ctx context.Context, j *Job) (any, error) { return nil, nil })
		began = time.Now()
		if err := w.Run(ctx); err != nil {
			b.Fatal(err)
		}
		proc += time.Since(began)
		cpu += redisCPU(b, rdb)
		for _, q := range queues {
			if c, err := q.Counts(ctx); err != nil || c.Queued != 0 || c.Started != 0 {
				b.Fatalf("%s after the burst: %+v, %v", q.Name(), c, err)
			}
		}
	}
	b.ReportMetric(float64(b.N*benchJobs)/enq.Seconds(), "enqueued/s")
	b.ReportMetric(float64(b.N*benchJobs)/proc.Seconds(), "processed/s")
	b.ReportMetric(100*cpu/(enq+proc).Seconds(), "redis-cpu-%")
}

// redisCPU returns the CPU seconds (user and system) every Redis master
// behind rdb has used so far.
func redisCPU(b *testing.B, rdb redis.UniversalClient) float64 {
	var mu sync.Mutex
	total := 0.0
	read := func(ctx context.Context, c *redis.Client) error {
		info, err := c.Info(ctx, "cpu").Result()
		if err != nil {
			return err
		}
		for _, l := range strings.Split(info, "\r\n") {
			for _, f := range []string{"used_cpu_user:", "used_cpu_sys:"} {
				if v, ok := strings.CutPrefix(l, f); ok {
					var x float64
					fmt.Sscan(v, &x)
					mu.Lock()
					total += x
					mu.Unlock()
				}
			}
		}
		return nil
	}
	var err error
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(b.Context(), read)
	} else {
		err = read(b.Context(), rdb.(*redis.Client))
	}
	if err != nil {
		b.Fatal(err)
	}
	return total
}

// BenchmarkEnqueueWait measures what a WAIT 1 after each enqueue costs on
// a cluster whose masters have one replica each: the enqueue script and
// WAIT go down one connection to the queue's master, in one round trip,
// and WAIT returns once the replica acknowledged the write. One enqueue at
// a time, so ns/op is the latency a caller sees.
func BenchmarkEnqueueWait(b *testing.B) {
	if testing.Short() {
		b.Skip("starts its own Redis processes; skipped with -short")
	}
	c := redistest.StartCluster(b, 3, 1)
	rdb := c.Client()
	ctx := b.Context()
	q := NewQueue("wait", rdb)
	if _, err := q.EnqueueContext(ctx, "noop", nil); err != nil { // loads the script
		b.Fatal(err)
	}
	b.Run("no-wait", func(b *testing.B) {
		for b.Loop() {
			if _, err := q.EnqueueContext(ctx, "noop", nil, ResultTTL(time.Minute)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("wait-1", func(b *testing.B) {
		master, err := rdb.MasterForKey(ctx, q.k.pending())
		if err != nil {
			b.Fatal(err)
		}
		short := 0
		for b.Loop() {
			j, argv, err := q.prepare("noop", nil, []EnqueueOption{ResultTTL(time.Minute)})
			if err != nil {
				b.Fatal(err)
			}
			var run *redis.Cmd
			var wait *redis.IntCmd
			_, err = master.Pipelined(ctx, func(p redis.Pipeliner) error {
				run = enqueueScript.evalSha(ctx, p, q.k.enqueueKeys(j.ID, false), argv)
				wait = redis.NewIntCmd(ctx, "WAIT", 1, 1000)
				_ = p.Process(ctx, wait)
				return nil
			})
			if err != nil || run.Err() != nil {
				b.Fatal(err, run.Err())
			}
			if wait.Val() < 1 {
				short++
			}
		}
		b.ReportMetric(float64(short), "unreplicated")
	})
}
