package rqgo

// Benchmarks of running jobs on the real Redis at $REDIS_URL (skipped when
// none answers): how soon a handler hears of Queue.Cancel, and what
// SetProgress called by many running jobs costs the processing rate of
// other jobs. Run them with, for example:
//
//	go test -run '^$' -bench 'CancelRunning|SetProgressLoad' -benchtime 5x

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkCancelRunning measures the latency from Queue.Cancel's call to
// the running handler's context ending, one job at a time, on a worker of
// concurrency 10 with a lease of 30 s (so only the message counts, not
// the heartbeat). It reports p50 and p99 over the iterations.
func BenchmarkCancelRunning(b *testing.B) {
	e := realBench(b)
	q := e.queue("cancel")
	started := make(chan *Job, 1)
	ended := make(chan time.Time, 1)
	w := NewWorker(e.rdb, WorkerOptions{Prefix: e.prefix, Queues: []string{"cancel"}, Logger: benchLog})
	w.Register("long", func(ctx context.Context, j *Job) (any, error) {
		started <- j
		<-ctx.Done()
		ended <- time.Now()
		return nil, context.Cause(ctx)
	})
	runBenchWorker(b, w)
	lat := make([]time.Duration, 0, b.N)
	for b.Loop() {
		j, err := q.EnqueueContext(context.Background(), "long", nil)
		if err != nil {
			b.Fatal(err)
		}
		<-started
		asked := time.Now()
		if err := q.Cancel(context.Background(), j.ID); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, (<-ended).Sub(asked))
	}
	slices.Sort(lat)
	b.ReportMetric(millis(percentile(lat, 0.5)), "p50-ms")
	b.ReportMetric(millis(percentile(lat, 0.99)), "p99-ms")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkSetProgressLoad compares the processing rate of 20,000 no-op
// jobs on one worker with and without 50 long jobs running on a second
// worker meanwhile, each calling SetProgress 100 times a second (5,000
// calls a second in all). Each iteration runs both, in alternating order;
// the figures are medians over the iterations.
func BenchmarkSetProgressLoad(b *testing.B) {
	const jobs = 20000
	base := realBench(b)
	var quiet, busy []float64
	run := func(progress bool) float64 {
		e, cleanup := runEnv(b, base)
		defer cleanup()
		q := e.queue("work")
		enqueuePlain(b, q, "noop", jobs)
		var calls atomic.Int64
		stopLong := func() {}
		if progress {
			stopLong = reporters(b, e, 50, &calls)
		}
		before := calls.Load()
		b.StartTimer()
		d := processRun(b, e, "work", jobs, "")
		b.StopTimer()
		during := calls.Load() - before
		stopLong()
		rate := jobs / d.Seconds()
		b.Logf("progress %v: %.0f jobs/s (%.0f SetProgress calls/s)", progress, rate, float64(during)/d.Seconds())
		return rate
	}
	b.StopTimer()
	for i := range b.N {
		if i%2 == 0 {
			quiet = append(quiet, run(false))
			busy = append(busy, run(true))
		} else {
			busy = append(busy, run(true))
			quiet = append(quiet, run(false))
		}
	}
	b.ReportMetric(medianOf(quiet), "jobs/s")
	b.ReportMetric(medianOf(busy), "with-progress-jobs/s")
	b.ReportMetric(medianOf(busy)/medianOf(quiet), "ratio")
	b.ReportMetric(0, "ns/op")
}

// reporters starts n jobs on a worker of their own, each calling
// SetProgress every 10 ms until the returned stop is called, and waits
// until all run.
func reporters(b *testing.B, e *testEnv, n int, calls *atomic.Int64) (stop func()) {
	b.Helper()
	q := e.queue("long")
	for range n {
		if _, err := q.EnqueueContext(context.Background(), "report", nil); err != nil {
			b.Fatal(err)
		}
	}
	var running sync.WaitGroup
	running.Add(n)
	w := NewWorker(e.rdb, WorkerOptions{Prefix: e.prefix, Queues: []string{"long"}, Concurrency: n, Logger: benchLog})
	w.Register("report", func(ctx context.Context, j *Job) (any, error) {
		running.Done()
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return nil, nil
			case <-t.C:
				if err := j.SetProgress(ctx, i%101); err != nil && ctx.Err() == nil {
					return nil, err
				}
				calls.Add(1)
			}
		}
	})
	stopWorker := runBenchWorker(b, w)
	running.Wait()
	return stopWorker
}
