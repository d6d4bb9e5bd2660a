package rqgo

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// One ack_many.lua call records a batch of successes; a job in the batch
// whose token is stale, or whose key is no longer a hash, is skipped and
// left as it is, and the others are recorded.
func TestBatchedAckSkipsStaleToken(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		for range 4 {
			if _, err := q.EnqueueContext(ctx, "f", nil); err != nil {
				t.Fatal(err)
			}
		}
		w := e.worker(t, WorkerOptions{})
		w.handlerBase = ctx
		jobs, _, _, err := w.fetch(ctx, 4)
		if err != nil || len(jobs) != 4 {
			t.Fatalf("fetch = %d jobs, %v; want 4", len(jobs), err)
		}
		// In fetch order, so that refused jobs come before recorded ones.
		batch := make([]*outcome, len(jobs))
		w.mu.Lock()
		for r := range w.running {
			r.cancel(context.Canceled) // no handler runs: the outcomes are built here
			i := slices.IndexFunc(jobs, func(j *Job) bool { return j.ID == r.job.ID })
			batch[i] = &outcome{r: r, result: []byte(`"ok ` + r.job.ID + `"`)}
		}
		w.mu.Unlock()
		stale, damaged := jobs[1], jobs[2]
		e.rdb.HSet(ctx, q.k.job(stale.ID), "token", "another attempt")
		e.rdb.Del(ctx, q.k.job(damaged.ID))
		e.rdb.Set(ctx, q.k.job(damaged.ID), "not a hash", 0)

		if retry := w.settle(ctx, batch); len(retry) != 0 {
			t.Fatalf("settle left %d outcomes to retry, want 0", len(retry))
		}
		w.mu.Lock()
		left := len(w.running)
		w.mu.Unlock()
		if left != 0 {
			t.Errorf("%d runs left after settle, want 0: every run ends", left)
		}
		for _, j := range []*Job{jobs[0], jobs[3]} {
			got, err := q.FetchJob(ctx, j.ID)
			if err != nil || got.Status != StatusFinished || string(got.Result) != `"ok `+j.ID+`"` {
				t.Errorf("job %s = %v, %v; want finished with its result", j.ID, got, err)
			}
			if s, _ := e.rdb.ZScore(ctx, q.k.finished(), j.ID).Result(); s == 0 {
				t.Errorf("job %s is not in the finished registry", j.ID)
			}
		}
		got, err := q.FetchJob(ctx, stale.ID)
		if err != nil || got.Status != StatusStarted || len(got.Result) != 0 || got.token != "another attempt" {
			t.Errorf("stale job = %+v, %v; want untouched: started, no result, the other attempt's token", got, err)
		}
		for _, j := range []*Job{stale, damaged} {
			if err := e.rdb.ZScore(ctx, q.k.active(), j.ID).Err(); err != nil {
				t.Errorf("refused job %s left the active set: %v", j.ID, err)
			}
		}
		if s := e.rdb.Get(ctx, q.k.job(damaged.ID)).Val(); s != "not a hash" {
			t.Errorf("damaged key = %q, want untouched", s)
		}
		if c, _ := q.Counts(ctx); c.Finished != 2 || c.Started != 2 {
			t.Errorf("Counts = %+v, want 2 finished and 2 still started", c)
		}
	})
}

// The next fetch goes out while the acks of the last one are on their way:
// with one slot and no prefetch, a second job runs while the first job's
// ack is held up, and the rest run once the acks get through.
func TestFetchGoesOutWhileAcksAreOnTheirWay(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		jobs, err := q.EnqueueMany(ctx, []EnqueueRequest{{Func: "f", Args: 1}, {Func: "f", Args: 2}, {Func: "f", Args: 3}})
		if err != nil {
			t.Fatal(err)
		}
		gate := &ackGate{acking: make(chan struct{}, 10), release: make(chan struct{})}
		e.rdb.AddHook(gate)
		w := e.worker(t, WorkerOptions{Concurrency: 1, Prefetch: -1})
		ran := make(chan string, 10)
		w.Register("f", func(ctx context.Context, j *Job) (any, error) {
			ran <- j.ID
			return nil, nil
		})
		start(t, w)
		// Cleanups run last first: the acks get through before the worker stops.
		release := sync.OnceFunc(func() { close(gate.release) })
		t.Cleanup(release)
		expect := func(id, what string) {
			t.Helper()
			select {
			case got := <-ran:
				if got != id {
					t.Fatalf("%s: job %s ran, want %s", what, got, id)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: job %s did not run within 10s", what, id)
			}
		}
		expect(jobs[0].ID, "first job")
		<-gate.acking // its ack is on its way, and held there
		expect(jobs[1].ID, "while the first ack is on its way")
		release()
		expect(jobs[2].ID, "after the acks got through")
		for _, j := range jobs {
			waitJob(t, q, j.ID, StatusFinished)
		}
	})
}

// Outcomes not yet sent hold fetching back once as many wait as the worker
// can hold; those in the batch being written do not count.
func TestUnsentOutcomesHoldFetchingBack(t *testing.T) {
	e := newMiniEnv(t)
	w := e.worker(t, WorkerOptions{Concurrency: 2, Prefetch: -1})
	for _, c := range []struct {
		settling, acking int64
		want             int
	}{
		{0, 0, 2},
		{1, 0, 2}, // a slot frees when its handler returns
		{2, 0, 0}, // two outcomes wait: as many as the worker holds
		{2, 2, 2}, // both on their way
		{3, 2, 2},
		{4, 2, 0}, // two wait behind the batch on its way
	} {
		w.settling.Store(c.settling)
		w.acking.Store(c.acking)
		if got, _ := w.want(0); got != c.want {
			t.Errorf("%d outcomes unrecorded, %d on their way: want() = %d, want %d", c.settling, c.acking, got, c.want)
		}
	}
}

// ackGate holds every ack_many.lua call until release is closed, after
// sending on acking (when it has room).
type ackGate struct {
	acking  chan struct{}
	release chan struct{}
}

func (g *ackGate) hold() {
	select {
	case g.acking <- struct{}{}:
	default:
	}
	<-g.release
}

func (g *ackGate) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g *ackGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if ackJobs(cmd) > 0 {
			g.hold()
		}
		return next(ctx, cmd)
	}
}

func (g *ackGate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			if ackJobs(cmd) > 0 {
				g.hold()
				break
			}
		}
		return next(ctx, cmds)
	}
}
