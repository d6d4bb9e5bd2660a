package rqgo

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"time"
)

// maxErrorLen bounds the error text kept in a job hash (a panic's stack can
// be long).
const maxErrorLen = 16 << 10

// ackLoop writes handlers' outcomes, batching whatever is ready into one
// round trip and retrying writes that failed, until stop is closed; then it
// makes one last attempt for what is left.
func (w *Worker) ackLoop(ctx context.Context, stop <-chan struct{}) {
	var (
		retry    []*outcome
		failures int
		timer    = time.NewTimer(time.Hour)
	)
	timer.Stop()
	backoff := RetryPolicy{Base: 50 * time.Millisecond, Cap: 2 * time.Second}
	for {
		batch := retry
		select {
		case o := <-w.outcomes:
			batch = append(batch, o)
		case <-timer.C:
		case <-stop:
			batch = w.drainOutcomes(batch)
			c, cancel := context.WithTimeout(ctx, 5*time.Second)
			if left := w.settle(c, batch); len(left) > 0 {
				w.log.Warn("could not record outcomes before stopping; their leases will expire and they will run again", "jobs", len(left))
			}
			cancel()
			return
		}
		batch = w.drainOutcomes(batch)
		if w.qstate[0].capped.Load() {
			batch = w.gatherQuick(batch)
		}
		c, cancel := context.WithTimeout(ctx, w.opts.Lease)
		// Outcomes on their way no longer hold back the fetch loop (want).
		w.acking.Store(int64(len(batch)))
		w.signalFreed()
		retry = w.settle(c, batch)
		w.acking.Store(0)
		cancel()
		if len(retry) == 0 {
			failures = 0
			continue
		}
		failures++
		timer.Reset(backoff.Ceiling(failures))
	}
}

// gatherQuick adds to batch the outcomes of handlers that return within a
// few turns of the scheduler, for a worker whose first queue is capped by a
// Concurrency. There the cap counts leases, so the fetch that goes with an
// ack (settle) can take only the slots that ack frees: quick jobs fetched
// together but acked as each returns would come back a few at a time, and
// every job would pay for more round trips. It stops at the first turn that
// brings no outcome, when no handler runs, or after 8 turns (each a few
// microseconds), so a slower job's ack is not held back.
func (w *Worker) gatherQuick(batch []*outcome) []*outcome {
	for range 8 {
		if w.inflight.Load() == 0 {
			break
		}
		n := len(batch)
		runtime.Gosched()
		if batch = w.drainOutcomes(batch); len(batch) == n {
			break
		}
	}
	return batch
}

func (w *Worker) drainOutcomes(batch []*outcome) []*outcome {
	for len(batch) < 512 {
		select {
		case o := <-w.outcomes:
			batch = append(batch, o)
		default:
			return batch
		}
	}
	return batch
}

// slotsWatched is ack_many.lua's ARGV[2] for the named queue: "0" when the
// worker's last fetch from it found no flow hash, so that its acks need not
// look for workers waiting for a slot.
func (w *Worker) slotsWatched(queue string) string {
	for i, q := range w.queues {
		if q.name == queue && w.qstate[i].noFlow.Load() {
			return "0"
		}
	}
	return "1"
}

// fetchWithAcks returns the dequeue.lua call that fetches from the worker's
// first queue as many jobs as it has free slots for, and the queue's goes
// count it is sent with, or nil when it should not fetch: it is stopping, or
// has no free slot. The caller holds fetchMu.
func (w *Worker) fetchWithAcks() (*scriptCall, int64) {
	if w.fetchDone || w.fetchCtx == nil || w.fetchCtx.Err() != nil {
		return nil, 0
	}
	// Jobs ahead, to start in the slots of its jobs as they end: as many as
	// handlers returned within a round trip since the last such fetch (as
	// the fetch loop takes jobs ahead), so a worker whose handlers take
	// longer takes none.
	quick := w.quick.Load()
	w.mu.Lock()
	free := w.opts.Concurrency - int(w.inflight.Load()) - len(w.held)
	ahead := max(min(w.opts.Prefetch-len(w.held), int(quick-w.ackedQuick)), 0)
	stopping := w.stopping
	w.mu.Unlock()
	if free <= 0 || stopping {
		return nil, 0
	}
	w.ackedQuick = quick
	q, st := &w.queues[0], w.qstate[0]
	st.dirty.Store(false) // a wake-up while it travels marks the queue again
	return &scriptCall{s: dequeueScript, keys: q.dequeueKeys,
		args: []any{free, w.opts.Lease.Milliseconds(), w.id, w.nonce, free, ahead, w.inflight.Load()}}, st.goes.Load()
}

