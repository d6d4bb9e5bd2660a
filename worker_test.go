package rqgo

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestRetriesWithIntervalsThenSucceeds(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		job, err := q.EnqueueContext(ctx, "flaky", nil, Retry(3), RetryIntervals(20*time.Millisecond, 40*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		w := e.worker(t, WorkerOptions{})
		var calls atomic.Int32
		var seen []Status
		var mu sync.Mutex
		w.Register("flaky", func(ctx context.Context, j *Job) (any, error) {
			n := calls.Add(1)
			if n > 1 {
				// The retry waited in scheduled: between attempts the hash said so.
				mu.Lock()
				seen = append(seen, Status("attempt"))
				mu.Unlock()
			}
			if n < 3 {
				return nil, errors.New("try again")
			}
			return "ok", nil
		})
		runBurst(t, w)
		got, err := q.FetchJob(ctx, job.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != StatusFinished || got.Attempt != 3 || string(got.Result) != `"ok"` {
			t.Errorf("job = %s attempt %d result %s, want finished after 3 attempts with \"ok\"", got.Status, got.Attempt, got.Result)
		}
		if got.Error != "try again" {
			t.Errorf("error = %q, want the last failed attempt's %q", got.Error, "try again")
		}
		// Retry 1 waited 20ms and retry 2 40ms: at least 60ms from creation to the last start.
		if d := got.StartedAt.Sub(got.CreatedAt); d < 60*time.Millisecond {
			t.Errorf("last attempt started %v after creation, want at least 60ms of retry intervals", d)
		}
	})
}

func TestRetryGoesThroughScheduled(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		job, _ := q.EnqueueContext(ctx, "fail", nil, Retry(1), RetryIntervals(time.Hour))
		w := e.worker(t, WorkerOptions{})
		w.Register("fail", func(ctx context.Context, j *Job) (any, error) { return nil, errors.New("boom") })
		stop := start(t, w)
		got := waitJob(t, q, job.ID, StatusScheduled)
		stop()
		if got.Attempt != 1 || got.Error != "boom" {
			t.Errorf("after one failure: attempt %d error %q, want 1 %q", got.Attempt, got.Error, "boom")
		}
		if d := got.ScheduledAt.Sub(got.StartedAt); d < 59*time.Minute || d > 61*time.Minute {
			t.Errorf("retry scheduled %v after the attempt, want 1h", d)
		}
		c, _ := q.Counts(ctx)
		if c != (Counts{Scheduled: 1}) {
			t.Errorf("Counts = %+v, want one scheduled", c)
		}
	})
}

func TestRetriesExhaustedFails(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		job, _ := q.EnqueueContext(ctx, "fail", nil, Retry(2), Backoff(time.Millisecond, 5*time.Millisecond))
		w := e.worker(t, WorkerOptions{})
		var calls atomic.Int32
		w.Register("fail", func(ctx context.Context, j *Job) (any, error) {
			calls.Add(1)
			return nil, errors.New("always")
		})
		runBurst(t, w)
		got, _ := q.FetchJob(ctx, job.ID)
		if got.Status != StatusFailed || got.Attempt != 3 || calls.Load() != 3 || got.Error != "always" {
			t.Errorf("job = %s attempt %d calls %d error %q, want failed after 3 attempts", got.Status, got.Attempt, calls.Load(), got.Error)
		}
		ids, _ := q.JobIDs(ctx, StatusFailed, 0, 10)
		if len(ids) != 1 || ids[0] != job.ID {
			t.Errorf("failed registry = %v, want [%s]", ids, job.ID)
		}
		ttl := e.rdb.PTTL(ctx, q.k.job(job.ID)).Val()
		if ttl < DefaultFailureTTL-time.Minute || ttl > DefaultFailureTTL {
			t.Errorf("failed job TTL = %v, want about %v", ttl, DefaultFailureTTL)
		}

		// The failed registry is where requeue takes from.
		n, err := q.RequeueFailed(ctx)
		if err != nil || n != 1 {
			t.Fatalf("RequeueFailed = %d, %v; want 1", n, err)
		}
		got = waitJob(t, q, job.ID, StatusQueued)
		if got.Attempt != 0 || e.rdb.PTTL(ctx, q.k.job(job.ID)).Val() != -1 {
			t.Errorf("requeued job: attempt %d, TTL %v; want 0 and none", got.Attempt, e.rdb.PTTL(ctx, q.k.job(job.ID)).Val())
		}
	})
}

