package rqgo

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo/internal/redistest"
)

// queueNames returns n queue names q000, q001, ...
func queueNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("q%03d", i)
	}
	return names
}

// A worker of 200 queues with a 1 s lease keeps its long jobs: its wait for
// work takes one connection, not one per queue, so its lease renewals always
// get one. Jobs of three leases each, on queues at the end of the list, all
// finish on their first attempt.
func TestManyQueuesKeepLeases(t *testing.T) {
	skipShort(t)
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		names := queueNames(200)
		logs, logger := newLogBuffer(t)
		w := e.worker(t, WorkerOptions{Queues: names, Lease: time.Second, Concurrency: 8, Logger: logger})
		var mu sync.Mutex
		runs := map[string]int{}
		w.Register("long", func(ctx context.Context, j *Job) (any, error) {
			mu.Lock()
			runs[j.ID]++
			mu.Unlock()
			select {
			case <-time.After(3 * time.Second):
				return "done", nil
			case <-ctx.Done():
				return nil, context.Cause(ctx)
			}
		})
		var jobs []*Job
		for _, name := range names[192:] {
			j, err := e.queue(name).EnqueueContext(ctx, "long", nil, Retry(0))
			if err != nil {
				t.Fatal(err)
			}
			jobs = append(jobs, j)
		}
		start(t, w)
		for _, j := range jobs {
			got := waitJob(t, e.queue(j.Queue), j.ID, StatusFinished)
			if got.Attempt != 1 {
				t.Errorf("job %s of %s finished on attempt %d, want 1", j.ID, j.Queue, got.Attempt)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		for id, n := range runs {
			if n != 1 {
				t.Errorf("job %s ran %d times, want 1", id, n)
			}
		}
		if logs.contains("lease lost") || logs.contains("renewing leases failed") {
			t.Errorf("the worker lost leases:\n%s", logs)
		}
		if c, ok := e.rdb.(*redis.Client); ok {
			if n := c.PoolStats().TotalConns; n > 12 {
				t.Errorf("the client holds %d connections for one worker of 200 queues, want a handful", n)
			}
		}
	})
}

// An enqueue wakes the worker for that queue alone: of its 300 queues it
// asks only the one that has the job, once, and runs it.
func TestWakeUpFetchesOnlyThatQueue(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		names := queueNames(300)
		w := e.worker(t, WorkerOptions{Queues: names})
		w.maxBlock = time.Hour // only a wake-up can start the job
		waits := make(chan struct{}, 100)
		w.waiting = func() { waits <- struct{}{} }
		counter := &dequeueCounter{}
		e.rdb.AddHook(counter)
		ran := make(chan string, 1)
		w.Register("f", func(ctx context.Context, j *Job) (any, error) {
			ran <- j.Queue
			return nil, nil
		})
		start(t, w)
		<-waits // the start-up look at every queue is over
		before := counter.n.Load()
		if before < int64(len(names)) {
			t.Fatalf("start-up fetch asked %d queues, want all %d", before, len(names))
		}
		if _, err := e.queue("q217").EnqueueContext(ctx, "f", nil); err != nil {
			t.Fatal(err)
		}
		expectRan(t, ran, "q217", "the job never started: no wake-up")
		<-waits // idle again
		if n := counter.n.Load() - before; n != 1 {
			counter.mu.Lock()
			t.Errorf("after one wake-up the worker asked %d queues (%v), want only q217, once", n, counter.last[before:])
			counter.mu.Unlock()
		}
	})
}

// dequeueCounter counts the dequeue.lua calls Redis ran (not those it
// answered NOSCRIPT).
type dequeueCounter struct {
	n    atomic.Int64
	mu   sync.Mutex
	last []string // the pending keys of the calls, newest last
}

func (h *dequeueCounter) note(cmd redis.Cmder, err error) {
	if _, ok := dequeueAsk(cmd); ok && !redis.HasErrorPrefix(err, "NOSCRIPT") {
		h.n.Add(1)
		h.mu.Lock()
		h.last = append(h.last, fmt.Sprint(cmd.Args()[3]))
		h.mu.Unlock()
	}
}

func (h *dequeueCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *dequeueCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.note(cmd, err)
		return err
	}
}

