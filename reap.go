package rqgo

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/redis/go-redis/v9"
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
		w.qstate[i].reapAsked.Store(false)
		calls = append(calls, &scriptCall{s: reapScript, keys: q.reapKeys,
			args: []any{w.reapEvery.Milliseconds(), 1000, ttlMillis(w.opts.FailureTTL), time.Minute.Milliseconds()}})
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
	if w.reapReplied != nil {
		w.reapReplied()
	}
	for n, call := range calls {
		i := which[n]
		q, st := w.queues[i], w.qstate[i]
		res, owedIDs, due, err := reapReply(call.cmd)
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
		if res[5] >= 0 {
			at = min(at, now.Add(time.Duration(res[5])*time.Millisecond).UnixMilli())
		}
		// A reap asked for while this one was in flight (a lease taken
		// after reap.lua ran, a reconnect) is still owed.
		if st.reapAsked.Load() {
			at = min(at, time.Now().Add(w.reapEvery).UnixMilli())
		}
		// reapSoon may have moved it earlier meanwhile; keep the earlier.
		if cur := st.reapAt.Load(); cur <= now.UnixMilli() || cur > at {
			st.reapAt.CompareAndSwap(cur, at)
		}
		if res[0] > 0 || res[1] > 0 {
			w.log.Warn("recovered jobs whose lease expired", "queue", q.name, "requeued", res[0], "failed", res[1])
		}
		w.finishWorkflows(ctx, q.name, owedIDs, due)
	}
}

// reapReply reads reap.lua's reply: six counts, what the outbox owes (as
// triples) and the deferred jobs due for a check of their links.
func reapReply(cmd *redis.Cmd) (res [6]int64, owedIDs []any, due []any, err error) {
	r, err := cmd.Slice()
	if err == nil && len(r) != 8 {
		err = fmt.Errorf("unexpected reply %v", r)
	}
	if err != nil {
		return res, nil, nil, err
	}
	for i := range res {
		res[i], _ = r[i].(int64)
	}
	owedIDs, _ = r[6].([]any)
	due, _ = r[7].([]any)
	return res, owedIDs, due, nil
}

// finishWorkflows delivers what a reap found owed by jobs of queue, and
// links the deferred jobs whose check is due.
func (w *Worker) finishWorkflows(ctx context.Context, queue string, owedIDs, due []any) {
	if len(owedIDs) > 0 {
		if err := deliverOwed(ctx, w.rdb, w.opts.Prefix, owedList(queue, owedIDs), w.hook); err != nil && ctx.Err() == nil {
			w.log.Warn("delivering the ends of jobs to their dependents failed; will retry", "queue", queue, "err", err)
		}
	}
	var (
		edges  []edge
		lonely []any // deferred jobs with no open parent
	)
	for _, d := range due {
		ids, _ := d.([]any)
		if len(ids) == 0 {
			continue
		}
		id, _ := ids[0].(string)
		child := JobRef{Queue: queue, ID: id}
		if len(ids) == 1 {
			// deliver.lua clears the entry of a job deleted by hand.
			lonely = append(lonely, id, "", "open")
		}
		for _, p := range ids[1:] {
			s, _ := p.(string)
			if parent, ok := parseRef(s); ok {
				edges = append(edges, edge{child: child, parent: parent})
			}
		}
	}
	if len(lonely) > 0 {
		args := append([]any{relinkEvery.Milliseconds()}, lonely...)
		if err := deliverScript.Run(ctx, w.rdb, []string{newKeys(w.opts.Prefix, queue).jobPrefix()}, args...).Err(); err != nil && ctx.Err() == nil {
			w.log.Warn("checking deferred jobs failed; will retry", "queue", queue, "err", err)
		}
	}
	if len(edges) > 0 {
		if _, err := link(ctx, w.rdb, w.opts.Prefix, edges, nil, w.hook); err != nil && ctx.Err() == nil {
			w.log.Warn("linking deferred jobs to their parents failed; will retry", "queue", queue, "err", err)
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
	st.reapAsked.Store(true)
	at := time.Now().Add(w.reapEvery).UnixMilli()
	for {
		cur := st.reapAt.Load()
		if cur <= at || st.reapAt.CompareAndSwap(cur, at) {
			return
		}
	}
}
