package rqgo

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
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

// FetchJob reads the job with the given id. It returns [ErrJobNotFound] when
// there is none, and the job with an error wrapping [ErrMalformedJob] when
// its hash cannot be read fully.
func (q *Queue) FetchJob(ctx context.Context, id string) (*Job, error) {
	if q.err != nil {
		return nil, q.err
	}
	h, err := q.rdb.HGetAll(ctx, q.k.job(id)).Result()
	if err != nil {
		return nil, fmt.Errorf("rqgo: fetch job %s: %w", id, err)
	}
	if len(h) == 0 {
		return nil, fmt.Errorf("%w: %q in queue %q", ErrJobNotFound, id, q.name)
	}
	j, err := decodeJob(h)
	j.src = q.src
	return j, err
}

// Counts is the number of jobs in each of a queue's states.
type Counts struct {
	Queued, Started, Scheduled, Finished, Failed, Canceled int64
	Deferred                                               int64 // waiting for parents ([DependsOn])
	// Parked counts the queued jobs parked over their limit key's limits
	// ([LimitKey]); Queued does not count them.
	Parked int64
}

// Counts returns how many jobs the queue holds in each state, read in one
// round trip.
func (q *Queue) Counts(ctx context.Context) (Counts, error) {
	if q.err != nil {
		return Counts{}, q.err
	}
	var c Counts
	cmds, err := q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.LLen(ctx, q.k.pending())
		p.ZCard(ctx, q.k.active())
		p.ZCard(ctx, q.k.scheduled())
		p.ZCard(ctx, q.k.finished())
		p.ZCard(ctx, q.k.failed())
		p.ZCard(ctx, q.k.canceled())
		p.ZCard(ctx, q.k.deferred())
		p.ZCard(ctx, q.k.parked())
		return nil
	})
	if err != nil {
		for _, cmd := range cmds {
			if redis.HasErrorPrefix(cmd.Err(), "WRONGTYPE") {
				key := fmt.Sprint(cmd.Args()[1])
				err = fmt.Errorf("key %s holds a %s, not a %s: repair or delete it", key,
					q.rdb.Type(ctx, key).Val(), map[string]string{"llen": "list", "zcard": "zset"}[cmd.Name()])
				break
			}
		}
		return c, fmt.Errorf("rqgo: count jobs in %q: %w", q.name, err)
	}
	dst := []*int64{&c.Queued, &c.Started, &c.Scheduled, &c.Finished, &c.Failed, &c.Canceled, &c.Deferred, &c.Parked}
	for i, cmd := range cmds {
		*dst[i] = cmd.(*redis.IntCmd).Val()
	}
	return c, nil
}

// JobIDs lists up to limit ids of jobs with the given status, skipping the
// first offset. Queued jobs come in the order they will run, started and
// scheduled jobs by lease deadline and ready time, deferred jobs by when
// their links are checked next, and finished, failed and canceled jobs
// newest first.
func (q *Queue) JobIDs(ctx context.Context, status Status, offset, limit int) ([]string, error) {
	if q.err != nil {
		return nil, q.err
	}
	if offset < 0 || limit <= 0 {
		return nil, fmt.Errorf("%w: offset %d and limit %d", ErrInvalid, offset, limit)
	}
	start, stop := int64(offset), int64(offset+limit-1)
	var cmd *redis.StringSliceCmd
	switch status {
	case StatusQueued:
		cmd = q.rdb.LRange(ctx, q.k.pending(), start, stop)
	case StatusStarted:
		cmd = q.rdb.ZRange(ctx, q.k.active(), start, stop)
	case StatusScheduled:
		cmd = q.rdb.ZRange(ctx, q.k.scheduled(), start, stop)
	case StatusDeferred:
		cmd = q.rdb.ZRange(ctx, q.k.deferred(), start, stop)
	case StatusFinished, StatusFailed, StatusCanceled:
		cmd = q.rdb.ZRevRange(ctx, q.registry(status), start, stop)
	default:
		return nil, fmt.Errorf("%w: unknown status %q", ErrInvalid, status)
	}
	ids, err := cmd.Result()
	if err != nil {
		return nil, fmt.Errorf("rqgo: list %s jobs in %q: %w", status, q.name, err)
	}
	return ids, nil
}

