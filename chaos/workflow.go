package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rqgo/rqgo"
)

// A workflow is a chain or a fan-in of jobs over two queues, the run's
// first two, which every fault strikes like the plain jobs around them:
//
//   - chain c has 3 to 6 steps, each depending on the one before and in the
//     other queue than it. In one chain of four a step fails for good, so
//     the steps after it are canceled; in another one of four a step fails
//     for good and the next has AllowFailure, so the chain goes on to its
//     end.
//   - fan-in f has 3 to 7 parts, in either queue, and a callback that
//     depends on all of them. No part, one or two fail for good (f%3), and
//     every other callback has AllowFailure; the others are canceled when
//     a part failed.
//
// Some jobs fail at their first attempt and are retried, so a parent
// ends later than its first run; one in 23 works for 2.5 leases.
type workflow struct {
	kind string // "chain" or "fan-in"
	n    int
	jobs []*flowJob // parents before their children: the order of enqueue
}

// flowJob is one job of a workflow, with the outcome the plan makes
// certain whatever the faults do.
type flowJob struct {
	id           string
	n            int // args.N: numbers after the plain jobs'
	q            *rqgo.Queue
	parents      []*flowJob
	allowFailure bool
	fail         string // failAlways, failOnce or ""
	ms           int
	want         rqgo.Status // finished, failed or canceled
	// wantErr are the errors a canceled job may have: one per parent that
	// did not finish (the first end delivered cancels it).
	wantErr []string
}

func (j *flowJob) ref() string { return j.q.Name() + ":" + j.id }

// planFlows lays out cfg.Chains chains and cfg.FanIns fan-ins and places
// them, alternately, evenly among the plain jobs: workflow k is enqueued
// with the wave of job k×Jobs/workflows.
func (h *harness) planFlows() {
	two := []*rqgo.Queue{h.qs[0], h.qs[min(1, len(h.qs)-1)]}
	h.flowJobs = map[string]*flowJob{}
	h.flowsAt = map[int][]*workflow{}
	n := h.cfg.Jobs
	add := func(w *workflow, id string, q int, parents []*flowJob, allowFailure bool, fail string) *flowJob {
		j := &flowJob{id: id, n: n, q: two[q%2], parents: parents, allowFailure: allowFailure, fail: fail}
		if n%23 == 11 {
			j.ms = int(h.cfg.Lease.Milliseconds() * 5 / 2)
		}
		n++
		for _, p := range parents {
			if p.want != rqgo.StatusFinished && !allowFailure {
				j.want = rqgo.StatusCanceled
				j.wantErr = append(j.wantErr, "parent "+p.ref()+" "+string(p.want))
			}
		}
		if j.want == "" {
			j.want = rqgo.StatusFinished
			if fail == failAlways {
				j.want = rqgo.StatusFailed
			}
		}
		w.jobs = append(w.jobs, j)
		h.flowJobs[id] = j
		return j
	}
	var chains, fanins []*workflow
	for c := range h.cfg.Chains {
		w := &workflow{kind: "chain", n: c}
		steps := 3 + (c/4)%4
		bad := (c / 4) % (steps - 1) // the step that fails for good, in chains c%4 = 1 and 3
		var prev []*flowJob
		for s := range steps {
			fail := ""
			switch {
			case c%2 == 1 && s == bad:
				fail = failAlways
			case (c+s)%5 == 0:
				fail = failOnce
			}
			j := add(w, fmt.Sprintf("chain-%04d-%d", c, s), c+s, prev, c%4 == 3 && s == bad+1, fail)
			prev = []*flowJob{j}
		}
		chains = append(chains, w)
	}
	for f := range h.cfg.FanIns {
		w := &workflow{kind: "fan-in", n: f}
		parts := 3 + (f/6)%5
		first := (f / 3) % parts
		var ps []*flowJob
		for p := range parts {
			fail := ""
			switch {
			case f%3 >= 1 && p == first, f%3 == 2 && p == (first+1)%parts:
				fail = failAlways
			case (f+p)%4 == 0:
				fail = failOnce
			}
			ps = append(ps, add(w, fmt.Sprintf("fanin-%04d-%d", f, p), f+p, nil, false, fail))
		}
		add(w, fmt.Sprintf("fanin-%04d-cb", f), f, ps, (f/3)%2 == 1, "")
		fanins = append(fanins, w)
	}
	var flows []*workflow
	for k := range max(len(chains), len(fanins)) {
		if k < len(chains) {
			flows = append(flows, chains[k])
		}
		if k < len(fanins) {
			flows = append(flows, fanins[k])
		}
	}
	for k, w := range flows {
		at := k * h.cfg.Jobs / len(flows)
		h.flowsAt[at] = append(h.flowsAt[at], w)
	}
}

