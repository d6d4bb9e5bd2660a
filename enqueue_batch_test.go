package rqgo

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// EnqueueMany creates every valid job in one call; a duplicate id (in Redis
// or within the batch) and an invalid request fail alone.
func TestEnqueueMany(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		if _, err := q.EnqueueContext(ctx, "f", nil, JobID("existing")); err != nil {
			t.Fatal(err)
		}
		reqs := []EnqueueRequest{
			{Func: "f", Args: 1},
			{Func: "f", Args: 2, Options: []EnqueueOption{JobID("existing")}},
			{Func: "f", Args: 3, Options: []EnqueueOption{JobID("twice")}},
			{Func: "f", Args: 4, Options: []EnqueueOption{JobID("twice")}},
			{Func: "", Args: 5},
			{Func: "g", Args: 6, Options: []EnqueueOption{In(time.Hour)}},
			{Func: "f", Args: 7, Options: []EnqueueOption{Retry(2), Timeout(time.Second)}},
		}
		jobs, err := q.EnqueueMany(ctx, reqs)
		var me *EnqueueManyError
		if !errors.As(err, &me) || len(me.Errs) != len(reqs) || len(jobs) != len(reqs) {
			t.Fatalf("EnqueueMany = %d jobs, %v; want %d jobs and an *EnqueueManyError with %d entries", len(jobs), err, len(reqs), len(reqs))
		}
		if !errors.Is(err, ErrJobExists) || !errors.Is(err, ErrInvalid) {
			t.Errorf("EnqueueMany error %v does not wrap ErrJobExists and ErrInvalid", err)
		}
		wantErr := []error{nil, ErrJobExists, nil, ErrJobExists, ErrInvalid, nil, nil}
		for i, want := range wantErr {
			if got := me.Errs[i]; (want == nil) != (got == nil) || (want != nil && !errors.Is(got, want)) {
				t.Errorf("request %d: error %v, want %v", i, got, want)
			}
			if (jobs[i] == nil) != (want != nil) {
				t.Errorf("request %d: job %v with error %v", i, jobs[i], me.Errs[i])
			}
		}
		if jobs[5] != nil && jobs[5].Status != StatusScheduled || jobs[0] != nil && jobs[0].Status != StatusQueued {
			t.Errorf("statuses %s and %s, want queued and scheduled", jobs[0].Status, jobs[5].Status)
		}
		if got, _ := q.FetchJob(ctx, "twice"); got == nil || string(got.Args) != "3" {
			t.Errorf("job twice = %v, want the first request's (args 3)", got)
		}
		if got, _ := q.FetchJob(ctx, jobs[6].ID); got == nil || got.MaxRetries != 2 || got.Timeout != time.Second || string(got.Args) != "7" {
			t.Errorf("job with options = %+v, want retry 2, timeout 1s, args 7", got)
		}
		ids, _ := q.JobIDs(ctx, StatusQueued, 0, 4)
		want := []string{"existing", jobs[0].ID, "twice", jobs[6].ID}
		if fmt.Sprint(ids) != fmt.Sprint(want) {
			t.Errorf("queued ids = %v, want %v (in request order)", ids, want)
		}
		if c, _ := q.Counts(ctx); c.Scheduled != 1 {
			t.Errorf("Counts = %+v, want 1 scheduled", c)
		}

		// A job enqueued in a batch has the hash of one enqueued alone.
		opts := []EnqueueOption{Retry(4), Timeout(time.Minute), ResultTTL(time.Hour), Backoff(time.Second, time.Minute)}
		if _, err := q.EnqueueContext(ctx, "h", map[string]int{"x": 1}, append(opts, JobID("alone"))...); err != nil {
			t.Fatal(err)
		}
		if _, err := q.EnqueueMany(ctx, []EnqueueRequest{{Func: "h", Args: map[string]int{"x": 1}, Options: append(opts, JobID("batched"))}, {Func: "h"}}); err != nil {
			t.Fatal(err)
		}
		alone, batched := e.rdb.HGetAll(ctx, q.k.job("alone")).Val(), e.rdb.HGetAll(ctx, q.k.job("batched")).Val()
		for _, h := range []map[string]string{alone, batched} {
			delete(h, fID)
			delete(h, fCreatedAt)
			delete(h, fEnqueuedAt)
		}
		if fmt.Sprint(alone) != fmt.Sprint(batched) {
			t.Errorf("hash of a batched job\n%v\nwant as enqueued alone\n%v", batched, alone)
		}

		// Every job valid: no error; more jobs than one script call takes.
		many := make([]EnqueueRequest, maxEnqueueBatch+7)
		for i := range many {
			many[i] = EnqueueRequest{Func: "n", Args: i}
		}
		jobs, err = q.EnqueueMany(ctx, many)
		if err != nil || len(jobs) != len(many) {
			t.Fatalf("EnqueueMany of %d = %d jobs, %v", len(many), len(jobs), err)
		}
		for i, j := range jobs {
			got, err := q.FetchJob(ctx, j.ID)
			if err != nil || string(got.Args) != fmt.Sprint(i) {
				t.Fatalf("job %d = %v, %v; want args %d", i, got, err, i)
			}
		}
		if jobs, err := q.EnqueueMany(ctx, nil); err != nil || len(jobs) != 0 {
			t.Errorf("EnqueueMany(nil) = %v, %v; want nothing", jobs, err)
		}
	})
}

