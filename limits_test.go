package rqgo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// gauge counts handlers running at once, overall and per limit key, and
// keeps the highest counts seen. Handlers block in it until the test lets
// them go.
type gauge struct {
	mu      sync.Mutex
	now     map[string]int // "" = all
	peak    map[string]int
	started map[string]int
	release chan struct{}
	changed chan struct{}
}

func newGauge() *gauge {
	return &gauge{now: map[string]int{}, peak: map[string]int{}, started: map[string]int{},
		release: make(chan struct{}, 100000), changed: make(chan struct{}, 1)}
}

// handler runs until the test releases it (g.let) or ctx ends.
func (g *gauge) handler(ctx context.Context, j *Job) (any, error) {
	keys := []string{""}
	if j.LimitKey != "" {
		keys = append(keys, j.LimitKey)
	}
	g.mu.Lock()
	for _, k := range keys {
		g.now[k]++
		g.started[k]++
		g.peak[k] = max(g.peak[k], g.now[k])
	}
	g.mu.Unlock()
	g.signal()
	defer func() {
		g.mu.Lock()
		for _, k := range keys {
			g.now[k]--
		}
		g.mu.Unlock()
		g.signal()
	}()
	select {
	case <-g.release:
		return "ok", nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (g *gauge) signal() {
	select {
	case g.changed <- struct{}{}:
	default:
	}
}

// let releases n handlers, running or yet to start.
func (g *gauge) let(n int) {
	for range n {
		g.release <- struct{}{}
	}
}

func (g *gauge) get(m map[string]int, k string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return m[k]
}

// await waits until cond holds, re-checking whenever a handler starts or
// ends.
func (g *gauge) await(t *testing.T, what string, cond func() bool) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for !cond() {
		select {
		case <-g.changed:
		case <-time.After(20 * time.Millisecond): // the condition may read Redis
		case <-timeout:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestLimitsBadInput(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		for _, c := range []struct {
			l    Limits
			want string
		}{
			{Limits{Concurrency: -1}, "Limits.Concurrency is negative"},
			{Limits{KeyConcurrency: -2}, "Limits.KeyConcurrency is negative"},
			{Limits{Rate: -1, Per: time.Second}, "Limits.Rate is negative"},
			{Limits{Rate: 10}, "Limits.Rate is set without Limits.Per"},
			{Limits{KeyRate: 10}, "Limits.KeyRate is set without Limits.KeyPer"},
			{Limits{Rate: 10, Per: time.Microsecond}, "Limits.Per 1µs is under 1ms"},
			{Limits{KeyRate: 1, KeyPer: 999 * time.Microsecond}, "Limits.KeyPer 999µs is under 1ms"},
			{Limits{Per: time.Second}, "Limits.Per is set without Limits.Rate"},
			{Limits{KeyPer: -time.Second, KeyRate: 1}, "Limits.KeyPer is negative"},
			{Limits{Rate: 10, Per: 1500 * time.Microsecond}, "Limits.Per 1.5ms is not a whole number of milliseconds"},
		} {
			err := q.SetLimits(ctx, c.l)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("SetLimits(%+v) = %v, want ErrInvalid naming %q", c.l, err, c.want)
			}
		}
		if n := e.rdb.Exists(ctx, q.k.flow()).Val(); n != 0 {
			t.Errorf("refused limits wrote the flow hash")
		}
		for _, key := range []string{"", "a b", "tab\there", strings.Repeat("k", 201), "\xff"} {
			_, err := q.EnqueueContext(ctx, "f", nil, LimitKey(key))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "limit key") {
				t.Errorf("LimitKey(%q): %v, want ErrInvalid naming the limit key", key, err)
			}
		}
		if c, _ := q.Counts(ctx); c.Queued != 0 {
			t.Errorf("refused enqueues left %d jobs", c.Queued)
		}
	})
}

func TestSetLimitsRoundTrip(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		if l, err := q.Limits(ctx); err != nil || !l.IsZero() {
			t.Fatalf("Limits of a new queue = %+v, %v; want none", l, err)
		}
		want := Limits{Concurrency: 5, Rate: 100, Per: time.Second, KeyConcurrency: 2, KeyRate: 3, KeyPer: time.Minute}
		if err := q.SetLimits(ctx, want); err != nil {
			t.Fatal(err)
		}
		if got, err := q.Limits(ctx); err != nil || got != want {
			t.Fatalf("Limits = %+v, %v; want %+v", got, err, want)
		}
		if s := want.String(); s != "concurrency=5 rate=100/1s key-concurrency=2 key-rate=3/1m0s" {
			t.Errorf("String = %q", s)
		}
		if err := q.Pause(ctx); err != nil {
			t.Fatal(err)
		}
		if p, err := q.Paused(ctx); err != nil || !p {
			t.Fatalf("Paused = %v, %v; want true", p, err)
		}
		if err := q.SetLimits(ctx, Limits{Concurrency: 1}); err != nil {
			t.Fatal(err)
		}
		if p, _ := q.Paused(ctx); !p {
			t.Errorf("SetLimits resumed a paused queue")
		}
		if err := q.Resume(ctx); err != nil {
			t.Fatal(err)
		}
		if p, _ := q.Paused(ctx); p {
			t.Errorf("Paused after Resume = true")
		}
		if err := q.SetLimits(ctx, Limits{}); err != nil {
			t.Fatal(err)
		}
		// No limits and not paused: the flow hash goes, and with it the
		// scripts' extra work.
		if n := e.rdb.Exists(ctx, q.k.flow()).Val(); n != 0 {
			t.Errorf("flow hash kept after the limits were cleared: %v", e.rdb.HGetAll(ctx, q.k.flow()).Val())
		}
		if names, _ := Queues(ctx, e.rdb, e.prefix); len(names) != 1 || names[0] != "default" {
			t.Errorf("Queues = %v, want the queue whose limits were set", names)
		}
	})
}

