package rqgo

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo/internal/redistest"
)

// BenchmarkIdleWorker measures what an idle worker costs against the number
// of its queues: its own CPU (a share of one core) and the commands it
// sends Redis per second, on a redis-server of its own. Each iteration is a
// 200 ms window of idleness, after a second of warm-up (the start-up look at
// every queue, and the first reap of each).
func BenchmarkIdleWorker(b *testing.B) {
	for _, n := range []int{1, 10, 100, 1000} {
		b.Run(fmt.Sprintf("queues=%d", n), func(b *testing.B) {
			srv := redistest.StartServer(b)
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
			b.Cleanup(func() { rdb.Close() })
			names := make([]string, n)
			for i := range names {
				names[i] = fmt.Sprintf("q%04d", i)
			}
			w := NewWorker(rdb, WorkerOptions{Queues: names, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- w.Run(ctx) }()
			b.Cleanup(func() { cancel(); <-done })
			time.Sleep(time.Second) // warm-up: nothing to wait for
			cpu0, cmds0, t0 := cpuTime(), redisCommands(b, rdb), time.Now()
			for b.Loop() {
				time.Sleep(200 * time.Millisecond)
			}
			elapsed := time.Since(t0).Seconds()
			// The INFO calls themselves are two commands.
			cmds := float64(redisCommands(b, rdb)-cmds0-1) / elapsed
			b.ReportMetric(100*(cpuTime()-cpu0).Seconds()/elapsed, "cpu-%")
			b.ReportMetric(cmds, "redis-cmds/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// cpuTime is the CPU time this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// redisCommands is the server's count of commands processed.
func redisCommands(b *testing.B, rdb *redis.Client) int64 {
	info, err := rdb.Info(context.Background(), "stats").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "total_commands_processed:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	b.Fatal("no total_commands_processed in INFO stats")
	return 0
}
