package rqgo

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

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
	return q.readJobs(ctx, string(status), ids)
}

// ParkedJobIDs lists up to limit ids of the queue's parked jobs, skipping
// the first offset, by when they were parked (to the ms; jobs parked in the
// same ms in id order). A parked job is queued
// (its status is [StatusQueued]) but held back over its limit key's
// [Limits], so [Queue.JobIDs] with StatusQueued does not list it;
// [Counts].Parked counts them.
func (q *Queue) ParkedJobIDs(ctx context.Context, offset, limit int) ([]string, error) {
	if q.err != nil {
		return nil, q.err
	}
	if offset < 0 || limit <= 0 {
		return nil, fmt.Errorf("%w: offset %d and limit %d", ErrInvalid, offset, limit)
	}
	ids, err := q.rdb.ZRange(ctx, q.k.parked(), int64(offset), int64(offset+limit-1)).Result()
	if err != nil {
		return nil, fmt.Errorf("rqgo: list parked jobs in %q: %w", q.name, err)
	}
	return ids, nil
}

// ParkedJobs is [Queue.ParkedJobIDs] with each job read, in one more round
// trip. Jobs that started, ended or were deleted meanwhile are left out.
func (q *Queue) ParkedJobs(ctx context.Context, offset, limit int) ([]*Job, error) {
	ids, err := q.ParkedJobIDs(ctx, offset, limit)
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	jobs, err := q.readJobs(ctx, "parked", ids)
	return slices.DeleteFunc(jobs, func(j *Job) bool { return j.Status != StatusQueued }), err
}

// readJobs reads the jobs ids of the queue, in one round trip, leaving out
// those whose hash is gone; what names them in an error.
func (q *Queue) readJobs(ctx context.Context, what string, ids []string) ([]*Job, error) {
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	_, err := q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGetAll(ctx, q.k.job(id))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("rqgo: read %s jobs in %q: %w", what, q.name, err)
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