// Many goroutines enqueueing on one Queue at once (coalesced); every
// job lands exactly once, each caller gets its own job back, and a worker
// runs each job once.
func TestConcurrentEnqueuesCoalesce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		const goroutines, each = 16, 25
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			seen = map[string]bool{}
		)
		for g := range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					args := fmt.Sprintf(`"%d-%d"`, g, i)
					opts := []EnqueueOption{}
					if i%10 == 0 {
						opts = append(opts, JobID(fmt.Sprintf("fixed-%d-%d", g, i)))
					}
					j, err := q.EnqueueContext(ctx, "f", []byte(args), opts...)
					if err != nil {
						t.Error(err)
						return
					}
					if string(j.Args) != args || j.Status != StatusQueued {
						t.Errorf("caller %d/%d got job %s args %s status %s, want its own queued job", g, i, j.ID, j.Args, j.Status)
					}
					mu.Lock()
					if seen[j.ID] {
						t.Errorf("job id %s returned twice", j.ID)
					}
					seen[j.ID] = true
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		// An id used again: refused, while others go through.
		if _, err := q.EnqueueContext(ctx, "f", nil, JobID("fixed-0-0")); !errors.Is(err, ErrJobExists) {
			t.Errorf("re-enqueue of fixed-0-0 = %v, want ErrJobExists", err)
		}
		ids, _ := q.JobIDs(ctx, StatusQueued, 0, 10*goroutines*each)
		if len(ids) != goroutines*each {
			t.Fatalf("%d jobs queued, want %d", len(ids), goroutines*each)
		}
		for _, id := range ids {
			if !seen[id] {
				t.Errorf("queued job %s was not returned to any caller", id)
			}
		}
		var runs sync.Map
		w := e.worker(t, WorkerOptions{Concurrency: 20})
		w.Register("f", func(ctx context.Context, j *Job) (any, error) {
			if _, dup := runs.LoadOrStore(j.ID, true); dup {
				t.Errorf("job %s ran twice", j.ID)
			}
			return nil, nil
		})
		runBurst(t, w)
		if c, _ := q.Counts(ctx); c.Finished != goroutines*each {
			t.Errorf("Counts = %+v, want %d finished", c, goroutines*each)
		}
	})
}

// A caller whose context ends while it waits for another caller's round
// trip returns at once with the context's error; the others are served.
func TestCoalescedEnqueueContextEnds(t *testing.T) {
	e := newMiniEnv(t)
	q := e.queue("default")
	ctx := t.Context()
	pretendFlying(t, q, maxFlights) // as if other callers were sending
	canceled, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := q.EnqueueContext(canceled, "f", nil)
		done <- err
	}()
	waitFor(t, 5*time.Second, "caller in line", func() bool { return inLine(q) == 1 })
	other := make(chan error, 1)
	go func() {
		_, err := q.EnqueueContext(ctx, "g", nil, JobID("other"))
		other <- err
	}()
	waitFor(t, 5*time.Second, "second caller in line", func() bool { return inLine(q) == 2 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled caller = %v, want context.Canceled", err)
	}
	// The flight lands: the remaining caller gets its turn and is served.
	q.enq.mu.Lock()
	q.enq.handOnLocked()
	q.enq.mu.Unlock()
	if err := <-other; err != nil {
		t.Fatalf("other caller = %v", err)
	}
	if n := e.rdb.LLen(ctx, q.k.pending()).Val(); n != 1 {
		t.Errorf("%d jobs queued, want 1 (the canceled caller's job never left)", n)
	}
	expectFlying(t, q, maxFlights-1) // the others'
}

