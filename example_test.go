package rqgo_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo"
)

func Example() {
	mr := miniredis.NewMiniRedis() // any Redis; miniredis keeps the example self-contained
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	q := rqgo.NewQueue("default", rdb)
	job, err := q.Enqueue("add", []int{2, 3}, rqgo.JobID("sum-1"))
	if err != nil {
		panic(err)
	}
	fmt.Println(job.ID, job.Status)

	w := rqgo.NewWorker(rdb, rqgo.WorkerOptions{Burst: true, Logger: slog.New(slog.DiscardHandler)})
	rqgo.RegisterFunc(w, "add", func(ctx context.Context, xs []int) (int, error) {
		return xs[0] + xs[1], nil
	})
	if err := w.Run(ctx); err != nil {
		panic(err)
	}

	job, _ = q.FetchJob(ctx, "sum-1")
	fmt.Println(job.ID, job.Status, string(job.Result))
	// Output:
	// sum-1 queued
	// sum-1 finished 5
}

func ExampleSkipRetry() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	q := rqgo.NewQueue("default", rdb)
	q.Enqueue("charge", map[string]int{"cents": -5}, rqgo.JobID("pay-1"), rqgo.Retry(5))

	w := rqgo.NewWorker(rdb, rqgo.WorkerOptions{Burst: true, Logger: slog.New(slog.DiscardHandler)})
	w.Register("charge", func(ctx context.Context, j *rqgo.Job) (any, error) {
		return nil, rqgo.SkipRetry(errors.New("negative amount"))
	})
	w.Run(ctx)

	job, _ := q.FetchJob(ctx, "pay-1")
	fmt.Println(job.Status, job.Attempt, job.Error)
	// Output:
	// failed 1 negative amount
}
