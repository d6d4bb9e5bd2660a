// Command callgrind drives a fixed workload of plain jobs through rqgo
// against a redis-server running under valgrind's callgrind, and has
// callgrind dump its counters after each phase: one Enqueue per job,
// EnqueueMany in batches of 100, and a burst worker with Concurrency 1 and
// no prefetch, so that every fetch and every ack carries one job. Redis's
// instructions per job, unlike its CPU time, repeat within about 1% on a
// busy machine, so two revisions can be compared to a few percent. run.sh
// starts the server and prints each phase's total.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:6398", "")
	pid := flag.String("pid", "", "redis-server pid")
	n := flag.Int("n", 2000, "")
	tag := flag.String("tag", "x", "")
	conc := flag.Int("c", 1, "worker concurrency (above 1, how many jobs a fetch or ack carries depends on timing)")
	prefetch := flag.Int("prefetch", -1, "the worker's Prefetch (-1: none, 0: its default)")
	flag.Parse()
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: *addr})
	q := rqgo.NewQueue("plain", rdb, rqgo.WithPrefix("ic"))
	stats := func() map[string]string {
		s, _ := rdb.Info(ctx, "commandstats").Result()
		m := map[string]string{}
		for _, l := range strings.Split(s, "\r\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.HasPrefix(k, "cmdstat_") {
				m[k] = strings.Split(v, ",")[0]
			}
		}
		return m
	}
	phase := func(name string, f func()) {
		rdb.ConfigResetStat(ctx)
		if err := exec.Command("callgrind_control", "-z", *pid).Run(); err != nil {
			log.Fatal(err)
		}
		f()
		if err := exec.Command("callgrind_control", "-d", *tag+"-"+name, *pid).Run(); err != nil {
			log.Fatal(err)
		}
		fmt.Println(name, stats())
	}
	phase("enqueue", func() {
		for i := range *n {
			if _, err := q.Enqueue("f", map[string]int{"n": i}); err != nil {
				log.Fatal(err)
			}
		}
	})
	phase("enqueuemany", func() {
		for b := 0; b < *n; b += 100 {
			var specs []rqgo.EnqueueRequest
			for i := b; i < b+100; i++ {
				specs = append(specs, rqgo.EnqueueRequest{Func: "f", Args: map[string]int{"n": i}})
			}
			if _, err := q.EnqueueMany(ctx, specs); err != nil {
				log.Fatal(err)
			}
		}
	})
	phase("process", func() {
		w := rqgo.NewWorker(rdb, rqgo.WorkerOptions{Queues: []string{"plain"}, Prefix: "ic", Concurrency: *conc, Prefetch: *prefetch, Burst: true,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		w.Register("f", func(ctx context.Context, j *rqgo.Job) (any, error) { return nil, nil })
		if err := w.Run(ctx); err != nil {
			log.Fatal(err)
		}
	})
	c, _ := q.Counts(ctx)
	fmt.Printf("counts %+v\n", c)
	_ = os.Stdout.Sync()
}
