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

	"github.com/redis/go-redis/v9"
)

// beforeScript runs f once, just before the first call of script s goes
// out on the client it hooks: the race it stands for then happens for sure.
type beforeScript struct {
	s    *script
	f    func()
	once sync.Once
}

func (h *beforeScript) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *beforeScript) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.check(cmd)
		return next(ctx, cmd)
	}
}

func (h *beforeScript) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			h.check(cmd)
		}
		return next(ctx, cmds)
	}
}

func (h *beforeScript) check(cmd redis.Cmder) {
	a := cmd.Args()
	if len(a) < 2 || !strings.HasPrefix(strings.ToLower(fmt.Sprint(a[0])), "eval") {
		return
	}
	if sha := fmt.Sprint(a[1]); sha == h.s.full.sha || sha == h.s.bare.sha || sha == h.s.full.src || sha == h.s.bare.src {
		h.once.Do(h.f)
	}
}

// blocker is a handler that runs until its context ends and returns the
// cause, after telling started.
func blocker(started chan<- *Job) HandlerFunc {
	return func(ctx context.Context, j *Job) (any, error) {
		started <- j
		<-ctx.Done()
		return nil, context.Cause(ctx)
	}
}

// Cancel of a running job ends its handler's context with ErrCanceled on
// the worker that runs it, and the job ends canceled, no retry left or
// not, with its dependents canceled too.
func TestCancelRunningJob(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		j, err := q.EnqueueContext(ctx, "export", nil, Retry(5))
		if err != nil {
			t.Fatal(err)
		}
		child, err := q.EnqueueContext(ctx, "after", nil, DependsOn(j))
		if err != nil {
			t.Fatal(err)
		}
		started := make(chan *Job, 1)
		causes := make(chan error, 1)
		w := e.worker(t, WorkerOptions{})
		w.Register("export", func(ctx context.Context, j *Job) (any, error) {
			started <- j
			<-ctx.Done()
			causes <- context.Cause(ctx)
			return nil, ctx.Err()
		})
		start(t, w)
		<-started
		asked := time.Now()
		if err := q.Cancel(ctx, j.ID); err != nil {
			t.Fatalf("Cancel of a running job: %v", err)
		}
		if c := <-causes; !errors.Is(c, ErrCanceled) {
			t.Fatalf("handler's context cause = %v, want ErrCanceled", c)
		}
		t.Logf("handler told %v after Cancel", time.Since(asked).Round(time.Microsecond))
		got := waitJob(t, q, j.ID, StatusCanceled)
		if got.Attempt != 1 || !strings.Contains(got.Error, "canceled while running") {
			t.Errorf("canceled job: attempt %d, error %q", got.Attempt, got.Error)
		}
		if c := waitJob(t, q, child.ID, StatusCanceled); !strings.Contains(c.Error, "canceled") {
			t.Errorf("dependent's error %q", c.Error)
		}
		if err := q.Cancel(ctx, j.ID); !errors.Is(err, ErrNotCancelable) {
			t.Errorf("Cancel of a canceled job = %v, want ErrNotCancelable", err)
		}
	})
}

// A handler that returns a result although its job was canceled finishes
// the job: its work is done.
func TestCanceledHandlerReturningAResultFinishes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		j, err := q.EnqueueContext(ctx, "export", nil)
		if err != nil {
			t.Fatal(err)
		}
		started := make(chan struct{})
		w := e.worker(t, WorkerOptions{})
		w.Register("export", func(ctx context.Context, j *Job) (any, error) {
			close(started)
			<-ctx.Done()
			return "partial", nil
		})
		start(t, w)
		<-started
		if err := q.Cancel(ctx, j.ID); err != nil {
			t.Fatal(err)
		}
		if got := waitJob(t, q, j.ID, StatusFinished); string(got.Result) != `"partial"` {
			t.Errorf("result %s", got.Result)
		}
	})
}

// A cancel whose message was lost reaches the handler at the worker's next
// heartbeat.
func TestCancelReachesTheHandlerAtTheHeartbeat(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		j, err := q.EnqueueContext(ctx, "export", nil)
		if err != nil {
			t.Fatal(err)
		}
		started := make(chan *Job, 1)
		w := e.worker(t, WorkerOptions{Lease: 600 * time.Millisecond})
		w.Register("export", blocker(started))
		start(t, w)
		<-started
		// What cancel.lua records, without the message.
		e.rdb.HSet(ctx, q.k.job(j.ID), "cancel_requested", time.Now().UnixMilli(), "flags", "c")
		got := waitJob(t, q, j.ID, StatusCanceled)
		if !strings.Contains(got.Error, ErrCanceled.Error()) {
			t.Errorf("error %q, want the handler's cause", got.Error)
		}
	})
}

