package rqgo

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"
)

func TestEnqueueRunsToFinished(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		job, err := q.EnqueueContext(ctx, "add", map[string]int{"a": 2, "b": 3})
		if err != nil {
			t.Fatal(err)
		}
		if job.Status != StatusQueued || job.ID == "" || job.CreatedAt.IsZero() {
			t.Fatalf("Enqueue = %+v, want a queued job with id and creation time", job)
		}
		got, err := q.FetchJob(ctx, job.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != StatusQueued || got.Func != "add" || string(got.Args) != `{"a":2,"b":3}` {
			t.Fatalf("FetchJob = %+v, want queued add with its args", got)
		}

		w := e.worker(t, WorkerOptions{})
		RegisterFunc(w, "add", func(ctx context.Context, a struct{ A, B int }) (int, error) {
			return a.A + a.B, nil
		})
		runBurst(t, w)

		got, err = q.FetchJob(ctx, job.ID)
		if err != nil {
			t.Fatal(err)
		}
		var sum int
		if err := got.DecodeResult(&sum); err != nil {
			t.Fatal(err)
		}
		if got.Status != StatusFinished || sum != 5 || got.Attempt != 1 || got.Worker != w.ID() {
			t.Errorf("job = status %s result %d attempt %d worker %q, want finished 5 1 %q", got.Status, sum, got.Attempt, got.Worker, w.ID())
		}
		if got.StartedAt.Before(got.EnqueuedAt) || got.EndedAt.Before(got.StartedAt) {
			t.Errorf("timestamps out of order: enqueued %v started %v ended %v", got.EnqueuedAt, got.StartedAt, got.EndedAt)
		}
		c, err := q.Counts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if c != (Counts{Finished: 1}) {
			t.Errorf("Counts = %+v, want one finished", c)
		}
	})
}

func TestJobIDCollision(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		if _, err := q.EnqueueContext(ctx, "f", 1, JobID("img-42")); err != nil {
			t.Fatal(err)
		}
		_, err := q.EnqueueContext(ctx, "g", 2, JobID("img-42"))
		if !errors.Is(err, ErrJobExists) {
			t.Fatalf("second Enqueue with the same JobID: err = %v, want ErrJobExists", err)
		}
		j, err := q.FetchJob(ctx, "img-42")
		if err != nil {
			t.Fatal(err)
		}
		if j.Func != "f" || string(j.Args) != "1" {
			t.Errorf("job after collision = %s(%s), want the original f(1)", j.Func, j.Args)
		}
		if n, _ := e.rdb.LLen(ctx, q.k.pending()).Result(); n != 1 {
			t.Errorf("pending length = %d, want 1", n)
		}
	})
}

func TestFetchJobNotFound(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		_, err := e.queue("default").FetchJob(t.Context(), "nope")
		if !errors.Is(err, ErrJobNotFound) {
			t.Errorf("FetchJob(nope) err = %v, want ErrJobNotFound", err)
		}
	})
}

func TestScheduledJobBecomesReady(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		delay := 300 * time.Millisecond
		job, err := q.EnqueueContext(ctx, "tick", nil, In(delay))
		if err != nil {
			t.Fatal(err)
		}
		if job.Status != StatusScheduled {
			t.Fatalf("status = %s, want scheduled", job.Status)
		}
		c, _ := q.Counts(ctx)
		if c.Scheduled != 1 || c.Queued != 0 {
			t.Fatalf("Counts = %+v, want one scheduled", c)
		}
		w := e.worker(t, WorkerOptions{})
		ran := make(chan struct{})
		w.Register("tick", func(ctx context.Context, j *Job) (any, error) {
			close(ran)
			return nil, nil
		})
		start(t, w)
		<-ran
		got := waitJob(t, q, job.ID, StatusFinished)
		if early := got.CreatedAt.Add(delay).Sub(got.StartedAt); early > 0 {
			t.Errorf("job started %v before it was due", early)
		}
	})
}

func TestAtInThePastRunsNow(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		j, err := e.queue("default").EnqueueContext(t.Context(), "f", nil, At(time.Now().Add(-time.Hour)))
		if err != nil {
			t.Fatal(err)
		}
		if j.Status != StatusQueued {
			t.Errorf("At(past) status = %s, want queued", j.Status)
		}
	})
}