func (h *dequeueCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, c := range cmds {
			h.note(c, c.Err())
		}
		return err
	}
}

// A worker whose heartbeat came late, after a listing dropped it, is listed
// again at its next heartbeat; so is one whose namesake exited.
func TestWorkerListedAgainAfterGap(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		w := e.worker(t, WorkerOptions{Name: "w1", Lease: 300 * time.Millisecond})
		start(t, w)
		listed := func() bool {
			ws, err := Workers(ctx, e.rdb, e.prefix)
			return err == nil && len(ws) == 1 && ws[0].ID == "w1"
		}
		waitFor(t, 5*time.Second, "the worker listed", listed)
		// As after a heartbeat gap longer than the lease: the presence key
		// expired, and a listing dropped the id.
		e.rdb.Del(ctx, workerKey(e.prefix, "w1"))
		if ws, _ := Workers(ctx, e.rdb, e.prefix); len(ws) != 0 {
			t.Fatalf("Workers with the presence key gone = %v, want none", ws)
		}
		waitFor(t, 5*time.Second, "the worker listed again at its next heartbeat", listed)

		// A second worker of the same name starts and stops: its exit removes
		// the shared id, and the first is back at its next heartbeat.
		other := e.worker(t, WorkerOptions{Name: "w1", Lease: 300 * time.Millisecond})
		idle := make(chan struct{}, 1)
		other.waiting = func() {
			select {
			case idle <- struct{}{}:
			default:
			}
		}
		stop := start(t, other)
		<-idle // started, and waiting for work
		stop()
		waitFor(t, 5*time.Second, "the live namesake listed again", listed)
	})
}

// The reaper looks at every registry entry in turn: 1,001 jobs kept forever
// at the head of finished do not hide the 50 expired ones behind them, and
// an id a new job reused leaves the registry of the old one.
func TestReaperWalksWholeRegistries(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		k := q.k
		_, err := e.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := range 1001 {
				id := fmt.Sprintf("kept-%04d", i)
				p.HSet(ctx, k.job(id), "id", id, "status", "finished")
				p.ZAdd(ctx, k.finished(), redis.Z{Score: float64(1 + i), Member: id})
			}
			for i := range 50 {
				// Their hashes expired: only the entries are left.
				p.ZAdd(ctx, k.finished(), redis.Z{Score: float64(5000 + i), Member: fmt.Sprintf("gone-%02d", i)})
			}
			// A failed job's id, taken by a job that is queued now.
			p.HSet(ctx, k.job("reused"), "id", "reused", "status", "queued")
			p.ZAdd(ctx, k.failed(), redis.Z{Score: 1, Member: "reused"})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for pass := range 3 {
			e.rdb.Del(ctx, k.reaper()) // as if the lock period had passed
			res, err := reapScript.Run(ctx, e.rdb, newWorkerQueue(e.prefix, "default").reapKeys, 1000, 1000, -1, 60000).Slice()
			if err != nil {
				t.Fatalf("reap pass %d: %v", pass, err)
			}
			t.Logf("reap pass %d: %v", pass, res)
		}
		if n := e.rdb.ZCard(ctx, k.finished()).Val(); n != 1001 {
			t.Errorf("finished registry has %d entries after three passes, want the 1001 kept jobs", n)
		}
		if _, err := e.rdb.ZScore(ctx, k.failed(), "reused").Result(); err != redis.Nil {
			t.Errorf("failed registry still lists the reused id (err %v), want it gone", err)
		}
	})
}