// Jobs is [Queue.JobIDs] with each job read, in one more round trip. Jobs
// whose hash has expired meanwhile are left out.
func (q *Queue) Jobs(ctx context.Context, status Status, offset, limit int) ([]*Job, error) {
	ids, err := q.JobIDs(ctx, status, offset, limit)
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	_, err = q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGetAll(ctx, q.k.job(id))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("rqgo: read %s jobs in %q: %w", status, q.name, err)
	}
	jobs := make([]*Job, 0, len(ids))
	for _, c := range cmds {
		if h := c.Val(); len(h) > 0 {
			j, _ := decodeJob(h) // a malformed job is still listed, as far as it reads
			j.src = q.src
			jobs = append(jobs, j)
		}
	}
	return jobs, nil
}

func (q *Queue) registry(s Status) string {
	switch s {
	case StatusFinished:
		return q.k.finished()
	case StatusFailed:
		return q.k.failed()
	}
	return q.k.canceled()
}

// Requeue puts the given failed or canceled jobs back in line with their
// attempts reset, and returns how many it requeued; ids in other states are
// left alone. A job with a unique key ([Unique]) takes it again; one whose
// key another job holds stays, and the error, which wraps [ErrDuplicate],
// names it and the holder.
func (q *Queue) Requeue(ctx context.Context, ids ...string) (int, error) {
	if q.err != nil {
		return 0, q.err
	}
	if len(ids) == 0 {
		return 0, nil
	}
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	r, err := requeueScript.Run(ctx, q.rdb,
		[]string{q.k.pending(), q.k.failed(), q.k.canceled(), q.k.wake(), q.k.jobPrefix()}, args...).Slice()
	if err == nil && len(r) != 2 {
		err = fmt.Errorf("unexpected reply %v", r)
	}
	if err != nil {
		return 0, fmt.Errorf("rqgo: requeue in %q: %w", q.name, err)
	}
	n, _ := r[0].(int64)
	dups, _ := r[1].([]any)
	if len(dups) > 0 {
		var held []string
		for i := 0; i+1 < len(dups); i += 2 {
			held = append(held, fmt.Sprintf("%v (held by %v)", dups[i], dups[i+1]))
		}
		return int(n), fmt.Errorf("%w: not requeued in %q, their unique keys are held: %s",
			ErrDuplicate, q.name, strings.Join(held, ", "))
	}
	return int(n), nil
}

// requeuePage is how many failed jobs RequeueFailed reads and requeues per
// round trip.
var requeuePage int64 = 500

// RequeueFailed requeues the jobs that were failed when it was called, oldest
// first, a batch at a time, and returns how many it requeued. Each is
// requeued once: a job that fails again while RequeueFailed runs, and any job
// that fails after it started, stays in the failed registry.
func (q *Queue) RequeueFailed(ctx context.Context) (int, error) {
	if q.err != nil {
		return 0, q.err
	}
	// The failed registry is scored by failure time. Its newest entry now is
	// the bound: a job failing from here on scores at least as much, and a
	// requeued job failing again within the same millisecond is known by id.
	last, err := q.rdb.ZRangeWithScores(ctx, q.k.failed(), -1, -1).Result()
	if err != nil || len(last) == 0 {
		return 0, q.wrapRequeue(err)
	}
	bound := strconv.FormatFloat(last[0].Score, 'f', -1, 64)
	tried := map[string]bool{}
	total := 0
	var dupErr error // jobs whose unique key another job holds stay failed
	for skip := int64(0); ; {
		ids, err := q.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{
			Key: q.k.failed(), Start: "-inf", Stop: bound, ByScore: true, Offset: skip, Count: requeuePage,
		}).Result()
		if err != nil {
			return total, q.wrapRequeue(err)
		}
		var fresh []string
		for _, id := range ids {
			if !tried[id] {
				fresh = append(fresh, id)
			}
		}
		if len(fresh) == 0 {
			if int64(len(ids)) < requeuePage {
				return total, dupErr
			}
			skip += int64(len(ids)) // a page of jobs requeued here that failed again
			continue
		}
		n, err := q.Requeue(ctx, fresh...)
		total += n
		if err != nil && !errors.Is(err, ErrDuplicate) {
			return total, err
		}
		dupErr = cmp.Or(dupErr, err)
		// Every id tried is marked, so an entry Requeue leaves in the
		// registry (a job whose state is not failed) is read past next time.
		for _, id := range fresh {
			tried[id] = true
		}
	}
}

func (q *Queue) wrapRequeue(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("rqgo: requeue in %q: %w", q.name, err)
}

