package rqgo

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Limits caps how many jobs of a queue run at once and how fast they start,
// over every worker of the fleet. They are stored in Redis, in the queue's
// flow hash (see the README), and obeyed by dequeue.lua, so a change applies
// to every worker at its next fetch, without a restart. Each field's zero
// value means no limit.
//
// Rates are enforced by the generic cell rate algorithm (GCRA): starts are
// spaced Per/Rate apart, with a burst tolerance of Per/100, so in any
// window of length Per at most Rate + Rate/100 + 1 attempts start, and
// there is no burst of twice the rate where two fixed windows meet.
type Limits struct {
	// Concurrency is the most jobs of the queue whose lease has not expired,
	// over all workers. A job a worker holds fetched ahead counts.
	Concurrency int
	// Rate is the most attempts started per Per, over all workers.
	Rate int
	Per  time.Duration
	// KeyConcurrency, KeyRate and KeyPer are the same, for the jobs of each
	// limit key ([LimitKey]) separately. A job over its key's limits is
	// parked, so it holds back no other key's jobs.
	KeyConcurrency int
	KeyRate        int
	KeyPer         time.Duration
}

// IsZero says whether l sets no limit.
func (l Limits) IsZero() bool { return l == Limits{} }

// validate checks l, naming the field at fault.
func (l Limits) validate() error {
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"Concurrency", int64(l.Concurrency)}, {"Rate", int64(l.Rate)}, {"Per", int64(l.Per)},
		{"KeyConcurrency", int64(l.KeyConcurrency)}, {"KeyRate", int64(l.KeyRate)}, {"KeyPer", int64(l.KeyPer)},
	} {
		if f.v < 0 {
			return fmt.Errorf("%w: Limits.%s is negative", ErrInvalid, f.name)
		}
	}
	for _, r := range []struct {
		rate, per string
		n         int
		d         time.Duration
	}{{"Rate", "Per", l.Rate, l.Per}, {"KeyRate", "KeyPer", l.KeyRate, l.KeyPer}} {
		switch {
		case r.n > 0 && r.d == 0:
			return fmt.Errorf("%w: Limits.%s is set without Limits.%s (the period it counts over)", ErrInvalid, r.rate, r.per)
		case r.d > 0 && r.d < time.Millisecond:
			return fmt.Errorf("%w: Limits.%s %s is under 1ms", ErrInvalid, r.per, r.d)
		case r.d%time.Millisecond != 0:
			return fmt.Errorf("%w: Limits.%s %s is not a whole number of milliseconds", ErrInvalid, r.per, r.d)
		case r.d > 0 && r.n == 0:
			return fmt.Errorf("%w: Limits.%s is set without Limits.%s", ErrInvalid, r.per, r.rate)
		}
	}
	return nil
}

// String writes l the way `rqgo limits` reads it.
func (l Limits) String() string {
	if l.IsZero() {
		return "none"
	}
	var s []byte
	add := func(name, v string) {
		if len(s) > 0 {
			s = append(s, ' ')
		}
		s = append(s, name+"="+v...)
	}
	if l.Concurrency > 0 {
		add("concurrency", strconv.Itoa(l.Concurrency))
	}
	if l.Rate > 0 {
		add("rate", strconv.Itoa(l.Rate)+"/"+l.Per.String())
	}
	if l.KeyConcurrency > 0 {
		add("key-concurrency", strconv.Itoa(l.KeyConcurrency))
	}
	if l.KeyRate > 0 {
		add("key-rate", strconv.Itoa(l.KeyRate)+"/"+l.KeyPer.String())
	}
	return string(s)
}

// SetLimits replaces the queue's limits with l; the zero Limits removes
// them. Jobs parked under the old limits are looked at again at once, and
// workers waiting because of a limit fetch again.
func (q *Queue) SetLimits(ctx context.Context, l Limits) error {
	if q.err != nil {
		return q.err
	}
	if err := l.validate(); err != nil {
		return fmt.Errorf("rqgo: set limits of %q: %w", q.name, err)
	}
	return q.flow(ctx, "set limits of", l.setArgs()...)
}

// setArgs are limits.lua's arguments that set l.
func (l Limits) setArgs() []any {
	return []any{"set", l.Concurrency, l.Rate, l.Per.Milliseconds(), l.KeyConcurrency, l.KeyRate, l.KeyPer.Milliseconds()}
}