// A caller handed a batch to send whose context ends first passes the batch
// to another of its callers: nobody in it is left waiting.
func TestCoalescedEnqueueSenderContextEnds(t *testing.T) {
	e := newMiniEnv(t)
	q := e.queue("default")
	ctx := t.Context()
	for range 20 {
		pretendFlying(t, q, maxFlights)
		canceled, cancel := context.WithCancel(ctx)
		done := make(chan error, 2)
		go func() {
			_, err := q.EnqueueContext(canceled, "f", nil)
			done <- err
		}()
		waitFor(t, 5*time.Second, "first caller in line", func() bool { return inLine(q) == 1 })
		go func() {
			_, err := q.EnqueueContext(ctx, "g", nil)
			done <- err
		}()
		waitFor(t, 5*time.Second, "second caller in line", func() bool { return inLine(q) == 2 })
		cancel()
		q.enq.mu.Lock()
		q.enq.handOnLocked() // the batch of both goes to the canceled caller
		q.enq.mu.Unlock()
		for range 2 {
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("a caller is still waiting 10s after its batch was handed out")
			}
		}
		expectFlying(t, q, maxFlights-1)
	}
	if ids, _ := q.JobIDs(ctx, StatusQueued, 0, 100); len(ids) < 20 {
		t.Errorf("%d jobs queued, want at least the 20 of the live callers", len(ids))
	}
}

// expectFlying checks that q has want batches in flight and no call
// waiting in line.
func expectFlying(t *testing.T, q *Queue, want int) {
	t.Helper()
	q.enq.mu.Lock()
	defer q.enq.mu.Unlock()
	if q.enq.flying != want || len(q.enq.line) != 0 {
		t.Errorf("after the flights: %d in flight, %d in line; want %d and none", q.enq.flying, len(q.enq.line), want)
	}
}

// pretendFlying makes q count n batches in flight, here and over all
// Queues (flights), as if callers were sending them; the test's end takes
// away those still counted.
func pretendFlying(t *testing.T, q *Queue, n int) {
	t.Helper()
	q.enq.mu.Lock()
	flights.Add(int32(n - q.enq.flying))
	q.enq.flying = n
	q.enq.mu.Unlock()
	t.Cleanup(func() {
		q.enq.mu.Lock()
		defer q.enq.mu.Unlock()
		flights.Add(-int32(q.enq.flying))
		q.enq.flying = 0
	})
}

// scriptGate counts the scripts a client runs and holds the first hold of
// them (at least one) until release is closed; held is closed when the
// last of those arrives.
type scriptGate struct {
	hold    int32
	calls   atomic.Int32
	held    chan struct{}
	release chan struct{}
}

func (g *scriptGate) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g *scriptGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if n := cmd.Name(); n == "evalsha" || n == "eval" {
			if c := g.calls.Add(1); c <= max(g.hold, 1) {
				if c == max(g.hold, 1) {
					close(g.held)
				}
				<-g.release
			}
		}
		return next(ctx, cmd)
	}
}

func (g *scriptGate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			if n := cmd.Name(); n == "evalsha" || n == "eval" {
				g.calls.Add(1)
			}
		}
		return next(ctx, cmds)
	}
}

