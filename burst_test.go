package rqgo

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// A burst worker does not wait for a job leased by another worker, here one
// that died: it runs what is ready and returns nil, and the leased job stays
// in the active set, started by the dead worker, until its lease expires.
func TestBurstDoesNotWaitForAnotherWorkersLease(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		leased, err := q.EnqueueContext(ctx, "f", nil)
		if err != nil {
			t.Fatal(err)
		}
		ready, err := q.EnqueueContext(ctx, "f", nil)
		if err != nil {
			t.Fatal(err)
		}
		// What dequeue.lua leaves for a worker that took the job, which then
		// died: the job in the active set until its lease ends, an hour on.
		const dead = "host.4242.dead"
		now := time.Now()
		deadline := now.Add(time.Hour).UnixMilli()
		_, err = e.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.LRem(ctx, q.k.pending(), 0, leased.ID)
			p.ZAdd(ctx, q.k.active(), redis.Z{Score: float64(deadline), Member: leased.ID})
			p.HSet(ctx, q.k.job(leased.ID), fStatus, string(StatusStarted), fWorker, dead,
				fAttempt, 1, fStartedAt, now.UnixMilli(), fToken, 1)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}

		w := e.worker(t, WorkerOptions{})
		var mu sync.Mutex
		var ran []string
		w.Register("f", HandlerFunc(func(_ context.Context, j *Job) (any, error) {
			mu.Lock()
			defer mu.Unlock()
			ran = append(ran, j.ID)
			return nil, nil
		}))
		start := time.Now()
		runBurst(t, w) // fails the test unless Run returns nil within 30s
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("burst run took %s, want it not to wait for the leased job", took)
		}
		if !slices.Equal(ran, []string{ready.ID}) {
			t.Errorf("burst worker ran %q, want only the ready job %s", ran, ready.ID)
		}
		score, err := e.rdb.ZScore(ctx, q.k.active(), leased.ID).Result()
		if err != nil || int64(score) != deadline {
			t.Errorf("leased job in the active set: score %v, %v; want %d, its lease deadline", score, err, deadline)
		}
		j, err := q.FetchJob(ctx, leased.ID)
		if err != nil || j.Status != StatusStarted || j.Worker != dead {
			t.Errorf("leased job after the burst run = %+v, %v; want started by %s", j, err, dead)
		}
	})
}
