package rqgo

import (
	"context"
	"errors"
	"testing"

	"github.com/rqgo/rqgo/internal/redistest"
)

// Running jobs on a Cluster: a worker of queues on three masters reports
// progress and headers for each, and a cancel reaches the running job on
// every master, with no slot error logged.
func TestClusterRunningJobs(t *testing.T) {
	skipShort(t)
	c := redistest.StartCluster(t, 3, 0)
	e := clusterEnv(t, c)
	ctx := t.Context()
	names, shard := queuesOnShards(t, c, e.prefix, 1)
	t.Logf("queues and their masters: %v", shard)
	stamp := func(next EnqueueFunc) EnqueueFunc {
		return func(ctx context.Context, jobs []*Job) error {
			for _, j := range jobs {
				j.Headers = map[string]string{"origin": j.Queue}
			}
			return next(ctx, jobs)
		}
	}
	log, rec := recordingLogger(t)
	started := make(chan *Job, 3)
	w := e.worker(t, WorkerOptions{Queues: names, Logger: log})
	w.Register("long", func(ctx context.Context, j *Job) (any, error) {
		if j.Headers["origin"] != j.Queue {
			return nil, SkipRetry(errors.New("headers lost"))
		}
		if err := j.SetProgress(ctx, 50); err != nil {
			return nil, SkipRetry(err)
		}
		if err := j.SetMeta(ctx, "queue", j.Queue); err != nil {
			return nil, SkipRetry(err)
		}
		started <- j
		<-ctx.Done()
		return nil, context.Cause(ctx)
	})
	start(t, w)
	var jobs []*Job
	for _, n := range names {
		j, err := e.queue(n, WithEnqueueMiddleware(stamp)).EnqueueContext(ctx, "long", nil)
		if err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, j)
	}
	for range jobs {
		<-started
	}
	for i, j := range jobs {
		q := e.queue(names[i])
		if err := q.Cancel(ctx, j.ID); err != nil {
			t.Fatal(err)
		}
		got := waitJob(t, q, j.ID, StatusCanceled)
		if string(got.Progress) != "50" || string(got.Meta["queue"]) != `"`+names[i]+`"` || got.Headers["origin"] != names[i] {
			t.Errorf("job on %s: progress %s meta %v headers %v", names[i], got.Progress, got.Meta, got.Headers)
		}
	}
	if lines := rec.matching(slotErrors...); len(lines) > 0 {
		t.Errorf("slot errors logged: %q", lines)
	}
}