// While maxFlights enqueues are in flight, the calls that arrive wait and
// then go together in one script call: 11 jobs, 2 scripts.
func TestEnqueuesShareRoundTrips(t *testing.T) {
	e := newMiniEnv(t)
	rdb := redis.NewClient(&redis.Options{Addr: e.addr})
	t.Cleanup(func() { rdb.Close() })
	gate := &scriptGate{held: make(chan struct{}), release: make(chan struct{})}
	rdb.AddHook(gate)
	q := NewQueue("default", rdb, WithPrefix(e.prefix))
	ctx := t.Context()
	if err := q.remember(ctx); err != nil {
		t.Fatal(err)
	}
	// Loaded beforehand, so no call needs a NOSCRIPT retry.
	for _, s := range []*script{enqueueScript, enqueueManyScript} {
		if err := s.Load(ctx, e.rdb); err != nil {
			t.Fatal(err)
		}
	}

	pretendFlying(t, q, maxFlights-1) // as if other callers were sending
	const waiting = 10
	errs := make(chan error, waiting+1)
	go func() { _, err := q.EnqueueContext(ctx, "f", 0); errs <- err }()
	<-gate.held // the first enqueue is in flight
	for i := range waiting {
		go func() { _, err := q.EnqueueContext(ctx, "f", i+1); errs <- err }()
	}
	waitFor(t, 5*time.Second, fmt.Sprintf("%d calls waiting in line", waiting), func() bool { return inLine(q) == waiting })
	close(gate.release)
	for range waiting + 1 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if c, _ := q.Counts(ctx); c.Queued != waiting+1 {
		t.Errorf("queued = %d, want %d", c.Queued, waiting+1)
	}
	if n := gate.calls.Load(); n != 2 {
		t.Errorf("%d jobs took %d script calls, want 2 (one alone, then one for the %d that waited)", waiting+1, n, waiting)
	}
	expectFlying(t, q, maxFlights-1) // the others'
}

// Up to maxFlights concurrent enqueues go at once, each alone; only the
// next one waits in line.
func TestEnqueueFlightsRunAtOnce(t *testing.T) {
	e := newMiniEnv(t)
	rdb := redis.NewClient(&redis.Options{Addr: e.addr})
	t.Cleanup(func() { rdb.Close() })
	gate := &scriptGate{hold: maxFlights, held: make(chan struct{}), release: make(chan struct{})}
	rdb.AddHook(gate)
	q := NewQueue("default", rdb, WithPrefix(e.prefix))
	ctx := t.Context()
	if err := q.remember(ctx); err != nil {
		t.Fatal(err)
	}
	if err := enqueueScript.Load(ctx, e.rdb); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, maxFlights+1)
	for i := range maxFlights {
		go func() { _, err := q.EnqueueContext(ctx, "f", i); errs <- err }()
	}
	select {
	case <-gate.held: // every flight is on its way, none waited for another
	case <-time.After(5 * time.Second):
		close(gate.release)
		t.Fatalf("%d of %d concurrent enqueues on their way after 5s; the others wait in line", gate.calls.Load(), maxFlights)
	}
	go func() { _, err := q.EnqueueContext(ctx, "f", "last"); errs <- err }()
	waitFor(t, 5*time.Second, "the next call in line", func() bool { return inLine(q) == 1 })
	close(gate.release)
	for range maxFlights + 1 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := gate.calls.Load(); n != maxFlights+1 {
		t.Errorf("%d jobs took %d script calls, want %d", maxFlights+1, n, maxFlights+1)
	}
	if c, _ := q.Counts(ctx); c.Queued != maxFlights+1 {
		t.Errorf("queued = %d, want %d", c.Queued, maxFlights+1)
	}
	expectFlying(t, q, 0)
}

