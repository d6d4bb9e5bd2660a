package rqgo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo/internal/redistest"
)

// dup enqueues and wants ErrDuplicate naming holder.
func dup(t *testing.T, q *Queue, holder string, fn string, args any, opts ...EnqueueOption) {
	t.Helper()
	j, err := q.Enqueue(fn, args, opts...)
	if !errors.Is(err, ErrDuplicate) || j == nil || j.ID != holder {
		t.Fatalf("Enqueue = %+v, %v; want ErrDuplicate with holder %s", j, err, holder)
	}
}

func mustEnqueue(t *testing.T, q *Queue, fn string, args any, opts ...EnqueueOption) *Job {
	t.Helper()
	j, err := q.Enqueue(fn, args, opts...)
	if err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	return j
}

func TestUniqueKeyDerivedAndExplicit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := context.Background()
		q := e.queue("a")
		u := Unique(UniqueOpts{})
		first := mustEnqueue(t, q, "step", json.RawMessage(`{"a":1,"b":[1,2]}`), u)
		// Key order and whitespace do not matter; other args or another
		// function are other keys.
		dup(t, q, first.ID, "step", json.RawMessage(`{ "b": [1, 2], "a": 1 }`), u)
		mustEnqueue(t, q, "step", json.RawMessage(`{"a":2,"b":[1,2]}`), u)
		mustEnqueue(t, q, "other", json.RawMessage(`{"a":1,"b":[1,2]}`), u)
		// Another queue is another scope.
		mustEnqueue(t, e.queue("b"), "step", json.RawMessage(`{"a":1,"b":[1,2]}`), u)
		ex := Unique(UniqueOpts{Key: "reindex:doc-42"})
		held := mustEnqueue(t, q, "reindex", 1, ex)
		dup(t, q, held.ID, "reindex", 2, ex)
		if id, err := q.UniqueHolder(ctx, "reindex:doc-42"); err != nil || id != held.ID {
			t.Fatalf("UniqueHolder = %q, %v", id, err)
		}
		got, _ := q.FetchJob(ctx, held.ID)
		if got.UniqueKey != "reindex:doc-42" || got.UniqueUntil != UntilEnded {
			t.Fatalf("job's unique fields: %+v", got)
		}
		// EnqueueMany reports a duplicate per job.
		jobs, err := q.EnqueueMany(ctx, []EnqueueRequest{
			{Func: "reindex", Args: 3, Options: []EnqueueOption{ex}},
			{Func: "step", Args: "free", Options: []EnqueueOption{u}},
		})
		var me *EnqueueManyError
		if !errors.As(err, &me) || !errors.Is(me.Errs[0], ErrDuplicate) || me.Errs[1] != nil || jobs[0].ID != held.ID {
			t.Fatalf("EnqueueMany = %v, %v", jobs, err)
		}
	})
}

// UntilEnded holds the key through retries and frees it when the job ends;
// UntilStarted frees it when an attempt starts.
func TestUniqueUntil(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		q := e.queue("a")
		release := make(chan struct{})
		started := make(chan string, 10)
		var failures atomic.Int32
		w := e.worker(t, WorkerOptions{Queues: []string{"a"}, Concurrency: 4, Retry: RetryPolicy{Intervals: []time.Duration{time.Millisecond}}})
		w.Register("slow", func(ctx context.Context, j *Job) (any, error) {
			started <- j.ID
			<-release
			return nil, nil
		})
		w.Register("flaky", func(ctx context.Context, j *Job) (any, error) {
			if j.Attempt == 1 {
				failures.Add(1)
				started <- j.ID
				<-release
				return nil, errors.New("first attempt fails")
			}
			return nil, nil
		})
		start(t, w)

		ended := Unique(UniqueOpts{Key: "k-ended"})
		j := mustEnqueue(t, q, "flaky", nil, ended, Retry(2))
		<-started
		dup(t, q, j.ID, "flaky", nil, ended) // running
		release <- struct{}{}
		waitEnd(t, q, j.ID, StatusFinished)
		if failures.Load() != 1 {
			t.Fatalf("%d failed attempts, want 1", failures.Load())
		}
		mustEnqueue(t, q, "noop", nil, ended) // ended: free

		startedKey := Unique(UniqueOpts{Key: "k-started", Until: UntilStarted})
		s := mustEnqueue(t, q, "slow", nil, startedKey, In(time.Hour))
		dup(t, q, s.ID, "slow", nil, startedKey) // waiting
		if err := q.Cancel(context.Background(), s.ID); err != nil {
			t.Fatal(err)
		}
		s = mustEnqueue(t, q, "slow", nil, startedKey) // the canceled one let go
		<-started
		next := mustEnqueue(t, q, "slow", nil, startedKey, In(time.Hour)) // it started: free
		dup(t, q, next.ID, "slow", nil, startedKey)
		close(release)
		waitEnd(t, q, s.ID, StatusFinished)
	})
}

