package rqgo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
)

// UniqueUntil says when a job's unique key is released.
type UniqueUntil int

const (
	// UntilEnded holds the key until the job has ended: finished, failed
	// with no retries left, canceled, or deleted. It is held through
	// retries.
	UntilEnded UniqueUntil = iota
	// UntilStarted releases the key when an attempt starts: at most one
	// job of the key waits.
	UntilStarted
)

// UniqueOpts configures [Unique].
type UniqueOpts struct {
	// Key is the unique key, scoped to the queue, such as "reindex:doc-42".
	// Empty: the function name and the canonical JSON of the args (key
	// order and whitespace do not matter).
	Key string
	// Until says when the key is released (default UntilEnded).
	Until UniqueUntil
	// For, above 0, keeps the key taken for at least this long after the
	// job was enqueued, even once the job has ended: at most one job of the
	// key per window.
	For time.Duration
}

// Unique makes the job the only one of its key in the queue: while
// another job holds the key, Enqueue writes nothing and returns that job
// with an error wrapping [ErrDuplicate]. A key whose job no longer exists,
// or has ended (and whose For window has passed), is taken over by the
// next enqueue, so a key is never stuck.
func Unique(u UniqueOpts) EnqueueOption {
	return func(o *enqueueOptions) {
		switch {
		case len(u.Key) > maxNameLen:
			o.fail("unique key %q is longer than %d bytes", u.Key, maxNameLen)
		case u.Key != "" && (containsSpaceOrControl(u.Key) || !utf8.ValidString(u.Key)):
			o.fail("unique key %q must be valid UTF-8 without whitespace or control characters", u.Key)
		case u.For < 0:
			o.fail("unique For %s is negative", u.For)
		case u.Until != UntilEnded && u.Until != UntilStarted:
			o.fail("unique Until %d is not UntilEnded or UntilStarted", u.Until)
		}
		o.unique = &u
	}
}

// Debounce, with [Unique] (or alone, which implies Unique with the derived
// key), makes the job start d after the newest enqueue of its key: an
// enqueue while the job has not started replaces its args with the newest
// ones and, while it waits for its time, moves its start to d after this
// enqueue, returning the same job with a nil error. maxWait (0: none)
// bounds how long a steady stream of enqueues can postpone it, from the
// first enqueue. A job that is ready already (its time came, it waits for
// a worker) takes the newest args and keeps its place.
func Debounce(d, maxWait time.Duration) EnqueueOption {
	return func(o *enqueueOptions) {
		switch {
		case d <= 0:
			o.fail("debounce %s is not positive", d)
		case maxWait < 0:
			o.fail("debounce maxWait %s is negative", maxWait)
		case maxWait > 0 && maxWait < d:
			o.fail("debounce maxWait %s is shorter than its delay %s", maxWait, d)
		}
		o.debounce, o.debounceMax = d, maxWait
	}
}

// StartWithin makes no attempt of the job start later than d after it
// was enqueued, retries included: a job that missed its window is canceled
// when a worker would have started it, with an error that says it expired
// and when. Its dependents are canceled as those of any canceled parent.
func StartWithin(d time.Duration) EnqueueOption {
	return func(o *enqueueOptions) {
		if d <= 0 {
			o.fail("StartWithin %s is not positive", d)
		}
		o.startWithin = d
	}
}

// flags are the letters of the job hash's flags field that the options
// set (see flag in scripts/prelude.lua): p parents, u a unique key, S held
// until started, s StartWithin, k a limit key. Scripts add d (dependents) and w (waited).
func (o *enqueueOptions) flags() string {
	var f []byte
	if len(o.parents) > 0 {
		f = append(f, 'p')
	}
	if o.unique != nil {
		f = append(f, 'u')
		if o.unique.Until == UntilStarted {
			f = append(f, 'S')
		}
	}
	if o.startWithin > 0 {
		f = append(f, 's')
	}
	if o.limitKey != "" {
		f = append(f, 'k')
	}
	return string(f)
}

// uniqueKey is the key name of job j's unique key (after "unique:").
func uniqueKey(u *UniqueOpts, fn string, args json.RawMessage) (string, error) {
	if u.Key != "" {
		return u.Key, nil
	}
	canon, err := canonicalJSON(args)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(canon)
	return "fn:" + fn + ":" + hex.EncodeToString(sum[:20]), nil
}

