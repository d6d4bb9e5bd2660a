package main

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rqgo/rqgo"
)

// A worker process is this program started again with these variables set.
const (
	roleEnv        = "RQGO_CHAOS_ROLE" // "worker"
	addrEnv        = "RQGO_CHAOS_ADDR"
	nameEnv        = "RQGO_CHAOS_NAME"
	leaseEnv       = "RQGO_CHAOS_LEASE"
	concurrencyEnv = "RQGO_CHAOS_CONCURRENCY"
)

const (
	queueName = "chaos"
	funcName  = "chaos.run"
	// execKey lists every execution as "<job id> <attempt> <worker>". It is
	// outside rqgo's prefix, so nothing rqgo does can change it.
	execKey = "chaos:executions"
)

// result is what the handler returns, and so what a finished job stores.
type result struct {
	Attempt int    `json:"attempt"`
	Worker  string `json:"worker"`
}

// workerMain runs one worker process until SIGTERM. When Run fails (Redis
// is unreachable as the worker starts) it starts a fresh worker.
func workerMain() int {
	name := os.Getenv(nameEnv)
	lease, err := time.ParseDuration(os.Getenv(leaseEnv))
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos worker: %s: %v\n", leaseEnv, err)
		return 2
	}
	concurrency, err := strconv.Atoi(os.Getenv(concurrencyEnv))
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos worker: %s: %v\n", concurrencyEnv, err)
		return 2
	}
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv(addrEnv), DialTimeout: time.Second})
	defer rdb.Close()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	handler := func(ctx context.Context, j *rqgo.Job) (any, error) {
		rec := fmt.Sprintf("%s %d %s", j.ID, j.Attempt, name)
		c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if err := rdb.RPush(c, execKey, rec).Err(); err != nil {
			return nil, fmt.Errorf("recording the execution: %w", err)
		}
		// The work ignores ctx on purpose: a worker paused past its lease
		// finishes its jobs when it wakes and tries to record them late.
		// Half the jobs return at once, so workers also hold jobs fetched
		// ahead (WorkerOptions.Prefetch) when they are killed or paused.
		if rand.N(2) == 0 {
			time.Sleep(rand.N(21 * time.Millisecond))
		}
		return result{Attempt: j.Attempt, Worker: name}, nil
	}
	for {
		w := rqgo.NewWorker(rdb, rqgo.WorkerOptions{
			Queues:          []string{queueName},
			Concurrency:     concurrency,
			Lease:           lease,
			ShutdownTimeout: 5 * time.Second,
			Name:            name,
			Logger:          log,
		})
		w.Register(funcName, handler)
		err := w.Run(ctx)
		if ctx.Err() != nil {
			if err != nil {
				fmt.Fprintf(os.Stderr, "chaos worker %s: %v\n", name, err)
				return 1
			}
			return 0
		}
		log.Warn("worker stopped; starting again", "err", err)
		time.Sleep(200 * time.Millisecond)
	}
}
