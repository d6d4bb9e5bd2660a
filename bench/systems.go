package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo"
)

// benchQueue is the queue both systems use.
const benchQueue = "bench"

// rqgoPrefix is the key prefix of rqgo's keys; asynq's keys always start
// with "asynq:".
const rqgoPrefix = "rqgobench"

// A system is one job queue under test, seen through the few operations the
// benchmark needs.
type system struct {
	name string
	// keys matches every key the system writes, for cleanup.
	keys string
	// producer returns a function that enqueues one no-op job with the
	// given JSON payload.
	producer func(rdb redis.UniversalClient) func(ctx context.Context, payload []byte) error
	// startWorker starts a worker with the given concurrency whose handler
	// calls handle with each job's payload. stop shuts the worker down and
	// returns once it has.
	startWorker func(rdb redis.UniversalClient, concurrency int, handle func(payload []byte)) (stop func() error, err error)
}

var systems = []system{rqgoSystem, asynqSystem}

// asynqTaskCheck is asynq's TaskCheckInterval (-asynq-task-check).
var asynqTaskCheck time.Duration

var rqgoSystem = system{
	name: "rqgo",
	keys: rqgoPrefix + ":*",
	producer: func(rdb redis.UniversalClient) func(context.Context, []byte) error {
		q := rqgo.NewQueue(benchQueue, rdb, rqgo.WithPrefix(rqgoPrefix))
		return func(ctx context.Context, payload []byte) error {
			_, err := q.EnqueueContext(ctx, "noop", json.RawMessage(payload))
			return err
		}
	},
	startWorker: func(rdb redis.UniversalClient, concurrency int, handle func([]byte)) (func() error, error) {
		w := rqgo.NewWorker(rdb, rqgo.WorkerOptions{
			Queues:      []string{benchQueue},
			Concurrency: concurrency,
			Prefix:      rqgoPrefix,
			Logger:      slog.New(slog.DiscardHandler),
		})
		w.Register("noop", func(ctx context.Context, j *rqgo.Job) (any, error) {
			handle(j.Args)
			return nil, nil
		})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		return func() error {
			cancel()
			if err := <-done; err != nil {
				return fmt.Errorf("rqgo worker: %w", err)
			}
			return nil
		}, nil
	},
}

var asynqSystem = system{
	name: "asynq",
	keys: "asynq:*",
	producer: func(rdb redis.UniversalClient) func(context.Context, []byte) error {
		c := asynq.NewClientFromRedisClient(rdb)
		return func(ctx context.Context, payload []byte) error {
			_, err := c.EnqueueContext(ctx, asynq.NewTask("noop", payload), asynq.Queue(benchQueue))
			return err
		}
	},
	startWorker: func(rdb redis.UniversalClient, concurrency int, handle func([]byte)) (func() error, error) {
		// asynq's defaults otherwise, as a user gets them.
		srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
			Concurrency: concurrency,
			Queues:      map[string]int{benchQueue: 1},
			Logger:      nopLogger{},
			// 0 is asynq's default, 1s.
			TaskCheckInterval: asynqTaskCheck,
		})
		err := srv.Start(asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			handle(t.Payload())
			return nil
		}))
		if err != nil {
			return nil, fmt.Errorf("asynq server: %w", err)
		}
		return func() error { srv.Shutdown(); return nil }, nil
	},
}

// nopLogger silences asynq's server logs.
type nopLogger struct{}

func (nopLogger) Debug(...any) {}
func (nopLogger) Info(...any)  {}
func (nopLogger) Warn(...any)  {}
func (nopLogger) Error(...any) {}
func (nopLogger) Fatal(...any) {}