// A cancel that lands between the handler's return and its outcome's
// script ends in exactly one state: the ack's finished, the retry's
// canceled.
func TestCancelRacingTheOutcome(t *testing.T) {
	for _, c := range []struct {
		name string
		s    *script
		err  error
		want Status
	}{
		{"ack", ackManyScript, nil, StatusFinished},
		{"retry", failScript, errors.New("flaky"), StatusCanceled},
		// A cancel recorded before a failure turns it into a cancel too.
		{"fail", failScript, SkipRetry(errors.New("bad")), StatusCanceled},
	} {
		t.Run(c.name, func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, e *testEnv) {
				ctx := t.Context()
				q := e.queue("default")
				j, err := q.EnqueueContext(ctx, "f", nil, Retry(3))
				if err != nil {
					t.Fatal(err)
				}
				var cancelErr error
				var runs atomic.Int64
				e.rdb.AddHook(&beforeScript{s: c.s, f: func() { cancelErr = q.Cancel(context.Background(), j.ID) }})
				w := e.worker(t, WorkerOptions{})
				w.Register("f", func(ctx context.Context, j *Job) (any, error) { runs.Add(1); return "done", c.err })
				start(t, w)
				got := waitJob(t, q, j.ID, c.want)
				if cancelErr != nil {
					t.Errorf("Cancel during the outcome: %v", cancelErr)
				}
				if n, _ := e.rdb.ZScore(ctx, q.k.scheduled(), j.ID).Result(); n != 0 || runs.Load() != 1 {
					t.Errorf("job ran %d times; scheduled again: %v", runs.Load(), n != 0)
				}
				for st, reg := range map[Status]string{StatusFinished: q.k.finished(), StatusCanceled: q.k.canceled(), StatusFailed: q.k.failed()} {
					_, err := e.rdb.ZScore(ctx, reg, j.ID).Result()
					if in := err == nil; in != (st == got.Status) {
						t.Errorf("job %s: in the %s registry = %v", got.Status, st, in)
					}
				}
			})
		})
	}
}

// A running job whose cancel was asked and whose worker died ends canceled
// when its lease expires, not queued again; a job whose lease expired
// before the cancel is canceled from the queue.
func TestCancelRacingTheLeaseExpiry(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		reap := func() {
			t.Helper()
			e.rdb.Del(ctx, q.k.reaper())
			k := q.k
			keys := []string{k.active(), k.pending(), k.failed(), k.reaper(), k.wake(), k.jobPrefix(), k.finished(),
				k.canceled(), k.reaped(), k.outbox(), k.deferred()}
			if err := reapScript.Run(ctx, e.rdb, keys, 1000, 1000, -1, 10000).Err(); err != nil {
				t.Fatal(err)
			}
		}
		first, _ := q.EnqueueContext(ctx, "f", nil, Retry(3))
		second, _ := q.EnqueueContext(ctx, "f", nil, Retry(3))
		if ids, _, _ := dequeueRaw(t, e, q, 2); len(ids) != 2 {
			t.Fatalf("dequeued %v", ids)
		}
		// Cancel, then the lease expires.
		if err := q.Cancel(ctx, first.ID); err != nil {
			t.Fatal(err)
		}
		e.rdb.ZAdd(ctx, q.k.active(), redis.Z{Score: 1, Member: first.ID}, redis.Z{Score: 1, Member: second.ID})
		reap()
		if j, _ := q.FetchJob(ctx, first.ID); j.Status != StatusCanceled {
			t.Errorf("canceled, then reaped: %s, want canceled", j.Status)
		}
		// The lease expired and was reaped, then the cancel.
		if j, _ := q.FetchJob(ctx, second.ID); j.Status != StatusQueued {
			t.Fatalf("reaped: %s", j.Status)
		}
		if err := q.Cancel(ctx, second.ID); err != nil {
			t.Fatal(err)
		}
		if j, _ := q.FetchJob(ctx, second.ID); j.Status != StatusCanceled {
			t.Errorf("reaped, then canceled: %s, want canceled", j.Status)
		}
		if c, _ := q.Counts(ctx); c.Queued != 0 || c.Started != 0 || c.Canceled != 2 {
			t.Errorf("counts %+v, want both canceled and nothing else", c)
		}
	})
}

// A job canceled while running and then requeued runs its next attempt in
// full: the old cancel is done with.
func TestRequeueAfterCancelOfARunningJob(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		j, err := q.EnqueueContext(ctx, "f", nil)
		if err != nil {
			t.Fatal(err)
		}
		started := make(chan *Job, 2)
		release := make(chan struct{})
		w := e.worker(t, WorkerOptions{Lease: 600 * time.Millisecond})
		var runs atomic.Int64
		w.Register("f", func(ctx context.Context, j *Job) (any, error) {
			started <- j
			if runs.Add(1) == 1 { // Requeue resets the attempt count
				<-ctx.Done()
				return nil, context.Cause(ctx)
			}
			select {
			case <-release:
				return "second", nil
			case <-ctx.Done():
				return nil, context.Cause(ctx)
			}
		})
		start(t, w)
		<-started
		if err := q.Cancel(ctx, j.ID); err != nil {
			t.Fatal(err)
		}
		waitJob(t, q, j.ID, StatusCanceled)
		if n, err := q.Requeue(ctx, j.ID); err != nil || n != 1 {
			t.Fatalf("Requeue = %d, %v", n, err)
		}
		<-started
		// Two heartbeats (Lease/3 each) pass with the second attempt running.
		deadline := time.Now().Add(500 * time.Millisecond)
		for time.Now().Before(deadline) {
			if got, _ := q.FetchJob(ctx, j.ID); got.Status != StatusStarted {
				t.Fatalf("requeued job %s while its handler runs (error %q)", got.Status, got.Error)
			}
			time.Sleep(20 * time.Millisecond)
		}
		close(release)
		if got := waitJob(t, q, j.ID, StatusFinished); string(got.Result) != `"second"` {
			t.Errorf("result %s", got.Result)
		}
	})
}