// For keeps the key for a window after enqueue, even once the job ended.
func TestUniqueFor(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		q := e.queue("a")
		start(t, stepWorker(t, e, &order{}, "a"))
		u := Unique(UniqueOpts{Key: "digest:user-1", For: 400 * time.Millisecond})
		j := mustEnqueue(t, q, "step", "x", u)
		waitEnd(t, q, j.ID, StatusFinished)
		dup(t, q, j.ID, "step", "y", u) // ended, window open
		waitFor(t, 10*time.Second, "the window to close", func() bool {
			_, err := q.Enqueue("step", "z", u)
			return err == nil
		})
	})
}

// No leaked key blocks enqueues: a key whose job hash was deleted, expired,
// or whose worker was killed mid-job is taken over exactly when its job no
// longer holds it.
func TestUniqueKeyHeals(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := context.Background()
		q := e.queue("a")
		u := Unique(UniqueOpts{Key: "k"})
		j := mustEnqueue(t, q, "step", nil, u)
		e.rdb.Del(ctx, q.k.job(j.ID))
		e.rdb.LRem(ctx, q.k.pending(), 0, j.ID)
		j = mustEnqueue(t, q, "step", nil, u) // deleted: taken over

		// An ended job whose hash expires.
		ex := Unique(UniqueOpts{Key: "k2"})
		f := mustEnqueue(t, q, "step", nil, ex, ResultTTL(200*time.Millisecond))
		start(t, stepWorker(t, e, &order{}, "a"))
		waitEnd(t, q, f.ID, StatusFinished)
		waitFor(t, 10*time.Second, "the hash to expire", func() bool {
			return e.rdb.Exists(ctx, q.k.job(f.ID)).Val() == 0
		})
		mustEnqueue(t, q, "step", nil, ex)

		// A worker killed mid-job: held while its lease runs and it retries
		// (as a reaped lease puts it back), free once the reaper fails it.
		k3 := Unique(UniqueOpts{Key: "k3"})
		w := e.queue("dead")
		d := mustEnqueue(t, w, "step", nil, k3, Retry(0))
		kd := newKeys(e.prefix, "dead")
		e.rdb.LRem(ctx, kd.pending(), 0, d.ID)
		e.rdb.HSet(ctx, kd.job(d.ID), "status", "started", "attempt", 1, "token", "1:dead")
		e.rdb.ZAdd(ctx, kd.active(), redis.Z{Score: float64(time.Now().Add(time.Hour).UnixMilli()), Member: d.ID})
		dup(t, w, d.ID, "step", nil, k3) // its lease still runs
		e.rdb.ZAdd(ctx, kd.active(), redis.Z{Score: 1, Member: d.ID})
		start(t, stepWorker(t, e, &order{}, "dead"))
		waitEnd(t, w, d.ID, StatusFailed)
		mustEnqueue(t, w, "step", nil, k3)
	})
}

