package rqgo

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// order records the order in which handlers ran.
type order struct {
	mu  sync.Mutex
	ran []string
}

func (o *order) add(s string) {
	o.mu.Lock()
	o.ran = append(o.ran, s)
	o.mu.Unlock()
}

func (o *order) list() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.ran...)
}

// stepWorker is a worker of the given queues whose "step" handler records
// its args in o and returns them, "boom" fails for good, and "sum" adds up
// its parents' results.
func stepWorker(t *testing.T, e *testEnv, o *order, queues ...string) *Worker {
	w := e.worker(t, WorkerOptions{Queues: queues, Concurrency: 4})
	RegisterFunc(w, "step", func(ctx context.Context, s string) (string, error) {
		o.add(s)
		return s, nil
	})
	w.Register("boom", func(ctx context.Context, j *Job) (any, error) {
		o.add("boom")
		return nil, errors.New("boom")
	})
	w.Register("sum", func(ctx context.Context, j *Job) (any, error) {
		ps, err := j.FetchParents(ctx)
		if err != nil {
			return nil, err
		}
		total := 0
		for _, p := range ps {
			var n int
			if p != nil && p.Status == StatusFinished {
				if err := p.DecodeResult(&n); err != nil {
					return nil, err
				}
			}
			total += n
		}
		o.add(fmt.Sprint("sum=", total))
		return total, nil
	})
	RegisterFunc(w, "num", func(ctx context.Context, n int) (int, error) { return n, nil })
	return w
}

func TestDependsOnChainAcrossQueues(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		a, b := e.queue("a"), e.queue("b")
		var prev *Job
		var jobs []*Job
		for i := range 6 {
			q := a
			if i%2 == 1 {
				q = b
			}
			var opts []EnqueueOption
			if prev != nil {
				opts = append(opts, DependsOn(prev))
			}
			j, err := q.Enqueue("step", fmt.Sprint(i), opts...)
			if err != nil {
				t.Fatal(err)
			}
			if want := StatusDeferred; prev != nil && j.Status != want {
				t.Fatalf("step %d: status %s, want %s", i, j.Status, want)
			}
			jobs = append(jobs, j)
			prev = j
		}
		c, err := b.Counts(context.Background())
		if err != nil || c.Deferred != 3 {
			t.Fatalf("Counts of b: %+v, %v; want 3 deferred", c, err)
		}
		var o order
		start(t, stepWorker(t, e, &o, "a", "b"))
		last := jobs[len(jobs)-1]
		got, err := b.Wait(context.Background(), last.ID)
		if err != nil || got.Status != StatusFinished {
			t.Fatalf("Wait: %+v, %v", got, err)
		}
		if want := "0 1 2 3 4 5"; strings.Join(o.list(), " ") != want {
			t.Fatalf("ran %v, want %s", o.list(), want)
		}
		if len(got.Parents) != 1 || got.Parents[0] != (JobRef{Queue: "a", ID: jobs[4].ID}) {
			t.Fatalf("Parents = %v", got.Parents)
		}
		deps, err := a.Dependents(context.Background(), jobs[4].ID)
		if err != nil || len(deps) != 1 || deps[0].ID != last.ID {
			t.Fatalf("Dependents = %v, %v", deps, err)
		}
	})
}

func TestDependsOnFailureCancelsDownTheGraph(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := context.Background()
		a, b := e.queue("a"), e.queue("b")
		parent, _ := a.Enqueue("boom", nil, Retry(0))
		child, err := b.Enqueue("step", "child", DependsOn(parent))
		if err != nil {
			t.Fatal(err)
		}
		same, _ := a.Enqueue("step", "same", DependsOn(parent))
		grand, _ := a.Enqueue("step", "grand", DependsOn(child))
		after, _ := b.Enqueue("step", "after", DependsOn(grand, parent), AllowFailure())
		var o order
		start(t, stepWorker(t, e, &o, "a", "b"))
		got, err := b.Wait(ctx, after.ID)
		if err != nil || got.Status != StatusFinished {
			t.Fatalf("Wait(after): %+v, %v", got, err)
		}
		for _, c := range []struct {
			q   *Queue
			j   *Job
			why string
		}{{b, child, "parent a:" + parent.ID + " failed"}, {a, same, "parent a:" + parent.ID + " failed"},
			{a, grand, "parent b:" + child.ID + " canceled"}} {
			j, err := c.q.Wait(ctx, c.j.ID)
			if err != nil || j.Status != StatusCanceled || j.Error != c.why {
				t.Errorf("job %s: %+v, %v; want canceled with %q", c.j.ID, j, err, c.why)
			}
		}
		if want := "boom after"; strings.Join(o.list(), " ") != want {
			t.Fatalf("ran %v, want %s", o.list(), want)
		}
		// A parent that has already failed cancels a new dependent at once.
		late, err := b.Enqueue("step", "late", DependsOn(parent))
		if err != nil || late.Status != StatusCanceled {
			t.Fatalf("late dependent: %+v, %v; want canceled", late, err)
		}
		for _, q := range []*Queue{a, b} {
			if c, _ := q.Counts(ctx); c.Deferred != 0 {
				t.Errorf("%s still has %d deferred", q.Name(), c.Deferred)
			}
		}
	})
}