func TestSkipRetryAndRetryAfter(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		skip, _ := q.EnqueueContext(ctx, "skip", nil, Retry(5))
		after, _ := q.EnqueueContext(ctx, "after", nil, Retry(5), RetryIntervals(time.Hour))
		w := e.worker(t, WorkerOptions{})
		w.Register("skip", func(ctx context.Context, j *Job) (any, error) {
			return nil, SkipRetry(errors.New("bad input"))
		})
		w.Register("after", func(ctx context.Context, j *Job) (any, error) {
			if j.Attempt == 1 {
				return nil, RetryAfter(10*time.Millisecond, errors.New("rate limited"))
			}
			return j.Attempt, nil
		})
		runBurst(t, w)
		got, _ := q.FetchJob(ctx, skip.ID)
		if got.Status != StatusFailed || got.Attempt != 1 || got.Error != "bad input" {
			t.Errorf("SkipRetry job = %s attempt %d error %q, want failed after 1 attempt with %q", got.Status, got.Attempt, got.Error, "bad input")
		}
		got, _ = q.FetchJob(ctx, after.ID)
		if got.Status != StatusFinished || string(got.Result) != "2" {
			t.Errorf("RetryAfter job = %s result %s, want finished on attempt 2 (RetryAfter overrides the 1h interval)", got.Status, got.Result)
		}
	})
}

func TestTimeoutFailsAttempt(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		job, _ := q.EnqueueContext(ctx, "slow", nil, Retry(0), Timeout(50*time.Millisecond))
		w := e.worker(t, WorkerOptions{})
		cause := make(chan error, 1)
		w.Register("slow", func(ctx context.Context, j *Job) (any, error) {
			<-ctx.Done()
			cause <- context.Cause(ctx)
			return "too late", nil // ignored: past the deadline the attempt fails
		})
		runBurst(t, w)
		if c := <-cause; !errors.Is(c, errTimeout) {
			t.Errorf("handler context cause = %v, want the job timeout", c)
		}
		got, _ := q.FetchJob(ctx, job.ID)
		if got.Status != StatusFailed || !strings.Contains(got.Error, "timeout after 50ms") {
			t.Errorf("job = %s error %q, want failed with a timeout", got.Status, got.Error)
		}
	})
}

func TestWorkerDefaultTimeout(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		q := e.queue("default")
		job, _ := q.EnqueueContext(t.Context(), "slow", nil, Retry(0))
		w := e.worker(t, WorkerOptions{Timeout: 30 * time.Millisecond})
		w.Register("slow", func(ctx context.Context, j *Job) (any, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		})
		runBurst(t, w)
		got, _ := q.FetchJob(t.Context(), job.ID)
		if got.Status != StatusFailed || !strings.Contains(got.Error, "timeout after 30ms") {
			t.Errorf("job = %s error %q, want failed with the worker's 30ms timeout", got.Status, got.Error)
		}
	})
}

func TestPanicIsAFailedAttempt(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		bad, _ := q.EnqueueContext(ctx, "panics", nil, Retry(0))
		good, _ := q.EnqueueContext(ctx, "ok", nil)
		w := e.worker(t, WorkerOptions{Concurrency: 1})
		w.Register("panics", func(ctx context.Context, j *Job) (any, error) { panic("kaboom") })
		w.Register("ok", func(ctx context.Context, j *Job) (any, error) { return 1, nil })
		runBurst(t, w)
		got, _ := q.FetchJob(ctx, bad.ID)
		if got.Status != StatusFailed || !strings.Contains(got.Error, "panic: kaboom") || !strings.Contains(got.Error, "goroutine") {
			t.Errorf("panicking job = %s error %q, want failed with the panic and its stack", got.Status, got.Error)
		}
		if got, _ := q.FetchJob(ctx, good.ID); got.Status != StatusFinished {
			t.Errorf("job after the panic = %s, want finished (the worker keeps going)", got.Status)
		}
	})
}

