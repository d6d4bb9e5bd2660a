package rqgo

import (
	"reflect"
	"testing"
	"time"
)

// The job a worker's fetch builds from dequeue.lua's fixed-order reply is
// the job the hash holds, field for field.
func TestFetchedJobMatchesItsHash(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		plain, err := q.EnqueueContext(ctx, "plain", nil)
		if err != nil {
			t.Fatal(err)
		}
		full, err := q.EnqueueContext(ctx, "full", map[string]int{"n": 1}, JobID("full-1"), Retry(5),
			Timeout(time.Minute), ResultTTL(time.Hour), FailureTTL(2*time.Hour), RetryIntervals(time.Second, 3*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		// As left by an earlier attempt.
		e.rdb.HSet(ctx, q.k.job(full.ID), "attempt", 2, "error", "boom", "ended_at", 1700000000000, "result", `"old"`)

		w := e.worker(t, WorkerOptions{})
		w.handlerBase = ctx
		jobs, _, _, err := w.fetch(ctx, 10)
		if err != nil || len(jobs) != 2 {
			t.Fatalf("fetch = %d jobs, %v; want 2", len(jobs), err)
		}
		for i, want := range []*Job{plain, full} {
			got := jobs[i]
			stored, err := q.FetchJob(ctx, want.ID)
			if err != nil {
				t.Fatal(err)
			}
			// Only a fetched job is a running attempt that may report.
			if !got.leased || got.src == nil || got.src.rep == nil {
				t.Errorf("fetched job %s cannot report progress", got.ID)
			}
			cmp := *got
			cmp.leased, cmp.src = false, stored.src
			if !reflect.DeepEqual(&cmp, stored) {
				t.Errorf("fetched job\n%+v\nwant as stored\n%+v", got, stored)
			}
			if got.Status != StatusStarted || got.Worker != w.ID() || got.token == "" {
				t.Errorf("fetched job %s: status %s worker %q token %q; want started by %s with a token", got.ID, got.Status, got.Worker, got.token, w.ID())
			}
		}
		if got := jobs[1]; got.Attempt != 3 || got.MaxRetries != 5 || got.Timeout != time.Minute || got.ResultTTL != time.Hour ||
			!got.hasResultTTL || got.FailureTTL != 2*time.Hour || got.Error != "boom" || got.Backoff == "" {
			t.Errorf("fetched job %+v lacks an option it was enqueued with", got)
		}
	})
}
