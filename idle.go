package rqgo

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// waitFreed waits for a slot to free, an outcome to be recorded, or the
// oldest held job to reach maxHold, which it then returns to its queue.
func (w *Worker) waitFreed(ctx context.Context) {
	w.mu.Lock()
	var oldest time.Time
	if len(w.held) > 0 {
		oldest = w.held[0].fetched
	}
	w.mu.Unlock()
	if oldest.IsZero() {
		select {
		case <-ctx.Done():
		case <-w.freed:
		}
		return
	}
	t := time.NewTimer(time.Until(oldest.Add(w.maxHold)))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-w.freed:
	case <-t.C:
		w.releaseHeld(context.WithoutCancel(ctx), time.Now().Add(-w.maxHold))
	}
}

// waitBurst waits, in burst mode, for a running job to end or the next
// retry this worker scheduled to come due.
func (w *Worker) waitBurst(ctx context.Context, next time.Time) {
	d := time.Second
	if due := w.retryDue.Load(); due > 0 {
		d = min(d, time.Until(time.UnixMilli(due))+time.Millisecond)
	}
	if !next.IsZero() {
		d = min(d, time.Until(next)+time.Millisecond)
	}
	t := time.NewTimer(max(d, time.Millisecond))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-w.freed:
	case <-t.C:
	}
}

// Reasons dequeue.lua gives for holding a queue back.
const (
	holdPaused = 1 // until Resume
	holdFull   = 2 // its Concurrency is full
	holdRate   = 3 // its Rate is spent
)

// holdRecheck is the longest a worker waits before it asks a paused or full
// queue again when no message told it to: Resume and freed slots are
// published on the queue's active channel, and a worker that loses its
// subscription looks at every queue when it is back, so this is a last
// resort.
const holdRecheck = time.Minute

// holdBack records, for queue state st, the hold dequeue.lua reported, with
// its hold_ms (v). goes is st.goes when the fetch was sent: a message that
// came since ends the hold at once.
func (w *Worker) holdBack(st *queueState, hold int64, v any, goes int64) {
	ms, _ := v.(int64)
	st.hold.Store(hold)
	switch hold {
	case 0:
		st.heldUntil.Store(0)
		return
	case holdPaused:
		ms = holdRecheck.Milliseconds()
	case holdFull:
		st.capped.Store(true)
		ms = min(max(ms, 1), holdRecheck.Milliseconds())
	default:
		ms = max(ms, 1)
	}
	// Asked again once the hold is over (or a message ends it sooner).
	st.dirty.Store(true)
	st.heldUntil.Store(time.Now().UnixMilli() + ms)
	if st.goes.Load() != goes {
		st.heldUntil.Store(0)
	}
}

// limited says whether a queue of the worker holds work back for its
// Concurrency or Rate, or has jobs parked for their limit keys: a burst
// worker waits for them (and not for a paused queue).
func (w *Worker) limited() bool {
	now := time.Now().UnixMilli()
	for _, st := range w.qstate {
		if h := st.hold.Load(); (h == holdFull || h == holdRate) && st.heldUntil.Load() > now {
			return true
		}
		if st.parked.Load() > 0 {
			return true
		}
	}
	return false
}

