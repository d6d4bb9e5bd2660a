package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"

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
				var b [10]byte
				_, _ = rand.Read(b[:])
				id := hex.EncodeToString(b[:])
				// enqueue.lua's KEYS and ARGV, as rqgo's Enqueue sends them.
				return script.EvalSha(ctx, s, []string{k("job:" + id), k("pending"), k("scheduled"), k("wake")},
					id, 0, 0, "id", id, "queue", benchQueue, "func", "noop", "args", payload, "attempt", 0, "max_retries", 3).Err()
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
	rates := make([][]float64, len(senders))
	cpus := make([][]float64, len(senders))
	for r := range cfg.runs {
		for i, s := range senders {
			v, _, cpu, _, err := e.enqueueRate(ctx, s, cfg.enqueueJobs, cfg.producers, "")
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "senders, run %d: %s %.0f jobs/s\n", r+1, s.name, v)
			rates[i] = append(rates[i], v)
			cpus[i] = append(cpus[i], cpu)
		}
	}
	var rows [][]string
	for i, s := range senders {
		rows = append(rows, []string{s.name, fmt.Sprintf("%.0f", median(rates[i])), fmt.Sprintf("%.1f", median(cpus[i]))})
	}
	fmt.Print(markdown([]string{fmt.Sprintf("sender, %d producers", cfg.producers), "jobs/s", "Redis CPU µs/job"}, rows))
	return nil
}
