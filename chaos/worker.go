package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"strings"
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
	queuesEnv      = "RQGO_CHAOS_QUEUES"       // comma-separated, in priority order
	readTimeoutEnv = "RQGO_CHAOS_READ_TIMEOUT" // go-redis ReadTimeout; 0: its default
	execFileEnv    = "RQGO_CHAOS_EXEC_FILE"
	endFileEnv     = "RQGO_CHAOS_END_FILE"
)

const funcName = "chaos.run"

// args are a job's arguments: its number, how long its handler works (0:
// no time, or up to 20 ms, at random), and, for jobs of workflows, how it
// fails (failAlways, failOnce, or "": never).
type args struct {
	N    int    `json:"n"`
	MS   int    `json:"ms,omitempty"`
	Fail string `json:"fail,omitempty"`
}

// How a workflow job fails: for good at every attempt (SkipRetry), or at
// its first attempt only (it is retried).
const (
	failAlways = "always"
	failOnce   = "once"
)

// failMsg is the error of a job that fails for good.
const failMsg = "chaos: fails for good"

// result is what the handler returns, and so what a finished job stores.
type result struct {
	Attempt int    `json:"attempt"`
	Worker  string `json:"worker"`
}

// workerMain runs one worker process until SIGTERM. When Run fails (Redis
// is unreachable as the worker starts) it starts a fresh worker.
//
// Every execution of a handler is appended to the process's execution file
// as "<job id> <attempt> <worker> <start, Unix ms> <dequeued, Unix ms>"
// before the handler works; the last is the attempt's start as Redis
// recorded it when the worker fetched the job (Job.StartedAt). The file is outside Redis, so no fault of Redis (a restart, a
// stall, a full memory) can refuse or lose a record, and a completed write
// survives the process's SIGKILL. When the handler is about to return, it
// appends "<job id> <attempt> <worker> <end, Unix ms>" to the end file: a
// run with no end record never returned (its worker was killed).
//
// The worker logs at Info, so the harness reads from its log every outcome
// Redis did not take ("lease lost before the outcome was recorded",
// "outcome not recorded by this try") and every lease the worker gave up
// ("lease lost; handler canceled").
func workerMain() int {
	name := os.Getenv(nameEnv)
	lease, err := time.ParseDuration(os.Getenv(leaseEnv))
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos worker: %s: %v\n", leaseEnv, err)
		return 2
	}
	readTimeout, err := time.ParseDuration(os.Getenv(readTimeoutEnv))
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos worker: %s: %v\n", readTimeoutEnv, err)
		return 2
	}
	concurrency, err := strconv.Atoi(os.Getenv(concurrencyEnv))
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos worker: %s: %v\n", concurrencyEnv, err)
		return 2
	}
	queues := strings.Split(os.Getenv(queuesEnv), ",")
	execs, err := os.OpenFile(os.Getenv(execFileEnv), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos worker: %v\n", err)
		return 2
	}
	defer execs.Close()
	ends, err := os.OpenFile(os.Getenv(endFileEnv), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos worker: %v\n", err)
		return 2
	}
	defer ends.Close()
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv(addrEnv), DialTimeout: time.Second, ReadTimeout: readTimeout})
	defer rdb.Close()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	handler := func(ctx context.Context, j *rqgo.Job) (res any, err error) {
		rec := fmt.Sprintf("%s %d %s %d %d\n", j.ID, j.Attempt, name, time.Now().UnixMilli(), j.StartedAt.UnixMilli())
		if _, err := execs.WriteString(rec); err != nil {
			return nil, fmt.Errorf("recording the execution: %w", err)
		}
		defer func() {
			rec := fmt.Sprintf("%s %d %s %d\n", j.ID, j.Attempt, name, time.Now().UnixMilli())
			if _, werr := ends.WriteString(rec); werr != nil && err == nil {
				res, err = nil, fmt.Errorf("recording the end of the execution: %w", werr)
			}
		}()
		var a args
		if err := j.Decode(&a); err != nil {
			return nil, rqgo.SkipRetry(err)
		}
		// The work ignores ctx on purpose: a worker paused past its lease
		// finishes its jobs when it wakes and tries to record them late.
		// Half the short jobs return at once, so workers also hold jobs
		// fetched ahead (WorkerOptions.Prefetch) when they are killed or
		// paused; the long ones need their leases renewed.
		switch {
		case a.MS > 0:
			time.Sleep(time.Duration(a.MS) * time.Millisecond)
		case rand.N(2) == 0:
			time.Sleep(rand.N(21 * time.Millisecond))
		}
		switch {
		case a.Fail == failAlways:
			return nil, rqgo.SkipRetry(errors.New(failMsg))
		case a.Fail == failOnce && j.Attempt == 1:
			return nil, errors.New("chaos: fails at its first attempt")
		}
		return result{Attempt: j.Attempt, Worker: name}, nil
	}
	for {
		w := rqgo.NewWorker(rdb, rqgo.WorkerOptions{
			Queues:          queues,
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