// block waits until a wake-up comes for one of the worker's queues, the
// next scheduled job comes due, until passes, or ctx ends.
//
// Where every wake list of the worker's queues can go in one BLPOP (a single
// Redis, or a Cluster worker of one queue) the worker blocks in that one
// command, on one connection, and the token it takes wakes it alone. On a
// Cluster, a BLPOP over keys of several slots is refused, so a worker of
// several queues waits for the messages enqueue publishes on the wake
// channels instead, on the one connection of its subscription.
func (w *Worker) block(ctx context.Context, until time.Time) {
	if next := w.nextDue(); !next.IsZero() && next.Before(until) {
		until = next
	}
	d := time.Until(until)
	if d < time.Millisecond {
		return
	}
	if w.waiting != nil {
		w.waiting()
	}
	if w.subscribed {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-w.wake:
		case <-t.C:
		}
		return
	}
	// Wake the BLPOP so shutdown does not wait for it.
	stop := context.AfterFunc(ctx, func() { w.unblock(context.WithoutCancel(ctx)) })
	defer stop()
	var (
		res []string
		err error
	)
	keys := w.blockKeys
	if now := time.Now().UnixMilli(); w.anyHeld(now) {
		// A held queue's token stays in its wake list (see dequeue.lua).
		keys = keys[:1:1]
		for _, k := range w.blockKeys[1:] {
			i := w.wakeKeys[k]
			st := w.qstate[i]
			switch {
			case st.heldUntil.Load() <= now:
				keys = append(keys, k)
			case st.hold.Load() == holdFull:
				// One token per freed slot wakes one waiting worker.
				keys = append(keys, w.queues[i].k.slot())
			}
		}
	}
	w.blocking.Store(true)
	defer w.blocking.Store(false)
	if w.anyReady() {
		return // a "go" came since the fetch (see listen)
	}
	if d >= time.Second {
		res, err = w.rdb.BLPop(ctx, d, keys...).Result()
	} else {
		// go-redis's BLPop rounds a wait under a second up to one; BLPOP
		// itself takes fractional seconds (Redis ≥ 6). A wait this short
		// fits in the client's read timeout.
		args := make([]any, 0, len(keys)+2)
		args = append(args, "BLPOP")
		for _, k := range keys {
			args = append(args, k)
		}
		args = append(args, strconv.FormatFloat(d.Seconds(), 'f', 3, 64))
		res, err = w.rdb.Do(ctx, args...).StringSlice()
	}
	switch {
	case err == nil && len(res) == 2:
		w.waitFailures = 0
		if i, ok := w.wakeKeys[res[0]]; ok {
			w.qstate[i].dirty.Store(true)
		} else if i, ok := w.slotKeys[res[0]]; ok {
			w.endHold(i)
		}
	case err != nil && !errors.Is(err, redis.Nil) && ctx.Err() == nil:
		// Redis unreachable, or a wake list damaged: back off, up to 5 s.
		w.waitFailures++
		d := min(100*time.Millisecond<<min(w.waitFailures-1, 6), 5*time.Second)
		reloadTopology(w.rdb)
		w.log.Warn("waiting for jobs failed", "err", err, "in", d)
		sleepCtx(ctx, d)
		w.markAll() // a wake-up may have come meanwhile
	default:
		w.waitFailures = 0
	}
}

// endHold makes the worker ask its queue i at its next fetch, whatever hold
// it had.
func (w *Worker) endHold(i int) {
	st := w.qstate[i]
	st.goes.Add(1)
	st.heldUntil.Store(0)
	st.dirty.Store(true)
}

// lookAgain ends the hold of the worker's queue i and wakes the fetch loop
// to ask it, from its idle wait or its BLPOP.
func (w *Worker) lookAgain(i int) {
	w.endHold(i)
	w.signalWake()
	if !w.subscribed && w.blocking.Load() {
		w.unblock(context.Background())
	}
}

// unblock ends the worker's BLPOP (see block), if it is in one, by pushing
// to its own wake key; a token pushed while it is not expires.
func (w *Worker) unblock(ctx context.Context) {
	c, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	self := w.blockKeys[0]
	_, _ = w.rdb.Pipelined(c, func(p redis.Pipeliner) error {
		p.LPush(c, self, "1")
		p.PExpire(c, self, 10*time.Second)
		return nil
	})
}

// anyHeld says whether some queue of the worker is held back at now, Unix
// ms (see holdBack).
func (w *Worker) anyHeld(now int64) bool {
	for _, st := range w.qstate {
		if st.heldUntil.Load() > now {
			return true
		}
	}
	return false
}