// enqueueFlow enqueues a workflow's jobs, parents first, each with its own
// id (tried again like a plain job's).
func (h *harness) enqueueFlow(w *workflow) error {
	for _, j := range w.jobs {
		var opts []rqgo.EnqueueOption
		if len(j.parents) > 0 {
			ps := make([]*rqgo.Job, len(j.parents))
			for i, p := range j.parents {
				ps[i] = &rqgo.Job{ID: p.id, Queue: p.q.Name()}
			}
			opts = append(opts, rqgo.DependsOn(ps...))
			if j.allowFailure {
				opts = append(opts, rqgo.AllowFailure())
			}
		}
		if _, err := h.enqueueAs(j.q, j.id, args{N: j.n, MS: j.ms, Fail: j.fail}, opts...); err != nil {
			return err
		}
	}
	return nil
}

// flowQueues are the queues of the workflows: the first two.
func (h *harness) flowQueues() []*rqgo.Queue {
	if len(h.qs) == 1 {
		return h.qs
	}
	return h.qs[:2]
}

// orderSlack is how much earlier than its parent's ended_at a child's run
// may be recorded. Both are the Unix ms of this host's clock truncated (the
// parent's end by Redis's TIME in the script that releases the child, the
// run's start by the worker before the handler, after the dequeue), so a
// run can never be recorded earlier; the slack of one ms allows for the
// resolution alone.
const orderSlack = time.Millisecond