// A job of a limit key that was running when its queue's KeyConcurrency was
// first set holds a slot of its key from then on: the next job of the key
// is parked until it ends.
func TestKeyConcurrencySetWhileJobsRun(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("keyed")
		g := newGauge()
		w := e.worker(t, WorkerOptions{Queues: []string{"keyed"}, Concurrency: 4})
		w.Register("work", g.handler)
		start(t, w)
		if _, err := q.EnqueueContext(ctx, "work", 1, LimitKey("tenant")); err != nil {
			t.Fatal(err)
		}
		g.await(t, "the first job running", func() bool { return g.get(g.now, "tenant") == 1 })
		if err := q.SetLimits(ctx, Limits{KeyConcurrency: 1}); err != nil {
			t.Fatal(err)
		}
		second, err := q.EnqueueContext(ctx, "work", 2, LimitKey("tenant"))
		if err != nil {
			t.Fatal(err)
		}
		g.await(t, "the second job parked", func() bool {
			return e.rdb.ZScore(ctx, q.k.parked(), second.ID).Err() == nil
		})
		if n := g.get(g.started, "tenant"); n != 1 {
			t.Fatalf("%d jobs of the key started with KeyConcurrency 1 and the first still running", n)
		}
		g.let(1)
		g.await(t, "the second job running", func() bool { return g.get(g.started, "tenant") == 2 })
		if p := g.get(g.peak, "tenant"); p != 1 {
			t.Errorf("%d jobs of the key ran at once, want 1", p)
		}
		g.let(1)
	})
}

// UpdateLimits changes the fields its function sets and keeps the others,
// also those another client changed between its read and its write: the
// function runs again on the newer limits. Limits it leaves invalid are
// refused, with nothing written.
func TestUpdateLimits(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		if err := q.SetLimits(ctx, Limits{Concurrency: 5, Rate: 100, Per: time.Second}); err != nil {
			t.Fatal(err)
		}
		other := NewQueue("default", e.rdb, WithPrefix(e.prefix))
		calls := 0
		err := q.UpdateLimits(ctx, func(l *Limits) {
			calls++
			if calls == 1 {
				// Another operator's change lands between the read and the write.
				if err := other.SetLimits(ctx, Limits{Concurrency: 7, Rate: 100, Per: time.Second}); err != nil {
					t.Error(err)
				}
			}
			l.KeyConcurrency = 2
		})
		if err != nil {
			t.Fatal(err)
		}
		want := Limits{Concurrency: 7, Rate: 100, Per: time.Second, KeyConcurrency: 2}
		if got, err := q.Limits(ctx); err != nil || got != want {
			t.Fatalf("Limits after a concurrent SetLimits = %+v, %v; want %+v (both changes)", got, err, want)
		}
		if calls != 2 {
			t.Errorf("the function ran %d times, want 2 (again after the concurrent change)", calls)
		}
		err = q.UpdateLimits(ctx, func(l *Limits) { l.KeyRate = 10 })
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "Limits.KeyRate is set without Limits.KeyPer") {
			t.Errorf("UpdateLimits leaving KeyRate without KeyPer = %v, want ErrInvalid naming the field", err)
		}
		if err := q.UpdateLimits(ctx, nil); !errors.Is(err, ErrInvalid) {
			t.Errorf("UpdateLimits(nil) = %v, want ErrInvalid", err)
		}
		if got, _ := q.Limits(ctx); got != want {
			t.Errorf("refused updates changed the limits to %+v", got)
		}
		if err := q.UpdateLimits(ctx, func(l *Limits) { *l = Limits{} }); err != nil {
			t.Fatal(err)
		}
		if n := e.rdb.Exists(ctx, q.k.flow()).Val(); n != 0 {
			t.Errorf("flow hash kept after UpdateLimits cleared the limits: %v", e.rdb.HGetAll(ctx, q.k.flow()).Val())
		}
	})
}