// UpdateLimits changes some of the queue's limits: f gets the current ones
// and changes the fields it means to, and the others keep their values even
// when another SetLimits or UpdateLimits of the queue lands at the same
// moment (f then runs again, on the newer limits, so it must only set
// fields). Limits that f leaves invalid are an error wrapping [ErrInvalid],
// and nothing is written. The rest is as for [Queue.SetLimits].
//
//	err := q.UpdateLimits(ctx, func(l *rqgo.Limits) { l.Rate, l.Per = 100, time.Second })
func (q *Queue) UpdateLimits(ctx context.Context, f func(*Limits)) error {
	if q.err != nil {
		return q.err
	}
	if f == nil {
		return fmt.Errorf("rqgo: update limits of %q: %w: the function is nil", q.name, ErrInvalid)
	}
	// Optimistic: the flow hash is watched from its read to the write, and a
	// change in between (Redis answers the transaction with nil) starts over.
	for tries := 1; ; tries++ {
		err := q.rdb.Watch(ctx, func(tx *redis.Tx) error {
			h, err := tx.HGetAll(ctx, q.k.flow()).Result()
			if err != nil {
				return err
			}
			l := parseLimits(h)
			f(&l)
			if err := l.validate(); err != nil {
				return err
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				// The source, not its SHA: a script missing from Redis's cache
				// cannot be sent again inside the transaction.
				p.Eval(ctx, limitsScript.full.src, q.flowKeys(), l.setArgs()...)
				return nil
			})
			return err
		}, q.k.flow())
		if errors.Is(err, redis.TxFailedErr) && tries < maxUpdateTries {
			continue
		}
		if err != nil {
			return fmt.Errorf("rqgo: update limits of %q: %w", q.name, err)
		}
		if err := q.remember(ctx); err != nil {
			return fmt.Errorf("rqgo: update limits of %q: %w", q.name, err)
		}
		return nil
	}
}

// maxUpdateTries bounds UpdateLimits's tries against changes that keep
// landing between its read and its write.
const maxUpdateTries = 100

// Limits returns the queue's limits, the zero Limits when it has none.
func (q *Queue) Limits(ctx context.Context) (Limits, error) {
	if q.err != nil {
		return Limits{}, q.err
	}
	h, err := q.rdb.HGetAll(ctx, q.k.flow()).Result()
	if err != nil {
		return Limits{}, fmt.Errorf("rqgo: read limits of %q: %w", q.name, err)
	}
	return parseLimits(h), nil
}

// parseLimits reads Limits from a flow hash.
func parseLimits(h map[string]string) Limits {
	n := func(f string) int {
		v, _ := strconv.Atoi(h[f])
		return v
	}
	return Limits{
		Concurrency: n("concurrency"),
		Rate:        n("rate"), Per: time.Duration(n("per_ms")) * time.Millisecond,
		KeyConcurrency: n("key_concurrency"),
		KeyRate:        n("key_rate"), KeyPer: time.Duration(n("key_per_ms")) * time.Millisecond,
	}
}

// Pause stops every worker of the fleet from starting attempts of the
// queue's jobs, until [Queue.Resume]. Running jobs go on and finish;
// enqueues, scheduled jobs and retries still land in the queue. A worker
// keeps serving its other queues meanwhile.
func (q *Queue) Pause(ctx context.Context) error {
	if q.err != nil {
		return q.err
	}
	return q.flow(ctx, "pause", "pause")
}

// Resume lets workers start the queue's jobs again, and wakes the idle
// ones at once. Resuming a queue that is not paused does nothing.
func (q *Queue) Resume(ctx context.Context) error {
	if q.err != nil {
		return q.err
	}
	return q.flow(ctx, "resume", "resume")
}

// Paused says whether the queue is paused.
func (q *Queue) Paused(ctx context.Context) (bool, error) {
	if q.err != nil {
		return false, q.err
	}
	v, err := q.rdb.HGet(ctx, q.k.flow(), "paused").Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return false, fmt.Errorf("rqgo: read whether %q is paused: %w", q.name, err)
	}
	return v == "1", nil
}

// flow runs limits.lua with args (its operation first); what names the call
// in an error.
func (q *Queue) flow(ctx context.Context, what string, args ...any) error {
	if err := limitsScript.Run(ctx, q.rdb, q.flowKeys(), args...).Err(); err != nil {
		return fmt.Errorf("rqgo: %s %q: %w", what, q.name, err)
	}
	if err := q.remember(ctx); err != nil {
		return fmt.Errorf("rqgo: %s %q: %w", what, q.name, err)
	}
	return nil
}

// flowKeys are limits.lua's keys.
func (q *Queue) flowKeys() []string {
	return []string{q.k.flow(), q.k.active(), q.k.wake(), q.k.parkKeys(), q.k.pending()}
}

// maxLimitKeyLen is the longest limit key [LimitKey] takes, in bytes.
const maxLimitKeyLen = 200

// LimitKey gives the job a limit key, such as a tenant, a customer or an
// API account: the queue's KeyConcurrency and KeyRate ([Limits]) apply to
// the jobs of each key separately. A job over its key's limits is parked
// until the key has room, without holding back the jobs of other keys. The
// key must be 1 to 200 bytes of valid UTF-8 without whitespace or control
// characters.
func LimitKey(key string) EnqueueOption {
	return func(o *enqueueOptions) {
		if err := validateToken("limit key", key); err != nil {
			if o.err == nil {
				o.err = err
			}
			return
		}
		o.limitKey = key
	}
}

// Snooze returns an error that tells the worker to run the job again after
// d, without counting the attempt against its retries: for an external
// limit such as an HTTP 429 answer. A StartWithin window still applies.
func Snooze(d time.Duration) error { return &snoozeError{d: max(d, 0)} }

type snoozeError struct{ d time.Duration }

func (e *snoozeError) Error() string { return "rqgo: snoozed for " + e.d.String() }