func TestDebounce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := context.Background()
		q := e.queue("a")
		db := []EnqueueOption{Debounce(time.Hour, 0), Unique(UniqueOpts{Key: "index"})}
		first := mustEnqueue(t, q, "step", "v1", db...)
		if first.Status != StatusScheduled {
			t.Fatalf("first debounced job is %s, want scheduled", first.Status)
		}
		for _, v := range []string{"v2", "v3"} {
			j, err := q.Enqueue("step", v, db...)
			if err != nil || j.ID != first.ID {
				t.Fatalf("Enqueue(%s) = %+v, %v; want the same job, nil", v, j, err)
			}
		}
		got, _ := q.FetchJob(ctx, first.ID)
		if string(got.Args) != `"v3"` {
			t.Fatalf("args %s, want the newest", got.Args)
		}
		if n := e.rdb.ZCard(ctx, q.k.scheduled()).Val(); n != 1 {
			t.Fatalf("%d scheduled jobs, want 1", n)
		}
		// maxWait bounds the postponement from the first enqueue.
		capped := []EnqueueOption{Debounce(time.Hour, time.Hour), Unique(UniqueOpts{Key: "capped"})}
		c := mustEnqueue(t, q, "other", nil, capped...)
		c0, _ := q.FetchJob(ctx, c.ID)
		mustEnqueue(t, q, "other", nil, capped...)
		c1, _ := q.FetchJob(ctx, c.ID)
		if !c1.ScheduledAt.Equal(c0.ScheduledAt) {
			t.Fatalf("postponed from %s to %s, past maxWait", c0.ScheduledAt, c1.ScheduledAt)
		}
		// A short debounce runs once, with the newest args.
		var o order
		start(t, stepWorker(t, e, &o, "a"))
		// Alone, Debounce keys the job by function and args.
		if a, b := mustEnqueue(t, q, "other", "x", Debounce(time.Hour, 0)), mustEnqueue(t, q, "other", "x", Debounce(time.Hour, 0)); a.ID != b.ID {
			t.Fatalf("two debounced enqueues of the same args made jobs %s and %s", a.ID, b.ID)
		}
		short := []EnqueueOption{Debounce(150*time.Millisecond, 0), Unique(UniqueOpts{Key: "short"})}
		s := mustEnqueue(t, q, "step", "s1", short...)
		if j := mustEnqueue(t, q, "step", "s2", short...); j.ID != s.ID {
			t.Fatalf("second debounced enqueue made job %s, want %s", j.ID, s.ID)
		}
		waitEnd(t, q, s.ID, StatusFinished)
		if ran := strings.Join(o.list(), " "); ran != "s2" {
			t.Fatalf("ran %q, want s2", ran)
		}
	})
}

// A job that misses its StartWithin window is canceled when a worker would
// have started it, its dependents with it, and its unique key freed.
func TestStartWithin(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		q := e.queue("a")
		u := Unique(UniqueOpts{Key: "reset:user-1"})
		late := mustEnqueue(t, q, "step", "late", StartWithin(time.Millisecond), In(50*time.Millisecond), u)
		child := mustEnqueue(t, q, "step", "child", DependsOn(late))
		on := mustEnqueue(t, q, "step", "on time", StartWithin(time.Hour))
		var o order
		start(t, stepWorker(t, e, &o, "a"))
		j := waitEnd(t, q, late.ID, StatusCanceled)
		if !strings.HasPrefix(j.Error, "expired: not started by ") {
			t.Fatalf("error %q", j.Error)
		}
		waitEnd(t, q, child.ID, StatusCanceled)
		waitEnd(t, q, on.ID, StatusFinished)
		mustEnqueue(t, q, "step", "again", u)
		if strings.Contains(strings.Join(o.list(), " "), "late") {
			t.Fatal("the expired job ran")
		}
	})
}

// Requeue takes the key again, or reports ErrDuplicate when another job
// holds it; DependsOn and Unique go together.
func TestUniqueRequeueAndDependsOn(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := context.Background()
		q := e.queue("a")
		u := Unique(UniqueOpts{Key: "k"})
		f := mustEnqueue(t, q, "step", nil, u, In(time.Hour))
		if err := q.Cancel(ctx, f.ID); err != nil {
			t.Fatal(err)
		}
		other := mustEnqueue(t, q, "step", nil, u, In(time.Hour))
		if n, err := q.Requeue(ctx, f.ID); n != 0 || !errors.Is(err, ErrDuplicate) || !strings.Contains(err.Error(), other.ID) {
			t.Fatalf("Requeue = %d, %v; want ErrDuplicate naming %s", n, err, other.ID)
		}
		q.Cancel(ctx, other.ID)
		if n, err := q.Requeue(ctx, f.ID); n != 1 || err != nil {
			t.Fatalf("Requeue = %d, %v", n, err)
		}
		if id, _ := q.UniqueHolder(ctx, "k"); id != f.ID {
			t.Fatalf("holder %q, want the requeued %s", id, f.ID)
		}
		p := mustEnqueue(t, q, "step", nil, In(time.Hour))
		d := mustEnqueue(t, q, "step", "d", DependsOn(p), Unique(UniqueOpts{Key: "dep"}))
		dup(t, q, d.ID, "step", "d2", DependsOn(p), Unique(UniqueOpts{Key: "dep"}))
		dup(t, q, d.ID, "step", "d3", Unique(UniqueOpts{Key: "dep"}))
		q.Cancel(ctx, p.ID) // the dependent is canceled: the key is free
		mustEnqueue(t, q, "step", nil, Unique(UniqueOpts{Key: "dep"}))
	})
}

