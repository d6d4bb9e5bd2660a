package rqgo

import (
	"context"
	"fmt"
	"testing"

	"github.com/rqgo/rqgo/internal/redistest"
)

// Limits work on a Cluster, each in its queue's slot: a worker of queues on
// three masters (so it waits on the wake channels) obeys a Concurrency on
// one, a KeyConcurrency on another and a pause on the third, and Resume
// reaches it, with no slot error logged.
func TestClusterLimits(t *testing.T) {
	skipShort(t)
	c := redistest.StartCluster(t, 3, 0)
	e := clusterEnv(t, c)
	ctx := t.Context()
	names, shard := queuesOnShards(t, c, e.prefix, 1)
	t.Logf("queues and their masters: %v", shard)
	capped, keyed, paused := e.queue(names[0]), e.queue(names[1]), e.queue(names[2])
	if err := capped.SetLimits(ctx, Limits{Concurrency: 2}); err != nil {
		t.Fatal(err)
	}
	// UpdateLimits's transaction runs on the queue's master too.
	if err := keyed.UpdateLimits(ctx, func(l *Limits) { l.KeyConcurrency = 1 }); err != nil {
		t.Fatal(err)
	}
	if err := paused.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	const n = 12
	for i := range n {
		if _, err := capped.EnqueueContext(ctx, "capped", i); err != nil {
			t.Fatal(err)
		}
		if _, err := keyed.EnqueueContext(ctx, "keyed", i, LimitKey(fmt.Sprint("k", i%3))); err != nil {
			t.Fatal(err)
		}
		if _, err := paused.EnqueueContext(ctx, "paused", i); err != nil {
			t.Fatal(err)
		}
	}
	log, rec := recordingLogger(t)
	gc, gk := newGauge(), newGauge()
	w := e.worker(t, WorkerOptions{Queues: names, Concurrency: 8, Logger: log})
	w.Register("capped", gc.handler)
	w.Register("keyed", gk.handler)
	w.Register("paused", func(ctx context.Context, j *Job) (any, error) { return nil, nil })
	start(t, w)
	gc.await(t, "2 capped jobs running", func() bool { return gc.get(gc.now, "") == 2 })
	gk.await(t, "one job of each key running", func() bool { return gk.get(gk.now, "") == 3 })
	gc.let(n)
	gk.let(n)
	for _, q := range []*Queue{capped, keyed} {
		gc.await(t, q.name+" finished", func() bool { c, _ := q.Counts(ctx); return c.Finished == n })
	}
	if p := gc.get(gc.peak, ""); p != 2 {
		t.Errorf("capped queue: at most %d ran at once, want 2", p)
	}
	for i := range 3 {
		if p := gk.get(gk.peak, fmt.Sprint("k", i)); p != 1 {
			t.Errorf("key k%d: at most %d ran at once, want 1", i, p)
		}
	}
	if c, _ := paused.Counts(ctx); c.Queued != n || c.Finished != 0 {
		t.Fatalf("paused queue: %+v, want all %d still queued", c, n)
	}
	if err := paused.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	gc.await(t, "the resumed queue finished", func() bool { c, _ := paused.Counts(ctx); return c.Finished == n })
	if lines := rec.matching(slotErrors...); len(lines) > 0 {
		t.Errorf("slot errors logged: %q", lines)
	}
}

// The reap's look at parked jobs of a queue without a flow hash stays in
// the queue's slot on a Cluster.
func TestClusterReapUnparks(t *testing.T) {
	skipShort(t)
	reapUnparks(t, clusterEnv(t, redistest.StartCluster(t, 3, 0)))
}
