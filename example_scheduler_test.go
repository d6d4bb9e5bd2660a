package rqgo_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo"
)

func ExampleScheduler() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	// Two schedulers, as in two processes. A fixed clock keeps the output
	// stable; real programs leave Now unset.
	now := func() time.Time { return time.Date(2026, 1, 1, 3, 0, 5, 0, time.UTC) }
	for range 2 {
		s := rqgo.NewScheduler(rdb, rqgo.SchedulerOptions{Now: now, Logger: slog.New(slog.DiscardHandler)})
		err := s.AddEntry(rqgo.ScheduleEntry{
			Name: "nightly-cleanup", Cron: "0 3 * * *", Func: "cleanup", Args: map[string]int{"days": 30},
		})
		if err != nil {
			panic(err)
		}
		// Run(ctx) enqueues the due ticks and sleeps until the next one, until
		// ctx ends; Tick does one round of that.
		if err := s.Tick(ctx); err != nil {
			panic(err)
		}
	}

	entries, err := rqgo.Schedules(ctx, rdb, "")
	if err != nil {
		panic(err)
	}
	for _, e := range entries {
		fmt.Println(e.Name, e.Spec, e.LastJobID, e.NextRun.UTC().Format(time.RFC3339))
	}

	w := rqgo.NewWorker(rdb, rqgo.WorkerOptions{Burst: true, Logger: slog.New(slog.DiscardHandler)})
	rqgo.RegisterFunc(w, "cleanup", func(ctx context.Context, args struct{ Days int }) (string, error) {
		return fmt.Sprintf("deleted jobs older than %d days", args.Days), nil
	})
	if err := w.Run(ctx); err != nil {
		panic(err)
	}
	q := rqgo.NewQueue("default", rdb)
	counts, _ := q.Counts(ctx)
	job, _ := q.FetchJob(ctx, entries[0].LastJobID)
	fmt.Println(counts.Finished, "job:", job.Status, string(job.Result))
	// Output:
	// nightly-cleanup 0 3 * * * nightly-cleanup@1767236400 2026-01-02T03:00:00Z
	// 1 job: finished "deleted jobs older than 30 days"
}

func ExampleParseScheduleFile() {
	file := `[
	  {"name": "nightly-cleanup", "cron": "0 3 * * *", "func": "cleanup", "args": {"days": 30},
	   "queue": "default", "timezone": "Europe/Berlin"},
	  {"name": "heartbeat", "cron": "@every 30s", "func": "ping", "tz": "UTC"}
	]`
	_, err := rqgo.ParseScheduleFile(strings.NewReader(file))
	fmt.Println(err)
	// Output:
	// rqgo: invalid argument: schedule file: entry 2 ("heartbeat"): unknown field "tz"
}
