package rqgo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"time"
)

// run is one attempt of a job on this worker. It is held from its fetch
// until a slot is free, then its handler runs; it ends when its outcome is
// recorded or its lease is lost or given back.
type run struct {
	job     *Job
	q       workerQueue
	bad     error // why the job cannot run at all (a malformed hash)
	ctx     context.Context
	cancel  context.CancelCauseFunc
	fetched time.Time // worker clock
	renewed time.Time // last successful lease renewal (worker clock)
	lost    bool      // lease lost or released: write nothing for this run
	done    bool      // the handler returned
	// ahead: fetched beyond its queue's Concurrency (dequeue.lua's ARGV[6]),
	// it holds no slot: it starts only in the slot of a job of its queue
	// that ended (passSlot), which its outcome's ack hands over.
	ahead bool
	// handedTo: the job ahead started in this run's slot, until this run's
	// outcome is recorded with the hand-over (finish). Meanwhile this run's
	// lease is the slot's: if it is lost, so is that job's (loseLocked).
	handedTo *run
}

// outcome is a finished handler's verdict, waiting to be written.
type outcome struct {
	r      *run
	result json.RawMessage
	err    error
	delay  int64 // fail.lua's ARGV[4]: retry delay ms, -1 = fail now
	snooze bool  // the handler returned [Snooze]: the attempt does not count
	// next: a job fetched ahead that started in this run's slot, handed
	// over with the ack (ack_many.lua).
	next *run
	// resent: an earlier try to record it failed, and may have been
	// recorded with its reply lost.
	resent bool
}

var errTimeout = errors.New("rqgo: job timeout")

// admit takes on a fetched job: its handler starts at once when a slot is
// free, no job is held before it and the worker is not stopping; otherwise
// the job is held, its lease renewed like a running job's, until a returning
// handler passes on its slot or the job is given back. A job ahead of its
// queue's Concurrency is always held: it starts only in the slot of a job
// of its queue that succeeded (passSlot). bad is a reason the job cannot
// run at all (a malformed hash); sent is when its fetch was sent.
func (w *Worker) admit(q workerQueue, j *Job, bad error, sent time.Time, ahead bool) {
	ctx, cancel := context.WithCancelCause(w.handlerBase)
	// Its lease began after the fetch was sent: renewed counts from then.
	r := &run{job: j, q: q, bad: bad, ctx: ctx, cancel: cancel, fetched: time.Now(), renewed: sent, ahead: ahead}
	w.mu.Lock()
	w.running[r] = struct{}{}
	slot := !ahead && !w.stopping && !slices.ContainsFunc(w.held, func(h *run) bool { return !h.ahead }) &&
		w.inflight.Load() < int64(w.opts.Concurrency)
	if slot {
		w.inflight.Add(1)
	} else {
		w.held = append(w.held, r)
	}
	w.mu.Unlock()
	if slot {
		go w.execute(r)
	}
}

// execute runs r's handler and records nothing itself: it hands the
// outcome to the ack loop, passing its slot to the next held job first.
func (w *Worker) execute(r *run) {
	for r != nil {
		began := time.Now()
		o := w.attempt(r)
		if time.Since(began) < time.Duration(w.roundTrip.Load()) {
			w.quick.Add(1)
		}
		w.mu.Lock()
		r.done = true
		w.mu.Unlock()
		// The run stays in w.running, its lease renewed, until its outcome
		// is recorded (finish).
		w.settling.Add(1)
		if r.q.name == w.queues[0].name {
			w.firstSettling.Add(1)
		}
		r = w.passSlot(r, o)
		w.signalFreed()
		w.outcomes <- o
	}
}

// stop makes the worker start no more jobs: held jobs wait to be given
// back, and fetched ones are held.
func (w *Worker) stop() {
	w.mu.Lock()
	w.stopping = true
	w.mu.Unlock()
}

// passSlot returns the next held job to run in a slot that just freed, or
// frees the slot when none is held (or the worker is stopping).
func (w *Worker) passSlot(ended *run, o *outcome) *run {
	w.mu.Lock()
	defer w.mu.Unlock()
	// A job held ahead takes the queue slot of a job of its queue that
	// succeeded and still holds its lease, which the worker renews until
	// the ack hands the slot over.
	handing := o.err == nil && !ended.ahead && !ended.lost && time.Since(ended.renewed) < w.opts.Lease
	for i := 0; i < len(w.held) && !w.stopping; {
		r := w.held[i]
		if r.ahead && !r.lost && (!handing || r.q.name != ended.q.name) {
			i++ // no slot for it here
			continue
		}
		w.held = slices.Delete(w.held, i, i+1)
		if !r.lost && time.Since(r.renewed) < w.opts.Lease {
			if r.ahead {
				r.ahead = false
				o.next, ended.handedTo = r, r
			}
			return r
		}
		// Its lease was lost while it was held, or may have expired: a
		// worker paused past its lease must not start a job the reaper
		// may have handed to another.
		if !r.lost {
			r.lost = true
			r.cancel(ErrLeaseLost)
		}
		delete(w.running, r)
	}
	w.inflight.Add(-1)
	return nil
}

// attempt runs the handler of r and judges its outcome.
func (w *Worker) attempt(r *run) *outcome {
	j := r.job
	timeout := j.Timeout
	if timeout <= 0 {
		timeout = w.opts.Timeout
	}
	// The run's context ends with its handler, which also takes it off
	// handlerBase's list of children.
	defer r.cancel(context.Canceled)
	tctx, stop := context.WithTimeoutCause(r.ctx, timeout, errTimeout)
	defer stop()
	var (
		result any
		err    = r.bad
	)
	if err == nil {
		result, err = w.call(tctx, j)
	}
	if context.Cause(tctx) == errTimeout {
		// Past its deadline the attempt fails, whatever the handler said.
		if err != nil {
			err = fmt.Errorf("timeout after %s: %w", timeout, err)
		} else {
			err = fmt.Errorf("timeout after %s", timeout)
		}
	}
	return w.judge(r, result, err, r.bad != nil)
}

// call runs the job's handler, turning a panic into an error that carries
// the stack.
func (w *Worker) call(ctx context.Context, j *Job) (result any, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v\n%s", p, debug.Stack())
		}
	}()
	h := w.handler(j.Func) // wraps it in the middleware on first use
	if h == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownFunc, j.Func)
	}
	return h.ProcessJob(ctx, j)
}

// judge turns a handler's return values into what fail.lua or ack_many.lua writes.
func (w *Worker) judge(r *run, result any, err error, malformed bool) *outcome {
	o := &outcome{r: r}
	if err == nil {
		raw, merr := marshalJSON(result)
		if merr == nil {
			o.result = raw
			return o
		}
		err = SkipRetry(fmt.Errorf("result does not encode to JSON: %w", merr))
	}
	o.err = err
	j := r.job
	var skip *skipRetryError
	var after *RetryAfterError
	var snooze *snoozeError
	switch {
	case !malformed && errors.As(err, &snooze):
		o.delay, o.snooze = max(snooze.d.Milliseconds(), 0), true
	case malformed, errors.As(err, &skip), errors.Is(err, ErrUnknownFunc), j.Attempt > j.MaxRetries:
		o.delay = -1
	case errors.As(err, &after):
		o.delay = max(after.Delay.Milliseconds(), 0)
	default:
		policy := w.opts.Retry
		if j.Backoff != "" {
			if p, perr := parseRetryPolicy(j.Backoff); perr == nil {
				policy = p
			}
		}
		o.delay = policy.Delay(j.Attempt).Milliseconds()
	}
	return o
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