func TestUnknownFunctionFailsWithoutRetry(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		job, _ := q.EnqueueContext(ctx, "x", nil, Retry(5))
		w := e.worker(t, WorkerOptions{})
		runBurst(t, w)
		got, _ := q.FetchJob(ctx, job.ID)
		if got.Status != StatusFailed || got.Attempt != 1 || !strings.Contains(got.Error, `unknown function "x"`) {
			t.Errorf("job = %s attempt %d error %q, want failed once with unknown function \"x\"", got.Status, got.Attempt, got.Error)
		}
	})
}

func TestStrictPriority(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		high, low := e.queue("high"), e.queue("low")
		for i := range 5 {
			low.EnqueueContext(ctx, "rec", "low")
			high.EnqueueContext(ctx, "rec", "high")
			_ = i
		}
		w := e.worker(t, WorkerOptions{Queues: []string{"high", "low"}, Concurrency: 1})
		var order []string
		RegisterFunc(w, "rec", func(ctx context.Context, s string) (any, error) {
			order = append(order, s) // Concurrency 1: one handler at a time
			return nil, nil
		})
		runBurst(t, w)
		want := "high high high high high low low low low low"
		if got := strings.Join(order, " "); got != want {
			t.Errorf("run order = %s, want %s", got, want)
		}
	})
}

func TestConcurrencyLimit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		const jobs, limit = 40, 4
		for range jobs {
			if _, err := q.EnqueueContext(ctx, "work", nil); err != nil {
				t.Fatal(err)
			}
		}
		w := e.worker(t, WorkerOptions{Concurrency: limit})
		var cur, peak, done atomic.Int32
		full := make(chan struct{})
		var once sync.Once
		w.Register("work", func(ctx context.Context, j *Job) (any, error) {
			n := cur.Add(1)
			defer cur.Add(-1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			if n == limit {
				once.Do(func() { close(full) })
			}
			// The first handlers hold their slots until all four run at once,
			// so the test sees the limit reached, not just respected.
			if done.Add(1) <= limit {
				select {
				case <-full:
				case <-ctx.Done():
				}
			}
			return nil, nil
		})
		runBurst(t, w)
		if p := peak.Load(); p != limit {
			t.Errorf("peak concurrent handlers = %d, want exactly %d", p, limit)
		}
		if c, _ := q.Counts(ctx); c.Finished != jobs {
			t.Errorf("finished = %d, want %d", c.Finished, jobs)
		}
	})
}

func TestResultTTL(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		keep, _ := q.EnqueueContext(ctx, "f", nil)
		short, _ := q.EnqueueContext(ctx, "f", nil, ResultTTL(200*time.Millisecond))
		none, _ := q.EnqueueContext(ctx, "f", nil, ResultTTL(0))
		forever, _ := q.EnqueueContext(ctx, "f", nil, ResultTTL(-1))
		w := e.worker(t, WorkerOptions{})
		w.Register("f", func(ctx context.Context, j *Job) (any, error) { return "r", nil })
		runBurst(t, w)

		ttl := func(id string) time.Duration { return e.rdb.PTTL(ctx, q.k.job(id)).Val() }
		if d := ttl(keep.ID); d < DefaultResultTTL-time.Minute || d > DefaultResultTTL {
			t.Errorf("default result TTL = %v, want about %v", d, DefaultResultTTL)
		}
		if d := ttl(forever.ID); d != -1 {
			t.Errorf("ResultTTL(-1) TTL = %v, want none (-1)", d)
		}
		if _, err := q.FetchJob(ctx, none.ID); !errors.Is(err, ErrJobNotFound) {
			t.Errorf("ResultTTL(0) job still readable: err = %v", err)
		}
		if got, _ := q.FetchJob(ctx, short.ID); got == nil || got.Status != StatusFinished {
			t.Fatalf("short-TTL job not finished before its TTL")
		}
		if e.mr != nil {
			e.mr.FastForward(time.Second)
		} else {
			waitGone(t, e, q.k.job(short.ID))
		}
		if _, err := q.FetchJob(ctx, short.ID); !errors.Is(err, ErrJobNotFound) {
			t.Errorf("job past its result TTL: err = %v, want ErrJobNotFound", err)
		}
		// The next reap drops the expired job from the finished registry.
		e.rdb.Del(ctx, q.k.reaper()) // the burst worker reaped a moment ago
		e.worker(t, WorkerOptions{}).reap(ctx)
		ids, _ := q.JobIDs(ctx, StatusFinished, 0, 10)
		if len(ids) != 2 {
			t.Errorf("finished registry = %v, want the 2 jobs still kept", ids)
		}
	})
}

