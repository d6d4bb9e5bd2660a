package rqgo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/redis/go-redis/v9"
)

// maxErrorLen bounds the error text kept in a job hash (a panic's stack can
// be long).
const maxErrorLen = 16 << 10

var errShutdown = errors.New("rqgo: worker shut down")

// scriptCall is one script invocation in a pipelined batch.
type scriptCall struct {
	s    *script
	keys []string
	args []any
	cmd  *redis.Cmd
}

// runScripts sends the calls in one round trip. A call Redis answers with
// NOSCRIPT (its script cache is empty, e.g. after a restart) is sent again
// with the script's source.
func runScripts(ctx context.Context, rdb redis.UniversalClient, calls []*scriptCall) {
	defer func() {
		for _, c := range calls {
			if c.cmd.Err() != nil {
				reloadTopology(rdb)
				return
			}
		}
	}()
	if len(calls) == 1 {
		c := calls[0]
		c.cmd = c.s.Run(ctx, rdb, c.keys, c.args...)
		return
	}
	_, _ = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, c := range calls {
			c.cmd = c.s.evalSha(ctx, p, c.keys, c.args)
		}
		return nil
	})
	for _, c := range calls {
		c.cmd = c.s.fallback(ctx, rdb, c.cmd, c.keys, c.args)
	}
}

// reloadTopology asks a Cluster client to reload its slot map after a
// command failed. go-redis reloads it on MOVED and ASK replies, but not when
// a node refuses connections: after a master dies and its replica takes
// over, it would go on dialing the dead master until its
// ClusterStateReloadInterval (60s by default) passes. go-redis coalesces
// reloads, so calling this after every failure is cheap.
func reloadTopology(rdb redis.UniversalClient) {
	if c, ok := rdb.(*redis.ClusterClient); ok {
		c.ReloadState(context.Background())
	}
}

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
			acks = append(acks, ackGroup{q: &o.r.q, args: []any{ttlMillis(w.opts.ResultTTL)}})
		}
		j := o.r.job
		acks[i].args = append(acks[i].args, j.ID, j.token, []byte(o.result))
		acks[i].outs = append(acks[i].outs, o)
	}
	if len(acks)+len(fails) == 0 {
		return nil
	}
	calls = make([]*scriptCall, 0, len(acks)+len(fails))
	for i := range acks {
		calls = append(calls, &scriptCall{s: ackManyScript, keys: acks[i].q.ackKeys, args: acks[i].args})
	}
	for _, o := range fails {
		j, k := o.r.job, o.r.q.k
		msg := o.err.Error()
		if len(msg) > maxErrorLen {
			msg = msg[:maxErrorLen] + "…"
		}
		calls = append(calls, &scriptCall{s: failScript,
			keys: []string{k.job(j.ID), k.active(), k.scheduled(), k.failed(), k.pending(), k.wake()},
			args: []any{j.ID, j.token, msg, o.delay, ttlMillis(w.opts.FailureTTL)}})
	}
	runScripts(ctx, w.rdb, calls)
	debug := w.log.Enabled(ctx, slog.LevelDebug)
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
			case debug:
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
		default:
			log.Warn("job failed", "err", o.err)
		}
		w.finish(o.r)
	}
	return retry
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
	w.mu.Unlock()
	w.settling.Add(-1)
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

// heartbeatLoop renews leases every Lease/3 and, in a goroutine of its own
// so that a long reap never delays a renewal, reaps expired leases of the
// worker's queues, until ctx ends: every reapEvery those with leases, every
// idleReap those with registry entries only, and the others once they have
// leases.
func (w *Worker) heartbeatLoop(ctx context.Context) {
	reaped := make(chan struct{})
	go func() {
		defer close(reaped)
		reap := time.NewTicker(w.reapEvery)
		defer reap.Stop()
		for {
			w.reap(ctx)
			select {
			case <-ctx.Done():
				return
			case <-reap.C:
			}
		}
	}()
	defer func() { <-reaped }()
	renew := time.NewTicker(w.opts.Lease / 3)
	defer renew.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-renew.C:
			w.renew(ctx)
		}
	}
}