// Under a Concurrency, a worker gathers the outcomes of handlers returning
// together before it acks them, but a job that ends while another still
// runs is acked without waiting for it: here the running job waits for the
// other's end to be recorded.
func TestCappedAckDoesNotWaitForRunningJobs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("capped")
		if err := q.SetLimits(ctx, Limits{Concurrency: 2}); err != nil {
			t.Fatal(err)
		}
		quick, err := q.EnqueueContext(ctx, "quick", nil)
		if err != nil {
			t.Fatal(err)
		}
		slow, err := q.EnqueueContext(ctx, "slow", nil)
		if err != nil {
			t.Fatal(err)
		}
		// A third job: the first fetch leaves it, so the queue answers that
		// its Concurrency is full, and the worker knows the queue is capped.
		if _, err := q.EnqueueContext(ctx, "quick", nil); err != nil {
			t.Fatal(err)
		}
		w := e.worker(t, WorkerOptions{Queues: []string{"capped"}, Concurrency: 2})
		w.Register("quick", func(ctx context.Context, j *Job) (any, error) { return "quick", nil })
		w.Register("slow", func(ctx context.Context, j *Job) (any, error) {
			c, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			return q.Wait(c, quick.ID) // the quick job's end, recorded while this one runs
		})
		start(t, w)
		c, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		j, err := q.Wait(c, slow.ID)
		if err != nil {
			t.Fatal(err)
		}
		if j.Status != StatusFinished || j.Attempt != 1 {
			t.Fatalf("the running job ended %s after %d attempts (%s): the quick job's ack waited for it", j.Status, j.Attempt, j.Error)
		}
		if !w.qstate[0].capped.Load() {
			t.Fatal("the worker never learned that its queue is capped: the test proves nothing")
		}
	})
}

// Concurrency caps the jobs running over every worker of the fleet, and the
// workers over the cap wait without asking Redis again.
func TestConcurrencyCapAcrossWorkers(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("capped")
		if err := q.SetLimits(ctx, Limits{Concurrency: 3}); err != nil {
			t.Fatal(err)
		}
		const jobs = 12
		for i := range jobs {
			if _, err := q.EnqueueContext(ctx, "work", i); err != nil {
				t.Fatal(err)
			}
		}
		g := newGauge()
		var idle []*atomic.Int64
		dequeues := &dequeueCount{}
		e.rdb.AddHook(dequeues)
		for range 3 {
			w := e.worker(t, WorkerOptions{Queues: []string{"capped"}, Concurrency: 4})
			w.Register("work", g.handler)
			n := new(atomic.Int64)
			w.waiting = func() { n.Add(1) }
			idle = append(idle, n)
			start(t, w)
		}
		g.await(t, "3 running", func() bool { return g.get(g.now, "") == 3 })
		// Every worker waits: none has a job it may start.
		g.await(t, "every worker idle", func() bool {
			for _, n := range idle {
				if n.Load() == 0 {
					return false
				}
			}
			return true
		})
		if got := g.get(g.now, ""); got != 3 {
			t.Fatalf("%d running with Concurrency 3", got)
		}
		for i := range jobs {
			g.let(1)
			g.await(t, fmt.Sprintf("%d started", min(i+4, jobs)), func() bool { return g.get(g.started, "") >= min(i+4, jobs) })
		}
		g.await(t, "all finished", func() bool { c, _ := q.Counts(ctx); return c.Finished == jobs })
		if p := g.get(g.peak, ""); p != 3 {
			t.Errorf("at most %d ran at once, want exactly 3 (Concurrency 3, 12 slots)", p)
		}
		// Held workers do not spin: each freed slot costs each worker a
		// fetch or two, not a loop of them.
		if d := dequeues.n.Load(); d > 10*jobs {
			t.Errorf("%d dequeue calls for %d jobs on 3 workers", d, jobs)
		}
	})
}

// A paused queue starts nothing on any worker, while enqueues and due
// scheduled jobs still land in it and the worker serves its other queues;
// Resume starts its jobs at once.
func TestPauseResume(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q, other := e.queue("mail"), e.queue("other")
		if err := q.Pause(ctx); err != nil {
			t.Fatal(err)
		}
		var ran atomic.Int64
		w := e.worker(t, WorkerOptions{Queues: []string{"mail", "other"}, Concurrency: 4})
		w.Register("send", func(ctx context.Context, j *Job) (any, error) { ran.Add(1); return nil, nil })
		var ids []string
		for range 3 {
			j, err := q.EnqueueContext(ctx, "send", nil)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, j.ID)
		}
		later, err := q.EnqueueContext(ctx, "send", nil, In(time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		e.rdb.ZAdd(ctx, q.k.scheduled(), redis.Z{Score: 1, Member: later.ID}) // due now
		o, err := other.EnqueueContext(ctx, "send", nil)
		if err != nil {
			t.Fatal(err)
		}
		// The worker asks mail first (its queues in order), so by the time
		// the other queue's job is done it has been refused mail's.
		start(t, w)
		waitJob(t, other, o.ID, StatusFinished)
		if n := ran.Load(); n != 1 {
			t.Fatalf("%d jobs ran; want only the other queue's one while mail is paused", n)
		}
		c, _ := q.Counts(ctx)
		if c.Queued != 4 || c.Scheduled != 0 {
			t.Errorf("paused queue holds %d queued, %d scheduled; want the due scheduled job landed among 4 queued", c.Queued, c.Scheduled)
		}
		if err := q.Resume(ctx); err != nil {
			t.Fatal(err)
		}
		for _, id := range append(ids, later.ID) {
			waitJob(t, q, id, StatusFinished)
		}
	})
}

