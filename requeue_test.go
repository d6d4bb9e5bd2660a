package rqgo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// afterRequeue calls f with the ids of each requeue.lua call once Redis has
// run it, before the caller sees the reply.
type afterRequeue struct{ f func(ids []string) }

func (h *afterRequeue) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *afterRequeue) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		a := cmd.Args()
		if err == nil && len(a) > 8 && strings.HasPrefix(fmt.Sprint(a[0]), "eval") && fmt.Sprint(a[2]) == "5" &&
			strings.HasSuffix(fmt.Sprint(a[4]), ":failed") && strings.HasSuffix(fmt.Sprint(a[5]), ":canceled") {
			ids := make([]string, 0, len(a)-8)
			for _, id := range a[8:] {
				ids = append(ids, fmt.Sprint(id))
			}
			h.f(ids)
		}
		return err
	}
}

func (h *afterRequeue) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// failedJobs enqueues n jobs and has a worker fail each for good.
func failedJobs(t *testing.T, e *testEnv, q *Queue, n int) []string {
	t.Helper()
	var ids []string
	for range n {
		j, err := q.EnqueueContext(t.Context(), "bad", nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	w := e.worker(t, WorkerOptions{Queues: []string{q.name}})
	w.Register("bad", func(ctx context.Context, j *Job) (any, error) { return nil, SkipRetry(errors.New("bad job")) })
	runBurst(t, w)
	if c, err := q.Counts(t.Context()); err != nil || c != (Counts{Failed: int64(n)}) {
		t.Fatalf("Counts = %+v, %v; want %d failed", c, err, n)
	}
	return ids
}

// A job that fails again while RequeueFailed runs stays failed: it is
// requeued once, not once per page. Here every requeued job fails again at
// once, half of them within the millisecond of the newest failure, and the
// pages are smaller than the registry.
func TestRequeueFailedRequeuesEachJobOnce(t *testing.T) {
	defer func(p int64) { requeuePage = p }(requeuePage)
	requeuePage = 3
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		q := e.queue("default")
		ids := failedJobs(t, e, q, 7)
		newest, err := e.rdb.ZRangeWithScores(ctx, q.k.failed(), -1, -1).Result()
		if err != nil || len(newest) != 1 {
			t.Fatalf("newest failure = %v, %v", newest, err)
		}
		bound := newest[0].Score

		requeued := map[string]int{}
		e.rdb.AddHook(&afterRequeue{f: func(got []string) {
			for i, id := range got {
				if requeued[id]++; requeued[id] > 1 {
					cancel() // it would go on requeueing them
				}
				// A worker takes the job and it fails again.
				score := bound
				if i%2 == 1 {
					score = bound + 1000
				}
				p := e.rdb.TxPipeline()
				p.LRem(t.Context(), q.k.pending(), 0, id)
				p.HSet(t.Context(), q.k.job(id), "status", string(StatusFailed))
				p.ZAdd(t.Context(), q.k.failed(), redis.Z{Score: score, Member: id})
				if _, err := p.Exec(t.Context()); err != nil {
					t.Error(err)
				}
			}
		}})

		n, err := q.RequeueFailed(ctx)
		if err != nil || n != len(ids) {
			t.Errorf("RequeueFailed = %d, %v; want %d", n, err, len(ids))
		}
		for _, id := range ids {
			if requeued[id] != 1 {
				t.Errorf("job %s requeued %d times, want once", id, requeued[id])
			}
		}
		if len(requeued) != len(ids) {
			t.Errorf("requeued %d distinct jobs, want %d", len(requeued), len(ids))
		}
	})
}

// RequeueFailed interrupted between two pages loses nothing: the jobs of the
// first page are queued, the rest are still failed, and a second call
// requeues those.
func TestRequeueFailedInterrupted(t *testing.T) {
	defer func(p int64) { requeuePage = p }(requeuePage)
	requeuePage = 3
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		q := e.queue("default")
		ids := failedJobs(t, e, q, 7)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		e.rdb.AddHook(&afterRequeue{f: func([]string) { cancel() }})

		n, err := q.RequeueFailed(ctx)
		if !errors.Is(err, context.Canceled) || n != 3 {
			t.Fatalf("RequeueFailed = %d, %v; want 3 and the context's error", n, err)
		}
		c, err := q.Counts(t.Context())
		if err != nil || c != (Counts{Queued: 3, Failed: 4}) {
			t.Fatalf("after the interruption: Counts = %+v, %v; want 3 queued and 4 failed", c, err)
		}
		if n, err := q.RequeueFailed(t.Context()); err != nil || n != 4 {
			t.Fatalf("second RequeueFailed = %d, %v; want 4", n, err)
		}
		queued, err := e.rdb.LRange(t.Context(), q.k.pending(), 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(queued)
		slices.Sort(ids)
		if !slices.Equal(queued, ids) {
			t.Errorf("queued = %s\nwant %s", strings.Join(queued, " "), strings.Join(ids, " "))
		}
	})
}
