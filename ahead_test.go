package rqgo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo/internal/redistest"
)

// dequeueAhead runs dequeue.lua once on queue q as a worker with free
// handler slots, asking for up to ahead jobs ahead, with own of its jobs
// holding slots; it returns the ids of the jobs holding a slot, those
// ahead, and the hold reason.
func dequeueAhead(t *testing.T, e *testEnv, q *Queue, free, ahead, own int) (slotted, aheadIDs []string, hold int64) {
	t.Helper()
	k := q.k
	keys := []string{k.pending(), k.active(), k.scheduled(), k.seq(), k.wake(), k.jobPrefix()}
	res, err := dequeueScript.Run(t.Context(), e.rdb, keys, free, 30000, "tester", "n", free, ahead, own).Slice()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for r := res[dequeuedHead:]; len(r) > 0; r = r[dequeuedLen:] {
		ids = append(ids, r[0].(string))
	}
	n := len(ids) - int(res[7].(int64))
	return ids[:n], ids[n:], res[4].(int64)
}

// ackAhead acks job id (its token read from its hash), handing its slot to
// the jobs next, which were ahead.
func ackAhead(t *testing.T, e *testEnv, q *Queue, id string, next ...string) {
	t.Helper()
	ctx := t.Context()
	args := []any{"0", "1", id, e.rdb.HGet(ctx, q.k.job(id), "token").Val(), "null"}
	if len(next) > 0 {
		args = append(args, "")
		for _, n := range next {
			args = append(args, n)
		}
	}
	codes, err := ackManyScript.Run(ctx, e.rdb, []string{q.k.active(), q.k.finished(), q.k.jobPrefix(), q.k.flow()}, args...).Int64Slice()
	if err != nil || len(codes) != 1 || codes[0] != 1 {
		t.Fatalf("ack of %s: %v, %v", id, codes, err)
	}
}