// checkFlows judges the workflows. where holds the registries of every job
// (the workflows' are taken out), runs the recorded executions.
//
//   - Outcome: each job ended as the plan says, in the registry of its
//     status; a canceled one never ran, with the error naming a parent that
//     did not finish; a finished one holds the result of its last attempt.
//   - Order: each run of a child started no earlier than the end (ended_at,
//     Redis's clock) of every parent, less orderSlack; every parent
//     finished, or, with AllowFailure, ended.
//   - Releases: a child runs again only when a fault explains it, as a
//     plain job does (h.explained); a retry the plan makes (failOnce) is
//     expected. A child released twice would run twice with no fault near.
//     A repeat with no fault near whose first run's worker failed to renew
//     its leases meanwhile (renewFailed: Redis or the host too slow to
//     answer within the lease) is a lost lease, not a double release; it
//     fails the run all the same, as for a plain job.
//   - Nothing stranded: no job deferred, no delivery owed (outbox) and no
//     open parent left in either queue.
func (h *harness) checkFlows(ctx context.Context, r *report, where map[string][]string, runs map[string][]execution,
	renewFailed map[string][]time.Time, problem func(string, ...any)) error {
	var jobs []*flowJob
	for _, w := range h.allFlows() {
		jobs = append(jobs, w.jobs...)
	}
	hashes := make([]*redis.MapStringStringCmd, len(jobs))
	open := make([]*redis.IntCmd, len(jobs))
	if _, err := h.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, j := range jobs {
			hashes[i] = p.HGetAll(ctx, jobKey(j.q.Name(), j.id))
			open[i] = p.Exists(ctx, prefixKey(j.q.Name(), "parents:"+j.id))
		}
		return nil
	}); err != nil {
		return fmt.Errorf("reading workflow jobs: %w", err)
	}
	hash := map[string]map[string]string{}
	for i, j := range jobs {
		hash[j.id] = hashes[i].Val()
		r.OpenLinksLeft += int(open[i].Val())
	}
	for _, q := range h.flowQueues() {
		c, err := q.Counts(ctx)
		if err != nil {
			return err
		}
		r.DeferredLeft += int(c.Deferred)
		if c.Deferred > 0 {
			ids, _ := q.JobIDs(ctx, rqgo.StatusDeferred, 0, 5)
			var s []string
			for _, id := range ids {
				open, _ := h.rdb.SMembers(ctx, prefixKey(q.Name(), "parents:"+id)).Result()
				s = append(s, fmt.Sprintf("%s (open parents %v)", id, open))
			}
			problem("%d jobs of %s still deferred after the settle, e.g. %s", c.Deferred, q.Name(), strings.Join(s, ", "))
		}
		n, err := h.rdb.ZCard(ctx, prefixKey(q.Name(), "outbox")).Result()
		if err != nil {
			return err
		}
		r.OutboxLeft += int(n)
	}
	if r.OutboxLeft > 0 {
		problem("%d deliveries still owed in the outboxes of the workflow queues after the settle", r.OutboxLeft)
	}
	if r.OpenLinksLeft > 0 {
		problem("%d workflow jobs still have open parents after the settle", r.OpenLinksLeft)
	}

	at := func(t time.Time) string { return fmt.Sprintf("%.3fs", t.Sub(h.start).Seconds()) }
	var early, again []string
	for _, j := range jobs {
		r.FlowJobs++
		for _, p := range j.parents {
			if p.q != j.q {
				r.CrossQueue++
			}
		}
		in := where[j.id]
		delete(where, j.id)
		hs, ex := hash[j.id], runs[j.id]
		st := hs["status"]
		switch {
		case len(hs) == 0:
			r.Lost++
			problem("workflow job %s lost: its hash is gone (registries %v)", j.ref(), in)
		case len(in) != 1 || in[0] != j.q.Name()+"/"+registryOf(st):
			problem("workflow job %s is %s but in registries %v", j.ref(), st, in)
		}
		switch rqgo.Status(st) {
		case j.want:
		case rqgo.StatusDeferred:
			// Counted above.
		default:
			problem("workflow job %s is %q (error %q, %d runs), want %s", j.ref(), st, hs["error"], len(ex), j.want)
		}
		switch {
		case st == string(rqgo.StatusCanceled) && len(ex) > 0:
			problem("workflow job %s ran %d times but was canceled (%q): it ran before its parents' end was known", j.ref(), len(ex), hs["error"])
		case st == string(rqgo.StatusCanceled) && j.want == rqgo.StatusCanceled && !slices.Contains(j.wantErr, hs["error"]):
			problem("workflow job %s canceled with error %q, want one of %q", j.ref(), hs["error"], j.wantErr)
		case st == string(rqgo.StatusFailed) && hs["error"] != failMsg:
			problem("workflow job %s failed with %q, want %q", j.ref(), hs["error"], failMsg)
		case st == string(rqgo.StatusFinished):
			if p := resultProblem(j.ref(), hs, ex); p != "" {
				problem("workflow %s", p)
			}
		}

		// Order: every run after every parent's end.
		release := int64(0)
		for _, p := range j.parents {
			ph := hash[p.id]
			end, err := strconv.ParseInt(ph["ended_at"], 10, 64)
			ended := err == nil && (ph["status"] == string(rqgo.StatusFinished) ||
				j.allowFailure && (ph["status"] == string(rqgo.StatusFailed) || ph["status"] == string(rqgo.StatusCanceled)))
			if len(ex) > 0 && !ended {
				r.OrderViolations += len(ex)
				early = append(early, fmt.Sprintf("%s ran at %s though its parent %s is %s", j.ref(), at(ex[0].at), p.ref(), ph["status"]))
			}
			release = max(release, end)
		}
		for _, e := range ex {
			if len(j.parents) > 0 && e.at.UnixMilli() < release-orderSlack.Milliseconds() {
				r.OrderViolations++
				early = append(early, fmt.Sprintf("%s attempt %d on %s started at %s, %d ms before its last parent ended",
					j.ref(), e.attempt, e.worker, at(e.at), release-e.at.UnixMilli()))
			}
		}

		// Releases: repeated runs need a fault near them.
		retried := false
		for k := 0; k+1 < len(ex); k++ {
			if j.fail == failOnce && !retried && ex[k].attempt == 1 && ex[k+1].attempt > 1 {
				retried = true
				r.FlowRetries++
				continue
			}
			r.Duplicates++
			if !h.explained(ex[k], ex[k+1]) {
				r.Unexplained++
				why := ""
				if slices.ContainsFunc(renewFailed[ex[k].worker], func(t time.Time) bool {
					return !t.Before(ex[k].at.Add(-h.cfg.Lease)) && !t.After(ex[k+1].at)
				}) {
					why = ", its renewals failed in between"
				} else if len(j.parents) > 0 {
					r.DoubleReleases++
					why = ", released twice?"
				}
				again = append(again, fmt.Sprintf("%s attempt %d on %s (%s) at %s, again (attempt %d on %s) at %s%s",
					j.ref(), ex[k].attempt, ex[k].worker, h.roles[ex[k].worker], at(ex[k].at), ex[k+1].attempt, ex[k+1].worker, at(ex[k+1].at), why))
			}
		}
	}
	for _, w := range h.allFlows() {
		last := w.jobs[len(w.jobs)-1]
		st := rqgo.Status(hash[last.id]["status"])
		if w.kind == "chain" {
			switch st {
			case rqgo.StatusFinished:
				r.ChainsCompleted++
			case rqgo.StatusCanceled:
				r.ChainsCanceled++
			}
			continue
		}
		switch st {
		case rqgo.StatusFinished:
			r.CallbacksRan++
			for _, p := range last.parents {
				if p.want != rqgo.StatusFinished {
					r.CallbacksAllowedFailure++
					break
				}
			}
		case rqgo.StatusCanceled:
			r.CallbacksCanceled++
		}
	}
	if r.OrderViolations > 0 {
		problem("%d workflow runs started before their parents had ended: %s", r.OrderViolations, strings.Join(firstFew(early), "; "))
	}
	if len(again) > 0 {
		problem("%d workflow runs were repeated with no kill, pause, Redis restart, stall or connection drop near them (%d of a child whose worker renewed its leases throughout: released twice?): %s",
			len(again), r.DoubleReleases, strings.Join(firstFew(again), "; "))
	}
	return nil
}

// allFlows returns the workflows in the order they are enqueued.
func (h *harness) allFlows() []*workflow {
	var out []*workflow
	for i := range h.cfg.Jobs {
		out = append(out, h.flowsAt[i]...)
	}
	return out
}

func firstFew(s []string) []string {
	if len(s) > 5 {
		return append(s[:5:5], "…")
	}
	return s
}

// registryOf names the registry of a job with this status.
func registryOf(status string) string {
	switch rqgo.Status(status) {
	case rqgo.StatusQueued:
		return "pending"
	case rqgo.StatusStarted:
		return "active"
	}
	return status
}