// A key over its KeyConcurrency holds back none of the other keys' jobs,
// however many of its jobs are queued ahead of theirs.
func TestKeyConcurrencyIsFair(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("tenants")
		if err := q.SetLimits(ctx, Limits{KeyConcurrency: 2}); err != nil {
			t.Fatal(err)
		}
		big := 2000
		if e.mr != nil {
			big = 300 // miniredis's Lua is slow
		}
		reqs := make([]EnqueueRequest, big)
		for i := range reqs {
			reqs[i] = EnqueueRequest{Func: "work", Args: i, Options: []EnqueueOption{LimitKey("A")}}
		}
		if _, err := q.EnqueueMany(ctx, reqs); err != nil {
			t.Fatal(err)
		}
		var small []string
		for i := range 10 {
			j, err := q.EnqueueContext(ctx, "quick", i, LimitKey("B"+fmt.Sprint(i%3)))
			if err != nil {
				t.Fatal(err)
			}
			small = append(small, j.ID)
		}
		g := newGauge()
		w := e.worker(t, WorkerOptions{Queues: []string{"tenants"}, Concurrency: 8})
		w.Register("work", g.handler)
		w.Register("quick", func(ctx context.Context, j *Job) (any, error) { return nil, nil })
		start(t, w)
		for _, id := range small {
			waitJob(t, q, id, StatusFinished)
		}
		if n := g.get(g.now, "A"); n != 2 {
			t.Errorf("%d of A's jobs running, want its KeyConcurrency, 2", n)
		}
		c, _ := q.Counts(ctx)
		if c.Parked+c.Queued != int64(big-2) || c.Parked == 0 {
			t.Errorf("counts %+v: want A's other %d jobs parked or queued, some parked", c, big-2)
		}
		g.let(big)
		g.await(t, "all of A's jobs finished", func() bool { c, _ := q.Counts(ctx); return c.Finished == int64(big+10) })
		if p := g.get(g.peak, "A"); p != 2 {
			t.Errorf("at most %d of A's jobs ran at once, want 2", p)
		}
		if c, _ := q.Counts(ctx); c.Parked != 0 || c.Queued != 0 {
			t.Errorf("after the run: %+v", c)
		}
		for _, k := range []string{q.k.parked(), q.k.park("A"), q.k.parkKeys(), q.k.slots("A")} {
			if e.rdb.Exists(ctx, k).Val() != 0 {
				t.Errorf("key %s left after every job ended", k)
			}
		}
	})
}

// dequeueCount counts the dequeue.lua calls through a client.
type dequeueCount struct{ n atomic.Int64 }

func (h *dequeueCount) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *dequeueCount) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if _, ok := dequeueAsk(cmd); ok {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (h *dequeueCount) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// dequeueRaw runs dequeue.lua once on queue q for up to n jobs and returns
// the ids handed out, the hold reason and hold_ms.
func dequeueRaw(t *testing.T, e *testEnv, q *Queue, n int) (ids []string, hold, holdMs int64) {
	t.Helper()
	k := q.k
	keys := []string{k.pending(), k.active(), k.scheduled(), k.seq(), k.wake(), k.jobPrefix()}
	res, err := dequeueScript.Run(t.Context(), e.rdb, keys, n, 30000, "tester", "n").Slice()
	if err != nil {
		t.Fatal(err)
	}
	for r := res[dequeuedHead:]; len(r) > 0; r = r[dequeuedLen:] {
		ids = append(ids, r[0].(string))
	}
	return ids, res[4].(int64), res[5].(int64)
}

// The Rate is a GCRA: a burst of Per/100 worth of starts, then one start
// per Per/Rate, and a held queue is told when the next start is allowed.
func TestRateIsSmooth(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("slow")
		// 100 an hour: one start every 36 s, a burst tolerance of 36 s.
		if err := q.SetLimits(ctx, Limits{Rate: 100, Per: time.Hour}); err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			if _, err := q.EnqueueContext(ctx, "f", i); err != nil {
				t.Fatal(err)
			}
		}
		ids, hold, ms := dequeueRaw(t, e, q, 10)
		if len(ids) != 2 || hold != holdRate || ms < 35000 || ms > 36000 {
			t.Fatalf("first dequeue: %d jobs, hold %d for %d ms; want 2 (the burst), hold %d for about 36000 ms", len(ids), hold, ms, holdRate)
		}
		ids, hold, ms = dequeueRaw(t, e, q, 10)
		if len(ids) != 0 || hold != holdRate || ms < 35000 {
			t.Fatalf("second dequeue: %d jobs, hold %d for %d ms; want none, held by the rate", len(ids), hold, ms)
		}
		// Without the limit the rest go at once.
		if err := q.SetLimits(ctx, Limits{}); err != nil {
			t.Fatal(err)
		}
		if ids, hold, _ = dequeueRaw(t, e, q, 10); len(ids) != 3 || hold != 0 {
			t.Fatalf("after the limit was removed: %d jobs, hold %d; want the other 3, no hold", len(ids), hold)
		}
	})
}

