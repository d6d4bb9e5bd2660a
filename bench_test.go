package rqgo

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"
)

// benchEnv is real Redis when one answers, else miniredis.
func benchEnv(b *testing.B) *testEnv {
	e, err := dialReal(b)
	if err != nil {
		b.Logf("no real Redis (%v): benchmarking against miniredis", err)
		return newMiniEnv(b)
	}
	return e
}

func BenchmarkEnqueue(b *testing.B) {
	e := benchEnv(b)
	q := e.queue("bench")
	ctx := context.Background()
	args := map[string]any{"image": "photos/42.jpg", "width": 640}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := q.EnqueueContext(ctx, "resize", args); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEnqueueParallel(b *testing.B) {
	e := benchEnv(b)
	q := e.queue("bench")
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := q.EnqueueContext(ctx, "resize", 1); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkProcess measures end-to-end processing of preloaded no-op jobs
// by one worker with concurrency 10.
func BenchmarkProcess(b *testing.B) {
	e := benchEnv(b)
	q := e.queue("bench")
	ctx := context.Background()
	for range b.N {
		if _, err := q.EnqueueContext(ctx, "noop", nil); err != nil {
			b.Fatal(err)
		}
	}
	w := NewWorker(e.rdb, WorkerOptions{Prefix: e.prefix, Queues: []string{"bench"}, Burst: true,
		Logger: slog.New(slog.DiscardHandler)})
	var n atomic.Int64
	w.Register("noop", func(ctx context.Context, j *Job) (any, error) { n.Add(1); return nil, nil })
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	if err := w.Run(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(n.Load())/time.Since(start).Seconds(), "jobs/s")
}
