package rqgo

import (
	"context"
	"errors"
	"time"
)

var errShutdown = errors.New("rqgo: worker shut down")

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