func TestCancelRequeueEmpty(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		a, _ := q.EnqueueContext(ctx, "f", 1)
		b, _ := q.EnqueueContext(ctx, "f", 2, In(time.Hour))
		c, _ := q.EnqueueContext(ctx, "f", 3)
		for _, id := range []string{a.ID, b.ID} {
			if err := q.Cancel(ctx, id); err != nil {
				t.Fatalf("Cancel(%s): %v", id, err)
			}
			waitJob(t, q, id, StatusCanceled)
		}
		if err := q.Cancel(ctx, a.ID); !errors.Is(err, ErrNotCancelable) {
			t.Errorf("Cancel of a canceled job: err = %v, want ErrNotCancelable", err)
		}
		if err := q.Cancel(ctx, "missing"); !errors.Is(err, ErrJobNotFound) {
			t.Errorf("Cancel(missing): err = %v, want ErrJobNotFound", err)
		}
		counts, _ := q.Counts(ctx)
		if counts != (Counts{Queued: 1, Canceled: 2}) {
			t.Errorf("Counts after cancel = %+v, want 1 queued, 2 canceled", counts)
		}
		ids, _ := q.JobIDs(ctx, StatusCanceled, 0, 10)
		if len(ids) != 2 {
			t.Errorf("canceled ids = %v, want 2", ids)
		}

		n, err := q.Requeue(ctx, a.ID, c.ID)
		if err != nil || n != 1 {
			t.Fatalf("Requeue(canceled, queued) = %d, %v; want 1, nil", n, err)
		}
		waitJob(t, q, a.ID, StatusQueued)

		n, err = q.Empty(ctx)
		if err != nil || n != 2 {
			t.Fatalf("Empty = %d, %v; want 2, nil", n, err)
		}
		if _, err := q.FetchJob(ctx, c.ID); !errors.Is(err, ErrJobNotFound) {
			t.Errorf("emptied job still readable: %v", err)
		}
		counts, _ = q.Counts(ctx)
		if counts != (Counts{Canceled: 1}) {
			t.Errorf("Counts after empty = %+v, want 1 canceled", counts)
		}
	})
}

func TestJobsListing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		var want []string
		for i := range 5 {
			j, err := q.EnqueueContext(ctx, "f", i)
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, j.ID)
		}
		jobs, err := q.Jobs(ctx, StatusQueued, 1, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(jobs) != 3 {
			t.Fatalf("Jobs(queued, 1, 3) returned %d jobs, want 3", len(jobs))
		}
		for i, j := range jobs {
			if j.ID != want[i+1] {
				t.Errorf("Jobs[%d] = %s, want %s", i, j.ID, want[i+1])
			}
			var n int
			json.Unmarshal(j.Args, &n)
			if n != i+1 {
				t.Errorf("Jobs[%d] args = %d, want %d", i, n, i+1)
			}
		}
		if _, err := q.JobIDs(ctx, "bogus", 0, 1); !errors.Is(err, ErrInvalid) {
			t.Errorf("JobIDs(bogus) err = %v, want ErrInvalid", err)
		}
	})
}

func TestEmptyJobIDIsInvalid(t *testing.T) {
	e := newMiniEnv(t)
	for _, id := range []string{"", "has space", "tab\there"} {
		if _, err := e.queue("default").EnqueueContext(t.Context(), "f", nil, JobID(id)); !errors.Is(err, ErrInvalid) {
			t.Errorf("JobID(%q): err = %v, want ErrInvalid", id, err)
		}
	}
	if n := e.rdb.LLen(t.Context(), e.queue("default").k.pending()).Val(); n != 0 {
		t.Errorf("%d jobs enqueued with invalid ids, want none", n)
	}
}

// FindJob finds a job by id in whichever known queue holds it, all of them
// when one JobID was enqueued to several queues, and returns a malformed
// job as far as it reads, with the error.
func TestFindJob(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		for _, c := range []struct{ queue, id string }{{"b", "dup"}, {"a", "dup"}, {"b", "solo"}} {
			if _, err := e.queue(c.queue).EnqueueContext(ctx, "f", nil, JobID(c.id)); err != nil {
				t.Fatal(err)
			}
		}
		queuesOf := func(jobs []*Job) (qs []string) {
			for _, j := range jobs {
				qs = append(qs, j.Queue)
			}
			return qs
		}
		for _, c := range []struct {
			id     string
			queues []string
		}{{"dup", []string{"a", "b"}}, {"solo", []string{"b"}}, {"none", nil}} {
			jobs, err := FindJob(ctx, e.rdb, e.prefix, c.id)
			if err != nil || !slices.Equal(queuesOf(jobs), c.queues) {
				t.Errorf("FindJob(%s) = jobs in %v, %v; want in %v", c.id, queuesOf(jobs), err, c.queues)
			}
		}

		c := e.queue("c")
		if err := c.remember(ctx); err != nil {
			t.Fatal(err)
		}
		e.rdb.HSet(ctx, c.k.job("broken"), "id", "broken", "queue", "c", "status", "queued")
		jobs, err := FindJob(ctx, e.rdb, e.prefix, "broken")
		if !errors.Is(err, ErrMalformedJob) || len(jobs) != 1 || jobs[0].Queue != "c" {
			t.Errorf("FindJob(broken) = %v, %v; want the job in c and ErrMalformedJob", queuesOf(jobs), err)
		}
	})
}
