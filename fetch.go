package rqgo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// maxBlock is the longest an idle worker waits in Redis before looking
// again, for scheduled jobs coming due. It stays under go-redis's default
// read timeout (3s).
const maxBlock = time.Second

// fetchLoop takes jobs while slots are free, blocking in Redis when there
// are none, until ctx ends or, in burst mode, the work runs out.
func (w *Worker) fetchLoop(ctx context.Context) {
	backoff := RetryPolicy{Base: 50 * time.Millisecond, Cap: 5 * time.Second}
	failures := 0
	for ctx.Err() == nil {
		// A slot frees when its handler returns; outcomes waiting to be
		// recorded hold back fetching only when as many wait as slots exist.
		free := int64(w.opts.Concurrency) - w.inflight.Load()
		if w.settling.Load() >= int64(w.opts.Concurrency) {
			free = 0
		}
		if free <= 0 {
			select {
			case <-ctx.Done():
			case <-w.freed:
			}
			continue
		}
		fetched, idle := time.Now(), w.inflight.Load()+w.settling.Load() == 0
		jobs, next, err := w.fetch(ctx, int(free))
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			d := backoff.Ceiling(failures)
			reloadTopology(w.rdb)
			w.log.Warn("fetching jobs failed; retrying", "err", err, "in", d)
			sleepCtx(ctx, d)
			continue
		}
		failures = 0
		if len(jobs) == int(free) || (len(jobs) > 0 && w.opts.Burst) {
			continue
		}
		if w.opts.Burst && len(jobs) == 0 {
			if idle && w.retriesDue(fetched) {
				return
			}
			w.waitBurst(ctx, next)
			continue
		}
		w.block(ctx, next)
	}
}

// retriesDue says whether every retry this worker scheduled was due before
// a fetch that started at t. A burst worker returns when such a fetch,
// started with nothing running (so no outcome could land after it looked),
// found nothing.
func (w *Worker) retriesDue(t time.Time) bool {
	return t.UnixMilli() > w.retryDue.Load()
}

// waitBurst waits, in burst mode, for a running job to end or the next
// retry this worker scheduled to come due.
func (w *Worker) waitBurst(ctx context.Context, next time.Time) {
	d := maxBlock
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

// fetch runs dequeue.lua on the queues in priority order until it has up to
// n jobs, and starts a handler for each. It returns the earliest time a
// scheduled job of these queues comes due.
func (w *Worker) fetch(ctx context.Context, n int) ([]*Job, time.Time, error) {
	var (
		jobs []*Job
		next time.Time
	)
	lease := w.opts.Lease.Milliseconds()
	for i := range w.queues {
		q := &w.queues[i]
		res, err := dequeueScript.Run(ctx, w.rdb, q.dequeueKeys, n, lease, w.id).Slice()
		if err != nil {
			return jobs, next, fmt.Errorf("dequeue from %q: %w", q.name, err)
		}
		if len(res) < 2 || (len(res)-2)%dequeuedLen != 0 {
			return jobs, next, fmt.Errorf("dequeue from %q: unexpected reply of %d elements", q.name, len(res))
		}
		if ms, _ := res[0].(int64); ms > 0 {
			if t := time.UnixMilli(ms); next.IsZero() || t.Before(next) {
				next = t
			}
		}
		now, _ := res[1].(int64)
		for r := res[2:]; len(r) > 0; r = r[dequeuedLen:] {
			j, derr := w.dequeued(q, now, r[:dequeuedLen])
			w.start(*q, j, derr)
			jobs = append(jobs, j)
		}
		n -= (len(res) - 2) / dequeuedLen
		if n <= 0 {
			break
		}
	}
	return jobs, next, nil
}

// dequeuedLen is the number of elements per job in dequeue.lua's reply:
// id, token, attempt, then the fetched fields.
const dequeuedLen = 3 + fetchedFields

// dequeued decodes one job of dequeue.lua's reply, started at now (Unix ms)
// on this worker.
func (w *Worker) dequeued(q *workerQueue, now int64, r []any) (*Job, error) {
	var jv jobValues
	for i, v := range r[3:] {
		jv.v[i], jv.ok[i] = v.(string)
	}
	jv.v[xStatus], jv.ok[xStatus] = string(StatusStarted), true
	j, err := jv.decode()
	// The id and queue the job was fetched by are the ones that count.
	j.ID, _ = r[0].(string)
	j.Queue = q.name
	tok, _ := r[1].(int64)
	attempt, _ := r[2].(int64)
	j.token = strconv.FormatInt(tok, 10)
	j.Attempt = int(attempt)
	j.StartedAt = msTime(now)
	j.Worker = w.id
	return j, err
}

// block waits in Redis until a job is enqueued to one of the worker's
// queues, the next scheduled job comes due, w.maxBlock passes, or ctx ends.
//
// Each queue's keys live in their own Cluster slot, so the worker blocks on
// each queue with a BLPOP of its own, in parallel; the first to return wakes
// the others through the worker's per-queue wake key. With one queue (the
// common case) that is a single BLPOP.
func (w *Worker) block(ctx context.Context, next time.Time) {
	d := w.maxBlock
	if !next.IsZero() {
		d = min(d, time.Until(next))
	}
	if d < time.Millisecond {
		return
	}
	stop := context.AfterFunc(ctx, func() {
		// Wake this worker's BLPOPs so shutdown does not wait for them.
		w.wakeSelf(context.WithoutCancel(ctx), -1)
	})
	defer stop()
	if len(w.queues) == 1 {
		w.blpop(ctx, d, w.queues[0])
		return
	}
	first := make(chan int, len(w.queues))
	var wg sync.WaitGroup
	for i, q := range w.queues {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.blpop(ctx, d, q)
			first <- i
		}()
	}
	w.wakeSelf(ctx, <-first)
	wg.Wait()
}

