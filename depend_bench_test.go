package rqgo

// Benchmarks of workflows on the real Redis at $REDIS_URL (skipped when
// none answers): how soon Queue.Wait returns once a job's handler has
// returned, what 10,000 concurrent Waits cost, and the processing rate of
// jobs with parents against plain jobs. The comparisons run both sides in
// turn within each iteration, so a run of a few iterations is an
// interleaved A/B/A/B series:
//
//	go test -run '^$' -bench 'Wait|DependsOn|FanIn' -benchtime 5x

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo/internal/redistest"
)

// realBench is the real Redis, with a fresh prefix; the benchmark is
// skipped when none answers (it fails instead with RQGO_REQUIRE_REDIS=1).
func realBench(b *testing.B) *testEnv {
	b.Helper()
	e, err := dialReal(b)
	if err != nil {
		if os.Getenv("RQGO_REQUIRE_REDIS") == "1" {
			b.Fatalf("no Redis at %s and RQGO_REQUIRE_REDIS=1: %v", redistest.SharedURL(), err)
		}
		b.Skipf("no Redis at %s (%v); set REDIS_URL to run this benchmark against real Redis", redistest.SharedURL(), err)
	}
	return e
}

// runEnv is a prefix of its own for one run of a benchmark, its keys
// deleted when the run ends, so that runs do not pile up jobs in Redis.
func runEnv(b *testing.B, e *testEnv) (*testEnv, func()) {
	r := &testEnv{rdb: e.rdb, prefix: e.prefix + "-" + newID()[:8], addr: e.addr}
	var once sync.Once
	done := func() { once.Do(func() { redistest.DeletePrefix(b, e.rdb, r.prefix) }) }
	b.Cleanup(done)
	return r, done
}

var benchLog = slog.New(slog.DiscardHandler)

// runBenchWorker starts w and returns a stop that shuts it down and fails the
// benchmark if Run returned an error.
func runBenchWorker(b *testing.B, w *Worker) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				b.Errorf("Worker.Run: %v", err)
			}
		})
	}
	b.Cleanup(stop)
	return stop
}

// enqueuePlain enqueues n no-op jobs of func fn with EnqueueMany, 500 a
// call, and returns them.
func enqueuePlain(b *testing.B, q *Queue, fn string, n int) []*Job {
	b.Helper()
	var jobs []*Job
	for len(jobs) < n {
		reqs := make([]EnqueueRequest, min(500, n-len(jobs)))
		for i := range reqs {
			reqs[i] = EnqueueRequest{Func: fn}
		}
		js, err := q.EnqueueMany(context.Background(), reqs)
		if err != nil {
			b.Fatal(err)
		}
		jobs = append(jobs, js...)
	}
	return jobs
}

// percentile is the p-th percentile (0 < p ≤ 1) of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func medianOf(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// awaitWaited waits until a Wait of q for each id is blocked on its
// notification: until q's Waits have all joined the subscription, then
// until each job has the waited field wait.lua sets (polled, as nothing
// tells the benchmark).
func awaitWaited(b *testing.B, rdb redis.UniversalClient, q *Queue, ids []string) {
	b.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		q.waits.mu.Lock()
		joined := q.waits.n
		q.waits.mu.Unlock()
		if joined >= len(ids) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d Waits joined within 2 minutes", joined, len(ids))
		}
		time.Sleep(time.Millisecond)
	}
	pause := 20 * time.Microsecond
	for {
		cmds := make([]*redis.BoolCmd, len(ids))
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range ids {
				cmds[i] = p.HExists(ctx, q.k.job(id), "waited")
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		left := 0
		for _, c := range cmds {
			if !c.Val() {
				left++
			}
		}
		if left == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d Waits not blocked within 2 minutes", left, len(ids))
		}
		time.Sleep(pause)
		pause = min(2*pause, 50*time.Millisecond)
	}
}

// waitingClient is a client of the waiting side's own, named name.
func waitingClient(b *testing.B, name string) *redis.Client {
	opts, _ := redis.ParseURL(redistest.SharedURL())
	opts.ClientName = name
	client := redis.NewClient(opts)
	b.Cleanup(func() { client.Close() })
	return client
}

