package rqgo

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
)

// Middleware runs around every handler, those registered before Use and
// after it, the first added outermost; each handler is wrapped once.
func TestMiddlewareOrder(t *testing.T) {
	e := newMiniEnv(t)
	q := e.queue("default")
	w := e.worker(t, WorkerOptions{Concurrency: 1, Burst: true})
	var (
		mu    sync.Mutex
		trace []string
		wraps = map[string]int{}
	)
	log := func(s string) { mu.Lock(); trace = append(trace, s); mu.Unlock() }
	tag := func(name string) Middleware {
		return func(next Handler) Handler {
			mu.Lock()
			wraps[name]++
			mu.Unlock()
			return HandlerFunc(func(ctx context.Context, j *Job) (any, error) {
				log(name + ">" + j.Func)
				defer log(name + "<" + j.Func)
				return next.ProcessJob(ctx, j)
			})
		}
	}
	w.Register("early", func(ctx context.Context, j *Job) (any, error) { log("early"); return nil, nil })
	w.Use(tag("a"), tag("b"))
	w.Register("late", func(ctx context.Context, j *Job) (any, error) { log("late"); return nil, nil })
	for _, fn := range []string{"early", "late", "late"} {
		if _, err := q.EnqueueContext(t.Context(), fn, nil); err != nil {
			t.Fatal(err)
		}
	}
	runBurst(t, w)
	want := []string{
		"a>early", "b>early", "early", "b<early", "a<early",
		"a>late", "b>late", "late", "b<late", "a<late",
		"a>late", "b>late", "late", "b<late", "a<late",
	}
	if !slices.Equal(trace, want) {
		t.Errorf("calls = %v\nwant %v", trace, want)
	}
	// Two functions, each wrapped once by each middleware.
	if wraps["a"] != 2 || wraps["b"] != 2 {
		t.Errorf("middleware constructors called %v times, want 2 each (once per function)", wraps)
	}
}

// What middleware returns is the attempt's outcome; a panic in it fails
// the attempt like a handler's; an unknown function never reaches it, and a
// nil middleware makes Run fail.
func TestMiddlewareOutcomes(t *testing.T) {
	e := newMiniEnv(t)
	ctx := t.Context()
	q := e.queue("default")
	w := e.worker(t, WorkerOptions{Burst: true})
	var reached sync.Map
	w.Use(func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, j *Job) (any, error) {
			reached.Store(j.Func, true)
			switch j.Func {
			case "veto":
				return nil, SkipRetry(errors.New("vetoed by middleware"))
			case "boom":
				panic("middleware blew up")
			}
			res, err := next.ProcessJob(ctx, j)
			return map[string]any{"wrapped": res}, err
		})
	})
	w.Register("ok", func(ctx context.Context, j *Job) (any, error) { return 7, nil })
	w.Register("veto", func(ctx context.Context, j *Job) (any, error) { return nil, nil })
	w.Register("boom", func(ctx context.Context, j *Job) (any, error) { return nil, nil })
	ids := map[string]string{}
	for _, fn := range []string{"ok", "veto", "boom", "missing"} {
		j, err := q.EnqueueContext(ctx, fn, nil, Retry(0))
		if err != nil {
			t.Fatal(err)
		}
		ids[fn] = j.ID
	}
	runBurst(t, w)

	for _, c := range []struct {
		fn, status, result, err string
	}{
		{"ok", "finished", `{"wrapped":7}`, ""},
		{"veto", "failed", "", "vetoed by middleware"},
		{"boom", "failed", "", "panic: middleware blew up"},
		{"missing", "failed", "", `unknown function "missing"`},
	} {
		j, err := q.FetchJob(ctx, ids[c.fn])
		if err != nil {
			t.Fatal(err)
		}
		if string(j.Status) != c.status || string(j.Result) != c.result || !strings.Contains(j.Error, c.err) {
			t.Errorf("%s: status %s result %s error %q; want %s %s %q", c.fn, j.Status, j.Result, j.Error, c.status, c.result, c.err)
		}
	}
	if _, ok := reached.Load("missing"); ok {
		t.Error("a job of an unknown function reached the middleware")
	}

	bad := e.worker(t, WorkerOptions{Burst: true})
	bad.Use(nil)
	if err := bad.Run(ctx); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "nil middleware") {
		t.Errorf("Run with a nil middleware = %v, want ErrInvalid naming it", err)
	}
	// A middleware that cannot wrap, by panicking or by returning nil,
	// fails the attempt with the cause; the worker goes on.
	for _, c := range []struct {
		name string
		mw   Middleware
		err  string
	}{
		{"panics while wrapping", func(Handler) Handler { panic("cannot wrap") }, "panic: cannot wrap"},
		{"returns nil", func(Handler) Handler { return nil }, "middleware returned a nil handler"},
	} {
		w := e.worker(t, WorkerOptions{Burst: true})
		w.Use(c.mw)
		w.Register("ok", func(ctx context.Context, j *Job) (any, error) { return nil, nil })
		j, err := q.EnqueueContext(ctx, "ok", nil, Retry(0))
		if err != nil {
			t.Fatal(err)
		}
		runBurst(t, w)
		if got, _ := q.FetchJob(ctx, j.ID); got.Status != StatusFailed || !strings.Contains(got.Error, c.err) {
			t.Errorf("job behind a middleware that %s: %s %q, want failed with %q", c.name, got.Status, got.Error, c.err)
		}
	}
}
