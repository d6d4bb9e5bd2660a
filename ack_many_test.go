package rqgo

import (
	"context"
	"testing"
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
		var batch []*outcome
		w.mu.Lock()
		for r := range w.running {
			r.cancel(context.Canceled) // no handler runs: the outcomes are built here
			batch = append(batch, &outcome{r: r, result: []byte(`"ok ` + r.job.ID + `"`)})
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