// canonicalJSON re-encodes a JSON value with object keys sorted and no
// whitespace; numbers stay as written.
func canonicalJSON(raw json.RawMessage) ([]byte, error) {
	if len(raw) == 0 {
		return []byte("null"), nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// uniqueFields adds the job hash fields of the unique key, debounce and
// StartWithin options to argv.
func (o *enqueueOptions) uniqueFields(j *Job, argv []any) ([]any, error) {
	if o.debounce > 0 && o.unique == nil {
		o.unique = &UniqueOpts{}
	}
	if o.startWithin > 0 {
		j.StartWithin = o.startWithin
		argv = append(argv, fStartWithin, max(o.startWithin.Milliseconds(), 1))
	}
	if o.unique == nil {
		return argv, nil
	}
	key, err := uniqueKey(o.unique, j.Func, j.Args)
	if err != nil {
		return nil, err
	}
	j.UniqueKey = key
	argv = append(argv, fUniqueKey, key)
	if o.unique.Until == UntilStarted {
		argv = append(argv, fUniqueUntil, "started")
	}
	if o.unique.For > 0 {
		argv = append(argv, fUniqueFor, max(o.unique.For.Milliseconds(), 1))
	}
	if o.debounce > 0 {
		argv = append(argv, fDebounce, max(o.debounce.Milliseconds(), 1))
	}
	return argv, nil
}

// enqueueUnique creates job j (prepared with argv) holding its unique key,
// or returns the job that holds it.
func (q *Queue) enqueueUnique(ctx context.Context, j *Job, argv []any, debounce, maxWait time.Duration) (*Job, error) {
	args := make([]any, 0, len(argv)+3)
	args = append(args, argv[:4]...)
	args = append(args, debounce.Milliseconds(), maxWait.Milliseconds(), string(j.Args))
	args = append(args, argv[4:]...)
	s := uniqueScript
	if argv[3] != "1" {
		s = uniqueChosenScript
	}
	k := q.k
	r, err := s.Run(ctx, q.rdb, []string{k.job(j.ID), k.pending(), k.scheduled(), k.wake(), k.unique(j.UniqueKey),
		k.jobPrefix(), k.active(), k.finished(), k.failed(), k.canceled()}, args...).Slice()
	if err != nil {
		return nil, fmt.Errorf("rqgo: enqueue %q: %w", j.Func, err)
	}
	code, now, holder, err := uniqueReply(j, r)
	if err != nil {
		return holder, err
	}
	switch code {
	case 4: // debounced into the holder
		return holder, nil
	case 2:
		j.Status = StatusScheduled
	default:
		j.Status = StatusQueued
		j.EnqueuedAt = msTime(now)
	}
	j.CreatedAt = msTime(now)
	return j, nil
}

// uniqueReply reads the {code, now, holder, holder status} reply of
// unique.lua or defer.lua: the holder as a Job, and the error for codes 0
// (the id exists) and 5 (another job holds the key).
func uniqueReply(j *Job, r []any) (code, now int64, holder *Job, err error) {
	if len(r) != 4 {
		return 0, 0, nil, fmt.Errorf("rqgo: enqueue %q: unexpected reply %v", j.Func, r)
	}
	code, _ = r[0].(int64)
	now, _ = r[1].(int64)
	if id, _ := r[2].(string); id != "" {
		st, _ := r[3].(string)
		holder = &Job{ID: id, Queue: j.Queue, Status: Status(st), UniqueKey: j.UniqueKey}
	}
	switch code {
	case 0:
		return code, now, nil, fmt.Errorf("%w: %q in queue %q", ErrJobExists, j.ID, j.Queue)
	case 5:
		return code, now, holder, fmt.Errorf("%w: unique key %q of queue %q is held by job %s (%s)",
			ErrDuplicate, j.UniqueKey, j.Queue, holder.ID, holder.Status)
	}
	return code, now, holder, nil
}

// UniqueHolder returns the id the queue's unique key key points to, or ""
// when it is free. A key whose job is gone, or has ended, still names it
// until the next enqueue of the key takes it over.
func (q *Queue) UniqueHolder(ctx context.Context, key string) (string, error) {
	if q.err != nil {
		return "", q.err
	}
	id, err := q.rdb.Get(ctx, q.k.unique(key)).Result()
	if err == redis.Nil {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("rqgo: read unique key %q: %w", key, err)
	}
	return id, nil
}
