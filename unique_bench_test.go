package rqgo

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkEnqueueUnique compares the enqueue rate of plain jobs, jobs
// with a unique key of their own (each enqueue takes a new key), and
// debounced enqueues of one key (each moves the waiting job), by 8
// producers on the real Redis, in turn within each iteration; and reports
// the Redis memory one held key takes (MEMORY USAGE of the key string).
//
//	go test -run '^$' -bench EnqueueUnique -benchtime 5x
func BenchmarkEnqueueUnique(b *testing.B) {
	e := realBench(b)
	const n, producers = 20000, 8
	kinds := []struct {
		name string
		opts func(i int) []EnqueueOption
	}{
		{"plain", func(int) []EnqueueOption { return nil }},
		{"unique", func(i int) []EnqueueOption { return []EnqueueOption{Unique(UniqueOpts{Key: fmt.Sprint("k", i)})} }},
		{"debounce", func(i int) []EnqueueOption {
			return []EnqueueOption{Debounce(time.Hour, 0), Unique(UniqueOpts{Key: fmt.Sprint("d", i%producers)})}
		}},
	}
	rates := make([][]float64, len(kinds))
	var memory int64
	for b.Loop() {
		for k, kind := range kinds {
			r, done := runEnv(b, e)
			q := r.queue("bench")
			var next atomic.Int64
			var wg sync.WaitGroup
			start := time.Now()
			for range producers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := next.Add(1); i <= n; i = next.Add(1) {
						if _, err := q.Enqueue("noop", i, kind.opts(int(i))...); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			rates[k] = append(rates[k], n/time.Since(start).Seconds())
			if kind.name == "unique" {
				memory = e.rdb.MemoryUsage(context.Background(), q.k.unique("k1")).Val()
			}
			done()
		}
	}
	for k, kind := range kinds {
		b.ReportMetric(medianOf(rates[k]), kind.name+"-jobs/s")
	}
	b.ReportMetric(float64(memory), "bytes/held-key")
}
