package rqgo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// MaxParents is the most parents one job may have ([DependsOn]).
const MaxParents = 10000

// linkGrace is how long a new deferred job waits before a reaper of its
// queue links it to its parents, in case its producer died between
// creating it and linking it (which takes a few milliseconds).
const linkGrace = 10 * time.Second

// relinkEvery is how often a reaper checks the links of a deferred job
// again: a parent deleted by hand is found this way, and the dependent
// canceled.
const relinkEvery = 10 * time.Minute

// JobRef names a job: its queue and its id.
type JobRef struct {
	Queue, ID string
}

// String is the form used in the job hash's parents field and in errors:
// "<queue>:<id>" (a queue name has no colon, so the first one ends it).
func (r JobRef) String() string { return r.Queue + ":" + r.ID }

// parseRef reads a JobRef written by String.
func parseRef(s string) (JobRef, bool) {
	q, id, ok := strings.Cut(s, ":")
	if !ok || q == "" || id == "" {
		return JobRef{}, false
	}
	return JobRef{Queue: q, ID: id}, true
}

// DependsOn makes the job wait, with status deferred, until every parent
// has finished; then it is queued in its own queue (or scheduled, when [In]
// or [At] puts it later). Parents may be in any queue. When a parent fails
// (no retries left), is canceled or no longer exists, the job is canceled
// with an error that names the parent, and so on down the graph; with
// [AllowFailure] it runs once every parent has ended, however it ended.
//
// Every parent must exist when the job is enqueued: a missing one is an
// error wrapping [ErrJobNotFound], and nothing is enqueued. A parent that
// has already finished counts as done; one that has already failed or been
// canceled cancels the new job at once. At most [MaxParents] parents.
func DependsOn(parents ...*Job) EnqueueOption {
	return func(o *enqueueOptions) {
		for i, p := range parents {
			switch {
			case p == nil:
				o.fail("DependsOn: parent %d is nil", i)
			case p.ID == "":
				o.fail("DependsOn: parent %d has an empty id", i)
			default:
				if err := validateQueueName(p.Queue); err != nil && o.err == nil {
					o.err = fmt.Errorf("DependsOn: parent %q: %w", p.ID, err)
				} else if err := validateJobID(p.ID); err != nil && o.err == nil {
					o.err = fmt.Errorf("DependsOn: parent %d: %w", i, err)
				}
				r := JobRef{Queue: p.Queue, ID: p.ID}
				if o.err == nil && !slices.Contains(o.parents, r) {
					o.parents = append(o.parents, r) // a parent given twice counts once
				}
			}
		}
		if len(o.parents) > MaxParents {
			o.fail("DependsOn: %d parents, over the limit of %d", len(o.parents), MaxParents)
		}
	}
}

// AllowFailure, with [DependsOn], runs the job once every parent has ended,
// whether it finished, failed or was canceled: the callback of a fan-out
// that must run even when some parts failed. Its handler can read how each
// parent ended with [Job.FetchParents].
func AllowFailure() EnqueueOption {
	return func(o *enqueueOptions) { o.allowFailure = true }
}

// FetchParents reads the job's parents ([DependsOn]), in the order they
// were given, with one round trip per parent queue at most (one in all on
// a single Redis): a handler reads their results this way. A parent that no
// longer exists (its result TTL has passed, say) is nil. It works on a Job
// passed to a handler and on one read with [Queue.FetchJob].
func (j *Job) FetchParents(ctx context.Context) ([]*Job, error) {
	if len(j.Parents) == 0 {
		return nil, nil
	}
	if j.src == nil {
		return nil, fmt.Errorf("%w: job %s was not read from Redis", ErrInvalid, j.ID)
	}
	ps, err := FetchJobs(ctx, j.src.rdb, j.src.prefix, j.Parents)
	if err != nil {
		return ps, fmt.Errorf("rqgo: fetch parents of job %s: %w", j.ID, err)
	}
	return ps, nil
}

