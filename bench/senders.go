package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// scriptSender is a system whose producer runs rqgo's own enqueue.lua once
// per job through a go-redis Scripter made from the client: the plain
// client (one connection per concurrent producer, as asynq sends) or one of
// go-redis's auto-pipeliners. It isolates how enqueues are sent from what
// each one costs in Redis.
func scriptSender(name string, src string, scripter func(*redis.Client) (redis.Scripter, error)) system {
	script := redis.NewScript(src)
	return system{
		name: name,
		keys: rqgoPrefix + ":*",
		producer: func(rdb redis.UniversalClient) func(context.Context, []byte) error {
			c, ok := rdb.(*redis.Client)
			if !ok {
				return func(context.Context, []byte) error { return fmt.Errorf("%s needs a *redis.Client", name) }
			}
			s, err := scripter(c)
			if err != nil {
				return func(context.Context, []byte) error { return err }
			}
			k := func(suffix string) string { return rqgoPrefix + ":{" + benchQueue + "}:" + suffix }
			return func(ctx context.Context, payload []byte) error {
				id := randomID()
				// enqueue.lua's KEYS and ARGV, as rqgo's Enqueue sends them.
				return script.EvalSha(ctx, s, []string{k("job:" + id), k("pending"), k("scheduled"), k("wake")},
					id, 0, 0, "id", id, "queue", benchQueue, "func", "noop", "args", payload, "attempt", 0, "max_retries", 3).Err()
			}
		},
	}
}

// randomID returns a job id like the ones rqgo makes: 20 random hex digits.
func randomID() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// fullBatches gathers the jobs of p producers into batches of exactly p,
// sent by the producer that completes one; the others wait for its result.
// The first call, enqueueRate's warm-up, is sent alone.
type fullBatches[T any] struct {
	p    int
	send func(context.Context, []T) error

	mu      sync.Mutex
	warm    bool
	line    []T
	waiting []chan error
}

