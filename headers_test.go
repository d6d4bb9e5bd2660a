package rqgo

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// Headers travel with the job to its handler and are readable in its hash;
// enqueue middleware sees each job before it is written and the outcome
// after, for Enqueue and EnqueueMany.
func TestHeadersAndEnqueueMiddleware(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		var seen []string
		var outcomes []error
		stamp := func(next EnqueueFunc) EnqueueFunc {
			return func(ctx context.Context, jobs []*Job) error {
				for _, j := range jobs {
					if j.Headers == nil {
						j.Headers = map[string]string{}
					}
					j.Headers["request-id"] = "req-" + j.Func
					seen = append(seen, j.Func+":"+j.ID)
				}
				err := next(ctx, jobs)
				outcomes = append(outcomes, err)
				return err
			}
		}
		q := e.queue("default", WithEnqueueMiddleware(stamp))
		j, err := q.EnqueueContext(ctx, "one", nil, Headers(map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}))
		if err != nil {
			t.Fatal(err)
		}
		if len(seen) != 1 || seen[0] != "one:"+j.ID || outcomes[0] != nil {
			t.Fatalf("middleware saw %v, outcomes %v", seen, outcomes)
		}
		if h := e.rdb.HGet(ctx, q.k.job(j.ID), "headers").Val(); h != `{"request-id":"req-one","traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}` {
			t.Errorf("headers field = %s", h)
		}
		jobs, err := q.EnqueueMany(ctx, []EnqueueRequest{
			{Func: "two"}, {Func: "bad name"}, {Func: "three", Options: []EnqueueOption{JobID(j.ID)}},
		})
		var me *EnqueueManyError
		if !errors.As(err, &me) || me.Errs[0] != nil || me.Errs[1] == nil || !errors.Is(me.Errs[2], ErrJobExists) {
			t.Fatalf("EnqueueMany: %v", err)
		}
		// The middleware saw the two valid requests, and their outcomes.
		var be *EnqueueManyError
		if len(seen) != 3 || !errors.As(outcomes[1], &be) || len(be.Errs) != 2 || be.Errs[0] != nil || !errors.Is(be.Errs[1], ErrJobExists) {
			t.Errorf("middleware saw %v, outcome %v", seen, outcomes[1])
		}
		got := make(chan map[string]string, 2)
		w := e.worker(t, WorkerOptions{})
		for _, f := range []string{"one", "two"} {
			w.Register(f, func(ctx context.Context, j *Job) (any, error) { got <- j.Headers; return nil, nil })
		}
		start(t, w)
		for range 2 {
			h := <-got
			if !strings.HasPrefix(h["request-id"], "req-") {
				t.Errorf("handler saw headers %v", h)
			}
		}
		if f, _ := q.FetchJob(ctx, jobs[0].ID); f.Headers["request-id"] != "req-two" {
			t.Errorf("FetchJob headers %v", f.Headers)
		}
		// A bad header name is refused and nothing is written.
		if _, err := q.EnqueueContext(ctx, "one", nil, Headers(map[string]string{"two words": "x"})); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "header name") {
			t.Errorf("bad header name: %v", err)
		}
		if _, err := q.EnqueueContext(ctx, "one", nil, Headers(map[string]string{"big": strings.Repeat("x", MaxHeadersSize)})); !errors.Is(err, ErrInvalid) {
			t.Errorf("oversized headers: %v", err)
		}
		if c, _ := q.Counts(ctx); c.Queued+c.Started+c.Finished != 2 {
			t.Errorf("counts %+v: refused enqueues wrote jobs", c)
		}
	})
}

// Middleware that refuses a call without writing makes every job of it an
// error, and writes nothing; one that returns nil without calling next is
// an error too.
func TestEnqueueMiddlewareThatDoesNotWrite(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		refused := errors.New("quota exceeded")
		refuse := func(next EnqueueFunc) EnqueueFunc {
			return func(ctx context.Context, jobs []*Job) error { return refused }
		}
		swallow := func(next EnqueueFunc) EnqueueFunc {
			return func(ctx context.Context, jobs []*Job) error { return nil }
		}
		q := e.queue("default", WithEnqueueMiddleware(refuse))
		if j, err := q.EnqueueContext(ctx, "f", nil); !errors.Is(err, refused) || j != nil {
			t.Errorf("Enqueue through a refusing middleware = %v, %v", j, err)
		}
		jobs, err := q.EnqueueMany(ctx, []EnqueueRequest{{Func: "f"}, {Func: "g"}})
		var me *EnqueueManyError
		if !errors.As(err, &me) || !errors.Is(me.Errs[0], refused) || !errors.Is(me.Errs[1], refused) || jobs[0] != nil || jobs[1] != nil {
			t.Errorf("EnqueueMany through a refusing middleware = %v, %v", jobs, err)
		}
		s := e.queue("default", WithEnqueueMiddleware(swallow))
		if _, err := s.EnqueueContext(ctx, "f", nil); err == nil || !strings.Contains(err.Error(), "without writing") {
			t.Errorf("Enqueue through a middleware that skips next: %v", err)
		}
		if c, _ := q.Counts(ctx); c.Queued != 0 {
			t.Errorf("%d jobs written", c.Queued)
		}
	})
}
