package rqgo

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo/internal/redistest"
)

// ackFetchHook watches the pipelines that carry acks (ack_many.lua) and a
// fetch (dequeue.lua) together, and loses the reply of the first such fetch
// that leased jobs: Redis ran it, the worker gets an error.
type ackFetchHook struct {
	together atomic.Int64 // fetches sent with acks
	lostJobs atomic.Int64 // jobs leased by the fetch whose reply was lost
	lose     atomic.Bool
}

func (h *ackFetchHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *ackFetchHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h *ackFetchHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		acks := false
		for _, c := range cmds {
			acks = acks || isScript(c, ackManyScript)
		}
		for _, c := range cmds {
			if !acks || !isScript(c, dequeueScript) || c.Err() != nil {
				continue
			}
			h.together.Add(1)
			res, _ := c.(interface{ Slice() ([]any, error) }).Slice()
			if n := (len(res) - dequeuedHead) / dequeuedLen; n > 0 && h.lose.CompareAndSwap(true, false) {
				h.lostJobs.Store(int64(n))
				c.SetErr(errors.New("i/o timeout (reply lost by the test)"))
			}
		}
		return err
	}
}

// Under a Concurrency, a worker sends its next fetch of the capped queue in
// the same round trip as the acks that free its slots, rather than a fetch
// that the acks still on their way would leave with the queue full. The
// cap holds, and when the reply of such a fetch is lost, the jobs it leased
// are given back without counting the attempt and run once.
func TestCappedQueueFetchesWithAcks(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) { cappedFetchesWithAcks(t, e, "capped") })
}

func TestClusterCappedQueueFetchesWithAcks(t *testing.T) {
	skipShort(t)
	c := redistest.StartCluster(t, 3, 0)
	e := clusterEnv(t, c)
	names, _ := queuesOnShards(t, c, e.prefix, 1)
	cappedFetchesWithAcks(t, e, names[0])
}

func cappedFetchesWithAcks(t *testing.T, e *testEnv, name string) {
	ctx := t.Context()
	q := e.queue(name)
	if err := q.SetLimits(ctx, Limits{Concurrency: 2}); err != nil {
		t.Fatal(err)
	}
	// Loaded first: a pipelined call that finds its script missing runs
	// again after the others, out of order.
	for _, s := range []*script{dequeueScript, ackManyScript} {
		if err := s.Load(ctx, e.rdb); err != nil {
			t.Fatal(err)
		}
	}
	const jobs = 40
	ids := make([]string, jobs)
	for i := range ids {
		j, err := q.EnqueueContext(ctx, "work", i)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = j.ID
	}
	hook := &ackFetchHook{}
	hook.lose.Store(true)
	e.rdb.AddHook(hook)
	logs, logger := newLogBuffer(t)
	w := e.worker(t, WorkerOptions{Queues: []string{name}, Concurrency: 4, Lease: 5 * time.Second, Logger: logger})
	var (
		mu            sync.Mutex
		runs          = map[string]int{}
		running, peak atomic.Int64
	)
	w.Register("work", func(ctx context.Context, j *Job) (any, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		mu.Lock()
		runs[j.ID]++
		mu.Unlock()
		time.Sleep(time.Millisecond)
		return nil, nil
	})
	start(t, w)
	for _, id := range ids {
		if j := waitJob(t, q, id, StatusFinished); j.Attempt != 1 {
			t.Errorf("job %s finished on attempt %d, want 1: a fetch whose reply was lost counts no attempt", id, j.Attempt)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, id := range ids {
		if runs[id] != 1 {
			t.Errorf("job %s ran %d times, want once", id, runs[id])
		}
	}
	if p := peak.Load(); p > 2 {
		t.Errorf("%d jobs ran at once under Concurrency 2", p)
	}
	t.Logf("%d fetches went with acks; the lost reply leased %d jobs", hook.together.Load(), hook.lostJobs.Load())
	if hook.together.Load() == 0 {
		t.Fatal("no fetch went in the same round trip as acks")
	}
	if hook.lostJobs.Load() == 0 {
		t.Fatal("no reply of a fetch sent with acks was lost")
	}
	if !logs.contains("gave back jobs leased by a fetch whose reply was lost") {
		t.Error("worker log does not say that it gave back the jobs of the lost reply")
	}
}

// A Concurrency first set while a job runs: that job's ack, made by a
// worker whose last fetch found no limits, wakes nobody, and a worker held
// by the new cap still starts the next job once its hold ends (the
// earliest lease's expiry), so the job waits a lease at most.
func TestConcurrencySetWhileJobsRun(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("late")
		const lease = time.Second
		started := make(chan string, 2)
		release := make(chan struct{})
		handler := func(ctx context.Context, j *Job) (any, error) {
			started <- j.ID
			if string(j.Args) == "1" {
				<-release
			}
			return nil, nil
		}
		first, err := q.EnqueueContext(ctx, "f", 1)
		if err != nil {
			t.Fatal(err)
		}
		a := e.worker(t, WorkerOptions{Queues: []string{"late"}, Concurrency: 1, Lease: lease})
		a.Register("f", handler)
		stopA := start(t, a)
		if id := <-started; id != first.ID {
			t.Fatalf("started %s, want %s", id, first.ID)
		}
		if err := q.SetLimits(ctx, Limits{Concurrency: 1}); err != nil {
			t.Fatal(err)
		}
		next, err := q.EnqueueContext(ctx, "f", 2)
		if err != nil {
			t.Fatal(err)
		}
		b := e.worker(t, WorkerOptions{Queues: []string{"late"}, Concurrency: 1, Lease: lease})
		b.Register("f", handler)
		held := make(chan struct{}, 1)
		b.waiting = func() {
			if b.qstate[0].hold.Load() == holdFull {
				select {
				case held <- struct{}{}:
				default:
				}
			}
		}
		start(t, b)
		select {
		case <-held:
		case <-time.After(10 * time.Second):
			t.Fatal("the second worker was never held by the Concurrency")
		}
		// The first worker stops once its job returns: the ack it makes on
		// the way out is the one made without the flow hash, and it fetches
		// nothing more.
		stopped := make(chan struct{})
		go func() { stopA(); close(stopped) }()
		close(release)
		<-stopped
		select {
		case id := <-started:
			if id != next.ID {
				t.Fatalf("started %s, want %s", id, next.ID)
			}
		case <-time.After(lease + 5*time.Second):
			t.Fatal("the held worker never started the next job after the slot freed")
		}
		if j := waitJob(t, q, next.ID, StatusFinished); j.Worker != b.ID() {
			t.Errorf("next job ran on %s, want the held worker %s", j.Worker, b.ID())
		}
	})
}