// A key over its KeyRate is parked, counted as parked, can be canceled
// there, and Empty takes parked jobs too.
func TestKeyRateParksAndParkedJobsCanBeCanceled(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("mail")
		if err := q.SetLimits(ctx, Limits{KeyRate: 1, KeyPer: time.Hour}); err != nil {
			t.Fatal(err)
		}
		var a []*Job
		for i := range 3 {
			j, err := q.EnqueueContext(ctx, "send", i, LimitKey("acct-A"))
			if err != nil {
				t.Fatal(err)
			}
			a = append(a, j)
		}
		b, err := q.EnqueueContext(ctx, "send", nil, LimitKey("acct-B"))
		if err != nil {
			t.Fatal(err)
		}
		plain, err := q.EnqueueContext(ctx, "send", nil)
		if err != nil {
			t.Fatal(err)
		}
		ids, hold, _ := dequeueRaw(t, e, q, 10)
		if want := []string{a[0].ID, b.ID, plain.ID}; fmt.Sprint(ids) != fmt.Sprint(want) || hold != 0 {
			t.Fatalf("dequeue handed out %v (hold %d), want %v: one per key and the plain job", ids, hold, want)
		}
		c, _ := q.Counts(ctx)
		if c.Parked != 2 || c.Queued != 0 {
			t.Fatalf("counts %+v, want A's other 2 parked", c)
		}
		when := e.rdb.ZScore(ctx, q.k.parkKeys(), "acct-A").Val()
		if now := float64(time.Now().UnixMilli()); when < now+3500000 || when > now+3600000+5000 {
			t.Errorf("acct-A is looked at again in %.0f ms, want about an hour less 36 s", when-now)
		}
		if err := q.Cancel(ctx, a[1].ID); err != nil {
			t.Fatal(err)
		}
		if j, _ := q.FetchJob(ctx, a[1].ID); j.Status != StatusCanceled {
			t.Errorf("parked job after Cancel: %s", j.Status)
		}
		if c, _ := q.Counts(ctx); c.Parked != 1 {
			t.Errorf("parked after a cancel: %d, want 1", c.Parked)
		}
		// Without key limits the parked job goes back to the queue.
		if err := q.SetLimits(ctx, Limits{Concurrency: 10}); err != nil {
			t.Fatal(err)
		}
		if c, _ := q.Counts(ctx); c.Parked != 0 || c.Queued != 1 {
			t.Fatalf("counts %+v after the key limits went: want the parked job queued", c)
		}
		if err := q.SetLimits(ctx, Limits{KeyRate: 1, KeyPer: time.Hour}); err != nil {
			t.Fatal(err)
		}
		// The new rate counts from now: acct-A's waiting job starts, and the
		// next one parks.
		if _, err := q.EnqueueContext(ctx, "send", nil, LimitKey("acct-A")); err != nil {
			t.Fatal(err)
		}
		if ids, _, _ := dequeueRaw(t, e, q, 10); len(ids) != 1 {
			t.Fatalf("dequeued %v; want one of acct-A's jobs started and one parked", ids)
		}
		if n, err := q.Empty(ctx); err != nil || n != 1 {
			t.Fatalf("Empty = %d, %v; want the parked job deleted", n, err)
		}
		for _, k := range []string{q.k.parked(), q.k.park("acct-A"), q.k.parkKeys()} {
			if e.rdb.Exists(ctx, k).Val() != 0 {
				t.Errorf("key %s left after Empty", k)
			}
		}
	})
}

// Snooze runs the job again after the delay without counting the attempt:
// a job with no retries left still runs.
func TestSnoozeDoesNotCountTheAttempt(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("api")
		j, err := q.EnqueueContext(ctx, "call", nil, Retry(0))
		if err != nil {
			t.Fatal(err)
		}
		var calls atomic.Int64
		w := e.worker(t, WorkerOptions{Queues: []string{"api"}})
		w.Register("call", func(ctx context.Context, j *Job) (any, error) {
			if calls.Add(1) < 3 {
				return nil, Snooze(time.Millisecond)
			}
			return j.Attempt, nil
		})
		start(t, w)
		got := waitJob(t, q, j.ID, StatusFinished)
		if calls.Load() != 3 || got.Attempt != 1 || string(got.Result) != "1" {
			t.Errorf("after two snoozes: %d calls, attempt %d, result %s; want 3 calls all as attempt 1", calls.Load(), got.Attempt, got.Result)
		}
	})
}

// The slot a worker killed with SIGKILL held frees when its lease expires,
// not before: under Concurrency 1 the next job starts after that deadline.
func TestKilledWorkersSlotFreesAtLeaseExpiry(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		if err := q.SetLimits(ctx, Limits{Concurrency: 1}); err != nil {
			t.Fatal(err)
		}
		first, err := q.EnqueueContext(ctx, "hold", nil, Retry(3))
		if err != nil {
			t.Fatal(err)
		}
		const lease = 500 * time.Millisecond
		child, lines := startChild(t, e, lease, time.Hour)
		expectLine(t, lines, "started "+first.ID+" 1")
		if err := child.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		child.Wait()
		deadline := e.rdb.ZScore(ctx, q.k.active(), first.ID).Val()
		second, err := q.EnqueueContext(ctx, "hold", nil)
		if err != nil {
			t.Fatal(err)
		}
		w := e.worker(t, WorkerOptions{Lease: lease})
		w.Register("hold", func(ctx context.Context, j *Job) (any, error) { return "ok", nil })
		start(t, w)
		got := waitJob(t, q, second.ID, StatusFinished)
		waitJob(t, q, first.ID, StatusFinished)
		if s := float64(got.StartedAt.UnixMilli()); s < deadline {
			t.Errorf("second job started %.0f ms before the dead worker's lease expired", deadline-s)
		}
	})
}

