package rqgo

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// waitRecheck is how often a waiting [Queue.Wait] reads its job again
// although it was not told of its end: the bound on how late a lost
// notification makes it (a subscription that reconnects reads every waited
// job at once).
var waitRecheck = 5 * time.Second

// Wait returns the job once it has ended: finished, failed or canceled.
// The error is nil however it ended; read the job's Status (and Result or
// Error). It returns at once when the job has already ended, ctx's error
// when ctx ends first, and an error wrapping [ErrJobNotFound] when the job
// does not exist or no longer does (deleted, expired, or kept for no time
// by [ResultTTL](0)).
//
// Waiting is pushed, not polled: the script that ends a job someone waits
// for publishes its id, and the waiter wakes within about a millisecond.
// All the Waits of a Queue share one subscription, so thousands of them
// need one connection (plus the pool's, briefly, to read each job). A
// notification lost with a dropped connection is made up for when the
// subscription comes back, and every waiter reads its job at least every
// 5 seconds in any case.
func (q *Queue) Wait(ctx context.Context, id string) (*Job, error) {
	if q.err != nil {
		return nil, q.err
	}
	if err := validateJobID(id); err != nil {
		return nil, err
	}
	w, err := q.waits.join(ctx, q, id)
	if err != nil {
		return nil, fmt.Errorf("rqgo: wait for job %s: %w", id, err)
	}
	defer q.waits.leave(w)
	recheck := time.NewTimer(waitRecheck)
	defer recheck.Stop()
	for {
		j, err := q.ended(ctx, id)
		if j != nil || err != nil {
			return j, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-w.ch:
		case <-recheck.C:
		}
		recheck.Reset(waitRecheck)
	}
}

// ended runs wait.lua: the job when it has ended, nil (and nil) while it
// has not, once the script has asked for its end to be published.
func (q *Queue) ended(ctx context.Context, id string) (*Job, error) {
	r, err := waitScript.Run(ctx, q.rdb, []string{q.k.job(id)}).Slice()
	if err != nil {
		return nil, fmt.Errorf("rqgo: wait for job %s: %w", id, err)
	}
	if len(r) == 0 {
		return nil, fmt.Errorf("rqgo: wait for job %s: empty reply", id)
	}
	switch code, _ := r[0].(int64); code {
	case 0:
		return nil, fmt.Errorf("%w: %q in queue %q", ErrJobNotFound, id, q.name)
	case 1:
		h := make(map[string]string, len(r)/2)
		for i := 1; i+1 < len(r); i += 2 {
			f, _ := r[i].(string)
			v, _ := r[i+1].(string)
			h[f] = v
		}
		j, err := decodeJob(h)
		j.from, j.pfx = q.rdb, q.prefix
		return j, err
	}
	return nil, nil
}

// waitHub is the subscription to a queue's ended channel that the Waits
// of one Queue share while any is in flight.
type waitHub struct {
	mu      sync.Mutex
	sub     *redis.PubSub
	waiters map[string]map[*waiter]struct{} // by job id
	n       int
}

// waiter is one Wait: ch gets a token when its job may have ended.
type waiter struct {
	id string
	ch chan struct{}
}

func (w *waiter) poke() {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// join adds a waiter for job id, subscribing first when it is the only
// one: it returns once Redis has confirmed the subscription, so an end
// published after that reaches it.
func (h *waitHub) join(ctx context.Context, q *Queue, id string) (*waiter, error) {
	w := &waiter{id: id, ch: make(chan struct{}, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sub == nil {
		// The subscription outlives this call's ctx: later Waits share it.
		sub := q.rdb.Subscribe(context.WithoutCancel(ctx), q.k.ended())
		if _, err := sub.Receive(ctx); err != nil {
			_ = sub.Close()
			return nil, err
		}
		h.sub = sub
		h.waiters = map[string]map[*waiter]struct{}{}
		go h.listen(sub)
	}
	if h.waiters[id] == nil {
		h.waiters[id] = map[*waiter]struct{}{}
	}
	h.waiters[id][w] = struct{}{}
	h.n++
	return w, nil
}

// leave removes a waiter, and closes the subscription after the last.
func (h *waitHub) leave(w *waiter) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.waiters[w.id], w)
	if len(h.waiters[w.id]) == 0 {
		delete(h.waiters, w.id)
	}
	if h.n--; h.n == 0 {
		_ = h.sub.Close()
		h.sub = nil
	}
}

// listen pokes the waiters of each job whose end is published, and every
// waiter when the subscription comes back after a reconnect (what was
// published meanwhile is lost).
func (h *waitHub) listen(sub *redis.PubSub) {
	for m := range sub.ChannelWithSubscriptions() {
		h.mu.Lock()
		if h.sub != sub {
			h.mu.Unlock()
			return
		}
		switch m := m.(type) {
		case *redis.Message:
			for w := range h.waiters[m.Payload] {
				w.poke()
			}
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				for _, ws := range h.waiters {
					for w := range ws {
						w.poke()
					}
				}
			}
		}
		h.mu.Unlock()
	}
}