// An id chosen again after its failed job expired belongs to the new job
// alone: it is in one registry, and Counts shows the new job's state.
func TestReusedIDLeavesOldRegistries(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		fail := true
		h := func(ctx context.Context, j *Job) (any, error) {
			if fail {
				return nil, SkipRetry(fmt.Errorf("first"))
			}
			return "ok", nil
		}
		w := e.worker(t, WorkerOptions{})
		w.Register("f", h)
		if _, err := q.EnqueueContext(ctx, "f", nil, JobID("x")); err != nil {
			t.Fatal(err)
		}
		runBurst(t, w)
		e.rdb.Del(ctx, q.k.job("x")) // its failure TTL passed
		fail = false
		if _, err := q.EnqueueContext(ctx, "f", nil, JobID("x")); err != nil {
			t.Fatal(err)
		}
		w = e.worker(t, WorkerOptions{})
		w.Register("f", h)
		runBurst(t, w)
		if c, _ := q.Counts(ctx); c != (Counts{Finished: 1}) {
			t.Errorf("Counts = %+v, want the new job finished and nothing failed", c)
		}
		if ids, _ := q.JobIDs(ctx, StatusFailed, 0, 10); len(ids) != 0 {
			t.Errorf("failed registry = %v, want empty", ids)
		}
	})
}

// The wake keys a worker blocks on are its queues', and its own first.
func TestBlockKeys(t *testing.T) {
	w := NewWorker(redis.NewClient(&redis.Options{}), WorkerOptions{Queues: []string{"a", "b"}, Name: "w"})
	got := strings.Join(w.blockKeys[1:], " ")
	if !strings.HasPrefix(w.blockKeys[0], "rqgo:{a}:wake:w.") {
		t.Errorf("own wake key = %s, want rqgo:{a}:wake:w.<random>", w.blockKeys[0])
	}
	if want := "rqgo:{a}:wake rqgo:{b}:wake"; got != want || w.subscribed {
		t.Errorf("blockKeys = %s (subscribed %v), want %s and a BLPOP", got, w.subscribed, want)
	}
}

// An idle worker recovers the jobs of a worker that fetched and died while
// it waited: the fetch announced the queue's first lease, so the idle
// worker reaps the queue from then on, although it reaps an empty queue
// otherwise never. With the lease an hour-long idle wait could not hide.
func TestIdleWorkerReapsLeasesTakenMeanwhile(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		idleWorkerReapsLeasesTakenMeanwhile(t, e, []string{"a", "b"})
	})
}

func TestClusterIdleWorkerReapsLeasesTakenMeanwhile(t *testing.T) {
	skipShort(t)
	c := redistest.StartCluster(t, 3, 0)
	e := clusterEnv(t, c)
	names, _ := queuesOnShards(t, c, e.prefix, 1)
	idleWorkerReapsLeasesTakenMeanwhile(t, e, names)
}

func idleWorkerReapsLeasesTakenMeanwhile(t *testing.T, e *testEnv, names []string) {
	t.Helper()
	ctx := t.Context()
	const lease = 300 * time.Millisecond
	w := e.worker(t, WorkerOptions{Queues: names, Lease: lease})
	w.maxBlock = time.Hour
	waits := make(chan struct{}, 100)
	w.waiting = func() { waits <- struct{}{} }
	ran := make(chan string, 1)
	w.Register("f", func(ctx context.Context, j *Job) (any, error) {
		ran <- j.ID
		return nil, nil
	})
	start(t, w)
	<-waits // idle, its first reap of the empty queues done or under way
	q := e.queue(names[len(names)-1])
	// Another worker fetches the job and dies: its lease is all that is left.
	// The job is enqueued and fetched in one motion, before w can wake.
	k := newWorkerQueue(e.prefix, q.name)
	j, argv, err := q.prepare("f", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	inOneStep(t, e, func(p redis.Pipeliner) {
		enqueueScript.evalSha(ctx, p, q.k.enqueueKeys(j.ID, false), argv)
		dequeueScript.evalSha(ctx, p, k.dequeueKeys, []any{1, lease.Milliseconds(), "dead", "n"})
	})
	if got, _ := q.FetchJob(ctx, j.ID); got == nil || got.Status != StatusStarted || got.Worker != "dead" {
		t.Fatalf("job = %+v, want started by the dead worker", got)
	}
	expectRan(t, ran, j.ID, "the dead worker's job never ran again: the idle worker did not reap its queue")
	got := waitJob(t, q, j.ID, StatusFinished)
	if got.Attempt != 2 || got.Error != "lease expired" {
		t.Errorf("recovered job attempt %d, error %q; want attempt 2, \"lease expired\"", got.Attempt, got.Error)
	}
}

// inOneStep sends the script calls of send in one MULTI, so that no worker
// sees the state between them.
func inOneStep(t *testing.T, e *testEnv, send func(p redis.Pipeliner)) {
	t.Helper()
	ctx := t.Context()
	if e.mr == nil {
		flagsTaken(t)
	}
	for _, s := range []*script{enqueueScript, dequeueScript} {
		if err := s.Load(ctx, e.rdb); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		send(p)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// A job whose wake-up was lost (here: its token deleted in the step that
// enqueued it) is found by the worker's periodic look at every queue.
func TestLostWakeUpFoundByLook(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		w := e.worker(t, WorkerOptions{Queues: []string{"a", "b"}})
		w.maxBlock = 300 * time.Millisecond
		waits := make(chan struct{}, 100)
		w.waiting = func() { waits <- struct{}{} }
		ran := make(chan string, 1)
		w.Register("f", func(ctx context.Context, j *Job) (any, error) {
			ran <- j.ID
			return nil, nil
		})
		start(t, w)
		<-waits // idle
		q := e.queue("b")
		j, argv, err := q.prepare("f", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		inOneStep(t, e, func(p redis.Pipeliner) {
			enqueueScript.evalSha(ctx, p, q.k.enqueueKeys(j.ID, false), argv)
			p.Del(ctx, q.k.wake())
		})
		expectRan(t, ran, j.ID, "a job whose wake-up was lost never ran: the worker did not look at its queue")
	})
}

// A lease taken after a reap's script ran but before its reply was read is
// reaped all the same: the announcement that arrives meanwhile is not undone
// by the reply, which saw no leases and would put the next reap off forever.
func TestLeaseTakenDuringAReapIsReaped(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) { leaseTakenDuringAReap(t, e, []string{"a", "b"}) })
}