func TestFanInReadsParentResults(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := context.Background()
		a, b := e.queue("a"), e.queue("b")
		reqs := make([]EnqueueRequest, 20)
		for i := range reqs {
			reqs[i] = EnqueueRequest{Func: "num", Args: i + 1}
		}
		parts, err := a.EnqueueMany(ctx, reqs)
		if err != nil {
			t.Fatal(err)
		}
		sum, err := b.Enqueue("sum", nil, DependsOn(parts...))
		if err != nil {
			t.Fatal(err)
		}
		var o order
		start(t, stepWorker(t, e, &o, "a", "b"))
		got, err := b.Wait(ctx, sum.ID)
		if err != nil || got.Status != StatusFinished || string(got.Result) != "210" {
			t.Fatalf("Wait: %+v, %v; want 210", got, err)
		}
	})
}

func TestDependsOnBadInput(t *testing.T) {
	e := newMiniEnv(t)
	q := e.queue("a")
	ctx := context.Background()
	p, _ := q.Enqueue("step", "p")
	many := make([]*Job, MaxParents+1)
	for i := range many {
		many[i] = &Job{Queue: "a", ID: fmt.Sprint("p", i)}
	}
	for name, opt := range map[string][]EnqueueOption{
		"nil":           {DependsOn(nil)},
		"empty id":      {DependsOn(&Job{Queue: "a"})},
		"bad queue":     {DependsOn(&Job{Queue: "a:b", ID: "x"})},
		"too many":      {DependsOn(many...)},
		"allow failure": {AllowFailure()},
	} {
		if _, err := q.Enqueue("step", "c", opt...); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	_, err := q.Enqueue("step", "c", DependsOn(p, &Job{Queue: "b", ID: "nope"}))
	if !errors.Is(err, ErrJobNotFound) || !strings.Contains(err.Error(), "b:nope") {
		t.Fatalf("missing parent: %v, want ErrJobNotFound naming b:nope", err)
	}
	if c, _ := q.Counts(ctx); c.Deferred != 0 || c.Queued != 1 {
		t.Fatalf("counts %+v: something was enqueued", c)
	}
}

func TestWait(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := context.Background()
		q := e.queue("a")
		if _, err := q.Wait(ctx, "nope"); !errors.Is(err, ErrJobNotFound) {
			t.Fatalf("Wait(nope) = %v", err)
		}
		j, _ := q.Enqueue("step", "x")
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		if _, err := q.Wait(short, j.ID); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Wait before any worker = %v, want DeadlineExceeded", err)
		}
		gone, _ := q.Enqueue("step", "gone", ResultTTL(0))
		failing, _ := q.Enqueue("boom", nil, Retry(0))
		type res struct {
			j   *Job
			err error
		}
		waits := map[string]chan res{}
		for _, id := range []string{j.ID, gone.ID, failing.ID} {
			ch := make(chan res, 1)
			waits[id] = ch
			go func() {
				j, err := q.Wait(ctx, id)
				ch <- res{j, err}
			}()
		}
		var o order
		start(t, stepWorker(t, e, &o, "a"))
		if r := <-waits[j.ID]; r.err != nil || r.j.Status != StatusFinished {
			t.Errorf("Wait(finished) = %+v, %v", r.j, r.err)
		}
		if r := <-waits[failing.ID]; r.err != nil || r.j.Status != StatusFailed {
			t.Errorf("Wait(failed) = %+v, %v", r.j, r.err)
		}
		if r := <-waits[gone.ID]; !errors.Is(r.err, ErrJobNotFound) {
			t.Errorf("Wait(ResultTTL 0) = %+v, %v; want ErrJobNotFound", r.j, r.err)
		}
		var s string
		got, err := q.Wait(ctx, j.ID) // ended already: at once
		if err != nil || got.DecodeResult(&s) != nil || s != "x" {
			t.Fatalf("Wait(ended) = %+v, %v", got, err)
		}
	})
}