// Under a Concurrency, a fetch hands out jobs ahead beyond the free slots:
// leased, in the ahead zset, holding no slot, and only as many as the
// worker's jobs holding slots can pass theirs to. An ack hands a slot over
// to a job that was ahead, so the slots in use stay the same; a renewal
// keeps a job ahead, and a job ahead whose lease expires frees none.
func TestDequeueAhead(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("capped")
		if err := q.SetLimits(ctx, Limits{Concurrency: 2}); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for i := range 8 {
			j, err := q.EnqueueContext(ctx, "f", i)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, j.ID)
		}
		slotted, ahead, hold := dequeueAhead(t, e, q, 10, 10, 0)
		if !slices.Equal(slotted, ids[:2]) || !slices.Equal(ahead, ids[2:4]) || hold != 2 {
			t.Fatalf("first fetch: slots %v, ahead %v, hold %d; want %v in the 2 slots, %v ahead (one per slot handed out), hold 2",
				slotted, ahead, hold, ids[:2], ids[2:4])
		}
		zs, err := e.rdb.ZRangeWithScores(ctx, q.k.ahead(), 0, -1).Result()
		if err != nil || len(zs) != 2 {
			t.Fatalf("ahead zset %v, %v; want the 2 jobs ahead", zs, err)
		}
		for _, z := range zs {
			if l := e.rdb.ZScore(ctx, q.k.active(), z.Member.(string)).Val(); l != z.Score {
				t.Errorf("job %v ahead until %v, its lease until %v; want the same", z.Member, z.Score, l)
			}
			if st := e.rdb.HGet(ctx, q.k.job(z.Member.(string)), "status").Val(); st != "started" {
				t.Errorf("job %v ahead has status %q, want started (leased)", z.Member, st)
			}
		}
		// The slots are full for everyone: the jobs ahead hold none, but
		// take none either.
		if s, a, hold := dequeueAhead(t, e, q, 10, 0, 0); len(s)+len(a) != 0 || hold != 2 {
			t.Fatalf("second worker: %v, %v, hold %d; want nothing, hold 2", s, a, hold)
		}
		// Ahead only as many as its own slots can pass on: none more here.
		if s, a, hold := dequeueAhead(t, e, q, 10, 10, 0); len(s)+len(a) != 0 || hold != 2 {
			t.Fatalf("second worker asking ahead with no slot of its own: %v, %v, hold %d; want nothing", s, a, hold)
		}
		// ids[0] ends and hands its slot to ids[2]: still full.
		ackAhead(t, e, q, ids[0], ids[2])
		if left := e.rdb.ZRange(ctx, q.k.ahead(), 0, -1).Val(); !slices.Equal(left, ids[3:4]) {
			t.Fatalf("ahead after the hand-over: %v, want %v", left, ids[3:4])
		}
		if s, a, hold := dequeueAhead(t, e, q, 10, 0, 0); len(s)+len(a) != 0 || hold != 2 {
			t.Fatalf("after the hand-over: %v, %v, hold %d; want nothing, hold 2", s, a, hold)
		}
		// ids[1] ends handing over nothing: one slot frees.
		ackAhead(t, e, q, ids[1])
		if s, a, _ := dequeueAhead(t, e, q, 10, 0, 0); !slices.Equal(s, ids[4:5]) || len(a) != 0 {
			t.Fatalf("after an ack without hand-over: %v, %v; want %v in the freed slot", s, a, ids[4:5])
		}
		// Renewing the lease of ids[3], held ahead, keeps it ahead.
		lost, err := extendScript.Run(ctx, e.rdb, []string{q.k.active(), q.k.jobPrefix()}, 60000,
			ids[3], e.rdb.HGet(ctx, q.k.job(ids[3]), "token").Val()).StringSlice()
		if err != nil || len(lost) != 0 {
			t.Fatalf("renewal: %v, %v", lost, err)
		}
		if a, l := e.rdb.ZScore(ctx, q.k.ahead(), ids[3]).Val(), e.rdb.ZScore(ctx, q.k.active(), ids[3]).Val(); a != l {
			t.Fatalf("after its renewal, job ahead until %v, its lease until %v; want the same", a, l)
		}
		if s, a, hold := dequeueAhead(t, e, q, 10, 0, 0); len(s)+len(a) != 0 || hold != 2 {
			t.Fatalf("after the renewal: %v, %v, hold %d; want nothing, hold 2", s, a, hold)
		}
		// ids[3]'s lease expires: it held no slot, so none frees.
		for _, z := range []string{q.k.active(), q.k.ahead()} {
			if err := e.rdb.ZAdd(ctx, z, redis.Z{Score: 1, Member: ids[3]}).Err(); err != nil {
				t.Fatal(err)
			}
		}
		if s, a, hold := dequeueAhead(t, e, q, 10, 0, 0); len(s)+len(a) != 0 || hold != 2 {
			t.Fatalf("after the lease of a job ahead expired: %v, %v, hold %d; want nothing, hold 2", s, a, hold)
		}
		ackAhead(t, e, q, ids[2])
		if s, a, _ := dequeueAhead(t, e, q, 10, 0, 0); !slices.Equal(s, ids[5:6]) || len(a) != 0 {
			t.Fatalf("after an ack: %v, %v; want one slot: %v", s, a, ids[5:6])
		}
		// Jobs are taken ahead only from those no other worker could
		// start now: with one slot free and 2 jobs left, one ahead at most.
		ackAhead(t, e, q, ids[4])
		if s, a, _ := dequeueAhead(t, e, q, 1, 10, 5); !slices.Equal(s, ids[6:7]) || !slices.Equal(a, ids[7:8]) {
			t.Fatalf("last fetch: %v, %v; want %v in a slot and %v ahead", s, a, ids[6:7], ids[7:8])
		}
	})
}

// handOverCount counts, in the acks a client sends, the jobs started ahead
// of their queue's Concurrency in the slots of ended ones.
type handOverCount struct{ n atomic.Int64 }

func (h *handOverCount) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *handOverCount) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(int64(handOvers(cmd)))
		return next(ctx, cmd)
	}
}

func (h *handOverCount) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			h.n.Add(int64(handOvers(c)))
		}
		return next(ctx, cmds)
	}
}

// Workers whose handlers return within a round trip take jobs ahead under a
// Concurrency and start them in the slots of their jobs that end: the cap
// still holds over the fleet, every job runs once, and no job is left
// ahead.
func TestJobsAheadKeepTheCap(t *testing.T) { forEachBackend(t, jobsAheadKeepTheCap) }

// The same on a Cluster: the ahead zset lives in its queue's slot.
func TestClusterJobsAheadKeepTheCap(t *testing.T) {
	skipShort(t)
	jobsAheadKeepTheCap(t, clusterEnv(t, redistest.StartCluster(t, 3, 0)))
}