// Parked jobs are listed in the order they were parked, apart from the
// queued ones; a listed job that started meanwhile is left out of
// ParkedJobs.
func TestParkedJobs(t *testing.T) { forEachBackend(t, listParked) }

// The same on a Cluster: the listing reads the queue's slot only.
func TestClusterParkedJobs(t *testing.T) {
	skipShort(t)
	listParked(t, clusterEnv(t, redistest.StartCluster(t, 3, 0)))
}

func listParked(t *testing.T, e *testEnv) {
	ctx := t.Context()
	q := e.queue("tenants")
	if err := q.SetLimits(ctx, Limits{KeyConcurrency: 1}); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 4 {
		j, err := q.EnqueueContext(ctx, "f", i, LimitKey("a"))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	plain, err := q.EnqueueContext(ctx, "f", "plain")
	if err != nil {
		t.Fatal(err)
	}
	if got, _, _ := dequeueRaw(t, e, q, 2); !slices.Equal(got, []string{ids[0], plain.ID}) {
		t.Fatalf("dequeue handed out %v, want %v", got, []string{ids[0], plain.ID})
	}
	// Parked in one call, so at one ms: listed in id order.
	want := slices.Sorted(slices.Values(ids[1:]))
	parked, err := q.ParkedJobIDs(ctx, 0, 10)
	if err != nil || !slices.Equal(parked, want) {
		t.Fatalf("ParkedJobIDs = %v, %v; want %v", parked, err, want)
	}
	if page, err := q.ParkedJobIDs(ctx, 1, 1); err != nil || !slices.Equal(page, want[1:2]) {
		t.Fatalf("ParkedJobIDs(1, 1) = %v, %v; want %v", page, err, want[1:2])
	}
	if queued, err := q.JobIDs(ctx, StatusQueued, 0, 10); err != nil || len(queued) != 0 {
		t.Fatalf("queued jobs %v, %v; want none (the parked ones are not in the queue)", queued, err)
	}
	// A parked job taken between the two reads of ParkedJobs.
	if err := e.rdb.HSet(ctx, q.k.job(want[0]), "status", "started").Err(); err != nil {
		t.Fatal(err)
	}
	jobs, err := q.ParkedJobs(ctx, 0, 10)
	if err != nil || len(jobs) != 2 {
		t.Fatalf("ParkedJobs = %d jobs, %v; want the 2 still queued", len(jobs), err)
	}
	for i, j := range jobs {
		if j.ID != want[i+1] || j.LimitKey != "a" || j.Status != StatusQueued || j.Queue != "tenants" {
			t.Errorf("parked job %d: %s, key %q, %s in %q; want %s, key a, queued in tenants", i, j.ID, j.LimitKey, j.Status, j.Queue, want[i+1])
		}
	}
	for _, bad := range [][2]int{{-1, 10}, {0, 0}} {
		if _, err := q.ParkedJobIDs(ctx, bad[0], bad[1]); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "offset") {
			t.Errorf("ParkedJobIDs(%d, %d) = %v; want ErrInvalid naming the offset and limit", bad[0], bad[1], err)
		}
	}
}