// waitGone polls until Redis expires key.
func waitGone(t *testing.T, e *testEnv, key string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for e.rdb.Exists(t.Context(), key).Val() == 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not expire", key)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestInvalidWorkerOptions(t *testing.T) {
	e := newMiniEnv(t)
	for _, tc := range []struct {
		name string
		o    WorkerOptions
		want string
	}{
		{"bad queue", WorkerOptions{Queues: []string{"a b"}}, `queue name "a b"`},
		{"duplicate queue", WorkerOptions{Queues: []string{"a", "a"}}, `queue "a" listed twice`},
		{"negative concurrency", WorkerOptions{Concurrency: -1}, "concurrency"},
		{"tiny lease", WorkerOptions{Lease: time.Millisecond}, "lease"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := e.worker(t, tc.o).Run(t.Context())
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Run = %v, want ErrInvalid mentioning %q", err, tc.want)
			}
		})
	}
	w := e.worker(t, WorkerOptions{})
	w.Register("", func(ctx context.Context, j *Job) (any, error) { return nil, nil })
	if err := w.Run(t.Context()); !errors.Is(err, ErrInvalid) {
		t.Errorf("Run after Register(\"\") = %v, want ErrInvalid", err)
	}
}

// An idle worker is woken by enqueue on any of its queues: with its idle
// wait made an hour long, only a wake-up can start these jobs.
func TestIdleWorkerWakesForEachQueue(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		w := e.worker(t, WorkerOptions{Queues: []string{"a", "b", "c"}})
		w.maxBlock = time.Hour
		// Wait until the worker is blocked, so the wake-up is what starts each job.
		stop := expectWakeUps(t, e, w, []string{"c", "a", "b", "c"}, func() { waitBlocked(t, e, 1) })
		// Shutdown wakes the worker too: stop returns without the hour passing.
		stop()
	})
}

// expectWakeUps starts w, whose idle wait must be too long for any job to
// start without a wake-up, and enqueues one job to each queue of names in
// turn, each after blocked returns (the worker waits in Redis again). Each
// job must start before the next is enqueued. It returns w's stop.
func expectWakeUps(t *testing.T, e *testEnv, w *Worker, names []string, blocked func()) (stop func()) {
	t.Helper()
	ran := make(chan string)
	RegisterFunc(w, "f", func(ctx context.Context, s string) (any, error) {
		ran <- s
		return nil, nil
	})
	stop = start(t, w)
	for _, name := range names {
		blocked()
		if _, err := e.queue(name).EnqueueContext(t.Context(), "f", name); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-ran:
			if got != name {
				t.Fatalf("ran a job of %s, want %s", got, name)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("job enqueued to idle queue %s never started: no wake-up", name)
		}
	}
	return stop
}

// waitBlocked polls until n client connections are blocked in BLPOP.
func waitBlocked(t *testing.T, e *testEnv, n int) {
	t.Helper()
	if e.mr != nil {
		return // miniredis does not report blocked clients; the wake token covers the race
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		info := e.rdb.Info(t.Context(), "clients").Val()
		if strings.Contains(info, fmt.Sprintf("blocked_clients:%d\r", n)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker never blocked in Redis: %s", info)
		}
		time.Sleep(time.Millisecond)
	}
}