func jobsAheadKeepTheCap(t *testing.T, e *testEnv) {
	ctx := t.Context()
	q := e.queue("capped")
	const limit, n = 3, 600
	if err := q.SetLimits(ctx, Limits{Concurrency: limit}); err != nil {
		t.Fatal(err)
	}
	reqs := make([]EnqueueRequest, n)
	for i := range reqs {
		reqs[i] = EnqueueRequest{Func: "quick", Args: i}
	}
	if _, err := q.EnqueueMany(ctx, reqs); err != nil {
		t.Fatal(err)
	}
	handed := &handOverCount{}
	e.rdb.AddHook(handed)
	var running, peak, done atomic.Int64
	all := make(chan struct{})
	// The slots in use, as a fetch counts them, at one instant of
	// Redis's clock: leases not expired less jobs still ahead.
	used := redis.NewScript(`local t = redis.call('TIME')
local now = '(' .. (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
return redis.call('ZCOUNT', KEYS[1], now, '+inf') - redis.call('ZCOUNT', KEYS[2], now, '+inf')`)
	var most atomic.Int64
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-all:
				return
			default:
			}
			if n, err := used.Run(ctx, e.rdb, []string{q.k.active(), q.k.ahead()}).Int64(); err == nil {
				storeMaxInt(&most, n)
			}
		}
	}()
	for range 3 {
		w := e.worker(t, WorkerOptions{Queues: []string{"capped"}, Concurrency: 4})
		w.Register("quick", func(ctx context.Context, j *Job) (any, error) {
			storeMaxInt(&peak, running.Add(1))
			running.Add(-1)
			if done.Add(1) == n {
				close(all)
			}
			return nil, nil
		})
		start(t, w)
	}
	select {
	case <-all:
	case <-time.After(30 * time.Second):
		t.Fatalf("%d of %d jobs ran in 30 s", done.Load(), n)
	}
	// The last acks may still be on their way.
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := q.Counts(ctx)
		if err == nil && c == (Counts{Finished: n}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("counts %+v, %v; want all %d finished", c, err, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	<-sampled
	if m := most.Load(); m > limit {
		t.Errorf("%d slots in use at once, over the Concurrency %d", m, limit)
	}
	if p := peak.Load(); p > limit {
		t.Errorf("%d handlers ran at once, over the Concurrency %d", p, limit)
	}
	if done.Load() != n {
		t.Errorf("%d runs for %d jobs", done.Load(), n)
	}
	if handed.n.Load() == 0 {
		t.Error("no job was started ahead in another's slot")
	}
	if left := e.rdb.ZCard(ctx, q.k.ahead()).Val(); left != 0 {
		t.Errorf("%d jobs left in the ahead zset", left)
	}
	t.Logf("%d of %d jobs started in the slot of another", handed.n.Load(), n)
}

func storeMaxInt(m *atomic.Int64, v int64) {
	for {
		cur := m.Load()
		if v <= cur || m.CompareAndSwap(cur, v) {
			return
		}
	}
}

func init() { childModes["handover"] = childHandOver }

// childHandOver runs a worker of queue "capped" whose handler "quick"
// prints "ran <id> <attempt>" and returns, and whose first ack handing a
// slot over is held up (ackBlocker counting handOvers).
func childHandOver() int {
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv("RQGO_TEST_ADDR")})
	rdb.AddHook(ackBlocker{when: os.Getenv("RQGO_TEST_ACK_BLOCK"), count: handOvers})
	lease, _ := time.ParseDuration(os.Getenv("RQGO_TEST_LEASE"))
	w := NewWorker(rdb, WorkerOptions{
		Queues: []string{"capped"},
		Prefix: os.Getenv("RQGO_TEST_PREFIX"),
		Lease:  lease,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	w.Register("quick", func(ctx context.Context, j *Job) (any, error) {
		fmt.Printf("ran %s %d\n", j.ID, j.Attempt)
		return "child", nil
	})
	if err := w.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// A worker SIGKILLed while the ack that hands the slots of ended jobs to
// jobs it started ahead is on its way (not sent, or run by Redis but not
// answered) loses nothing: the jobs ahead ran in the dead worker, hold
// leases that expire, and run again; every job ends finished, and none is
// left ahead.
func TestKilledWhileHandingOverLosesNothing(t *testing.T) {
	for _, when := range []string{"before", "after"} {
		t.Run(when, func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, e *testEnv) {
				ctx := t.Context()
				q := e.queue("capped")
				if err := q.SetLimits(ctx, Limits{Concurrency: 3}); err != nil {
					t.Fatal(err)
				}
				const n = 200
				reqs := make([]EnqueueRequest, n)
				for i := range reqs {
					reqs[i] = EnqueueRequest{Func: "quick", Args: i, Options: []EnqueueOption{Retry(3)}}
				}
				jobs, err := q.EnqueueMany(ctx, reqs)
				if err != nil {
					t.Fatal(err)
				}
				const lease = 400 * time.Millisecond
				cmd, lines := startChildMode(t, "handover",
					"RQGO_TEST_ADDR="+e.addr,
					"RQGO_TEST_PREFIX="+e.prefix,
					"RQGO_TEST_LEASE="+lease.String(),
					"RQGO_TEST_ACK_BLOCK="+when,
				)
				ranInChild := map[string]bool{}
				timeout := time.After(15 * time.Second)
			wait:
				for {
					select {
					case l, ok := <-lines:
						if !ok {
							t.Fatalf("child exited after running %d jobs", len(ranInChild))
						}
						if f := strings.Fields(l); len(f) == 3 && f[0] == "ran" {
							ranInChild[f[1]] = true
						}
						if strings.HasPrefix(l, "acking ") {
							break wait
						}
					case <-timeout:
						t.Fatalf("after 15s the child ran %d jobs and handed no slot over", len(ranInChild))
					}
				}
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				cmd.Wait()
				if a := e.rdb.ZCard(ctx, q.k.ahead()).Val(); when == "before" && a == 0 {
					t.Error("killed with its hand-over unsent, but no job is ahead in Redis")
				}

				w := e.worker(t, WorkerOptions{Queues: []string{"capped"}, Lease: lease})
				w.Register("quick", func(ctx context.Context, j *Job) (any, error) { return "recovered", nil })
				start(t, w)
				for _, j := range jobs {
					got := waitJob(t, q, j.ID, StatusFinished)
					switch {
					case string(got.Result) != `"child"` && string(got.Result) != `"recovered"`:
						t.Errorf("job %s finished with result %s", j.ID, got.Result)
					case string(got.Result) == `"recovered"` && ranInChild[j.ID] && got.Attempt != 2:
						t.Errorf("job %s ran in the killed child and again here, finished on attempt %d, want 2", j.ID, got.Attempt)
					}
				}
				if c, _ := q.Counts(ctx); c != (Counts{Finished: n}) {
					t.Errorf("Counts = %+v, want all %d finished", c, n)
				}
				if a := e.rdb.ZCard(ctx, q.k.ahead()).Val(); a != 0 {
					t.Errorf("%d jobs left ahead", a)
				}
			})
		})
	}
}

