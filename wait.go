package rqgo

import (
	"context"
	"errors"
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
// All the Waits of a Queue share one subscription and one goroutine that
// reads their jobs in pipelined batches, so ten thousand Waits need one
// connection more than the client's pool. A notification lost with a
// dropped connection is made up for when the subscription comes back, and
// every waited job is read at least every 5 seconds in any case. The
// subscription closes 10 seconds after the last Wait returned.
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
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case r := <-w.res:
		return r.j, r.err
	}
}

// waitHub is what the Waits of one Queue share while any is in flight: a
// subscription to the queue's ended channel, and a goroutine that reads
// the jobs due for a look (new waiters, those whose end was published, all
// of them every waitRecheck) with wait.lua, in pipelined batches.
type waitHub struct {
	mu      sync.Mutex
	q       *Queue
	sub     *redis.PubSub
	waiters map[string]map[*waiter]struct{} // by job id
	n       int
	due     map[*waiter]struct{} // to be read
	kick    chan struct{}        // the reader has work
	stop    chan struct{}        // closed with the subscription
	idle    *time.Timer          // closes the subscription, waitLinger after the last Wait
}

// waiter is one Wait; res gets its outcome.
type waiter struct {
	id  string
	res chan waitResult
}

type waitResult struct {
	j   *Job
	err error
}

// waitBatch is the most jobs the hub reads in one round trip.
const waitBatch = 1000

// waitLinger is how long the hub keeps its subscription after the last
// Wait returned, so that Waits one after another share it too.
const waitLinger = 10 * time.Second

// join adds a waiter for job id, subscribing first when there is none: it
// returns once Redis has confirmed the subscription, so an end published
// after the waiter's first look reaches it.
func (h *waitHub) join(ctx context.Context, q *Queue, id string) (*waiter, error) {
	w := &waiter{id: id, res: make(chan waitResult, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.idle != nil {
		h.idle.Stop()
		h.idle = nil
	}
	if h.sub == nil {
		// The subscription outlives this call's ctx: later Waits share it.
		sub := q.rdb.Subscribe(context.WithoutCancel(ctx), q.k.ended())
		if _, err := sub.Receive(ctx); err != nil {
			_ = sub.Close()
			return nil, err
		}
		h.q, h.sub = q, sub
		h.waiters = map[string]map[*waiter]struct{}{}
		h.due = map[*waiter]struct{}{}
		h.kick = make(chan struct{}, 1)
		h.stop = make(chan struct{})
		go h.listen(sub)
		go h.read(h.stop, h.kick)
	}
	if h.waiters[id] == nil {
		h.waiters[id] = map[*waiter]struct{}{}
	}
	h.waiters[id][w] = struct{}{}
	h.n++
	h.markLocked(w)
	return w, nil
}

// leave removes a waiter; waitLinger after the last, unless another
// joined meanwhile, the subscription closes.
func (h *waitHub) leave(w *waiter) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.waiters[w.id], w)
	if len(h.waiters[w.id]) == 0 {
		delete(h.waiters, w.id)
	}
	delete(h.due, w)
	if h.n--; h.n > 0 {
		return
	}
	var idle *time.Timer
	idle = time.AfterFunc(waitLinger, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.idle != idle || h.n > 0 || h.sub == nil {
			return
		}
		_ = h.sub.Close()
		close(h.stop)
		h.sub, h.idle = nil, nil
	})
	h.idle = idle
}

// markLocked puts a waiter up for a look.
func (h *waitHub) markLocked(w *waiter) {
	h.due[w] = struct{}{}
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// listen marks the waiters of each job whose end is published, and every
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
				h.markLocked(w)
			}
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				h.markAllLocked()
			}
		}
		h.mu.Unlock()
	}
}

func (h *waitHub) markAllLocked() {
	for _, ws := range h.waiters {
		for w := range ws {
			h.markLocked(w)
		}
	}
}

// read looks at the due waiters' jobs until stop is closed.
func (h *waitHub) read(stop, kick chan struct{}) {
	recheck := time.NewTicker(waitRecheck)
	defer recheck.Stop()
	for {
		select {
		case <-stop:
			return
		case <-recheck.C:
			h.mu.Lock()
			if h.stop == stop {
				h.markAllLocked()
			}
			h.mu.Unlock()
			continue
		case <-kick:
		}
		for {
			h.mu.Lock()
			if h.stop != stop {
				h.mu.Unlock()
				return
			}
			batch := make([]*waiter, 0, min(len(h.due), waitBatch))
			for w := range h.due {
				if len(batch) == waitBatch {
					break
				}
				batch = append(batch, w)
				delete(h.due, w)
			}
			q := h.q
			h.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			q.look(batch)
		}
	}
}

// look runs wait.lua for each waiter's job, in one round trip, and gives
// each waiter whose job has ended, or does not exist, its outcome. A
// waiter whose look failed for want of Redis is looked at again at the next
// recheck; one whose job's key is damaged gets the error.
func (q *Queue) look(batch []*waiter) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	calls := make([]*scriptCall, len(batch))
	for i, w := range batch {
		calls[i] = &scriptCall{s: waitScript, keys: []string{q.k.job(w.id)}}
	}
	runScripts(ctx, q.rdb, calls)
	for i, w := range batch {
		j, err := q.endedReply(w.id, calls[i].cmd)
		if (err != nil && !isScriptRefusal(err) && !errors.Is(err, ErrJobNotFound)) || (j == nil && err == nil) {
			continue
		}
		select {
		case w.res <- waitResult{j, err}:
		default:
		}
	}
}

// endedReply reads wait.lua's reply: the job when it has ended, nil (and
// nil) while it has not, once the script has asked for its end to be
// published.
func (q *Queue) endedReply(id string, cmd *redis.Cmd) (*Job, error) {
	r, err := cmd.Slice()
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
		j.src = q.src
		return j, err
	}
	return nil, nil
}
