package rqgo

import (
	"fmt"
	"time"
)

// EnqueueOption sets one property of a job at enqueue time.
type EnqueueOption func(*enqueueOptions)

type enqueueOptions struct {
	id         string
	maxRetries int
	policy     *RetryPolicy
	timeout    time.Duration
	delay      time.Duration
	at         time.Time
	resultTTL  *time.Duration
	failureTTL *time.Duration
	// parents and allowFailure: see depend.go.
	parents      []JobRef
	allowFailure bool
	// unique, debounce and startWithin: see unique.go.
	unique      *UniqueOpts
	debounce    time.Duration
	debounceMax time.Duration
	startWithin time.Duration
	// limitKey: see limits.go.
	limitKey string
	// headers: see headers.go.
	headers map[string]string
	err     error
}

func (o *enqueueOptions) fail(format string, a ...any) {
	if o.err == nil {
		o.err = fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, a...)...)
	}
}

// JobID gives the job its own id instead of a random one. Enqueue returns
// [ErrJobExists] when a job with that id exists in the queue; it never
// overwrites one.
func JobID(id string) EnqueueOption {
	return func(o *enqueueOptions) {
		if err := validateJobID(id); err != nil && o.err == nil {
			o.err = err
		}
		o.id = id
	}
}

// Retry sets how many times a failed job is retried (default
// [DefaultMaxRetries]; 0 = never).
func Retry(n int) EnqueueOption {
	return func(o *enqueueOptions) {
		if n < 0 {
			o.fail("retry count %d is negative", n)
		}
		o.maxRetries = n
	}
}

// Backoff sets exponential backoff with full jitter: retry n waits a random
// time up to min(ceiling, base·2^(n-1)). Default: the worker's policy.
func Backoff(base, ceiling time.Duration) EnqueueOption {
	return func(o *enqueueOptions) {
		if base <= 0 || ceiling < base {
			o.fail("backoff base %s and cap %s: want 0 < base <= cap", base, ceiling)
		}
		o.policy = &RetryPolicy{Base: base, Cap: ceiling}
	}
}

// RetryIntervals sets fixed waits: retry n waits intervals[n-1], and the last
// interval repeats. Default: the worker's policy.
func RetryIntervals(intervals ...time.Duration) EnqueueOption {
	return func(o *enqueueOptions) {
		if len(intervals) == 0 {
			o.fail("RetryIntervals needs at least one interval")
		}
		for _, d := range intervals {
			if d < 0 {
				o.fail("retry interval %s is negative", d)
			}
		}
		o.policy = &RetryPolicy{Intervals: append([]time.Duration(nil), intervals...)}
	}
}

// Timeout bounds one attempt: the handler's context is canceled after d and
// the attempt fails. Default: the worker's Timeout (30 minutes unless set).
func Timeout(d time.Duration) EnqueueOption {
	return func(o *enqueueOptions) {
		if d <= 0 {
			o.fail("timeout %s is not positive", d)
		}
		o.timeout = d
	}
}

// In schedules the job to become ready after d, by Redis's clock. The job's
// status is scheduled until then.
func In(d time.Duration) EnqueueOption {
	return func(o *enqueueOptions) {
		if d < 0 {
			o.fail("delay %s is negative", d)
		}
		o.delay = d
	}
}

// At schedules the job to become ready at t. A time in the past makes the job
// ready at once.
func At(t time.Time) EnqueueOption {
	return func(o *enqueueOptions) { o.at = t }
}

// ResultTTL sets how long a finished job and its result are kept: 0 keeps
// nothing (the job is deleted when it finishes), -1 keeps it forever.
// Default: the worker's ResultTTL (24 hours unless set).
func ResultTTL(d time.Duration) EnqueueOption {
	return func(o *enqueueOptions) { o.resultTTL = &d }
}

// FailureTTL sets how long a failed job is kept in the failed registry: 0
// keeps nothing, -1 keeps it forever. Default: the worker's FailureTTL
// (7 days unless set).
func FailureTTL(d time.Duration) EnqueueOption {
	return func(o *enqueueOptions) { o.failureTTL = &d }
}

// ttlMillis encodes a TTL for the scripts: -1 forever, 0 none, else ms (at
// least 1, so a sub-millisecond TTL does not mean "keep nothing").
func ttlMillis(d time.Duration) int64 {
	switch {
	case d < 0:
		return -1
	case d == 0:
		return 0
	}
	return max(d.Milliseconds(), 1)
}