// FetchJobs reads the given jobs of any queues under prefix, in order, in
// one pipelined round trip (one per master on a Cluster). A job that does
// not exist is nil; a malformed one is returned as far as it reads, with an
// error wrapping [ErrMalformedJob].
func FetchJobs(ctx context.Context, rdb redis.UniversalClient, prefix string, refs []JobRef) ([]*Job, error) {
	cmds := make([]*redis.MapStringStringCmd, len(refs))
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, r := range refs {
			cmds[i] = p.HGetAll(ctx, newKeys(prefix, r.Queue).job(r.ID))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("rqgo: fetch jobs: %w", err)
	}
	out := make([]*Job, len(cmds))
	src := &jobSource{rdb: rdb, prefix: prefix}
	var bad error
	for i, c := range cmds {
		if h := c.Val(); len(h) > 0 {
			j, err := decodeJob(h)
			if err != nil && bad == nil {
				bad = err
			}
			j.src = src
			out[i] = j
		}
	}
	return out, bad
}

// Dependents lists the jobs that depend on job id of this queue, as they
// were linked to it (a dependent enqueued after the job ended is listed
// too). The list is kept as long as the job.
func (q *Queue) Dependents(ctx context.Context, id string) ([]JobRef, error) {
	if q.err != nil {
		return nil, q.err
	}
	members, err := q.rdb.SMembers(ctx, q.k.dependents(id)).Result()
	if err != nil {
		return nil, fmt.Errorf("rqgo: dependents of job %s: %w", id, err)
	}
	refs := make([]JobRef, 0, len(members))
	for _, m := range members {
		if r, ok := parseRef(m); ok {
			refs = append(refs, r)
		}
	}
	return refs, nil
}

// stepHook, when set (by tests), is called at each step of a hand-over
// between queues; false stops the work there, as if the process had died.
type stepHook func(step string) bool

func (h stepHook) at(step string) bool { return h == nil || h(step) }

// Steps of the hand-overs, for stepHook.
const (
	stepDeferred  = "deferred"  // the job is created; not linked yet
	stepLinked    = "linked"    // linked; what parents answered not delivered yet
	stepOwed      = "owed"      // a parent ended and owes its dependents
	stepDelivered = "delivered" // delivered; the outbox not cleared yet
)

// enqueueDeferred creates the job j (prepared with argv) as deferred, then
// links it to its parents and delivers what they answered. Only the
// creation can fail the call: once the job exists, a reaper of its queue
// finishes the links of a producer that died or lost Redis.
func (q *Queue) enqueueDeferred(ctx context.Context, j *Job, argv []any) (*Job, error) {
	known, err := q.parentStates(ctx, j)
	if err != nil {
		return nil, err
	}
	args := make([]any, 0, len(argv)+2+len(j.Parents))
	args = append(args, argv[:4]...)
	args = append(args, linkGrace.Milliseconds(), len(j.Parents))
	for _, p := range j.Parents {
		args = append(args, p.String())
	}
	args = append(args, argv[4:]...)
	s := deferScript
	if argv[3] != "1" {
		s = deferChosenScript
	}
	k := q.k
	keys := []string{k.job(j.ID), k.deferred(), k.parents(j.ID), k.active(),
		k.scheduled(), k.finished(), k.failed(), k.canceled()}
	if j.UniqueKey != "" {
		keys = append(keys, k.unique(j.UniqueKey))
	}
	r, err := s.Run(ctx, q.rdb, keys, args...).Slice()
	if err != nil {
		return nil, fmt.Errorf("rqgo: enqueue %q: %w", j.Func, err)
	}
	_, now, holder, err := uniqueReply(j, r)
	if err != nil {
		return holder, err
	}
	j.Status, j.CreatedAt = StatusDeferred, msTime(now)
	if !q.hook.at(stepDeferred) {
		return j, nil
	}
	child := JobRef{Queue: q.name, ID: j.ID}
	edges := make([]edge, len(j.Parents))
	for i, p := range j.Parents {
		edges[i] = edge{child: child, parent: p}
	}
	st, err := link(ctx, q.rdb, q.prefix, edges, known, q.hook)
	if err == nil && st[child] != "" {
		j.Status = Status(st[child])
	}
	return j, nil
}

