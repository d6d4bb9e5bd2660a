package rqgo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultMaxArgsSize is the largest encoded args payload Enqueue accepts
// unless [WithMaxArgsSize] says otherwise.
const DefaultMaxArgsSize = 512 << 10

// Queue enqueues jobs into one named queue and reads and operates on its
// jobs. A Queue is safe for concurrent use; it holds no connection of its
// own, only the client it was given, except one subscription while calls
// of [Queue.Wait] are in flight.
type Queue struct {
	name        string
	rdb         redis.UniversalClient
	prefix      string
	src         *jobSource // of the jobs it reads
	k           keys
	maxArgsSize int
	err         error         // invalid name or option: every call returns it
	waitN       int           // WithWait: replicas to wait for; 0 = none
	waitTimeout time.Duration // WithWait: longest wait; 0 = no limit
	known       atomic.Bool   // the name is in the <prefix>:queues set
	enq         enqueuer      // coalesces concurrent enqueues
	waits       waitHub       // the subscription Wait calls share
	hook        stepHook      // tests: stops a hand-over between queues
	mw          []EnqueueMiddleware
}

// QueueOption configures a [Queue].
type QueueOption func(*Queue)

// WithPrefix sets the key prefix (default [DefaultPrefix]). Workers must use
// the same prefix.
func WithPrefix(prefix string) QueueOption {
	return func(q *Queue) { q.prefix = prefix }
}

// WithMaxArgsSize sets the largest encoded args payload, in bytes, that
// Enqueue accepts (default [DefaultMaxArgsSize]).
func WithMaxArgsSize(n int) QueueOption {
	return func(q *Queue) { q.maxArgsSize = n }
}

// WithWait makes every enqueue wait until at least replicas replicas of
// the queue's Redis master have acknowledged the job (Redis's WAIT), for
// at most timeout (0 waits without limit). When fewer did, Enqueue returns
// the job and an error wrapping [ErrNotReplicated]: the job exists, but a
// failover now could lose it. Enqueue with a [JobID] to retry safely: a
// retry of a job that survived gives [ErrJobExists]. The client must be a
// *redis.Client (single node or Sentinel) or a *redis.ClusterClient.
// Default: no waiting; Redis replicates asynchronously.
func WithWait(replicas int, timeout time.Duration) QueueOption {
	return func(q *Queue) { q.waitN, q.waitTimeout = replicas, timeout }
}

// NewQueue returns the queue called name on rdb. It does no I/O. An invalid
// name or option is reported by every later call, wrapping [ErrInvalid].
func NewQueue(name string, rdb redis.UniversalClient, opts ...QueueOption) *Queue {
	q := &Queue{name: name, rdb: rdb, prefix: DefaultPrefix, maxArgsSize: DefaultMaxArgsSize}
	for _, o := range opts {
		o(q)
	}
	q.err = errors.Join(validateQueueName(name), validatePrefix(q.prefix))
	if q.maxArgsSize <= 0 {
		q.err = errors.Join(q.err, fmt.Errorf("%w: max args size %d is not positive", ErrInvalid, q.maxArgsSize))
	}
	if rdb == nil {
		q.err = errors.Join(q.err, fmt.Errorf("%w: nil Redis client", ErrInvalid))
	}
	if q.waitN < 0 || q.waitTimeout < 0 {
		q.err = errors.Join(q.err, fmt.Errorf("%w: WithWait(%d, %s): negative", ErrInvalid, q.waitN, q.waitTimeout))
	}
	q.k = newKeys(q.prefix, name)
	q.src = &jobSource{rdb: rdb, prefix: q.prefix}
	return q
}

// Name returns the queue's name.
func (q *Queue) Name() string { return q.name }

// Enqueue is [Queue.EnqueueContext] with [context.Background].
func (q *Queue) Enqueue(fn string, args any, opts ...EnqueueOption) (*Job, error) {
	return q.EnqueueContext(context.Background(), fn, args, opts...)
}

