package rqgo

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// holdingWorker returns a worker of one slot that will hold ahead jobs:
// it counts ahead quick handlers before its first fetch, so its second
// fetch takes that many jobs beyond its slot. Its "block" handler closes
// started and returns when release is closed; "quick" returns at once.
func holdingWorker(t *testing.T, e *testEnv, o WorkerOptions, ahead int) (w *Worker, started, release chan struct{}) {
	o.Concurrency = 1
	o.Prefetch = ahead
	w = e.worker(t, o)
	w.quick.Store(int64(ahead))
	started, release = make(chan struct{}), make(chan struct{})
	w.Register("block", func(ctx context.Context, j *Job) (any, error) {
		close(started)
		<-release
		return "blocked", nil
	})
	w.Register("quick", func(ctx context.Context, j *Job) (any, error) { return "quick", nil })
	return w, started, release
}

// enqueueHeld enqueues a "block" job, then n "quick" jobs for a
// holdingWorker to hold behind it.
func enqueueHeld(t *testing.T, q *Queue, n int) (block *Job, held []*Job) {
	t.Helper()
	reqs := []EnqueueRequest{{Func: "block"}}
	for range n {
		reqs = append(reqs, EnqueueRequest{Func: "quick"})
	}
	jobs, err := q.EnqueueMany(t.Context(), reqs)
	if err != nil {
		t.Fatal(err)
	}
	return jobs[0], jobs[1:]
}

// waitHeld waits until every job is started: taken by the worker, whether
// its handler runs or it is held.
func waitHeld(t *testing.T, q *Queue, jobs []*Job) {
	t.Helper()
	waitFor(t, 10*time.Second, "jobs taken ahead", func() bool {
		for _, j := range jobs {
			if got, err := q.FetchJob(t.Context(), j.ID); err != nil || got.Status != StatusStarted {
				return false
			}
		}
		return true
	})
}

// A worker whose handlers return within a round trip takes jobs beyond its
// free slots, and still never runs more handlers than its concurrency.
func TestPrefetchTakesAheadWithinConcurrency(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		const jobs, limit = 300, 2
		reqs := make([]EnqueueRequest, jobs)
		for i := range reqs {
			reqs[i] = EnqueueRequest{Func: "quick"}
		}
		if _, err := q.EnqueueMany(ctx, reqs); err != nil {
			t.Fatal(err)
		}
		asks := &dequeueAsks{}
		e.rdb.AddHook(asks)
		w := e.worker(t, WorkerOptions{Concurrency: limit})
		var cur, peak atomic.Int32
		w.Register("quick", func(ctx context.Context, j *Job) (any, error) {
			n := cur.Add(1)
			defer cur.Add(-1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			return nil, nil
		})
		runBurst(t, w)
		if p := peak.Load(); p > limit {
			t.Errorf("peak concurrent handlers = %d, want at most %d", p, limit)
		}
		if c, _ := q.Counts(ctx); c.Finished != jobs {
			t.Errorf("finished = %d, want %d", c.Finished, jobs)
		}
		if m := asks.max.Load(); m <= limit {
			t.Errorf("largest fetch asked for %d jobs; want more than the %d slots (prefetch)", m, limit)
		}

		off := e.worker(t, WorkerOptions{Concurrency: limit, Prefetch: -1})
		off.Register("quick", func(ctx context.Context, j *Job) (any, error) { return nil, nil })
		if _, err := q.EnqueueMany(ctx, reqs); err != nil {
			t.Fatal(err)
		}
		asks.max.Store(0)
		runBurst(t, off)
		if m := asks.max.Load(); m > limit {
			t.Errorf("with Prefetch -1 a fetch asked for %d jobs; want at most the %d slots", m, limit)
		}
	})
}

// dequeueAsks records the most jobs one dequeue.lua call asked for.
type dequeueAsks struct{ max atomic.Int64 }

func (h *dequeueAsks) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *dequeueAsks) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if n, ok := dequeueAsk(cmd); ok {
			for m := h.max.Load(); n > m && !h.max.CompareAndSwap(m, n); m = h.max.Load() {
			}
		}
		return next(ctx, cmd)
	}
}

// dequeueAsk reports whether cmd runs dequeue.lua (EVAL or EVALSHA, 6 keys,
// then n, lease and worker), and how many jobs n it asks for.
func dequeueAsk(cmd redis.Cmder) (n int64, ok bool) {
	a := cmd.Args()
	if len(a) != 14 || !strings.HasPrefix(fmt.Sprint(a[0]), "eval") || fmt.Sprint(a[2]) != "6" {
		return 0, false
	}
	n, _ = strconv.ParseInt(fmt.Sprint(a[9]), 10, 64)
	return n, true
}

