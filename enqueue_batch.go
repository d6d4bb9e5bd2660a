package rqgo

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// maxEnqueueBatch is the most jobs one enqueue_many.lua call creates; longer
// batches are split into calls sent in one round trip, so Redis serves
// other clients between them.
const maxEnqueueBatch = 500

// EnqueueRequest is one job for [Queue.EnqueueMany]: the function, its
// args (encoded as by [Queue.EnqueueContext]) and its options.
type EnqueueRequest struct {
	Func    string
	Args    any
	Options []EnqueueOption
}

// EnqueueManyError is the error of [Queue.EnqueueMany] when some jobs were
// not enqueued. Errs has one entry per request, nil for the jobs that were.
// errors.Is and errors.As look through every entry.
type EnqueueManyError struct {
	Errs []error
}

func (e *EnqueueManyError) Error() string {
	n, first := 0, error(nil)
	for _, err := range e.Errs {
		if err != nil {
			if first == nil {
				first = err
			}
			n++
		}
	}
	return fmt.Sprintf("rqgo: %d of %d jobs not enqueued; first: %v", n, len(e.Errs), first)
}

// Unwrap returns the requests' errors that are not nil.
func (e *EnqueueManyError) Unwrap() []error {
	var errs []error
	for _, err := range e.Errs {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// EnqueueMany adds the requested jobs in one round trip to Redis. It returns
// one Job per request, in order; a job that was not enqueued (invalid
// request, an id that exists, as [ErrJobExists] — also for a second use of
// an id within reqs) is nil, and the error is then an [*EnqueueManyError]
// saying why, per request. The others are enqueued all the same. Requests
// with [DependsOn] or [Unique] are enqueued after the others, each in a
// round trip or a few of its own; a duplicate's error wraps [ErrDuplicate]
// and its Job is the holder.
func (q *Queue) EnqueueMany(ctx context.Context, reqs []EnqueueRequest) ([]*Job, error) {
	if q.err != nil {
		return nil, q.err
	}
	jobs := make([]*Job, len(reqs))
	errs := make([]error, len(reqs))
	failed := false
	all := make([]*enqueueCall, 0, len(reqs))
	for i, r := range reqs {
		j, argv, err := q.prepare(r.Func, r.Args, r.Options)
		if err != nil {
			errs[i], failed = err, true
			continue
		}
		all = append(all, &enqueueCall{ctx: ctx, j: j, argv: argv, index: i})
	}
	if len(all) > 0 {
		if len(q.mw) > 0 {
			prepared := make([]*Job, len(all))
			for i, c := range all {
				prepared[i] = c.j
			}
			wrote := false
			err := q.through(ctx, prepared, func(ctx context.Context, _ []*Job) error {
				wrote = true
				q.writeMany(ctx, all)
				return callsError(all)
			})
			if !wrote {
				if err == nil {
					err = errNotWritten
				}
				for _, c := range all {
					c.err = fmt.Errorf("rqgo: enqueue %q: %w", c.j.Func, err)
				}
			}
		} else {
			q.writeMany(ctx, all)
		}
	}
	for _, c := range all {
		if c.err != nil {
			errs[c.index], failed = c.err, true
			if errors.Is(c.err, ErrDuplicate) {
				jobs[c.index] = c.j // the holder
			}
			continue
		}
		jobs[c.index] = c.j
	}
	if failed {
		return jobs, &EnqueueManyError{Errs: errs}
	}
	return jobs, nil
}

// writeMany writes the prepared jobs of calls to Redis, those without
// DependsOn or a unique key in one round trip, and records each outcome in
// its call.
func (q *Queue) writeMany(ctx context.Context, all []*enqueueCall) {
	calls := make([]*enqueueCall, 0, len(all))
	var deferred []*enqueueCall // with DependsOn or a unique key: one by one, after the others
	for _, c := range all {
		if c.argv, c.err = withHeaders(c.j, c.argv); c.err != nil {
			continue
		}
		if len(c.j.Parents) > 0 || c.j.UniqueKey != "" {
			deferred = append(deferred, c)
		} else {
			calls = append(calls, c)
		}
	}
	if len(calls)+len(deferred) == 0 {
		return
	}
	if err := q.remember(ctx); err != nil {
		for _, c := range append(calls, deferred...) {
			c.err = fmt.Errorf("rqgo: enqueue %q: %w", c.j.Func, err)
		}
		return
	}
	if len(calls) > 0 {
		q.send(ctx, calls)
	}
	for _, c := range deferred {
		if len(c.j.Parents) > 0 {
			c.j, c.err = q.enqueueDeferred(ctx, c.j, c.argv)
		} else {
			c.j, c.err = q.enqueueUnique(ctx, c.j, c.argv, c.j.debounce, c.j.debounceMax)
		}
	}
}

// callsError is the error an [EnqueueFunc] returns for calls: nil, or an
// [*EnqueueManyError] lined up with them.
func callsError(calls []*enqueueCall) error {
	errs := make([]error, len(calls))
	failed := false
	for i, c := range calls {
		if c.err != nil {
			errs[i], failed = c.err, true
		}
	}
	if !failed {
		return nil
	}
	return &EnqueueManyError{Errs: errs}
}

// enqueueCall is one job on its way to Redis.
type enqueueCall struct {
	ctx   context.Context
	j     *Job
	argv  []any // enqueue.lua's ARGV, from prepare
	index int   // EnqueueMany: the request's index
	err   error
	// Coalesced enqueues (enqueuer): lead receives true when this call is
	// to send batch, false when its result is in.
	lead  chan bool
	batch []*enqueueCall // guarded by enqueuer.mu: set when lead is sent true
	taken bool           // guarded by enqueuer.mu: in a batch handed to a sender
	gone  bool           // guarded by enqueuer.mu: returned as its context ended
}

// maxFlights is the most batches of coalesced enqueues in flight at once
// over all the Queues of a process, though a Queue with none in flight may
// always send one. With one batch in flight, Redis idles while the callers
// just answered make their next jobs; with 8 to 32 producers on one Queue,
// three measured 15–23% faster than one. When several Queues have batches
// in flight, Redis is already kept busy, and more batches would only be
// smaller: 50 producers over 6 Queues measured 10% slower with three per
// Queue than with one.
const maxFlights = 3

// flights is the number of batches in flight over all Queues.
var flights atomic.Int32

// takeFlight counts a new batch in flight for a Queue that has own in
// flight already, unless that would pass maxFlights over all Queues.
func takeFlight(own int) bool {
	for {
		n := flights.Load()
		if own > 0 && n >= maxFlights {
			return false
		}
		if flights.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// enqueuer coalesces concurrent EnqueueContext calls on one Queue into
// shared round trips. A call that may start a batch (takeFlight) sends its
// job at once, alone; calls arriving while it may not wait in line, and
// when one of the Queue's batches lands, the first of them sends every
// waiting job in one enqueue_many.lua call. No goroutine or timer of its
// own: the callers take turns.
type enqueuer struct {
	mu     sync.Mutex
	flying int // batches being sent
	line   []*enqueueCall
}

// enqueue sends c's job, coalesced with concurrent calls, and returns its
// result, or ctx's error if ctx ends first.
func (q *Queue) enqueue(c *enqueueCall) (*Job, error) {
	e, fn := &q.enq, c.j.Func
	e.mu.Lock()
	if takeFlight(e.flying) {
		e.flying++
		e.mu.Unlock()
		q.fly([]*enqueueCall{c})
		return c.j, c.err
	}
	c.lead = make(chan bool, 1)
	e.line = append(e.line, c)
	e.mu.Unlock()
	select {
	case lead := <-c.lead:
		if lead {
			e.mu.Lock()
			batch := c.batch
			e.mu.Unlock()
			q.fly(batch)
		}
		return c.j, c.err
	case <-c.ctx.Done():
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	c.gone = true
	err := fmt.Errorf("rqgo: enqueue %q: %w", fn, c.ctx.Err())
	if c.batch != nil {
		// It was this call's turn to send: the batch goes with another
		// of its callers, or, when all have gone, the turn passes on.
		for _, b := range c.batch {
			if !b.gone {
				b.batch, c.batch = c.batch, nil
				b.lead <- true
				return nil, err
			}
		}
		c.batch = nil
		e.handOnLocked()
		return nil, err
	}
	if c.taken {
		// Handed to a sender: whether the job lands is not known, as with
		// any call whose context ends mid-way.
		return nil, err
	}
	for i, b := range e.line {
		if b == c {
			e.line = append(e.line[:i], e.line[i+1:]...)
			break
		}
	}
	return nil, err
}

// fly sends a batch, tells each waiting caller its result is in, and hands
// the turn to the calls waiting in line, if any.
func (q *Queue) fly(batch []*enqueueCall) {
	ctx, cancel := batchContext(batch)
	q.send(ctx, batch)
	cancel()
	for _, b := range batch {
		if b.lead != nil {
			select {
			case b.lead <- false:
			default: // a caller that has gone
			}
		}
	}
	if len(batch) > 1 {
		// The callers just told are likely to enqueue again at once: let
		// them join the line before it leaves, so batches stay large (6.4
		// jobs per round trip with 8 producers, not 4). Nobody else waits
		// when a caller was alone, so an idle Queue adds no delay.
		runtime.Gosched()
	}
	q.enq.mu.Lock()
	q.enq.handOnLocked()
	q.enq.mu.Unlock()
}

// handOnLocked hands every call in line, as one batch, to the first of
// them to send, or ends the flight when nobody waits.
func (e *enqueuer) handOnLocked() {
	if len(e.line) == 0 {
		e.flying--
		flights.Add(-1)
		return
	}
	batch := e.line
	e.line = nil
	for _, b := range batch {
		b.taken = true
	}
	batch[0].batch = batch
	batch[0].lead <- true
}

// batchContext is the context a batch is sent under: one caller's own, or
// for several, one that ends when every caller's context has ended (at the
// latest of their deadlines, when all have one).
func batchContext(batch []*enqueueCall) (context.Context, context.CancelFunc) {
	if len(batch) == 1 {
		return batch[0].ctx, func() {}
	}
	var (
		latest      time.Time
		allDeadline = true
		allDone     = true
	)
	for _, b := range batch {
		d, ok := b.ctx.Deadline()
		if !ok {
			allDeadline = false
		} else if d.After(latest) {
			latest = d
		}
		if b.ctx.Done() == nil {
			allDone = false
		}
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(batch[0].ctx))
	if allDeadline {
		var cancelDeadline context.CancelFunc
		ctx, cancelDeadline = context.WithDeadline(ctx, latest)
		cancelOuter := cancel
		cancel = func() { cancelDeadline(); cancelOuter() }
	}
	if !allDone {
		return ctx, cancel
	}
	var left atomic.Int64
	left.Store(int64(len(batch)))
	stops := make([]func() bool, len(batch))
	for i, b := range batch {
		stops[i] = context.AfterFunc(b.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}

// enqueueScriptFor returns enqueue.lua for prepare's argv: with go-redis's
// resends for an id rqgo made up, whose job a resend recognizes, and without
// them for an id the caller chose, where a resend would find the first
// send's job and answer that it exists.
func enqueueScriptFor(argv []any) *script {
	if argv[3] == "1" {
		return enqueueScript
	}
	return enqueueChosenScript
}

// sendable is prepare's enqueue.lua ARGV as sent: without the flags field
// of a plain job (see manyFields). It moves the fields after it down in
// argv's own array, so argv is not to be used after.
func sendable(argv []any) []any {
	if argv[4] != fFlags || argv[5] != "" {
		return argv
	}
	n := copy(argv[4:], argv[6:])
	clear(argv[4+n:])
	return argv[:4+n]
}

// manyFields is the hash fields of prepare's enqueue.lua ARGV that
// enqueue_many.lua does not set itself: all but id, queue and attempt.
// Sending those too would make every job's HSET write them twice.
//
// An empty flags field (a plain job) is left out too: the scripts read a
// missing one as empty, and writing it costs every plain job's HSET.
func manyFields(argv []any) []any {
	out := make([]any, 0, len(argv)-4)
	for i := 4; i+1 < len(argv); i += 2 {
		switch argv[i] {
		case fID, fQueue, fAttempt:
			continue
		case fFlags:
			if argv[i+1] == "" {
				continue
			}
		}
		out = append(out, argv[i], argv[i+1])
	}
	return out
}

// send enqueues the calls' jobs in one round trip: one enqueue.lua call for
// a single job, else enqueue_many.lua calls of up to maxEnqueueBatch jobs,
// and records each call's result in it.
func (q *Queue) send(ctx context.Context, calls []*enqueueCall) {
	if len(calls) == 1 {
		c := calls[0]
		s, keys := enqueueScriptFor(c.argv), q.k.enqueueKeys(c.j.ID, c.argv[3] != "1")
		res, err := s.Run(ctx, q.rdb, keys, sendable(c.argv)...).Int64Slice()
		if err != nil {
			reloadTopology(q.rdb)
			c.err = fmt.Errorf("rqgo: enqueue %q: %w", c.j.Func, err)
			return
		}
		c.j, c.err = finishEnqueue(c.j, res)
		return
	}
	keys := []string{q.k.pending(), q.k.scheduled(), q.k.wake(), q.k.jobPrefix(), q.k.active(), q.k.finished(), q.k.failed(), q.k.canceled()}
	scripts := make([]*scriptCall, 0, (len(calls)+maxEnqueueBatch-1)/maxEnqueueBatch)
	for rest := calls; len(rest) > 0; {
		chunk := rest[:min(len(rest), maxEnqueueBatch)]
		rest = rest[len(chunk):]
		n := 1
		for _, c := range chunk {
			n += len(c.argv) + 1
		}
		args := make([]any, 0, n)
		args = append(args, q.name)
		s := enqueueManyScript
		for _, c := range chunk {
			if enqueueScriptFor(c.argv) != enqueueScript {
				s = enqueueManyChosenScript
			}
			fields := manyFields(c.argv)
			args = append(args, c.argv[:4]...)
			args = append(args, len(fields))
			args = append(args, fields...)
		}
		scripts = append(scripts, &scriptCall{s: s, keys: keys, args: args})
	}
	runScripts(ctx, q.rdb, scripts)
	for i, s := range scripts {
		chunk := calls[i*maxEnqueueBatch : min(len(calls), (i+1)*maxEnqueueBatch)]
		res, err := s.cmd.Int64Slice()
		if err == nil && len(res) != len(chunk)+1 {
			err = fmt.Errorf("unexpected reply of %d elements for %d jobs", len(res), len(chunk))
		}
		for n, c := range chunk {
			if err != nil {
				c.err = fmt.Errorf("rqgo: enqueue %q: %w", c.j.Func, err)
				continue
			}
			c.j, c.err = finishEnqueue(c.j, []int64{res[n+1], res[0]})
		}
	}
}
