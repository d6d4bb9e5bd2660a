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
	"sync"
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
	cancelFileEnv  = "RQGO_CHAOS_CANCEL_FILE"
)

const funcName = "chaos.run"

// args are a job's arguments: its number, how long its handler works (0:
// no time, or up to 20 ms, at random), for jobs of workflows, how it fails
// (failAlways, failOnce, or "": never), and for jobs of the cancel queue
// how it takes a cancel (cancelHonour or cancelIgnore; see cancel.go).
type args struct {
	N      int    `json:"n"`
	MS     int    `json:"ms,omitempty"`
	Fail   string `json:"fail,omitempty"`
	Cancel string `json:"cancel,omitempty"`
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
// A job of the cancel queue reports its progress as it works and, just
// before its handler returns, appends to the cancel file "<job id>
// <attempt> <worker> <result|error> <when its context ended with
// ErrCanceled, Unix µs; 0: not before it returned> <its context's cause:
// none|canceled|lease_lost|other> <last progress step stored> <last step
// tried> <SetProgress calls refused with ErrLeaseLost> <refused for
// Redis's lack of memory> <other SetProgress errors>": what it returned,
// so the harness can tell a job that finished despite a cancel from one
// that was wrongly finished.
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
	cancels, err := os.OpenFile(os.Getenv(cancelFileEnv), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos worker: %v\n", err)
		return 2
	}
	defer cancels.Close()
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
		if a.Cancel != "" {
			cr := &cancelRun{}
			defer func() {
				if werr := cr.record(cancels, j, name, err == nil); werr != nil && err == nil {
					res, err = nil, fmt.Errorf("recording the cancel record: %w", werr)
				}
			}()
			return cancelable(ctx, j, a, name, cr)
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

// cancelRun is what the handler of a cancel queue job saw.
type cancelRun struct {
	mu        sync.Mutex
	heard     time.Time // when its context ended with ErrCanceled
	cause     error     // its context's cause, once it ended
	okStep    int
	triedStep int
	leaseLost int
	progOOM   int
	progErrs  int
}

// record appends the run's line to the cancel file (see workerMain).
func (cr *cancelRun) record(f *os.File, j *rqgo.Job, worker string, returnedResult bool) error {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	ret, us, cause := "error", int64(0), "none"
	if returnedResult {
		ret = "result"
	}
	if !cr.heard.IsZero() {
		us = cr.heard.UnixMicro()
	}
	switch {
	case cr.cause == nil:
	case errors.Is(cr.cause, rqgo.ErrCanceled):
		cause = "canceled"
	case errors.Is(cr.cause, rqgo.ErrLeaseLost):
		cause = "lease_lost"
	default:
		cause = "other"
	}
	_, err := fmt.Fprintf(f, "%s %d %s %s %d %s %d %d %d %d %d\n", j.ID, j.Attempt, worker, ret, us, cause,
		cr.okStep, cr.triedStep, cr.leaseLost, cr.progOOM, cr.progErrs)
	return err
}

// cancelable is the work of a cancel queue job: a.MS of it, with its
// progress reported every progressEvery. A handler that honours a cancel
// returns its context's cause as soon as the context ends; one that
// ignores it works on, still reporting progress (which its lease allows),
// and returns its result.
func cancelable(ctx context.Context, j *rqgo.Job, a args, worker string, cr *cancelRun) (any, error) {
	heard := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(heard)
		now, cause := time.Now(), context.Cause(ctx)
		cr.mu.Lock()
		defer cr.mu.Unlock()
		cr.cause = cause
		if errors.Is(cause, rqgo.ErrCanceled) {
			cr.heard = now
		}
	})
	defer func() {
		if !stop() {
			<-heard // it ran: wait until it has written what it saw
		}
	}()
	honour := a.Cancel == cancelHonour
	done := ctx.Done()
	if !honour {
		done = nil
	}
	end := time.Now().Add(time.Duration(a.MS) * time.Millisecond)
	for step := 1; ; step++ {
		pctx, cancel := ctx, context.CancelFunc(func() {})
		if !honour {
			pctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		}
		err := j.SetProgress(pctx, progressVal{A: j.Attempt, S: step, W: worker})
		cancel()
		cr.mu.Lock()
		cr.triedStep = step
		switch {
		case err == nil:
			cr.okStep = step
		case honour && ctx.Err() != nil:
			// Canceled meanwhile: not an error of SetProgress's.
		case errors.Is(err, rqgo.ErrLeaseLost):
			cr.leaseLost++
		case strings.Contains(err.Error(), "OOM"):
			cr.progOOM++
		default:
			cr.progErrs++
		}
		cr.mu.Unlock()
		if honour && ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		left := time.Until(end)
		if left <= 0 {
			return result{Attempt: j.Attempt, Worker: worker}, nil
		}
		select {
		case <-done:
			return nil, context.Cause(ctx)
		case <-time.After(min(progressEvery, left)):
		}
	}
}