func (h *dequeueAsks) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A job held for a slot that does not free within maxHold goes back to the
// head of its queue, its attempt not counted, and another worker runs it
// while the slot's job still runs.
func TestHeldJobsGoBackWhenTheSlotStaysBusy(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		block, held := enqueueHeld(t, q, 3)
		w, started, release := holdingWorker(t, e, WorkerOptions{}, 3)
		w.maxHold = 300 * time.Millisecond // time to see the jobs held
		defer close(release)
		start(t, w)
		<-started
		// The held jobs are leased like running ones until they go back.
		waitHeld(t, q, held)
		for _, j := range held {
			waitJob(t, q, j.ID, StatusQueued)
		}
		ids, _ := e.rdb.LRange(ctx, q.k.pending(), 0, -1).Result()
		if want := []string{held[0].ID, held[1].ID, held[2].ID}; fmt.Sprint(ids) != fmt.Sprint(want) {
			t.Errorf("pending after the hold = %v, want the held jobs back in order %v", ids, want)
		}
		if n, _ := e.rdb.ZCard(ctx, q.k.active()).Result(); n != 1 {
			t.Errorf("active jobs = %d, want 1 (the running one)", n)
		}

		other := e.worker(t, WorkerOptions{Prefetch: -1})
		other.Register("quick", func(ctx context.Context, j *Job) (any, error) { return "other", nil })
		start(t, other)
		for _, j := range held {
			got := waitJob(t, q, j.ID, StatusFinished)
			if got.Worker != other.ID() || got.Attempt != 1 || string(got.Result) != `"other"` {
				t.Errorf("held job %s: worker %s attempt %d result %s; want run once by %s", j.ID, got.Worker, got.Attempt, got.Result, other.ID())
			}
		}
		if got, _ := q.FetchJob(ctx, block.ID); got.Status != StatusStarted {
			t.Errorf("blocking job = %s, want still started", got.Status)
		}
	})
}

// A shutdown gives held jobs back at once, without counting an attempt,
// and waits for the running one.
func TestShutdownGivesBackHeldJobsAtOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		block, held := enqueueHeld(t, q, 3)
		w, started, release := holdingWorker(t, e, WorkerOptions{ShutdownTimeout: time.Minute}, 3)
		w.maxHold = time.Hour
		stop := start(t, w)
		<-started
		waitHeld(t, q, held)
		stopped := make(chan struct{})
		go func() { stop(); close(stopped) }()
		for _, j := range held {
			got := waitJob(t, q, j.ID, StatusQueued)
			if got.Attempt != 0 {
				t.Errorf("held job %s given back with attempt %d, want 0", j.ID, got.Attempt)
			}
		}
		select {
		case <-stopped:
			t.Fatal("Run returned while a handler still ran")
		default:
		}
		close(release)
		<-stopped
		if got, _ := q.FetchJob(ctx, block.ID); got.Status != StatusFinished {
			t.Errorf("running job after shutdown = %s, want finished", got.Status)
		}
		if n, _ := e.rdb.LLen(ctx, q.k.pending()).Result(); n != 3 {
			t.Errorf("pending after shutdown = %d, want the 3 held jobs", n)
		}
	})
}

func init() { childModes["holder"] = childHolder }

// childHolder runs a worker that holds $RQGO_TEST_AHEAD jobs behind a
// "block" job that never returns, and prints "started <id>" when the block
// job runs.
func childHolder() int {
	lease, _ := time.ParseDuration(os.Getenv("RQGO_TEST_LEASE"))
	ahead, _ := strconv.Atoi(os.Getenv("RQGO_TEST_AHEAD"))
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv("RQGO_TEST_ADDR")})
	defer rdb.Close()
	w := NewWorker(rdb, WorkerOptions{Prefix: os.Getenv("RQGO_TEST_PREFIX"), Lease: lease, Concurrency: 1, Prefetch: ahead})
	w.quick.Store(int64(ahead))
	w.maxHold = time.Hour
	return runUntilKilled(w, "block")
}