// settle records outcomes in one round trip: the successes of each queue
// with one ack_many.lua call, each failure with fail.lua. It returns the
// outcomes that could not be written (Redis unreachable).
func (w *Worker) settle(ctx context.Context, batch []*outcome) (retry []*outcome) {
	var (
		calls []*scriptCall
		acks  []ackGroup // one per queue with successes
		fails []*outcome // fails[i] is recorded by calls[len(acks)+i]
	)
	for _, o := range batch {
		if w.isLost(o.r) {
			w.finish(o.r)
			continue
		}
		if o.err != nil {
			fails = append(fails, o)
			continue
		}
		i := 0
		for i < len(acks) && acks[i].q.name != o.r.q.name {
			i++
		}
		if i == len(acks) {
			acks = append(acks, ackGroup{q: &o.r.q, args: []any{ttlMillis(w.opts.ResultTTL), w.slotsWatched(o.r.q.name)}})
		}
		j := o.r.job
		acks[i].args = append(acks[i].args, j.ID, j.token, []byte(o.result))
		acks[i].outs = append(acks[i].outs, o)
		if o.next != nil {
			acks[i].next = append(acks[i].next, o.next.job.ID)
		}
	}
	for i := range acks {
		if len(acks[i].next) > 0 {
			acks[i].args = append(append(acks[i].args, ""), acks[i].next...)
		}
	}
	if len(acks)+len(fails) == 0 {
		return nil
	}
	calls = make([]*scriptCall, 0, len(acks)+len(fails)+1)
	fill := false
	for i := range acks {
		keys := acks[i].q.ackKeys
		if acks[i].q.name == w.queues[0].name && w.qstate[0].capped.Load() {
			// This worker asks its first queue first at its next fetch: the
			// slots it frees under the queue's Concurrency are its to fill.
			keys = append(keys[:3:3], acks[i].q.k.flow())
			fill = true
		}
		calls = append(calls, &scriptCall{s: ackManyScript, keys: keys, args: acks[i].args})
	}
	// That next fetch goes in the same round trip when the fetch loop is not
	// fetching: sent after the acks, it finds their slots free, where one sent
	// by the fetch loop while they travel would find the queue full.
	var fetchCall *scriptCall
	var goes int64
	if fill && w.fetchMu.TryLock() {
		if fetchCall, goes = w.fetchWithAcks(); fetchCall == nil {
			w.fetchMu.Unlock()
		}
	}
	for _, o := range fails {
		j, k := o.r.job, o.r.q.k
		msg := o.err.Error()
		if len(msg) > maxErrorLen {
			msg = msg[:maxErrorLen] + "…"
		}
		calls = append(calls, &scriptCall{s: failScript,
			keys: []string{k.job(j.ID), k.active(), k.scheduled(), k.failed(), k.pending(), k.wake()},
			args: []any{j.ID, j.token, msg, o.delay, ttlMillis(w.opts.FailureTTL), snoozed(o.snooze)}})
	}
	if fetchCall != nil {
		calls = append(calls, fetchCall)
	}
	sent := time.Now()
	runScripts(ctx, w.rdb, calls)
	switch {
	case fetchCall != nil:
		res, err := fetchCall.cmd.Slice()
		got, _, err := w.taken(w.fetchCtx, 0, res, err, goes, sent)
		// Full, with no job in a slot (only jobs ahead, if any).
		full := len(got) == aheadIn(res) && w.qstate[0].hold.Load() == holdFull
		w.fetchMu.Unlock()
		if err != nil {
			w.log.Warn("fetching jobs with their acks failed", "err", err)
		}
		if err != nil || full {
			// An ack that Redis had to be sent again (NOSCRIPT) ran after
			// the fetch, which then found the queue full (or the acks were
			// stale and other workers hold every slot): ask again.
			w.lookAgain(0)
		} else {
			w.signalWake() // the fetch loop sees what remains
		}
	case fill:
		w.lookAgain(0) // once the slots are free
	}
	w.releaseStranded(ctx)
	debug := w.log.Enabled(ctx, slog.LevelDebug)
	var owing map[string][]string // by queue: jobs whose end is owed to other queues
	owes := func(o *outcome) {
		if owing == nil {
			owing = map[string][]string{}
		}
		owing[o.r.q.name] = append(owing[o.r.q.name], o.r.job.ID)
	}
	for i, g := range acks {
		codes, err := calls[i].cmd.Int64Slice()
		if err == nil && len(codes) != len(g.outs) {
			err = fmt.Errorf("unexpected reply of %d codes for %d jobs", len(codes), len(g.outs))
		}
		for n, o := range g.outs {
			switch {
			case err != nil:
				if !w.isLost(o.r) {
					w.jobLog(o.r.job).Warn("recording job outcome failed; will retry", "err", err)
					o.resent = true
					retry = append(retry, o)
					continue
				}
			case codes[n] == 0:
				w.staleLog(o)
			case codes[n] == 2:
				owes(o)
			}
			if debug && err == nil && codes[n] > 0 {
				w.jobLog(o.r.job).Debug("job finished")
			}
			w.finish(o.r)
		}
	}
	for i, o := range fails {
		res, err := calls[len(acks)+i].cmd.Int()
		log := w.jobLog(o.r.job)
		switch {
		case err != nil:
			if !w.isLost(o.r) {
				log.Warn("recording job outcome failed; will retry", "err", err)
				o.resent = true
				retry = append(retry, o)
				continue
			}
		case res == 0:
			w.staleLog(o)
		case res == 1:
			if o.delay > 0 {
				w.noteRetry(time.Now().Add(time.Duration(o.delay) * time.Millisecond))
			}
			log.Info("job attempt failed; will retry", "err", o.err, "in", time.Duration(o.delay)*time.Millisecond)
		case res == 4 || res == 5:
			if res == 5 {
				owes(o)
			}
			log.Info("job canceled while running", "err", o.err)
		default:
			if res == 3 {
				owes(o)
			}
			log.Warn("job failed", "err", o.err)
		}
		w.finish(o.r)
	}
	w.passOn(ctx, owing)
	return retry
}

