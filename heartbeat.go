package rqgo

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

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
			if gone["c:"+r.job.token] && !r.done {
				// A cancel was asked and its message missed (cancel.lua).
				r.cancel(ErrCanceled)
			}
			switch {
			case !gone[r.job.token]:
				r.renewed = start
			case !r.done:
				w.loseLocked(r)
			case r.handedTo != nil:
				// Its slot went with its lease before the hand-over was
				// recorded: the job started in it holds none.
				w.loseLocked(r.handedTo)
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
	if r.handedTo != nil {
		w.loseLocked(r.handedTo) // it ran in this run's slot
	}
}

// cancelRunning ends, with the cause [ErrCanceled], the handler of every
// run of job id in the worker's queue i: Queue.Cancel asked for it.
func (w *Worker) cancelRunning(i int, id string) {
	name := w.queues[i].name
	w.mu.Lock()
	defer w.mu.Unlock()
	for r := range w.running {
		if r.job.ID == id && r.q.name == name && !r.done && !r.lost {
			r.cancel(ErrCanceled)
			w.log.Info("job canceled while running; handler told", "queue", name, "job_id", id, "func", r.job.Func)
		}
	}
}