// add sends item in a full batch and returns the batch's error.
func (b *fullBatches[T]) add(ctx context.Context, item T) error {
	b.mu.Lock()
	if !b.warm {
		b.warm = true
		b.mu.Unlock()
		return b.send(ctx, []T{item})
	}
	b.line = append(b.line, item)
	if len(b.line) < b.p {
		done := make(chan error, 1)
		b.waiting = append(b.waiting, done)
		b.mu.Unlock()
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	batch, waiting := b.line, b.waiting
	b.line, b.waiting = nil, nil
	b.mu.Unlock()
	err := b.send(ctx, batch)
	for _, w := range waiting {
		w <- err
	}
	return err
}

// A boundHash is the job hash a bound sender writes: HSET's field, value
// pairs for a job, or none.
type boundHash struct {
	name   string
	fields func(id string, payload []byte, now string) []any
}

var (
	// rqgoHash is the hash rqgo's enqueue writes: 9 readable fields.
	rqgoHash = boundHash{"HSET of rqgo's 9 fields", func(id string, payload []byte, now string) []any {
		return []any{"id", id, "queue", benchQueue, "func", "noop", "args", payload,
			"attempt", 0, "max_retries", 3, "status", "queued", "created_at", now, "enqueued_at", now}
	}}
	// compactHash is a hash of 3 fields, as asynq writes: the job encoded
	// as one value, its state and a time.
	compactHash = boundHash{"HSET of 3 fields (job as one JSON value)", func(id string, payload []byte, now string) []any {
		msg := `{"id":"` + id + `","queue":"` + benchQueue + `","func":"noop","args":` + string(payload) + `,"max_retries":3}`
		return []any{"msg", msg, "status", "queued", "enqueued_at", now}
	}}
	// noHash writes no hash: only the ids go to the list.
	noHash = boundHash{"no hash", nil}
)

// boundSender is a system that does, per job, only an HSET of h's fields
// (none for noHash), with one RPUSH of the ids per batch, in a pipeline
// carrying exactly p jobs (so the enqueue rate's job count must be a
// multiple of p). No script, no check for an existing id, no options, never
// a partial batch: its rate bounds what any design that writes such a hash
// per job can reach with p producers that each wait for their own job.
func boundSender(p int, h boundHash) system {
	return system{
		name: fmt.Sprintf("bound: %s + RPUSH, %d jobs per pipeline", h.name, p),
		keys: rqgoPrefix + ":*",
		producer: func(rdb redis.UniversalClient) func(context.Context, []byte) error {
			type job struct {
				id      string
				payload []byte
			}
			k := func(suffix string) string { return rqgoPrefix + ":{" + benchQueue + "}:" + suffix }
			b := &fullBatches[job]{p: p, send: func(ctx context.Context, jobs []job) error {
				now := strconv.FormatInt(time.Now().UnixMilli(), 10)
				pipe := rdb.Pipeline()
				ids := make([]any, len(jobs))
				for i, j := range jobs {
					if h.fields != nil {
						pipe.HSet(ctx, k("job:"+j.id), h.fields(j.id, j.payload, now)...)
					}
					ids[i] = j.id
				}
				pipe.RPush(ctx, k("pending"), ids...)
				_, err := pipe.Exec(ctx)
				return err
			}}
			return func(ctx context.Context, payload []byte) error {
				return b.add(ctx, job{randomID(), payload})
			}
		},
	}
}

// compareSenders measures the enqueue rate with -producers producers for
// several ways of sending the same jobs, and prints a table of medians.
func compareSenders(ctx context.Context, e *env) error {
	src, err := os.ReadFile("../scripts/enqueue.lua")
	if err != nil {
		return fmt.Errorf("-senders reads rqgo's enqueue.lua; run it from the bench directory: %w", err)
	}
	load := func(c *redis.Client) (redis.Scripter, error) {
		return c, redis.NewScript(string(src)).Load(context.Background(), c).Err()
	}
	auto := func(full bool) func(*redis.Client) (redis.Scripter, error) {
		return func(c *redis.Client) (redis.Scripter, error) {
			if _, err := load(c); err != nil {
				return nil, err
			}
			return c.AutoPipelineWithOptions(&redis.AutoPipelineOptions{FullDuplex: full})
		}
	}
	senders := []system{
		rqgoSystem,
		asynqSystem,
		scriptSender("enqueue.lua, one call per job per producer", string(src), load),
		scriptSender("enqueue.lua via go-redis auto-pipeliner, full duplex", string(src), auto(true)),
		scriptSender("enqueue.lua via go-redis auto-pipeliner, half duplex", string(src), auto(false)),
	}
	cfg := e.cfg
	if cfg.enqueueJobs%cfg.producers == 0 {
		for _, h := range []boundHash{rqgoHash, compactHash, noHash} {
			senders = append(senders, boundSender(cfg.producers, h))
		}
	} else {
		fmt.Fprintf(os.Stderr, "senders: no bound rows: -enqueue %d is not a multiple of -producers %d\n", cfg.enqueueJobs, cfg.producers)
	}
	rates := make([][]float64, len(senders))
	cpus := make([][]float64, len(senders))
	clients := make([][]float64, len(senders))
	for r := range cfg.runs {
		for i, s := range senders {
			res, err := e.enqueueRate(ctx, s, cfg.enqueueJobs, cfg.producers, "")
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "senders, run %d: %s %.0f jobs/s\n", r+1, s.name, res.rate)
			rates[i] = append(rates[i], res.rate)
			cpus[i] = append(cpus[i], res.redisUsec)
			clients[i] = append(clients[i], res.clientUsec)
		}
	}
	var rows [][]string
	for i, s := range senders {
		rows = append(rows, []string{s.name, fmt.Sprintf("%.0f", median(rates[i])), fmt.Sprintf("%.1f", median(cpus[i])), fmt.Sprintf("%.1f", median(clients[i]))})
	}
	fmt.Print(markdown([]string{fmt.Sprintf("sender, %d producers", cfg.producers), "jobs/s", "Redis CPU µs/job", "client CPU µs/job"}, rows))
	return nil
}