// Cancel cancels a queued, scheduled or deferred job: it will not run, and
// it is kept in the canceled registry for its failure TTL. Its dependents
// ([DependsOn]) are canceled in turn, unless they allow failure; Cancel
// returns once those in this queue are, and has delivered the cancel to
// those in other queues (a reaper of this queue does, should it fail).
//
// A running job is asked to stop: Cancel records the cancel on the job and
// returns, and the context of its handler, on whichever worker runs it,
// ends with the cause [ErrCanceled] (at once when the worker hears of it,
// at its next heartbeat otherwise). When the handler then returns an error
// the job ends canceled, with no retry; when it returns a result anyway,
// the job finishes. A job whose worker died ends canceled when its lease
// expires.
//
// A job that has ended gives [ErrNotCancelable]; no job gives
// [ErrJobNotFound].
func (q *Queue) Cancel(ctx context.Context, id string) error {
	if q.err != nil {
		return q.err
	}
	res, err := cancelScript.Run(ctx, q.rdb,
		[]string{q.k.job(id), q.k.pending(), q.k.scheduled(), q.k.canceled()},
		id, ttlMillis(DefaultFailureTTL)).Slice()
	if err != nil {
		return fmt.Errorf("rqgo: cancel %s: %w", id, err)
	}
	if len(res) != 2 {
		return fmt.Errorf("rqgo: cancel %s: unexpected reply %v", id, res)
	}
	switch res[0] {
	case int64(0):
		return fmt.Errorf("%w: %q in queue %q", ErrJobNotFound, id, q.name)
	case int64(-1):
		return fmt.Errorf("%w: %q is %v", ErrNotCancelable, id, res[1])
	case int64(2):
		// Canceled; what fails to be delivered now, a reaper delivers.
		_ = q.passOn(ctx, []string{id})
	}
	// 1, 2: canceled; 3: running, the cancel recorded and its worker told.
	return nil
}

// passOn delivers what the given jobs owe their dependents in other queues.
func (q *Queue) passOn(ctx context.Context, ids []string) error {
	if !q.hook.at(stepOwed) {
		return nil
	}
	todo, err := readOwed(ctx, q.rdb, q.prefix, q.name, ids)
	if err == nil {
		err = deliverOwed(ctx, q.rdb, q.prefix, todo, q.hook)
	}
	return err
}

// Empty deletes every queued job of the queue and returns how many it
// deleted. Scheduled, running and finished jobs stay. The dependents of a
// deleted job are canceled, as those of a job that no longer exists.
func (q *Queue) Empty(ctx context.Context) (int, error) {
	if q.err != nil {
		return 0, q.err
	}
	total := 0
	for {
		r, err := emptyScript.Run(ctx, q.rdb, []string{q.k.pending(), q.k.jobPrefix()}, 1000).Slice()
		if err == nil && len(r) != 2 {
			err = fmt.Errorf("unexpected reply %v", r)
		}
		if err != nil {
			return total, fmt.Errorf("rqgo: empty %q: %w", q.name, err)
		}
		n, _ := r[0].(int64)
		total += int(n)
		if ids, _ := r[1].([]any); len(ids) > 0 {
			owing := make([]string, len(ids))
			for i, id := range ids {
				owing[i], _ = id.(string)
			}
			_ = q.passOn(ctx, owing) // a reaper delivers what fails now
		}
		if n == 0 {
			return total, nil
		}
	}
}

// Queues returns the names of the queues known under prefix: every queue
// something was enqueued to or a worker listened on.
func Queues(ctx context.Context, rdb redis.UniversalClient, prefix string) ([]string, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	names, err := rdb.SMembers(ctx, queuesKey(prefix)).Result()
	if err != nil {
		return nil, fmt.Errorf("rqgo: list queues: %w", err)
	}
	return names, nil
}

// FindJob looks for job id in every queue known under prefix and returns
// what it finds, sorted by queue: no job, one, or several when the same
// [JobID] was enqueued to several queues. A job whose hash cannot be read
// fully is returned as far as it reads, with an error wrapping
// [ErrMalformedJob]; other errors end the search.
func FindJob(ctx context.Context, rdb redis.UniversalClient, prefix, id string) ([]*Job, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	names, err := Queues(ctx, rdb, prefix)
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	var found []*Job
	var malformed error
	for _, name := range names {
		j, err := NewQueue(name, rdb, WithPrefix(prefix)).FetchJob(ctx, id)
		switch {
		case errors.Is(err, ErrJobNotFound):
			continue
		case errors.Is(err, ErrMalformedJob) && j != nil:
			malformed = cmp.Or(malformed, err)
		case err != nil:
			return nil, err
		}
		found = append(found, j)
	}
	return found, malformed
}

func msTime(ms int64) time.Time {
	if ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}