// releaseStranded gives back the jobs held ahead of their queue's
// Concurrency when no handler runs: no job of theirs will end to hand them
// a slot.
func (w *Worker) releaseStranded(ctx context.Context) {
	var runs []*run
	w.mu.Lock()
	if w.inflight.Load() == 0 {
		w.held = slices.DeleteFunc(w.held, func(r *run) bool {
			if !r.ahead {
				return false
			}
			delete(w.running, r)
			if !r.lost {
				r.lost = true
				runs = append(runs, r)
			}
			return true
		})
	}
	w.mu.Unlock()
	if len(runs) == 0 {
		return
	}
	slices.Reverse(runs) // release.lua pushes to the head: keep their order
	for _, r := range runs {
		r.cancel(errShutdown)
	}
	if n := w.release(ctx, runs); n < len(runs) {
		w.log.Warn("could not return some jobs held ahead to their queue; they run again once their leases expire", "returned", n, "held", len(runs))
	}
}

// passOn delivers the ends that jobs of the worker's queues owe their
// dependents in other queues (see depend.go). What it cannot deliver, a
// reaper of the job's queue delivers a few seconds later.
func (w *Worker) passOn(ctx context.Context, owing map[string][]string) {
	if len(owing) == 0 || !w.hook.at(stepOwed) {
		return
	}
	var todo []owed
	for q, ids := range owing {
		o, err := readOwed(ctx, w.rdb, w.opts.Prefix, q, ids)
		if err != nil {
			w.log.Warn("reading what jobs owe their dependents failed; a reaper will deliver it", "queue", q, "err", err)
			continue
		}
		todo = append(todo, o...)
	}
	if err := deliverOwed(ctx, w.rdb, w.opts.Prefix, todo, w.hook); err != nil {
		w.log.Warn("delivering the ends of jobs to their dependents failed; a reaper will deliver it", "err", err)
	}
}

// staleLog reports an outcome a script refused for its token.
func (w *Worker) staleLog(o *outcome) {
	if o.resent {
		w.jobLog(o.r.job).Info("outcome not recorded by this try: an earlier try whose reply was lost recorded it, or the lease was lost")
		return
	}
	w.jobLog(o.r.job).Warn("lease lost before the outcome was recorded; another attempt owns the job now")
}

// ackGroup is the successes of one queue in a batch of outcomes.
type ackGroup struct {
	q    *workerQueue
	args []any // ack_many.lua's ARGV
	outs []*outcome
	next []any // the ids of the jobs started ahead in their slots
}

// jobLog is the worker's logger with the job's fields, built only when
// something is logged.
func (w *Worker) jobLog(j *Job) *slog.Logger {
	return w.log.With("queue", j.Queue, "job_id", j.ID, "func", j.Func, "attempt", j.Attempt)
}

func (w *Worker) noteRetry(t time.Time) {
	ms := t.UnixMilli()
	for {
		cur := w.retryDue.Load()
		if ms <= cur || w.retryDue.CompareAndSwap(cur, ms) {
			return
		}
	}
}

func (w *Worker) isLost(r *run) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return r.lost
}

// finish ends a run whose outcome is recorded, or that lost its lease.
func (w *Worker) finish(r *run) {
	w.mu.Lock()
	delete(w.running, r)
	r.handedTo = nil // its ack handed the slot over
	w.mu.Unlock()
	w.settling.Add(-1)
	if r.q.name == w.queues[0].name {
		w.firstSettling.Add(-1)
	}
	w.signalFreed()
}

// signalFreed tells the fetch loop (or a draining Run) that a slot came
// free or an outcome was recorded.
func (w *Worker) signalFreed() {
	select {
	case w.freed <- struct{}{}:
	default:
	}
}

// snoozed is fail.lua's ARGV[6].
func snoozed(s bool) string {
	if s {
		return "1"
	}
	return "0"
}