// renew extends the leases of every running job in one round trip (one
// extend.lua call per queue) and refreshes the worker's presence key. Jobs
// whose lease is lost, or could not be renewed for a whole lease, have their
// handlers canceled with [ErrLeaseLost].
func (w *Worker) renew(ctx context.Context) {
	byQueue := map[string][]*run{}
	w.mu.Lock()
	for r := range w.running {
		// A run whose handler returned keeps its lease until its outcome is
		// recorded, so a slow or retried write does not hand the job out again.
		if !r.lost {
			byQueue[r.q.name] = append(byQueue[r.q.name], r)
		}
	}
	w.mu.Unlock()

	lease := w.opts.Lease
	c, cancel := context.WithTimeout(ctx, lease/3)
	defer cancel()
	calls := make([]*scriptCall, 0, len(byQueue))
	groups := make([][]*run, 0, len(byQueue))
	for _, runs := range byQueue {
		q := runs[0].q
		args := make([]any, 0, 1+2*len(runs))
		args = append(args, lease.Milliseconds())
		for _, r := range runs {
			args = append(args, r.job.ID, r.job.token)
		}
		calls = append(calls, &scriptCall{s: extendScript, keys: []string{q.k.active(), q.k.jobPrefix()}, args: args})
		groups = append(groups, runs)
	}
	// The id goes back in the set too: a listing drops the ids whose
	// presence key expired, which one late heartbeat is enough for.
	_, err := w.rdb.Pipelined(c, func(p redis.Pipeliner) error {
		p.Set(c, workerKey(w.opts.Prefix, w.id), w.info(), lease)
		p.SAdd(c, workersKey(w.opts.Prefix), w.id)
		return nil
	})
	if err != nil && ctx.Err() == nil {
		w.log.Warn("worker heartbeat failed", "err", err)
	}
	if len(calls) == 0 {
		return
	}
	start := time.Now()
	runScripts(c, w.rdb, calls)
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, call := range calls {
		lost, err := call.cmd.StringSlice()
		if err != nil {
			for _, r := range groups[i] {
				if !r.lost && time.Since(r.renewed) > lease {
					w.loseLocked(r)
				}
			}
			w.log.Warn("renewing leases failed", "queue", groups[i][0].q.name, "err", err)
			continue
		}
		gone := make(map[string]bool, len(lost))
		for _, tok := range lost {
			gone[tok] = true
		}
		for _, r := range groups[i] {
			switch {
			case !gone[r.job.token]:
				r.renewed = start
			case !r.done:
				w.loseLocked(r)
			}
			// A run whose handler returned and whose lease is gone was most
			// likely recorded between the snapshot and extend.lua; if not,
			// ack_many.lua's token check refuses its outcome.
		}
	}
}

func (w *Worker) loseLocked(r *run) {
	if r.lost {
		return
	}
	r.lost = true
	r.cancel(ErrLeaseLost)
	w.log.Warn("lease lost; handler canceled", "queue", r.q.name, "job_id", r.job.ID, "func", r.job.Func)
}

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

// drain waits up to ShutdownTimeout for running handlers, then cancels the
// rest and puts their jobs straight back in their queues with release.lua.
func (w *Worker) drain(ctx context.Context, stopHandlers context.CancelCauseFunc) {
	// Jobs fetched ahead have not started: they go back at once.
	w.stop()
	w.releaseHeld(ctx, time.Time{})
	if w.inflight.Load() > 0 {
		w.log.Info("shutting down; waiting for running jobs", "running", w.inflight.Load(), "grace", w.opts.ShutdownTimeout)
	}
	grace := time.NewTimer(w.opts.ShutdownTimeout)
	defer grace.Stop()
	for w.inflight.Load()+w.settling.Load() > 0 {
		select {
		case <-w.freed:
			continue
		case <-grace.C:
		}
		break
	}
	var unfinished []*run
	w.mu.Lock()
	for r := range w.running {
		if !r.lost && !r.done {
			r.lost = true
			unfinished = append(unfinished, r)
		}
	}
	w.mu.Unlock()
	stopHandlers(errShutdown)
	if len(unfinished) == 0 {
		return
	}
	released := w.release(ctx, unfinished)
	w.log.Warn("grace period over; returned unfinished jobs to their queues", "released", released, "unfinished", len(unfinished))
}

// release gives the jobs of runs back to the head of their queues, in
// order, with release.lua, which does not count the attempt, and returns
// how many it gave back. A job whose release fails runs again once its
// lease expires.
func (w *Worker) release(ctx context.Context, runs []*run) (released int) {
	calls := make([]*scriptCall, len(runs))
	for i, r := range runs {
		k := r.q.k
		calls[i] = &scriptCall{s: releaseScript,
			keys: []string{k.job(r.job.ID), k.active(), k.pending(), k.wake()},
			args: []any{r.job.ID, r.job.token}}
	}
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	runScripts(c, w.rdb, calls)
	for _, call := range calls {
		if n, err := call.cmd.Int(); err == nil && n == 1 {
			released++
		}
	}
	return released
}