// Under a cap a lease that expired is lost, even before a reaper took the
// job: its slot may have gone to another. Without one it is renewed, as
// before.
func TestExpiredLeaseIsNotRenewedUnderACap(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		for _, c := range []struct {
			l    Limits
			lost bool
		}{{Limits{}, false}, {Limits{Concurrency: 1}, true}, {Limits{KeyConcurrency: 1}, true}} {
			q := e.queue(fmt.Sprintf("q-%v-%d", c.lost, c.l.Concurrency))
			if err := q.SetLimits(ctx, c.l); err != nil {
				t.Fatal(err)
			}
			j, err := q.EnqueueContext(ctx, "f", nil)
			if err != nil {
				t.Fatal(err)
			}
			if ids, _, _ := dequeueRaw(t, e, q, 1); len(ids) != 1 {
				t.Fatal("nothing dequeued")
			}
			tok := e.rdb.HGet(ctx, q.k.job(j.ID), "token").Val()
			e.rdb.ZAdd(ctx, q.k.active(), redis.Z{Score: 1, Member: j.ID}) // expired
			lost, err := extendScript.Run(ctx, e.rdb, []string{q.k.active(), q.k.jobPrefix()}, 30000, j.ID, tok).StringSlice()
			if err != nil {
				t.Fatal(err)
			}
			if got := len(lost) == 1; got != c.lost {
				t.Errorf("limits %v: expired lease lost = %v, want %v", c.l, got, c.lost)
			}
		}
	})
}

// A worker held by a Rate asks again when the next start is allowed: the
// jobs all run, spaced as the rate says (by Redis's clock).
func TestRateLimitedQueueKeepsRunning(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("paced")
		// 100 a second: a start every 10 ms, a burst of 2.
		if err := q.SetLimits(ctx, Limits{Rate: 100, Per: time.Second}); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for i := range 20 {
			j, err := q.EnqueueContext(ctx, "f", i)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, j.ID)
		}
		w := e.worker(t, WorkerOptions{Queues: []string{"paced"}})
		w.Register("f", func(ctx context.Context, j *Job) (any, error) { return nil, nil })
		start(t, w)
		var starts []int64
		for _, id := range ids {
			starts = append(starts, waitJob(t, q, id, StatusFinished).StartedAt.UnixMilli())
		}
		slices.Sort(starts)
		for k := 2; k < len(starts); k++ {
			// GCRA: the k-th start comes at least (k+1-burst) gaps after the first.
			if d := starts[k] - starts[0]; d < int64(k-1)*10-1 {
				t.Errorf("start %d came %d ms after the first, want at least %d (Rate 100/s)", k, d, (k-1)*10)
			}
		}
	})
}

// A damaged key of a limit key never drops a job: over the key's limit
// with no park list to take it, the job runs.
func TestDamagedParkListDropsNoJob(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("tenants")
		if err := q.SetLimits(ctx, Limits{KeyConcurrency: 1}); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if _, err := q.EnqueueContext(ctx, "f", nil, LimitKey("A")); err != nil {
				t.Fatal(err)
			}
		}
		e.rdb.Set(ctx, q.k.park("A"), "garbage", 0)
		e.rdb.Set(ctx, q.k.keyRate("A"), "garbage", 0)
		ids, _, _ := dequeueRaw(t, e, q, 10)
		if c, _ := q.Counts(ctx); len(ids) != 2 || c.Started != 2 || c.Queued != 0 || c.Parked != 0 {
			t.Errorf("dequeued %v, counts %+v: want both jobs handed out, none dropped", ids, c)
		}
	})
}

// afterDequeueHold runs f once, after the first dequeue.lua reply that
// answers hold, before the worker sees it.
type afterDequeueHold struct {
	hold int64
	f    func()
	once sync.Once
}

func (h *afterDequeueHold) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *afterDequeueHold) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if _, ok := dequeueAsk(cmd); ok {
			if c, ok := cmd.(noRetry); ok && err == nil {
				if res, _ := c.Slice(); len(res) >= dequeuedHead && res[4] == h.hold {
					h.once.Do(h.f)
				}
			}
		}
		return err
	}
}

func (h *afterDequeueHold) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// The slot that frees while a worker's fetch is on its way to be told the
// queue is full is not missed: the "go" that comes meanwhile ends the hold
// the reply reports.
func TestSlotFreedDuringAFullAnswer(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("capped")
		if err := q.SetLimits(ctx, Limits{Concurrency: 1}); err != nil {
			t.Fatal(err)
		}
		a, _ := q.EnqueueContext(ctx, "f", nil)
		b, _ := q.EnqueueContext(ctx, "f", nil)
		if ids, _, _ := dequeueRaw(t, e, q, 1); len(ids) != 1 || ids[0] != a.ID {
			t.Fatalf("dequeued %v, want %s", ids, a.ID)
		}
		tok := e.rdb.HGet(ctx, q.k.job(a.ID), "token").Val()
		w := e.worker(t, WorkerOptions{Queues: []string{"capped"}})
		w.Register("f", func(ctx context.Context, j *Job) (any, error) { return nil, nil })
		// A second client, so that the hook sees only the worker's calls.
		rdb := redis.NewClient(&redis.Options{Addr: e.addr})
		t.Cleanup(func() { rdb.Close() })
		w.rdb = rdb
		rdb.AddHook(&afterDequeueHold{hold: holdFull, f: func() {
			before := w.qstate[0].goes.Load()
			// a's attempt ends: its slot frees, and the worker is told.
			if err := ackManyScript.Run(ctx, e.rdb, []string{q.k.active(), q.k.finished(), q.k.jobPrefix()}, -1, "1", a.ID, tok, "null").Err(); err != nil {
				t.Error(err)
			}
			// The worker is told: a "go", or a slot token for one waiting
			// worker.
			deadline := time.Now().Add(10 * time.Second)
			for w.qstate[0].goes.Load() == before && e.rdb.LLen(ctx, q.k.slot()).Val() == 0 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
		}})
		start(t, w)
		waitJob(t, q, b.ID, StatusFinished)
	})
}