// The same on a Cluster, the worker's two queues on two masters.
func TestClusterLeaseTakenDuringAReapIsReaped(t *testing.T) {
	skipShort(t)
	c := redistest.StartCluster(t, 3, 0)
	e := clusterEnv(t, c)
	names, _ := queuesOnShards(t, c, e.prefix, 1)
	leaseTakenDuringAReap(t, e, names[:2])
}

func leaseTakenDuringAReap(t *testing.T, e *testEnv, names []string) {
	ctx := t.Context()
	const lease = 300 * time.Millisecond
	w := e.worker(t, WorkerOptions{Queues: names, Lease: lease})
	w.maxBlock = time.Hour
	q := e.queue(names[1])
	j, argv, err := q.prepare("f", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	k := newWorkerQueue(e.prefix, q.name)
	if e.mr == nil {
		flagsTaken(t)
	}
	for _, s := range []*script{enqueueScript, dequeueScript} {
		if err := s.Load(ctx, e.rdb); err != nil {
			t.Fatal(err)
		}
	}
	hooked := make(chan error, 1)
	var once sync.Once
	w.reapReplied = func() {
		once.Do(func() {
			// The worker's first reap has run reap.lua on the empty queues.
			_, err := e.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
				enqueueScript.evalSha(ctx, p, q.k.enqueueKeys(j.ID, false), argv)
				dequeueScript.evalSha(ctx, p, k.dequeueKeys, []any{1, lease.Milliseconds(), "dead", "n"})
				return nil
			})
			// Hold the reply until the announcement of the lease is in.
			for err == nil && !w.qstate[1].reapAsked.Load() {
				select {
				case <-ctx.Done():
					err = ctx.Err()
				case <-time.After(time.Millisecond):
				}
			}
			hooked <- err
		})
	}
	ran := make(chan string, 1)
	w.Register("f", func(ctx context.Context, j *Job) (any, error) {
		ran <- j.ID
		return nil, nil
	})
	start(t, w)
	if err := <-hooked; err != nil {
		t.Fatal(err)
	}
	expectRan(t, ran, j.ID, "the dead worker's job never ran again: the reap's reply undid the announcement of its lease")
}

// expectRan waits for the handler to report it ran want, failing with why
// when nothing runs within 10 s.
func expectRan(t *testing.T, ran <-chan string, want, why string) {
	t.Helper()
	select {
	case got := <-ran:
		if got != want {
			t.Fatalf("ran %s, want %s", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal(why)
	}
}