// EnqueueContext adds a job that calls the function registered as fn with
// args, encoded as JSON (a [json.RawMessage] or []byte is taken as JSON
// as it is). It is one round trip to Redis; concurrent calls on one Queue
// share round trips (a call made while this Queue has a batch in flight
// and three are in flight over all Queues waits for one of this Queue's to
// land, then goes with every call that waited, in one script call). The
// returned Job has its id, status (queued or scheduled) and creation time.
func (q *Queue) EnqueueContext(ctx context.Context, fn string, args any, opts ...EnqueueOption) (*Job, error) {
	j, argv, err := q.prepare(fn, args, opts)
	if err != nil {
		return nil, err
	}
	if err := q.remember(ctx); err != nil {
		return nil, fmt.Errorf("rqgo: enqueue %q: %w", fn, err)
	}
	if len(q.mw) > 0 {
		var out *Job
		wrote := false
		err := q.through(ctx, []*Job{j}, func(ctx context.Context, jobs []*Job) error {
			var err error
			wrote = true
			out, err = q.write(ctx, j, argv)
			return err
		})
		if !wrote && err == nil {
			err = errNotWritten
		}
		if !wrote {
			return nil, fmt.Errorf("rqgo: enqueue %q: %w", fn, err)
		}
		return out, err
	}
	return q.write(ctx, j, argv)
}

// write writes job j, with its headers, to Redis.
func (q *Queue) write(ctx context.Context, j *Job, argv []any) (*Job, error) {
	argv, err := withHeaders(j, argv)
	if err != nil {
		return nil, err
	}
	if len(j.Parents) > 0 {
		return q.enqueueDeferred(ctx, j, argv)
	}
	if j.UniqueKey != "" {
		return q.enqueueUnique(ctx, j, argv, j.debounce, j.debounceMax)
	}
	if q.waitN > 0 {
		return q.enqueueAndWait(ctx, j, q.k.enqueueKeys(j.ID, argv[3] != "1"), argv)
	}
	return q.enqueue(&enqueueCall{ctx: ctx, j: j, argv: argv})
}

// enqueueAndWait sends the enqueue script and WAIT down one connection to
// the queue's master, in one round trip: WAIT counts the replicas that
// acknowledged the writes of its own connection.
func (q *Queue) enqueueAndWait(ctx context.Context, j *Job, keys []string, argv []any) (*Job, error) {
	var master *redis.Client
	switch c := q.rdb.(type) {
	case *redis.Client:
		master = c
	case *redis.ClusterClient:
		m, err := c.MasterForKey(ctx, keys[0])
		if err != nil {
			return nil, fmt.Errorf("rqgo: enqueue %q: %w", j.Func, err)
		}
		master = m
	default:
		return nil, fmt.Errorf("%w: WithWait needs a *redis.Client or *redis.ClusterClient, not %T", ErrInvalid, q.rdb)
	}
	var (
		run  *redis.Cmd
		wait *redis.IntCmd
	)
	send := func(p redis.Pipeliner, s func() *redis.Cmd) error {
		run = s()
		wait = redis.NewIntCmd(ctx, "WAIT", q.waitN, q.waitTimeout.Milliseconds())
		return p.Process(ctx, wait)
	}
	_, _ = master.Pipelined(ctx, func(p redis.Pipeliner) error {
		return send(p, func() *redis.Cmd { return enqueueScriptFor(argv).evalSha(ctx, p, keys, argv) })
	})
	if redis.HasErrorPrefix(run.Err(), "NOSCRIPT") {
		_, _ = master.Pipelined(ctx, func(p redis.Pipeliner) error {
			return send(p, func() *redis.Cmd { return enqueueScriptFor(argv).eval(ctx, p, keys, argv) })
		})
	}
	res, err := run.Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("rqgo: enqueue %q: %w", j.Func, err)
	}
	if j, err = finishEnqueue(j, res); err != nil {
		return nil, err
	}
	if n, err := wait.Result(); err != nil || n < int64(q.waitN) {
		if err == nil {
			err = fmt.Errorf("%d of %d replicas within %s", n, q.waitN, q.waitTimeout)
		}
		return j, fmt.Errorf("%w: %q in queue %q: %v", ErrNotReplicated, j.ID, q.name, err)
	}
	return j, nil
}

func finishEnqueue(j *Job, res []int64) (*Job, error) {
	if len(res) != 2 {
		return nil, fmt.Errorf("rqgo: enqueue %q: unexpected reply %v", j.Func, res)
	}
	switch res[0] {
	case 0:
		return nil, fmt.Errorf("%w: %q in queue %q", ErrJobExists, j.ID, j.Queue)
	case 2:
		j.Status = StatusScheduled
	default:
		j.Status = StatusQueued
		j.EnqueuedAt = msTime(res[1])
	}
	j.CreatedAt = msTime(res[1])
	return j, nil
}

// remember adds the queue's name to the set of known queues, once per Queue.
func (q *Queue) remember(ctx context.Context) error {
	if q.known.Load() {
		return nil
	}
	if err := q.rdb.SAdd(ctx, queuesKey(q.prefix), q.name).Err(); err != nil {
		return err
	}
	q.known.Store(true)
	return nil
}