func TestUniqueBadInput(t *testing.T) {
	e := newMiniEnv(t)
	q := e.queue("a")
	p := mustEnqueue(t, q, "step", nil)
	for name, opts := range map[string][]EnqueueOption{
		"key with space":    {Unique(UniqueOpts{Key: "a b"})},
		"key too long":      {Unique(UniqueOpts{Key: strings.Repeat("k", 201)})},
		"negative For":      {Unique(UniqueOpts{For: -time.Second})},
		"negative debounce": {Debounce(-time.Second, 0)},
		"zero debounce":     {Debounce(0, 0)},
		"negative maxWait":  {Debounce(time.Second, -time.Second)},
		"maxWait < d":       {Debounce(time.Second, time.Millisecond)},
		"StartWithin(0)":    {StartWithin(0)},
		"debounce+depends":  {Debounce(time.Second, 0), DependsOn(p)},
		"within < debounce": {Debounce(time.Second, 0), StartWithin(time.Millisecond)},
	} {
		_, err := q.Enqueue("step", nil, opts...)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if c, _ := q.Counts(context.Background()); c.Queued != 1 || c.Scheduled+c.Deferred != 0 {
		t.Fatalf("counts %+v: something was enqueued", c)
	}
}

// 50 goroutines enqueue 1,000 jobs each over 100 keys: exactly 100 jobs
// exist.
func TestUniqueConcurrentEnqueues(t *testing.T) {
	run := func(t *testing.T, e *testEnv) {
		q := e.queue("a")
		var wg sync.WaitGroup
		var created, dups atomic.Int64
		errs := make(chan error, 50)
		for g := range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 1000 {
					_, err := q.Enqueue("step", nil, Unique(UniqueOpts{Key: fmt.Sprint("k", (g*1000+i)%100)}))
					switch {
					case err == nil:
						created.Add(1)
					case errors.Is(err, ErrDuplicate):
						dups.Add(1)
					default:
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		c, err := q.Counts(context.Background())
		if err != nil || c.Queued != 100 || created.Load() != 100 || dups.Load() != 49900 {
			t.Fatalf("%d created, %d duplicates, counts %+v, %v; want 100 jobs", created.Load(), dups.Load(), c, err)
		}
	}
	t.Run("redis", func(t *testing.T) { run(t, newRealEnv(t)) })
	t.Run("cluster", func(t *testing.T) {
		skipShort(t)
		run(t, clusterEnv(t, redistest.StartCluster(t, 3, 0)))
	})
}

// A worker killed with SIGKILL mid-job: the key stays held while the job's
// lease runs and through its retry, and is free once the retry ends.
func TestUniqueKeyWorkerKilled(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		q := e.queue("default")
		u := Unique(UniqueOpts{Key: "k"})
		job := mustEnqueue(t, q, "hold", nil, u, Retry(3))
		const lease = 300 * time.Millisecond
		child, lines := startChild(t, e, lease, time.Hour)
		expectLine(t, lines, "started "+job.ID+" 1")
		if err := child.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		child.Wait()
		dup(t, q, job.ID, "hold", nil, u) // its lease still runs
		release := make(chan struct{})
		retried := make(chan struct{})
		w := e.worker(t, WorkerOptions{Lease: lease})
		w.Register("hold", func(ctx context.Context, j *Job) (any, error) {
			close(retried)
			<-release
			return "recovered", nil
		})
		start(t, w)
		<-retried
		dup(t, q, job.ID, "hold", nil, u) // held through the retry
		close(release)
		waitEnd(t, q, job.ID, StatusFinished)
		mustEnqueue(t, q, "other", nil, u)
	})
}

// StartWithin covers retries: a retry due after the window is canceled
// when a worker would start it, not run.
func TestStartWithinCoversRetries(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		q := e.queue("a")
		var attempts atomic.Int32
		w := e.worker(t, WorkerOptions{Queues: []string{"a"}})
		w.Register("once", func(ctx context.Context, j *Job) (any, error) {
			attempts.Add(1)
			return nil, errors.New("fails")
		})
		start(t, w)
		j := mustEnqueue(t, q, "once", nil, StartWithin(100*time.Millisecond), Retry(3), RetryIntervals(300*time.Millisecond))
		got := waitEnd(t, q, j.ID, StatusCanceled)
		if attempts.Load() != 1 || !strings.HasPrefix(got.Error, "expired: ") {
			t.Fatalf("%d attempts, error %q; want 1 attempt, then expired", attempts.Load(), got.Error)
		}
	})
}
