package rqgo

import (
	"context"
	"fmt"
	"math"
	"time"
)

// reap runs reap.lua, in one round trip, on every queue of the worker whose
// reap is due.
func (w *Worker) reap(ctx context.Context) {
	now := time.Now()
	var (
		calls []*scriptCall
		which []int
	)
	for i, q := range w.queues {
		if w.qstate[i].reapAt.Load() > now.UnixMilli() {
			continue
		}
		calls = append(calls, &scriptCall{s: reapScript, keys: q.reapKeys,
			args: []any{w.reapEvery.Milliseconds(), 1000, ttlMillis(w.opts.FailureTTL)}})
		which = append(which, i)
	}
	if len(calls) == 0 {
		return
	}
	// A worker of many queues reaps them all at its start: give each call
	// its share of time.
	c, cancel := context.WithTimeout(ctx, max(w.reapEvery, time.Second)+time.Duration(len(calls))*10*time.Millisecond)
	defer cancel()
	runScripts(c, w.rdb, calls)
	for n, call := range calls {
		i := which[n]
		q, st := w.queues[i], w.qstate[i]
		res, err := call.cmd.Int64Slice()
		if err == nil && len(res) != 5 {
			err = fmt.Errorf("unexpected reply %v", res)
		}
		if err != nil {
			st.reapAt.Store(now.Add(w.reapEvery).UnixMilli())
			if ctx.Err() == nil {
				w.log.Warn("reaping expired leases failed", "queue", q.name, "err", err)
			}
			continue
		}
		var at int64
		switch {
		case res[3] > 0:
			at = now.Add(w.reapEvery).UnixMilli() // leases to watch
		case res[4] > 0:
			at = now.Add(idleReap).UnixMilli() // entries that may expire
		default:
			at = math.MaxInt64 // until it has leases (reapSoon)
		}
		// reapSoon may have moved it earlier meanwhile; keep the earlier.
		if cur := st.reapAt.Load(); cur <= now.UnixMilli() || cur > at {
			st.reapAt.CompareAndSwap(cur, at)
		}
		if res[0] > 0 || res[1] > 0 {
			w.log.Warn("recovered jobs whose lease expired", "queue", q.name, "requeued", res[0], "failed", res[1])
		}
	}
}

// idleReap is how often a worker reaps a queue that had no leases but had
// registry entries when it last reaped it, to drop the entries of expired
// jobs. A queue with neither is reaped again only once it has leases: a
// queue gets leases only from a fetch, and a fetch tells the workers
// (dequeue.lua), who then reap it every reapEvery.
const idleReap = 10 * time.Minute

// reapSoon makes the heartbeat loop reap queue i within reapEvery: it has
// leases.
func (w *Worker) reapSoon(i int) {
	st := w.qstate[i]
	at := time.Now().Add(w.reapEvery).UnixMilli()
	for {
		cur := st.reapAt.Load()
		if cur <= at || st.reapAt.CompareAndSwap(cur, at) {
			return
		}
	}
}