// Batches in flight count over all Queues: once maxFlights are in flight, a
// Queue with one of them waits in line, while a Queue with none still sends
// its job at once.
func TestEnqueueFlightsAcrossQueues(t *testing.T) {
	e := newMiniEnv(t)
	rdb := redis.NewClient(&redis.Options{Addr: e.addr})
	t.Cleanup(func() { rdb.Close() })
	gate := &scriptGate{hold: 2, held: make(chan struct{}), release: make(chan struct{})}
	rdb.AddHook(gate)
	ctx := t.Context()
	qa, qb, qc := NewQueue("a", rdb, WithPrefix(e.prefix)), NewQueue("b", rdb, WithPrefix(e.prefix)), NewQueue("c", rdb, WithPrefix(e.prefix))
	for _, q := range []*Queue{qa, qb, qc} {
		if err := q.remember(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := enqueueScript.Load(ctx, e.rdb); err != nil {
		t.Fatal(err)
	}
	// Batches of other Queues, so that a's and b's make maxFlights.
	flights.Add(maxFlights - 2)
	t.Cleanup(func() { flights.Add(-(maxFlights - 2)) })

	errs := make(chan error, 4)
	enqueue := func(q *Queue) { _, err := q.EnqueueContext(ctx, "f", nil); errs <- err }
	go enqueue(qa)
	go enqueue(qb)
	select {
	case <-gate.held: // a's and b's first batches are in flight
	case <-time.After(5 * time.Second):
		close(gate.release)
		t.Fatalf("%d of 2 first enqueues on their way after 5s", gate.calls.Load())
	}
	go enqueue(qa)
	waitFor(t, 5*time.Second, "a's second call in line", func() bool {
		qa.enq.mu.Lock()
		defer qa.enq.mu.Unlock()
		return len(qa.enq.line) == 1
	})
	go enqueue(qc) // none in flight on c: it goes at once
	select {
	case err := <-errs:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		close(gate.release)
		t.Fatal("c's enqueue did not return within 5s while maxFlights batches were in flight")
	}
	close(gate.release)
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := gate.calls.Load(); n != 4 {
		t.Errorf("4 jobs took %d script calls, want 4", n)
	}
	if n := flights.Load(); n != maxFlights-2 {
		t.Errorf("after the flights: %d in flight over all Queues, want the %d of the others", n, maxFlights-2)
	}
}

// inLine is the number of enqueue calls waiting in q's line.
func inLine(q *Queue) int {
	q.enq.mu.Lock()
	defer q.enq.mu.Unlock()
	return len(q.enq.line)
}

// A batched job's fields go to enqueue_many.lua without the id, queue and
// attempt the script writes itself, so its HSET writes each field once, and
// without a flags field when it has no flags.
func TestManyFieldsLeavesOutTheScriptsOwn(t *testing.T) {
	q := NewQueue("fields", redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})) // never dialled
	for _, opts := range [][]EnqueueOption{nil, {JobID("mine")}, {In(time.Hour), LimitKey("t1")}} {
		_, argv, err := q.prepare("f", map[string]int{"n": 1}, opts)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[any]int{}
		fields := manyFields(argv)
		for i := 0; i < len(fields); i += 2 {
			seen[fields[i]]++
		}
		for _, f := range []string{fID, fQueue, fAttempt} {
			if seen[f] != 0 {
				t.Errorf("manyFields(%v) sends %s, which enqueue_many.lua writes itself", opts, f)
			}
		}
		for name, n := range seen {
			if n != 1 {
				t.Errorf("manyFields(%v) sends %v %d times", opts, name, n)
			}
		}
		if seen[fFunc] != 1 || seen[fArgs] != 1 {
			t.Errorf("manyFields(%v) = %v, want func and args among them", opts, fields)
		}
		if want := argv[5] != ""; (seen[fFlags] == 1) != want {
			t.Errorf("manyFields(%v) = %v: flags sent %v, want %v (only a job with flags has the field)", opts, fields, seen[fFlags] == 1, want)
		}
	}
}

// A plain job's hash has no flags field, by Enqueue or EnqueueMany: the
// scripts read a missing one as empty. A job with a limit key has it.
func TestPlainJobHasNoFlagsField(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("plain")
		one, err := q.EnqueueContext(ctx, "f", 1)
		if err != nil {
			t.Fatal(err)
		}
		many, err := q.EnqueueMany(ctx, []EnqueueRequest{{Func: "f", Args: 2}, {Func: "f", Args: 3, Options: []EnqueueOption{LimitKey("t1")}}})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			id   string
			want string
		}{{one.ID, ""}, {many[0].ID, ""}, {many[1].ID, "k"}} {
			h := e.rdb.HGetAll(ctx, q.k.job(c.id)).Val()
			if f, ok := h[fFlags]; ok != (c.want != "") || f != c.want {
				t.Errorf("job %s: flags %q (present %v), want %q", c.id, f, ok, c.want)
			}
		}
	})
}