// Jobs held ahead go back to the head of their queue, their attempt not
// counted, once no handler of the worker runs: no job of theirs will end
// to hand them a slot.
func TestStrandedJobsAheadGoBack(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("capped")
		if err := q.SetLimits(ctx, Limits{Concurrency: 1}); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for i := range 3 {
			j, err := q.EnqueueContext(ctx, "f", i)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, j.ID)
		}
		if s, a, _ := dequeueAhead(t, e, q, 1, 1, 0); !slices.Equal(s, ids[:1]) || !slices.Equal(a, ids[1:2]) {
			t.Fatalf("fetch: %v in the slot, %v ahead; want %v, %v", s, a, ids[:1], ids[1:2])
		}
		w := e.worker(t, WorkerOptions{Queues: []string{"capped"}})
		w.handlerBase = ctx
		j := &Job{ID: ids[1], Queue: "capped", token: e.rdb.HGet(ctx, q.k.job(ids[1]), "token").Val()}
		w.admit(newWorkerQueue(e.prefix, "capped"), j, nil, time.Now(), true)
		w.inflight.Add(1) // a handler runs: it may hand the job a slot
		w.releaseStranded(ctx)
		if !w.holding() {
			t.Fatal("the job ahead was given back while a handler ran")
		}
		w.inflight.Add(-1)
		w.releaseStranded(ctx)
		if w.holding() {
			t.Fatal("the job ahead is still held with no handler running")
		}
		if p := e.rdb.LRange(ctx, q.k.pending(), 0, -1).Val(); !slices.Equal(p, []string{ids[1], ids[2]}) {
			t.Errorf("queue %v, want %v: the job ahead back at its head", p, []string{ids[1], ids[2]})
		}
		h := e.rdb.HMGet(ctx, q.k.job(ids[1]), "status", "attempt").Val()
		if h[0] != "queued" || (h[1] != nil && h[1] != "0") {
			t.Errorf("the job given back is %v, attempt %v; want queued, no attempt counted", h[0], h[1])
		}
		if a := e.rdb.ZCard(ctx, q.k.ahead()).Val(); a != 0 {
			t.Errorf("%d jobs left ahead", a)
		}
	})
}

// A job started ahead in the slot of one whose outcome waits runs on that
// job's lease: when that lease is lost before the hand-over is recorded,
// so is the started job's.
func TestLostSlotLosesTheJobStartedInIt(t *testing.T) {
	w := NewWorker(redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}), WorkerOptions{Logger: slog.New(slog.DiscardHandler)})
	newRun := func(id string) *run {
		ctx, cancel := context.WithCancelCause(context.Background())
		return &run{job: &Job{ID: id}, ctx: ctx, cancel: cancel}
	}
	ended, next := newRun("ended"), newRun("next")
	ended.done, ended.handedTo = true, next
	w.mu.Lock()
	w.loseLocked(ended)
	w.mu.Unlock()
	if !next.lost || !errors.Is(context.Cause(next.ctx), ErrLeaseLost) {
		t.Fatalf("the job started in a lost slot: lost %v, cause %v; want lost, ErrLeaseLost", next.lost, context.Cause(next.ctx))
	}
}