// Raising a rate applies at once: the state the old rate left does not
// hold the new one back, for the queue or for a key.
func TestRaisedRateAppliesAtOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("mail")
		if err := q.SetLimits(ctx, Limits{Rate: 1, Per: time.Hour, KeyRate: 1, KeyPer: time.Hour}); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			q.EnqueueContext(ctx, "f", nil)
			q.EnqueueContext(ctx, "f", nil, LimitKey("A"))
		}
		if ids, _, _ := dequeueRaw(t, e, q, 10); len(ids) != 1 {
			t.Fatalf("under 1/h: %d started, want 1", len(ids))
		}
		if err := q.SetLimits(ctx, Limits{Rate: 1000, Per: time.Second, KeyRate: 1000, KeyPer: time.Second}); err != nil {
			t.Fatal(err)
		}
		ids, hold, _ := dequeueRaw(t, e, q, 10)
		if len(ids) != 5 || hold != 0 {
			t.Errorf("after raising both rates: %d started (hold %d), want the other 5 at once", len(ids), hold)
		}
	})
}

// A flow hash edited by hand into something dequeue.lua cannot read is
// refused with an error naming it, not a Lua error halfway.
func TestMalformedFlowHashIsRefused(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("mail")
		q.EnqueueContext(ctx, "f", nil)
		for _, bad := range [][]any{{"concurrency", "five"}, {"rate", "10"}} {
			e.rdb.Del(ctx, q.k.flow())
			e.rdb.HSet(ctx, q.k.flow(), bad...)
			k := q.k
			err := dequeueScript.Run(ctx, e.rdb, []string{k.pending(), k.active(), k.scheduled(), k.seq(), k.wake(), k.jobPrefix()}, 10, 30000, "w", "n").Err()
			if !isScriptRefusal(err) || !strings.Contains(err.Error(), "flow") {
				t.Errorf("flow %v: %v, want a refusal naming the flow hash", bad, err)
			}
		}
		if c, _ := q.Counts(ctx); c.Queued != 1 {
			t.Errorf("counts %+v: the job moved", c)
		}
	})
}

// A burst worker waits for the jobs parked for their keys: it returns once
// they too have run.
func TestBurstWaitsForParkedJobs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("mail")
		if err := q.SetLimits(ctx, Limits{KeyRate: 1, KeyPer: 100 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if _, err := q.EnqueueContext(ctx, "f", nil, LimitKey("A")); err != nil {
				t.Fatal(err)
			}
		}
		w := e.worker(t, WorkerOptions{Queues: []string{"mail"}})
		w.Register("f", func(ctx context.Context, j *Job) (any, error) { return nil, nil })
		runBurst(t, w)
		if c, _ := q.Counts(ctx); c.Finished != 3 || c.Parked != 0 {
			t.Errorf("after the burst: %+v, want all 3 finished", c)
		}
	})
}

// A burst worker counts a paused queue as empty: it returns, leaving the
// paused queue's jobs queued.
func TestBurstSkipsAPausedQueue(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("mail")
		if _, err := q.EnqueueContext(ctx, "f", nil); err != nil {
			t.Fatal(err)
		}
		if err := q.Pause(ctx); err != nil {
			t.Fatal(err)
		}
		w := e.worker(t, WorkerOptions{Queues: []string{"mail"}})
		w.Register("f", func(ctx context.Context, j *Job) (any, error) { return nil, nil })
		runBurst(t, w)
		if c, _ := q.Counts(ctx); c.Queued != 1 || c.Finished != 0 {
			t.Errorf("after a burst over a paused queue: %+v, want its job still queued", c)
		}
	})
}

// A queue whose flow hash was deleted by hand has no key limits, and no
// fetch looks at its parked jobs: the next reap sends them back to the head
// of the queue, so none is stranded.
func TestReapUnparksWhenTheFlowHashIsGone(t *testing.T) {
	forEachBackend(t, reapUnparks)
}