// A worker killed with SIGKILL while it holds jobs ahead loses none of
// them: their leases expire like a running job's and they run again.
func TestKilledWhileHoldingLosesNothing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		q := e.queue("default")
		block, held := enqueueHeld(t, q, 3)
		const lease = 300 * time.Millisecond
		child, lines := startChildMode(t, "holder",
			"RQGO_TEST_ADDR="+e.addr, "RQGO_TEST_PREFIX="+e.prefix,
			"RQGO_TEST_LEASE="+lease.String(), "RQGO_TEST_AHEAD=3")
		expectLine(t, lines, "started "+block.ID)
		waitHeld(t, q, held)
		if err := child.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		child.Wait()

		w := e.worker(t, WorkerOptions{Lease: lease})
		w.Register("block", func(ctx context.Context, j *Job) (any, error) { return "recovered", nil })
		w.Register("quick", func(ctx context.Context, j *Job) (any, error) { return "recovered", nil })
		start(t, w)
		for _, j := range append([]*Job{block}, held...) {
			got := waitJob(t, q, j.ID, StatusFinished)
			if got.Attempt != 2 || string(got.Result) != `"recovered"` {
				t.Errorf("job %s after the kill: attempt %d result %s; want attempt 2, \"recovered\"", j.ID, got.Attempt, got.Result)
			}
		}
	})
}

// A worker's memory does not grow with the jobs it has run: each job's
// context is released when its handler returns. Real Redis only: miniredis
// shares the heap and runs scripts too slowly for thousands of jobs.
func TestWorkerMemoryDoesNotGrowWithJobs(t *testing.T) {
	e := newRealEnv(t)
	{
		ctx := t.Context()
		q := e.queue("default")
		const jobs = 5000
		reqs := make([]EnqueueRequest, jobs)
		for i := range reqs {
			reqs[i] = EnqueueRequest{Func: "quick", Options: []EnqueueOption{ResultTTL(0)}}
		}
		for i := 0; i < jobs; i += 1000 {
			if _, err := q.EnqueueMany(ctx, reqs[i:i+1000]); err != nil {
				t.Fatal(err)
			}
		}
		var done atomic.Int32
		all := make(chan struct{})
		w := e.worker(t, WorkerOptions{})
		w.Register("quick", func(ctx context.Context, j *Job) (any, error) {
			if done.Add(1) == jobs {
				close(all)
			}
			return nil, nil
		})
		heap := func() uint64 {
			runtime.GC()
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			return m.HeapAlloc
		}
		before := heap()
		start(t, w)
		<-all
		waitFor(t, 10*time.Second, "jobs recorded", func() bool {
			n, _ := e.rdb.ZCard(ctx, q.k.active()).Result()
			return n == 0
		})
		// Each job's context left behind held about 500 bytes.
		if grew := int64(heap()) - int64(before); grew > jobs*100 {
			t.Errorf("heap grew by %d bytes over %d jobs with the worker still running; want under %d", grew, jobs, jobs*100)
		}
	}
}

// A fetch that returns after Run's context ended starts none of its jobs:
// the shutdown gives them back, their attempt not counted.
func TestFetchEndingAfterShutdownStartsNothing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		runCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		// The context ends while the fetch that takes the job is in flight.
		e.rdb.AddHook(&afterDequeue{f: func(n int) {
			if n > 0 {
				cancel()
			}
		}})
		w := e.worker(t, WorkerOptions{ShutdownTimeout: time.Minute})
		var ran atomic.Bool
		w.Register("late", func(ctx context.Context, j *Job) (any, error) {
			ran.Store(true)
			return nil, nil
		})
		job, err := q.EnqueueContext(ctx, "late", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Run(runCtx); err != nil {
			t.Fatal(err)
		}
		if ran.Load() {
			t.Error("the handler ran for a job fetched after the context ended")
		}
		got, err := q.FetchJob(ctx, job.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != StatusQueued || got.Attempt != 0 {
			t.Errorf("job after shutdown = %s attempt %d; want queued, attempt 0", got.Status, got.Attempt)
		}
		if c, _ := q.Counts(ctx); c != (Counts{Queued: 1}) {
			t.Errorf("Counts after shutdown = %+v, want the job queued and nothing else", c)
		}
	})
}

// afterDequeue calls f with the number of jobs each dequeue.lua call
// returned, before the worker sees the reply.
type afterDequeue struct{ f func(jobs int) }

func (h *afterDequeue) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *afterDequeue) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if _, ok := dequeueAsk(cmd); ok {
			if c, ok := cmd.(noRetry); ok && err == nil {
				if res, _ := c.Slice(); len(res) >= dequeuedHead {
					h.f((len(res) - dequeuedHead) / dequeuedLen)
				}
			}
		}
		return err
	}
}

func (h *afterDequeue) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
