// Command plaincpu times plain Enqueue calls from 8 producers (into a
// queue it then deletes), then processes N plain no-op jobs (enqueued with
// EnqueueMany first, not timed) with a burst worker of concurrency C against
// the Redis at -addr, and prints its own CPU time per job (user+sys,
// getrusage), Redis's (INFO cpu), the rate, Redis's time in scripts, the
// worker's Go allocations per job, the enqueue rate, and Redis's commands
// per job. It uses rqgo's public API only, so it builds against any
// revision: ab.sh runs two revisions' builds in interleaved pairs on fresh
// servers, which is how a change's cost to plain jobs is told apart from
// this machine's noise. It flushes the database it is given.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo"
)

func cpu() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func redisCPU(ctx context.Context, rdb *redis.Client) float64 {
	s, _ := rdb.Info(ctx, "cpu").Result()
	var t float64
	for _, l := range strings.Split(s, "\r\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, _ := strconv.ParseFloat(v, 64)
			t += f
		}
	}
	return t
}

func main() {
	addr := flag.String("addr", "127.0.0.1:6399", "Redis address (its database 0 is flushed)")
	n := flag.Int("n", 20000, "jobs")
	c := flag.Int("c", 50, "worker concurrency")
	enq := flag.Int("enqueue", 10000, "plain jobs enqueued one Enqueue call each by 8 producers, timed, before the processing run (into another queue, deleted after)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the worker's run to this file")
	flag.Parse()
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: *addr, PoolSize: 100})
	rdb.FlushDB(ctx)
	eq := rqgo.NewQueue("enq", rdb, rqgo.WithPrefix("gc"))
	var wg sync.WaitGroup
	e0 := time.Now()
	for p := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := p; i < *enq; i += 8 {
				if _, err := eq.Enqueue("f", map[string]int{"n": i}); err != nil {
					log.Fatal(err)
				}
			}
		}()
	}
	wg.Wait()
	enqRate := float64(*enq) / time.Since(e0).Seconds()
	rdb.FlushDB(ctx)
	q := rqgo.NewQueue("plain", rdb, rqgo.WithPrefix("gc"))
	var reqs []rqgo.EnqueueRequest
	for i := range *n {
		reqs = append(reqs, rqgo.EnqueueRequest{Func: "f", Args: map[string]int{"n": i}})
		if len(reqs) == 500 {
			if _, err := q.EnqueueMany(ctx, reqs); err != nil {
				log.Fatal(err)
			}
			reqs = reqs[:0]
		}
	}
	w := rqgo.NewWorker(rdb, rqgo.WorkerOptions{Queues: []string{"plain"}, Prefix: "gc", Concurrency: *c, Burst: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	w.Register("f", func(ctx context.Context, j *rqgo.Job) (any, error) { return nil, nil })
	rdb.ConfigResetStat(ctx)
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
	}
	c0, r0, t0 := cpu(), redisCPU(ctx, rdb), time.Now()
	if err := w.Run(ctx); err != nil {
		log.Fatal(err)
	}
	pprof.StopCPUProfile()
	c1, r1, el := cpu(), redisCPU(ctx, rdb), time.Since(t0)
	runtime.ReadMemStats(&m1)
	st, _ := rdb.Info(ctx, "commandstats").Result()
	var scripts float64 // µs Redis spent in EVALSHA and EVAL
	for _, l := range strings.Split(st, "\r\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && (k == "cmdstat_evalsha" || k == "cmdstat_eval") {
			for _, f := range strings.Split(v, ",") {
				if u, ok := strings.CutPrefix(f, "usec="); ok {
					x, _ := strconv.ParseFloat(u, 64)
					scripts += x
				}
			}
		}
	}
	fmt.Printf("worker_cpu_us_per_job %.2f redis_cpu_us_per_job %.2f jobs_per_s %.0f script_us_per_job %.2f allocs_per_job %.1f bytes_per_job %.0f enqueues_per_s %.0f\n",
		float64((c1-c0).Microseconds())/float64(*n), (r1-r0)*1e6/float64(*n), float64(*n)/el.Seconds(), scripts/float64(*n),
		float64(m1.Mallocs-m0.Mallocs)/float64(*n), float64(m1.TotalAlloc-m0.TotalAlloc)/float64(*n), enqRate)
	for _, l := range strings.Split(st, "\r\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.HasPrefix(k, "cmdstat_") {
			calls, _ := strconv.Atoi(strings.TrimPrefix(strings.Split(v, ",")[0], "calls="))
			if float64(calls)/float64(*n) >= 0.01 {
				fmt.Printf("  %s %.3f/job\n", k, float64(calls)/float64(*n))
			}
		}
	}
	rdb.FlushDB(ctx)
}