// parentStates reads the status of each of j's parents, in one round
// trip, and fails with ErrJobNotFound naming the first that does not exist.
func (q *Queue) parentStates(ctx context.Context, j *Job) (map[JobRef]string, error) {
	cmds := make([]*redis.StringCmd, len(j.Parents))
	_, err := q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, r := range j.Parents {
			cmds[i] = p.HGet(ctx, newKeys(q.prefix, r.Queue).job(r.ID), fStatus)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("rqgo: enqueue %q: read its parents: %w", j.Func, err)
	}
	known := make(map[JobRef]string, len(cmds))
	for i, c := range cmds {
		if c.Err() != nil {
			return nil, fmt.Errorf("%w: parent %s of the job to enqueue (%q)", ErrJobNotFound, j.Parents[i], j.Func)
		}
		known[j.Parents[i]] = c.Val()
	}
	return known, nil
}

// edge is one dependency: child waits for parent.
type edge struct{ child, parent JobRef }

// owed is one end a parent owes a dependent in another queue.
type owed struct {
	parent, child JobRef
	end           string // finished, failed, canceled or gone
}

// link records each edge in its parent's queue (link.lua: one call per
// parent queue, all in one round trip), then delivers to each child's queue
// how the parents that have ended ended, and sets when a reaper checks each
// child again (deliver.lua: one call per child queue, in one more round
// trip). known is what a caller read of the parents before; a parent it saw
// finished that is gone now (its result TTL passed) counts as finished. It
// returns the status of each child afterwards.
func link(ctx context.Context, rdb redis.UniversalClient, prefix string, edges []edge, known map[JobRef]string, hook stepHook) (map[JobRef]string, error) {
	byParent := map[string][]int{} // parent queue -> indexes into edges
	var order []string
	for i, e := range edges {
		if _, ok := byParent[e.parent.Queue]; !ok {
			order = append(order, e.parent.Queue)
		}
		byParent[e.parent.Queue] = append(byParent[e.parent.Queue], i)
	}
	calls := make([]*scriptCall, len(order))
	for n, pq := range order {
		args := make([]any, 0, 2*len(byParent[pq]))
		for _, i := range byParent[pq] {
			args = append(args, edges[i].child.String(), edges[i].parent.ID)
		}
		calls[n] = &scriptCall{s: linkScript, keys: []string{newKeys(prefix, pq).jobPrefix()}, args: args}
	}
	runScripts(ctx, rdb, calls)
	ends := make([]string, len(edges))
	for n, pq := range order {
		words, err := calls[n].cmd.StringSlice()
		if err == nil && len(words) != len(byParent[pq]) {
			err = fmt.Errorf("unexpected reply of %d words for %d links", len(words), len(byParent[pq]))
		}
		if err != nil {
			return nil, fmt.Errorf("rqgo: link to parents in %q: %w", pq, err)
		}
		for m, i := range byParent[pq] {
			ends[i] = words[m]
			if words[m] == "gone" && known[edges[i].parent] == string(StatusFinished) {
				ends[i] = string(StatusFinished)
			}
		}
	}
	if !hook.at(stepLinked) {
		return nil, nil
	}
	byChild := map[string][]int{}
	order = order[:0]
	for i, e := range edges {
		if _, ok := byChild[e.child.Queue]; !ok {
			order = append(order, e.child.Queue)
		}
		byChild[e.child.Queue] = append(byChild[e.child.Queue], i)
	}
	calls = calls[:0]
	for _, cq := range order {
		args := []any{relinkEvery.Milliseconds()}
		for _, i := range byChild[cq] {
			args = append(args, edges[i].child.ID, edges[i].parent.String(), ends[i])
		}
		calls = append(calls, &scriptCall{s: deliverScript, keys: []string{newKeys(prefix, cq).jobPrefix()}, args: args})
	}
	runScripts(ctx, rdb, calls)
	states := map[JobRef]string{}
	var more []owed
	for n, cq := range order {
		st, next, err := deliveredReply(calls[n].cmd, cq, len(byChild[cq]))
		if err != nil {
			return nil, err
		}
		for m, i := range byChild[cq] {
			states[edges[i].child] = st[m]
		}
		more = append(more, next...)
	}
	return states, deliverOwed(ctx, rdb, prefix, more, hook)
}