// blpop waits up to d for a wake-up token of queue q.
func (w *Worker) blpop(ctx context.Context, d time.Duration, q workerQueue) {
	keys := []string{q.k.wakeWorker(w.id), q.k.wake()}
	var err error
	if d >= time.Second {
		err = w.rdb.BLPop(ctx, d, keys...).Err()
	} else {
		// go-redis's BLPop rounds a wait under a second up to one; BLPOP
		// itself takes fractional seconds (Redis ≥ 6). A wait this short
		// fits in the client's read timeout.
		err = w.rdb.Do(ctx, "BLPOP", keys[0], keys[1], strconv.FormatFloat(d.Seconds(), 'f', 3, 64)).Err()
	}
	if err != nil && !errors.Is(err, redis.Nil) && ctx.Err() == nil {
		reloadTopology(w.rdb)
		w.log.Warn("waiting for jobs failed", "queue", q.name, "err", err)
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

// wakeSelf pushes a token to this worker's wake key of every queue but
// skip, ending its BLPOPs there. The keys expire in case nobody pops them.
func (w *Worker) wakeSelf(ctx context.Context, skip int) {
	c, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, _ = w.rdb.Pipelined(c, func(p redis.Pipeliner) error {
		for i, q := range w.queues {
			if i != skip {
				p.LPush(c, q.k.wakeWorker(w.id), "1")
				p.PExpire(c, q.k.wakeWorker(w.id), 10*time.Second)
			}
		}
		return nil
	})
}

// run is one attempt of a job on this worker.
type run struct {
	job     *Job
	q       workerQueue
	cancel  context.CancelCauseFunc
	renewed time.Time // last successful lease renewal (worker clock)
	lost    bool      // lease lost or released: write nothing for this run
	done    bool      // the handler returned
}

// outcome is a finished handler's verdict, waiting to be written.
type outcome struct {
	r      *run
	result json.RawMessage
	err    error
	delay  int64 // fail.lua's ARGV[4]: retry delay ms, -1 = fail now
}

var errTimeout = errors.New("rqgo: job timeout")

// start runs the handler for j in a goroutine; bad is a reason the job
// cannot run at all (a malformed hash).
func (w *Worker) start(q workerQueue, j *Job, bad error) {
	w.inflight.Add(1)
	timeout := j.Timeout
	if timeout <= 0 {
		timeout = w.opts.Timeout
	}
	ctx, cancel := context.WithCancelCause(w.handlerBase)
	r := &run{job: j, q: q, cancel: cancel, renewed: time.Now()}
	w.mu.Lock()
	w.running[r] = struct{}{}
	w.mu.Unlock()
	go func() {
		tctx, stop := context.WithTimeoutCause(ctx, timeout, errTimeout)
		defer stop()
		var (
			result any
			err    = bad
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
		o := w.judge(r, result, err, bad != nil)
		w.mu.Lock()
		r.done = true
		w.mu.Unlock()
		// The slot is free for the next job; the run stays in w.running,
		// its lease renewed, until its outcome is recorded (finish).
		w.settling.Add(1)
		w.inflight.Add(-1)
		w.signalFreed()
		w.outcomes <- o
	}()
}

// call runs the job's handler, turning a panic into an error that carries
// the stack.
func (w *Worker) call(ctx context.Context, j *Job) (result any, err error) {
	h := w.handler(j.Func)
	if h == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownFunc, j.Func)
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v\n%s", p, debug.Stack())
		}
	}()
	return h.ProcessJob(ctx, j)
}

// judge turns a handler's return values into what fail.lua or ack_many.lua writes.
func (w *Worker) judge(r *run, result any, err error, malformed bool) *outcome {
	o := &outcome{r: r}
	if err == nil {
		raw, merr := json.Marshal(result)
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
	switch {
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