// prepare validates a job and builds the enqueue script's arguments.
func (q *Queue) prepare(fn string, args any, opts []EnqueueOption) (*Job, []any, error) {
	if q.err != nil {
		return nil, nil, q.err
	}
	if err := validateFuncName(fn); err != nil {
		return nil, nil, err
	}
	o := enqueueOptions{maxRetries: DefaultMaxRetries}
	for _, opt := range opts {
		opt(&o)
	}
	if o.err == nil && o.allowFailure && len(o.parents) == 0 {
		o.fail("AllowFailure needs DependsOn")
	}
	if o.err == nil && o.debounce > 0 && o.startWithin > 0 && o.startWithin < o.debounce {
		o.fail("StartWithin %s is shorter than the debounce delay %s: the job would always expire", o.startWithin, o.debounce)
	}
	if o.err == nil && o.debounce > 0 && len(o.parents) > 0 {
		// A deferred job has no start to move: it starts when its parents end.
		o.fail("Debounce cannot be combined with DependsOn")
	}
	if o.err != nil {
		return nil, nil, o.err
	}
	raw, err := encodeArgs(args)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: args of %q do not encode to JSON: %v", ErrInvalid, fn, err)
	}
	if len(raw) > q.maxArgsSize {
		return nil, nil, fmt.Errorf("%w: args of %q are %d bytes, over the %d-byte limit", ErrInvalid, fn, len(raw), q.maxArgsSize)
	}
	own := "0"
	if o.id == "" {
		o.id, own = newID(), "1"
	}
	j := &Job{ID: o.id, Queue: q.name, Func: fn, Args: raw, MaxRetries: o.maxRetries, Timeout: o.timeout}
	var at int64
	if !o.at.IsZero() {
		at = o.at.UnixMilli()
		j.ScheduledAt = o.at
	}
	// The flags field (see flag in scripts/prelude.lua) is filled in below,
	// and left out of a plain job's hash when it is sent (send).
	argv := []any{o.id, at, o.delay.Milliseconds(), own, fFlags, "",
		fID, o.id, fQueue, q.name, fFunc, fn, fArgs, string(raw), fAttempt, 0, fMaxRetries, o.maxRetries}
	if o.timeout > 0 {
		argv = append(argv, fTimeout, max(o.timeout.Milliseconds(), 1))
	}
	if o.policy != nil {
		j.Backoff = o.policy.encode()
		argv = append(argv, fBackoff, j.Backoff)
	}
	if o.resultTTL != nil {
		j.ResultTTL, j.hasResultTTL = *o.resultTTL, true
		argv = append(argv, fResultTTL, ttlMillis(*o.resultTTL))
	}
	if o.failureTTL != nil {
		j.FailureTTL, j.hasFailureTTL = *o.failureTTL, true
		argv = append(argv, fFailureTTL, ttlMillis(*o.failureTTL))
	}
	j.Parents, j.AllowFailure = o.parents, o.allowFailure
	if o.allowFailure {
		argv = append(argv, fAllowFailure, "1")
	}
	if argv, err = o.uniqueFields(j, argv); err != nil {
		return nil, nil, fmt.Errorf("%w: args of %q: %v", ErrInvalid, fn, err)
	}
	if o.unique != nil {
		j.UniqueUntil, j.UniqueFor = o.unique.Until, o.unique.For
		j.debounce, j.debounceMax = o.debounce, o.debounceMax
	}
	j.Headers = o.headers
	if o.limitKey != "" {
		j.LimitKey = o.limitKey
		argv = append(argv, fLimitKey, o.limitKey)
	}
	argv[5] = o.flags()
	return j, argv, nil
}

func encodeArgs(args any) (json.RawMessage, error) {
	switch a := args.(type) {
	case json.RawMessage:
		if !json.Valid(a) {
			return nil, errors.New("invalid JSON")
		}
		return a, nil
	case []byte:
		if !json.Valid(a) {
			return nil, errors.New("invalid JSON")
		}
		return a, nil
	}
	return marshalJSON(args) // as written: a job hash is not HTML
}

// newID returns a random job id: 20 hex digits (80 random bits).
func newID() string {
	var b [10]byte
	_, _ = rand.Read(b[:]) // never fails on supported platforms
	return hex.EncodeToString(b[:])
}

func msTime(ms int64) time.Time {
	if ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}
