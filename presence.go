package rqgo

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
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
	if isOOM(err) {
		// A full Redis still needs its workers, to drain it.
		w.log.Warn("Redis is out of memory: the worker runs but is listed only once its heartbeat can write", "err", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("rqgo: start worker: %w", err)
	}
	return nil
}

// isOOM says whether err is Redis refusing a write for want of memory.
func isOOM(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "OOM ")
}

// subscribe listens, on one connection of its own, for the messages that
// tell the worker a queue gained leases (dequeue.lua publishes on the active
// set's channel) or may start jobs again after a hold ("go" on the same
// channel), and, when it waits that way (see block), that a queue has
// work. It returns once Redis has confirmed the subscription.
func (w *Worker) subscribe(ctx context.Context) (*redis.PubSub, error) {
	chans := make([]string, 0, 3*len(w.queues))
	for _, q := range w.queues {
		chans = append(chans, q.k.active())
		if w.subscribed {
			chans = append(chans, q.k.wake(), q.k.slot())
		}
	}
	// A Run whose context ends this early still starts and stops cleanly.
	c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	sub := w.rdb.Subscribe(c, chans...)
	if _, err := sub.Receive(c); err != nil {
		_ = sub.Close()
		return nil, fmt.Errorf("rqgo: start worker: subscribe to the queues' channels: %w", err)
	}
	go w.listen(sub, len(chans))
	return sub, nil
}

// listen handles the subscription's messages until it is closed.
func (w *Worker) listen(sub *redis.PubSub, n int) {
	for m := range sub.ChannelWithSubscriptions() {
		switch m := m.(type) {
		case *redis.Message:
			if i, ok := w.wakeKeys[m.Channel]; ok {
				w.qstate[i].dirty.Store(true)
				w.signalWake()
			} else if i, ok := w.slotKeys[m.Channel]; ok {
				w.lookAgain(i)
			} else if i, ok := w.channels[m.Channel]; ok && m.Payload == "go" {
				// Resumed or the limits changed (limits.lua): look at the
				// queue again.
				w.lookAgain(i)
			} else if id, yes := strings.CutPrefix(m.Payload, "cancel:"); ok && yes {
				w.cancelRunning(i, id)
			} else if ok {
				w.reapSoon(i)
			}
		case *redis.Subscription:
			// Every channel is subscribed again after a reconnect; what was
			// published meanwhile is lost, so look at every queue.
			if m.Kind == "subscribe" && m.Count == n {
				w.markAll()
			}
		}
	}
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
