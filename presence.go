package rqgo

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
)

// WorkerInfo describes a live worker, as stored in its presence key
// <prefix>:worker:<id> (JSON, expiring one lease after its last heartbeat).
type WorkerInfo struct {
	ID          string    `json:"id"`
	Host        string    `json:"host"`
	PID         int       `json:"pid"`
	Queues      []string  `json:"queues"`
	Concurrency int       `json:"concurrency"`
	StartedAt   time.Time `json:"started_at"`
	Running     int64     `json:"running"`
}

func (w *Worker) info() string {
	host, _ := os.Hostname()
	b, _ := json.Marshal(WorkerInfo{
		ID: w.id, Host: host, PID: os.Getpid(), Queues: w.opts.Queues,
		Concurrency: w.opts.Concurrency, StartedAt: w.startedAt, Running: w.inflight.Load(),
	})
	return string(b)
}

// register records the worker's queues and presence.
func (w *Worker) register(ctx context.Context) error {
	w.startedAt = time.Now().UTC().Truncate(time.Second)
	names := make([]any, len(w.opts.Queues))
	for i, q := range w.opts.Queues {
		names[i] = q
	}
	_, err := w.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.SAdd(ctx, queuesKey(w.opts.Prefix), names...)
		p.SAdd(ctx, workersKey(w.opts.Prefix), w.id)
		p.Set(ctx, workerKey(w.opts.Prefix, w.id), w.info(), w.opts.Lease)
		return nil
	})
	if err != nil {
		return fmt.Errorf("rqgo: start worker: %w", err)
	}
	return nil
}

func (w *Worker) unregister(ctx context.Context) {
	c, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := w.rdb.Pipelined(c, func(p redis.Pipeliner) error {
		p.SRem(c, workersKey(w.opts.Prefix), w.id)
		p.Del(c, workerKey(w.opts.Prefix, w.id))
		return nil
	})
	if err != nil {
		w.log.Warn("removing worker presence failed; it expires by itself", "err", err)
	}
}

// checkEviction warns when Redis may evict keys: an evicting Redis silently
// drops jobs.
func (w *Worker) checkEviction(ctx context.Context) {
	res, err := w.rdb.ConfigGet(ctx, "maxmemory-policy").Result()
	if err != nil {
		w.log.Debug("could not read maxmemory-policy", "err", err)
		return
	}
	if p := res["maxmemory-policy"]; p != "" && p != "noeviction" {
		w.log.Warn("Redis maxmemory-policy is not noeviction: under memory pressure Redis will silently delete jobs; set maxmemory-policy noeviction",
			"maxmemory-policy", p)
	}
}

// Workers lists the live workers under prefix, dropping ids whose presence
// key has expired (their worker died without unregistering).
func Workers(ctx context.Context, rdb redis.UniversalClient, prefix string) ([]WorkerInfo, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	ids, err := rdb.SMembers(ctx, workersKey(prefix)).Result()
	if err != nil {
		return nil, fmt.Errorf("rqgo: list workers: %w", err)
	}
	var out []WorkerInfo
	for _, id := range ids {
		v, err := rdb.Get(ctx, workerKey(prefix, id)).Result()
		if err == redis.Nil {
			rdb.SRem(ctx, workersKey(prefix), id)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("rqgo: read worker %s: %w", id, err)
		}
		var wi WorkerInfo
		if json.Unmarshal([]byte(v), &wi) == nil {
			out = append(out, wi)
		}
	}
	return out, nil
}
