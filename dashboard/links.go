package dashboard

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo"
)

// maxLinked is how many of a job's parents, and how many of its
// dependents, its page lists; the rest are counted.
const maxLinked = 100

// linkedJob is a parent or dependent of the job a page shows, as far as
// its hash still tells: Gone when the job no longer exists (its result TTL
// passed, or it was deleted).
type linkedJob struct {
	rqgo.JobRef
	Func   string
	Status rqgo.Status
	Gone   bool
}

// jobLinks is what a job's page shows of its workflow: up to maxLinked
// parents (in the order they were given) and dependents (by queue and id),
// and how many of each are left out.
type jobLinks struct {
	Parents, Dependents         []linkedJob
	MoreParents, MoreDependents int
}

// readLinks reads the dependents of job j of q, then the func and status
// of each parent and dependent listed, with rqgo.FetchJobs: one round trip
// on a single Redis, one to each master concerned on a Cluster.
func readLinks(ctx context.Context, rdb redis.UniversalClient, prefix string, q *rqgo.Queue, j *rqgo.Job) (jobLinks, error) {
	deps, err := q.Dependents(ctx, j.ID)
	if err != nil {
		return jobLinks{}, err
	}
	slices.SortFunc(deps, func(a, b rqgo.JobRef) int {
		return cmp.Or(cmp.Compare(a.Queue, b.Queue), cmp.Compare(a.ID, b.ID))
	})
	parents := j.Parents
	l := jobLinks{MoreParents: max(len(parents)-maxLinked, 0), MoreDependents: max(len(deps)-maxLinked, 0)}
	parents, deps = parents[:len(parents)-l.MoreParents], deps[:len(deps)-l.MoreDependents]
	refs := append(slices.Clip(parents), deps...)
	if len(refs) == 0 {
		return l, nil
	}
	jobs, err := rqgo.FetchJobs(ctx, rdb, prefix, refs)
	if err != nil && jobs == nil {
		return jobLinks{}, fmt.Errorf("dashboard: read the jobs linked to job %s: %w", j.ID, err)
	}
	all := make([]linkedJob, len(refs))
	for i, lj := range jobs {
		all[i].JobRef = refs[i]
		if lj == nil {
			all[i].Gone = true
			continue
		}
		all[i].Func, all[i].Status = lj.Func, lj.Status
	}
	l.Parents, l.Dependents = all[:len(parents)], all[len(parents):]
	return l, nil
}

// jobKey is the key of a job's hash, as the README's key schema names it:
// the job page shows it, for HGETALL.
func jobKey(prefix, queue, id string) string {
	return prefix + ":{" + queue + "}:job:" + id
}

// uniqueKey is the key that holds the id of the job that holds unique key
// key of queue, as the README's key schema names it, for GET.
func uniqueKey(prefix, queue, key string) string {
	return prefix + ":{" + queue + "}:unique:" + key
}

// parkedKey is the key of the queue's parked jobs (id -> when parked, Unix
// ms), as the README's key schema names it.
func parkedKey(prefix, queue string) string {
	return prefix + ":{" + queue + "}:parked"
}

// cancelRequestedField is the job hash's field that holds when a cancel of
// the running job was requested (Unix ms), as the README's schema names it.
const cancelRequestedField = "cancel_requested"