// BenchmarkWait measures the latency from a job's handler returning to
// Queue.Wait returning that job, one job at a time, while the Wait is
// blocked on its notification: the ack, the publish, the subscription's
// delivery and the Wait's read of the ended job. It reports the p50 and
// p99 over the iterations, and the subscriptions opened per Wait (the last
// Wait of a Queue to return closes the shared subscription).
func BenchmarkWait(b *testing.B) {
	e := realBench(b)
	ctx := context.Background()
	client := waitingClient(b, "")
	q := NewQueue("wait", client, WithPrefix(e.prefix))
	var ended atomic.Int64 // when the current job's handler returned, Unix ns
	started, release := make(chan string), make(chan struct{})
	w := NewWorker(e.rdb, WorkerOptions{Prefix: e.prefix, Queues: []string{"wait"}, Logger: benchLog})
	w.Register("hold", func(ctx context.Context, j *Job) (any, error) {
		select {
		case started <- j.ID:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		ended.Store(time.Now().UnixNano())
		return nil, nil
	})
	runBenchWorker(b, w)
	type waited struct {
		at  time.Time
		j   *Job
		err error
	}
	lat := make([]time.Duration, 0, b.N)
	subs0 := client.PoolStats().PubSubStats.Created
	for range b.N {
		j, err := q.EnqueueContext(ctx, "hold", nil)
		if err != nil {
			b.Fatal(err)
		}
		if id := <-started; id != j.ID {
			b.Fatalf("handler started job %s, want %s", id, j.ID)
		}
		done := make(chan waited, 1)
		go func(id string) {
			got, err := q.Wait(ctx, id)
			done <- waited{time.Now(), got, err}
		}(j.ID)
		awaitWaited(b, e.rdb, q, []string{j.ID})
		release <- struct{}{}
		r := <-done
		if r.err != nil {
			b.Fatal(r.err)
		}
		if r.j.Status != StatusFinished {
			b.Fatalf("Wait returned job %s with status %s, want %s", r.j.ID, r.j.Status, StatusFinished)
		}
		lat = append(lat, r.at.Sub(time.Unix(0, ended.Load())))
	}
	slices.Sort(lat)
	b.ReportMetric(micros(percentile(lat, 0.5)), "p50-µs")
	b.ReportMetric(micros(percentile(lat, 0.99)), "p99-µs")
	b.ReportMetric(float64(client.PoolStats().PubSubStats.Created-subs0)/float64(b.N), "subscriptions/op")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkWaitMany has 10,000 Waits in flight at once in one process, on
// a client of their own, then starts a worker (concurrency 10) on their
// 10,000 jobs. It reports the Redis connections that client has open once
// every Wait is blocked (CLIENT LIST, by the client's name), its
// subscriptions and pool timeouts (PoolStats), and how long it took to get
// every Wait blocked; then, from the worker's start, how long until every
// Wait has returned, the part of that after the last handler returned, and
// each job's latency from its handler returning to its Wait returning
// (p50, p99). For scale, each iteration also times the same worker on
// 10,000 jobs nobody waits for (no-wait-ms), before or after, in
// alternating order. Figures are medians over the iterations.
func BenchmarkWaitMany(b *testing.B) {
	const n = 10000
	base := realBench(b)
	ctx := context.Background()
	var conns, subs, timeouts, join, all, tail, p50, p99, alone []float64
	baseline := func() {
		e, cleanup := runEnv(b, base)
		defer cleanup()
		enqueuePlain(b, e.queue("many"), "noop", n)
		alone = append(alone, millis(processRun(b, e, "many", n, "")))
	}
	for i := range b.N {
		b.StopTimer()
		if i%2 == 1 {
			baseline()
		}
		e, cleanup := runEnv(b, base)
		name := "rqgo-bench-" + newID()[:12]
		client := waitingClient(b, name)
		q := NewQueue("many", client, WithPrefix(e.prefix))
		jobs := enqueuePlain(b, e.queue("many"), "noop", n)
		ids := make([]string, n)
		index := make(map[string]int, n)
		for i, j := range jobs {
			ids[i] = j.ID
			index[j.ID] = i
		}
		ends, returned := make([]time.Time, n), make([]time.Time, n)
		var wg sync.WaitGroup
		var (
			mu       sync.Mutex
			failures int
			firstErr error
		)
		t0 := time.Now()
		for i, id := range ids {
			wg.Go(func() {
				j, err := q.Wait(ctx, id)
				returned[i] = time.Now()
				if err == nil && j.Status != StatusFinished {
					err = fmt.Errorf("job %s ended %s", id, j.Status)
				}
				if err != nil {
					mu.Lock()
					if failures++; firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			})
		}
		awaitWaited(b, e.rdb, q, ids)
		join = append(join, millis(time.Since(t0)))
		st := client.PoolStats()
		subs = append(subs, float64(st.PubSubStats.Active))
		timeouts = append(timeouts, float64(st.Timeouts))
		conns = append(conns, float64(namedClients(b, e.rdb, name)))

		w := NewWorker(e.rdb, WorkerOptions{Prefix: e.prefix, Queues: []string{"many"}, Logger: benchLog})
		w.Register("noop", func(ctx context.Context, j *Job) (any, error) {
			ends[index[j.ID]] = time.Now()
			return nil, nil
		})
		b.StartTimer()
		t1 := time.Now()
		stop := runBenchWorker(b, w)
		wg.Wait()
		b.StopTimer()
		stop()
		if failures > 0 {
			b.Fatalf("%d of %d Waits failed; first: %v", failures, n, firstErr)
		}
		lat := make([]time.Duration, n)
		var lastEnd, lastReturn time.Time
		for i := range n {
			lat[i] = returned[i].Sub(ends[i])
			if ends[i].After(lastEnd) {
				lastEnd = ends[i]
			}
			if returned[i].After(lastReturn) {
				lastReturn = returned[i]
			}
		}
		slices.Sort(lat)
		all = append(all, millis(lastReturn.Sub(t1)))
		tail = append(tail, millis(lastReturn.Sub(lastEnd)))
		p50 = append(p50, millis(percentile(lat, 0.5)))
		p99 = append(p99, millis(percentile(lat, 0.99)))
		client.Close()
		cleanup()
		if i%2 == 0 {
			baseline()
		}
	}
	b.ReportMetric(medianOf(conns), "conns")
	b.ReportMetric(medianOf(subs), "pubsub-conns")
	b.ReportMetric(medianOf(timeouts), "pool-timeouts")
	b.ReportMetric(medianOf(join), "join-ms")
	b.ReportMetric(medianOf(all), "all-returned-ms")
	b.ReportMetric(medianOf(tail), "after-last-job-ms")
	b.ReportMetric(medianOf(alone), "no-wait-ms")
	b.ReportMetric(medianOf(p50), "p50-ms")
	b.ReportMetric(medianOf(p99), "p99-ms")
}

// namedClients counts the connections Redis has open for clients named
// name.
func namedClients(b *testing.B, rdb redis.UniversalClient, name string) int {
	b.Helper()
	list, err := rdb.ClientList(context.Background()).Result()
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for line := range strings.SplitSeq(list, "\n") {
		for f := range strings.FieldsSeq(line) {
			if f == "name="+name {
				n++
			}
		}
	}
	return n
}

// processRun starts a worker (concurrency 10) on queue name of e and
// returns the time from its start until its handlers have run want times
// (or, with last set, until the job last has run).
func processRun(b *testing.B, e *testEnv, name string, want int, last string) time.Duration {
	b.Helper()
	var (
		count atomic.Int64
		once  sync.Once
		done  = make(chan struct{})
	)
	w := NewWorker(e.rdb, WorkerOptions{Prefix: e.prefix, Queues: []string{name}, Logger: benchLog})
	w.Register("noop", func(ctx context.Context, j *Job) (any, error) {
		if count.Add(1) == int64(want) || j.ID == last {
			once.Do(func() { close(done) })
		}
		return nil, nil
	})
	start := time.Now()
	stop := runBenchWorker(b, w)
	timeout := time.NewTimer(2 * time.Minute)
	defer timeout.Stop()
	select {
	case <-done:
	case <-timeout.C:
		b.Fatalf("%d of %d jobs ran within 2 minutes", count.Load(), want)
	}
	d := time.Since(start)
	stop()
	return d
}

// BenchmarkDependsOn compares the processing rate of jobs with one parent
// with that of plain jobs: 5,000 parents and 5,000 children, each child
// DependsOn one parent (enqueued deferred before the worker starts),
// against 10,000 plain jobs, each timed from the worker's start until
// every handler has run. Each iteration runs both, in alternating order;
// the figures are medians over the iterations.
func BenchmarkDependsOn(b *testing.B) {
	const pairs = 5000
	base := realBench(b)
	var plain, child []float64
	run := func(withParents bool) float64 {
		e, cleanup := runEnv(b, base)
		defer cleanup()
		q := e.queue("dep")
		parents := enqueuePlain(b, q, "noop", pairs)
		if withParents {
			enqueueChildren(b, q, parents)
			if c, err := q.Counts(context.Background()); err != nil || c.Deferred != pairs {
				b.Fatalf("Counts = %+v, %v; want %d deferred", c, err, pairs)
			}
		} else {
			enqueuePlain(b, q, "noop", pairs)
		}
		b.StartTimer()
		d := processRun(b, e, "dep", 2*pairs, "")
		b.StopTimer()
		b.Logf("one parent %v: %.0f jobs/s", withParents, 2*pairs/d.Seconds())
		return 2 * pairs / d.Seconds()
	}
	b.StopTimer()
	for i := range b.N {
		if i%2 == 0 {
			plain = append(plain, run(false))
			child = append(child, run(true))
		} else {
			child = append(child, run(true))
			plain = append(plain, run(false))
		}
	}
	b.ReportMetric(medianOf(plain), "plain-jobs/s")
	b.ReportMetric(medianOf(child), "one-parent-jobs/s")
	b.ReportMetric(medianOf(child)/medianOf(plain), "ratio")
	b.ReportMetric(0, "ns/op")
}

// enqueueChildren enqueues one no-op job DependsOn each parent, from 16
// producers.
func enqueueChildren(b *testing.B, q *Queue, parents []*Job) {
	b.Helper()
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		errs = make(chan error, 16)
	)
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(parents) {
					return
				}
				if _, err := q.EnqueueContext(context.Background(), "noop", nil, DependsOn(parents[i])); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// BenchmarkFanIn compares a fan-in over 10,000 parents (10,000 jobs and a
// callback that DependsOn all of them) with 10,001 plain jobs: the time
// from the worker's start until the callback has run, against until every
// plain job has. It also reports how long the callback's enqueue took.
// Each iteration runs both, in alternating order; the figures are medians
// over the iterations.
func BenchmarkFanIn(b *testing.B) {
	const n = 10000
	base := realBench(b)
	var plain, fan, enq []float64
	run := func(fanIn bool) float64 {
		e, cleanup := runEnv(b, base)
		defer cleanup()
		q := e.queue("fan")
		parents := enqueuePlain(b, q, "noop", n)
		last := ""
		if fanIn {
			t := time.Now()
			cb, err := q.EnqueueContext(context.Background(), "noop", nil, DependsOn(parents...))
			if err != nil {
				b.Fatal(err)
			}
			enq = append(enq, millis(time.Since(t)))
			if cb.Status != StatusDeferred {
				b.Fatalf("callback status %s, want %s", cb.Status, StatusDeferred)
			}
			last = cb.ID
		} else {
			enqueuePlain(b, q, "noop", 1)
		}
		b.StartTimer()
		d := processRun(b, e, "fan", n+1, last)
		b.StopTimer()
		b.Logf("fan-in %v: %.0f ms", fanIn, millis(d))
		return millis(d)
	}
	b.StopTimer()
	for i := range b.N {
		if i%2 == 0 {
			plain = append(plain, run(false))
			fan = append(fan, run(true))
		} else {
			fan = append(fan, run(true))
			plain = append(plain, run(false))
		}
	}
	b.ReportMetric(medianOf(plain), "plain-ms")
	b.ReportMetric(medianOf(fan), "fan-in-ms")
	b.ReportMetric(medianOf(fan)/medianOf(plain), "ratio")
	b.ReportMetric(medianOf(enq), "enqueue-callback-ms")
	b.ReportMetric(0, "ns/op")
}