// deliveredReply reads deliver.lua's reply {owed, status...} for n triples.
func deliveredReply(cmd *redis.Cmd, queue string, n int) ([]string, []owed, error) {
	r, err := cmd.Slice()
	if err == nil && len(r) != n+1 {
		err = fmt.Errorf("unexpected reply of %d values for %d deliveries", len(r), n)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("rqgo: deliver to jobs of %q: %w", queue, err)
	}
	st := make([]string, n)
	for i := range st {
		st[i], _ = r[i+1].(string)
	}
	triples, _ := r[0].([]any)
	return st, owedList(queue, triples), nil
}

// owedList reads triples of parent id, dependent and end, as scripts
// return them, for parents in queue.
func owedList(queue string, triples []any) []owed {
	var out []owed
	for i := 0; i+2 < len(triples); i += 3 {
		pid, _ := triples[i].(string)
		c, _ := triples[i+1].(string)
		end, _ := triples[i+2].(string)
		if child, ok := parseRef(c); ok {
			out = append(out, owed{parent: JobRef{Queue: queue, ID: pid}, child: child, end: end})
		}
	}
	return out
}

// readOwed reads what the given parents of queue owe their dependents in
// other queues (their outbox entries), in one round trip.
func readOwed(ctx context.Context, rdb redis.UniversalClient, prefix, queue string, ids []string) ([]owed, error) {
	k := newKeys(prefix, queue)
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGetAll(ctx, k.owed(id))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("rqgo: read what jobs of %q owe their dependents: %w", queue, err)
	}
	var out []owed
	for i, c := range cmds {
		for cref, end := range c.Val() {
			if child, ok := parseRef(cref); ok {
				out = append(out, owed{parent: JobRef{Queue: queue, ID: ids[i]}, child: child, end: end})
			}
		}
	}
	return out, nil
}

// deliverOwed delivers ends that parents owe dependents in other queues:
// deliver.lua in each child queue (one round trip for all), then
// delivered.lua clears them from each parent queue's outbox (one more).
// What a delivery cancels may owe in turn; that is delivered next, level by
// level. Each step is idempotent and the outbox is cleared only after the
// delivery, so a caller that dies anywhere leaves work a reaper finishes.
func deliverOwed(ctx context.Context, rdb redis.UniversalClient, prefix string, todo []owed, hook stepHook) error {
	for len(todo) > 0 {
		byChild := map[string][]owed{}
		var order []string
		for _, o := range todo {
			if _, ok := byChild[o.child.Queue]; !ok {
				order = append(order, o.child.Queue)
			}
			byChild[o.child.Queue] = append(byChild[o.child.Queue], o)
		}
		calls := make([]*scriptCall, len(order))
		for n, cq := range order {
			args := []any{0}
			for _, o := range byChild[cq] {
				args = append(args, o.child.ID, o.parent.String(), o.end)
			}
			calls[n] = &scriptCall{s: deliverScript, keys: []string{newKeys(prefix, cq).jobPrefix()}, args: args}
		}
		runScripts(ctx, rdb, calls)
		var next []owed
		for n, cq := range order {
			_, more, err := deliveredReply(calls[n].cmd, cq, len(byChild[cq]))
			if err != nil {
				return err
			}
			next = append(next, more...)
		}
		if !hook.at(stepDelivered) {
			return nil
		}
		byParent := map[string][]any{}
		order = order[:0]
		for _, o := range todo {
			if _, ok := byParent[o.parent.Queue]; !ok {
				order = append(order, o.parent.Queue)
			}
			byParent[o.parent.Queue] = append(byParent[o.parent.Queue], o.parent.ID, o.child.String())
		}
		calls = calls[:0]
		for _, pq := range order {
			calls = append(calls, &scriptCall{s: deliveredScript, keys: []string{newKeys(prefix, pq).outbox()}, args: byParent[pq]})
		}
		runScripts(ctx, rdb, calls)
		for n, pq := range order {
			if err := calls[n].cmd.Err(); err != nil {
				return fmt.Errorf("rqgo: clear the outbox of %q: %w", pq, err)
			}
		}
		todo = next
	}
	return nil
}