// A fan-in over 10,000 parents and a chain of 1,000 steps both work.
func TestWorkflowScale(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		if e.mr != nil {
			t.Skip("miniredis runs Lua too slowly for 10,000 parents; this runs on the real Redis")
		}
		ctx := context.Background()
		t0 := time.Now()
		a, b := e.queue("a"), e.queue("b")
		reqs := make([]EnqueueRequest, MaxParents)
		for i := range reqs {
			reqs[i] = EnqueueRequest{Func: "num", Args: 1}
		}
		parts, err := a.EnqueueMany(ctx, reqs)
		if err != nil {
			t.Fatal(err)
		}
		sum, err := b.Enqueue("sum", nil, DependsOn(parts...))
		if err != nil {
			t.Fatal(err)
		}
		prev, err := a.Enqueue("step", "0")
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i < 1000; i++ {
			if prev, err = []*Queue{a, b}[i%2].Enqueue("step", fmt.Sprint(i), DependsOn(prev)); err != nil {
				t.Fatal(err)
			}
		}
		var o order
		start(t, stepWorker(t, e, &o, "a", "b"))
		if got := waitEnd(t, b, sum.ID, StatusFinished); string(got.Result) != fmt.Sprint(MaxParents) {
			t.Errorf("fan-in result %s, want %d", got.Result, MaxParents)
		}
		t.Logf("enqueued and fanned in after %s", time.Since(t0))
		waitEnd(t, b, prev.ID, StatusFinished)
		t.Logf("chain done after %s", time.Since(t0))
		steps := 0
		for _, s := range o.list() {
			if !strings.HasPrefix(s, "sum=") {
				if s != fmt.Sprint(steps) {
					t.Fatalf("step %d ran as number %s", steps, s)
				}
				steps++
			}
		}
		if steps != 1000 {
			t.Fatalf("%d steps ran, want 1000", steps)
		}
	})
}

// The other ways a parent ends pass the end on too: Cancel of a deferred
// job cancels its dependents, Empty deletes a queued parent (its dependents
// are canceled as for a parent that no longer exists), a parent deleted by
// hand is found by the reaper's check of the links, EnqueueMany takes
// DependsOn, and FetchParents gives nil for a parent that is gone.
func TestParentEndsEveryWay(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := context.Background()
		a, b := e.queue("a"), e.queue("b")
		far, _ := a.Enqueue("step", "far", In(time.Hour))
		mid, _ := b.Enqueue("step", "mid", DependsOn(far))
		leaf, _ := a.Enqueue("step", "leaf", DependsOn(mid))
		if err := b.Cancel(ctx, mid.ID); err != nil {
			t.Fatal(err)
		}
		if j := waitEnd(t, a, leaf.ID, StatusCanceled); j.Error != "parent b:"+mid.ID+" canceled" {
			t.Errorf("leaf's error %q", j.Error)
		}

		c := e.queue("c") // no worker: Empty finds its jobs queued
		gone, _ := c.Enqueue("step", "gone")
		kids, err := b.EnqueueMany(ctx, []EnqueueRequest{
			{Func: "step", Args: "k1", Options: []EnqueueOption{DependsOn(gone)}},
			{Func: "step", Args: "k2", Options: []EnqueueOption{DependsOn(gone), AllowFailure()}},
		})
		if err != nil || kids[0].Status != StatusDeferred || kids[1].Status != StatusDeferred {
			t.Fatalf("EnqueueMany with DependsOn = %v, %v", kids, err)
		}
		if n, err := c.Empty(ctx); n != 1 || err != nil {
			t.Fatalf("Empty = %d, %v", n, err)
		}
		if j := waitEnd(t, b, kids[0].ID, StatusCanceled); j.Error != "parent c:"+gone.ID+" no longer exists" {
			t.Errorf("k1's error %q", j.Error)
		}
		if j, _ := b.FetchJob(ctx, kids[1].ID); j.Status != StatusQueued {
			t.Errorf("k2 with AllowFailure is %s, want queued", j.Status)
		}

		// A parent deleted by hand, found when the reaper checks the links.
		hand, _ := a.Enqueue("step", "hand", In(time.Hour))
		orphan, _ := b.Enqueue("step", "orphan", DependsOn(hand), AllowFailure())
		e.rdb.Del(ctx, a.k.job(hand.ID))
		e.rdb.ZRem(ctx, a.k.scheduled(), hand.ID)
		dueNow(t, e, "b")
		start(t, stepWorker(t, e, &order{}, "b"))
		j := waitEnd(t, b, orphan.ID, StatusFinished)
		ps, err := j.FetchParents(ctx)
		if err != nil || len(ps) != 1 || ps[0] != nil {
			t.Fatalf("FetchParents = %v, %v; want one nil for the deleted parent", ps, err)
		}
	})
}

// An entry of the deferred set whose job no longer waits (here written back
// by hand after the job was canceled) goes at the job's next link check,
// and the job stays canceled.
func TestStrayDeferredEntryGoes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		a, b := e.queue("a"), e.queue("b")
		parent, err := a.Enqueue("step", "parent", In(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		child, err := b.Enqueue("step", "child", DependsOn(parent))
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Cancel(ctx, child.ID); err != nil {
			t.Fatal(err)
		}
		e.rdb.ZAdd(ctx, b.k.deferred(), redis.Z{Score: 0, Member: child.ID}) // due at once
		start(t, stepWorker(t, e, &order{}, "b"))
		waitFor(t, 10*time.Second, "the stray entry to go", func() bool {
			n, err := e.rdb.ZCard(ctx, b.k.deferred()).Result()
			return err == nil && n == 0
		})
		if j, err := b.FetchJob(ctx, child.ID); err != nil || j.Status != StatusCanceled {
			t.Errorf("child = %+v, %v; want it still canceled", j, err)
		}
	})
}
