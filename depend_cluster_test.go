package rqgo

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rqgo/rqgo/internal/redistest"
)

// Workflows work on a Cluster with parents and children on different
// masters: a chain over three masters, a fan-in whose parts are on all of
// them, a failure that cancels dependents on another master, a hand-over
// cut off after the ack and finished by a reaper, and Waits on every
// master, with no slot error logged.
func TestClusterWorkflows(t *testing.T) {
	skipShort(t)
	c := redistest.StartCluster(t, 3, 0)
	e := clusterEnv(t, c)
	ctx := context.Background()
	names, shard := queuesOnShards(t, c, e.prefix, 1)
	t.Logf("queues and their masters: %v", shard)
	qs := make([]*Queue, len(names))
	for i, n := range names {
		qs[i] = e.queue(n)
	}
	log, rec := recordingLogger(t)
	var o order
	var died atomic.Int32
	// Both workers run every function: the second takes over what the
	// first leaves.
	register := func(w *Worker) *Worker {
		RegisterFunc(w, "step", func(ctx context.Context, s string) (string, error) {
			o.add(s)
			return s, nil
		})
		RegisterFunc(w, "num", func(ctx context.Context, n int) (int, error) { return n, nil })
		w.Register("boom", func(ctx context.Context, j *Job) (any, error) { return nil, fmt.Errorf("boom") })
		w.Register("sum", func(ctx context.Context, j *Job) (any, error) {
			ps, err := j.FetchParents(ctx)
			if err != nil {
				return nil, err
			}
			total := 0
			for _, p := range ps {
				var n int
				if err := p.DecodeResult(&n); err != nil {
					return nil, err
				}
				total += n
			}
			return total, nil
		})
		return w
	}
	w := register(e.worker(t, WorkerOptions{Queues: names, Concurrency: 4, Logger: log}))
	w.hook = dieAt(stepOwed, &died) // the first cross-master hand-over is left to a reaper

	// A chain of 9 steps over the three masters.
	var chain []*Job
	for i := range 9 {
		var opts []EnqueueOption
		if i > 0 {
			opts = append(opts, DependsOn(chain[i-1]))
		}
		j, err := qs[i%3].Enqueue("step", fmt.Sprint(i), opts...)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, j)
	}
	// A fan-in of 30 parts on every master, the callback on the first.
	var parts []*Job
	for i := range 30 {
		j, err := qs[i%3].Enqueue("num", i)
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, j)
	}
	sum, err := qs[0].Enqueue("sum", nil, DependsOn(parts...))
	if err != nil {
		t.Fatal(err)
	}
	// A failure on one master cancels a dependent on another.
	bad, _ := qs[1].Enqueue("boom", nil, Retry(0))
	orphan, err := qs[2].Enqueue("step", "orphan", DependsOn(bad))
	if err != nil {
		t.Fatal(err)
	}

	stop := start(t, w)
	// The hand-over cut off by the hook is finished by a reaper: make it due.
	waitFor(t, 10*time.Second, "the hook to cut a hand-over off", func() bool { return died.Load() > 0 })
	for _, n := range names {
		dueNow(t, e, n)
	}
	start(t, register(e.worker(t, WorkerOptions{Queues: names, Logger: log})))

	last := chain[len(chain)-1]
	waitEnd(t, qs[2], last.ID, StatusFinished)
	got := waitEnd(t, qs[0], sum.ID, StatusFinished)
	if string(got.Result) != "435" {
		t.Errorf("fan-in result %s, want 435", got.Result)
	}
	j := waitEnd(t, qs[2], orphan.ID, StatusCanceled)
	if want := "parent " + names[1] + ":" + bad.ID + " failed"; j.Error != want {
		t.Errorf("orphan's error %q, want %q", j.Error, want)
	}
	stop()
	var steps []string
	for _, s := range o.list() {
		if s != "orphan" {
			steps = append(steps, s)
		}
	}
	if want := "0 1 2 3 4 5 6 7 8"; strings.Join(steps, " ") != want {
		t.Errorf("chain ran %v, want %s", steps, want)
	}
	for _, q := range qs {
		if c, err := q.Counts(ctx); err != nil || c.Deferred != 0 {
			t.Errorf("%s: %+v, %v; want nothing deferred", q.Name(), c, err)
		}
	}
	if lines := rec.matching(slotErrors...); len(lines) > 0 {
		t.Errorf("slot errors logged:\n%s", strings.Join(lines, "\n"))
	}
}
