package rqgo

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// A handler's progress and named values are stored as it reports them,
// names merged, and kept once the job has ended.
func TestProgressAndMeta(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		j, err := q.EnqueueContext(ctx, "import", nil)
		if err != nil {
			t.Fatal(err)
		}
		seen := make(chan *Job, 1)
		w := e.worker(t, WorkerOptions{})
		w.Register("import", func(ctx context.Context, j *Job) (any, error) {
			if err := j.SetProgress(ctx, 40); err != nil {
				return nil, err
			}
			// Two writers of different names lose nothing.
			var wg sync.WaitGroup
			errs := make(chan error, 2)
			for name, v := range map[string]any{"rows": 12000, "stage": "load"} {
				wg.Go(func() { errs <- j.SetMeta(ctx, name, v) })
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					return nil, err
				}
			}
			mid, err := q.FetchJob(ctx, j.ID)
			if err != nil {
				return nil, err
			}
			seen <- mid
			return nil, j.SetProgress(ctx, map[string]int{"done": 50000, "total": 50000})
		})
		start(t, w)
		mid := <-seen
		if string(mid.Progress) != "40" || string(mid.Meta["rows"]) != "12000" || string(mid.Meta["stage"]) != `"load"` {
			t.Errorf("while running: progress %s, meta %s", mid.Progress, mid.Meta)
		}
		got := waitJob(t, q, j.ID, StatusFinished)
		if string(got.Progress) != `{"done":50000,"total":50000}` || len(got.Meta) != 2 {
			t.Errorf("after the end: progress %s, meta %s", got.Progress, got.Meta)
		}
		if v := e.rdb.HGet(ctx, q.k.job(j.ID), "meta:rows").Val(); v != "12000" {
			t.Errorf("field meta:rows = %q", v)
		}
	})
}

// Bad values and calls outside a running attempt are errors that name the
// problem, and write nothing; an attempt that lost its lease writes nothing
// either.
func TestProgressBadInput(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		j, err := q.EnqueueContext(ctx, "f", nil)
		if err != nil {
			t.Fatal(err)
		}
		errs := make(chan []error, 1)
		w := e.worker(t, WorkerOptions{})
		w.Register("f", func(ctx context.Context, j *Job) (any, error) {
			var got []error
			got = append(got,
				j.SetProgress(ctx, make(chan int)),
				j.SetProgress(ctx, strings.Repeat("x", MaxProgressSize)),
				j.SetProgress(ctx, json.RawMessage(`{"a":`)),
				j.SetMeta(ctx, "", 1),
				j.SetMeta(ctx, "two words", 1),
			)
			// Another attempt took the job over.
			e.rdb.HSet(ctx, q.k.job(j.ID), "token", "other")
			got = append(got, j.SetProgress(ctx, 1))
			e.rdb.HSet(ctx, q.k.job(j.ID), "token", j.token)
			errs <- got
			return nil, nil
		})
		start(t, w)
		got := <-errs
		wants := []string{"does not encode to JSON", "over the 65536-byte limit", "not valid JSON", "meta name is empty", "meta name \"two words\""}
		for i, want := range wants {
			if !errors.Is(got[i], ErrInvalid) || !strings.Contains(got[i].Error(), want) {
				t.Errorf("bad input %d: %v, want ErrInvalid saying %q", i, got[i], want)
			}
		}
		if !errors.Is(got[5], ErrLeaseLost) {
			t.Errorf("progress after the lease was lost: %v, want ErrLeaseLost", got[5])
		}
		done := waitJob(t, q, j.ID, StatusFinished)
		if done.Progress != nil || done.Meta != nil {
			t.Errorf("refused writes wrote progress %s, meta %v", done.Progress, done.Meta)
		}
		if err := done.SetProgress(ctx, 1); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "not a running attempt") {
			t.Errorf("SetProgress on a fetched job: %v", err)
		}
	})
}

// A handler that outlives its worker's shutdown gets an error from
// SetProgress, not a call that never returns.
func TestProgressAfterTheWorkerStopped(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		if _, err := q.EnqueueContext(ctx, "stubborn", nil); err != nil {
			t.Fatal(err)
		}
		started := make(chan *Job, 1)
		w := e.worker(t, WorkerOptions{ShutdownTimeout: time.Millisecond})
		w.Register("stubborn", func(ctx context.Context, j *Job) (any, error) {
			started <- j
			select {} // ignores its context
		})
		stop := start(t, w)
		j := <-started
		stop()
		done := make(chan error, 1)
		go func() { done <- j.SetProgress(context.Background(), 1) }()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("SetProgress after the worker stopped = nil")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("SetProgress after the worker stopped did not return")
		}
	})
}