// parkTwo enqueues 3 jobs of limit key "a" on a queue of KeyConcurrency 1
// and leases one to a worker that is not there (for 30 s): the other two
// are parked. It returns the queue and the leased job's id.
func parkTwo(t *testing.T, e *testEnv) (*Queue, string) {
	t.Helper()
	ctx := t.Context()
	q := e.queue("tenants")
	if err := q.SetLimits(ctx, Limits{KeyConcurrency: 1}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := q.EnqueueContext(ctx, "f", i, LimitKey("a")); err != nil {
			t.Fatal(err)
		}
	}
	ids, _, _ := dequeueRaw(t, e, q, 10)
	if len(ids) != 1 {
		t.Fatalf("dequeue handed out %d jobs, want 1 (KeyConcurrency 1)", len(ids))
	}
	if c, err := q.Counts(ctx); err != nil || c.Parked != 2 {
		t.Fatalf("counts %+v, %v; want 2 parked", c, err)
	}
	return q, ids[0]
}

func reapUnparks(t *testing.T, e *testEnv) {
	ctx := t.Context()
	q, _ := parkTwo(t, e)
	if err := e.rdb.Del(ctx, q.k.flow()).Err(); err != nil {
		t.Fatal(err)
	}
	if err := reapScript.Run(ctx, e.rdb, newWorkerQueue(e.prefix, q.Name()).reapKeys, 1000, 1000, -1, 60000).Err(); err != nil {
		t.Fatal(err)
	}
	c, err := q.Counts(ctx)
	if err != nil || c.Parked != 0 || c.Queued != 2 {
		t.Fatalf("after the reap: counts %+v, %v; want 2 queued, none parked", c, err)
	}
	if n, err := e.rdb.Exists(ctx, q.k.parked(), q.k.parkKeys(), q.k.park("a")).Result(); err != nil || n != 0 {
		t.Fatalf("%d park keys left (%v), want none", n, err)
	}
	if ids, hold, _ := dequeueRaw(t, e, q, 10); len(ids) != 2 || hold != 0 {
		t.Fatalf("then a dequeue handed out %d jobs (hold %d), want the 2 unparked", len(ids), hold)
	}
}

// idleWorker starts a worker of queue "tenants" whose handler of "f" sends
// the job's id on the returned channel, and returns once the worker is idle
// after its start-up fetch and reap (the reap takes the queue's reaper
// lock, for a reap period).
func idleWorker(t *testing.T, e *testEnv, setup func(*Worker)) <-chan string {
	t.Helper()
	ran := make(chan string, 3)
	w := e.worker(t, WorkerOptions{Queues: []string{"tenants"}, Lease: 3 * time.Second})
	w.Register("f", func(ctx context.Context, j *Job) (any, error) {
		ran <- j.ID
		return nil, nil
	})
	idle, reaped := make(chan struct{}, 1), make(chan struct{}, 1)
	signal := func(c chan struct{}) func() {
		return func() {
			select {
			case c <- struct{}{}:
			default:
			}
		}
	}
	w.waiting, w.reapReplied = signal(idle), signal(reaped)
	if setup != nil {
		setup(w)
	}
	start(t, w)
	<-idle
	<-reaped
	return ran
}

// expectRuns waits for n jobs to run, none of them not.
func expectRuns(t *testing.T, ran <-chan string, n int, not, why string) {
	t.Helper()
	for range n {
		select {
		case id := <-ran:
			if id == not {
				t.Fatalf("ran %s, the job whose lease another worker holds", id)
			}
		case <-time.After(10 * time.Second):
			t.Fatal(why)
		}
	}
}

// The same through a running worker: it keeps reaping a queue with leases,
// so the jobs parked behind a slot another worker holds run soon after the
// flow hash is deleted, though no slot frees.
func TestWorkerRunsJobsParkedWhenTheFlowHashGoes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		q, held := parkTwo(t, e)
		ran := idleWorker(t, e, nil) // the jobs are parked: its next reap has to find them
		if err := e.rdb.Del(t.Context(), q.k.flow()).Err(); err != nil {
			t.Fatal(err)
		}
		expectRuns(t, ran, 2, held, "a job parked when the flow hash was deleted did not run")
	})
}

// A queue with no leases and no registry entries is not reaped on a
// schedule; a worker's sweep that sees a parked key past its time asks for
// a reap, which sends back the jobs parked in a queue without a flow hash.
func TestSweepAsksForAReapOfStrandedParkedJobs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		ran := idleWorker(t, e, func(w *Worker) { w.maxBlock = 50 * time.Millisecond })
		// The state a hand-deleted flow hash leaves: two jobs parked for key
		// "a", whose time has come, and no limits. The queue has no leases.
		// (Enqueued for later, so that the worker leaves them alone.)
		q := e.queue("tenants")
		k := q.k
		var ids []string
		for i := range 2 {
			j, err := q.EnqueueContext(ctx, "f", i, In(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, j.ID)
		}
		if _, err := e.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.ZRem(ctx, k.scheduled(), ids[0], ids[1])
			for _, id := range ids {
				p.HSet(ctx, k.job(id), fStatus, string(StatusQueued))
			}
			p.RPush(ctx, k.park("a"), ids[0], ids[1])
			p.ZAdd(ctx, k.parked(), redis.Z{Score: 1, Member: ids[0]}, redis.Z{Score: 1, Member: ids[1]})
			p.ZAdd(ctx, k.parkKeys(), redis.Z{Score: 1, Member: "a"})
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		expectRuns(t, ran, 2, "", "jobs parked in a queue without a flow hash and without leases did not run")
	})
}
