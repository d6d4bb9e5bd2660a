package rqgo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func init() { childModes["worker"] = childWorker }

// childWorker runs a worker for the tests below, in its own process. Its
// "hold" handler prints "started <id> <attempt>" and then holds the job for
// $RQGO_TEST_HOLD (ignoring cancellation) before returning "child".
func childWorker() int {
	lease, _ := time.ParseDuration(os.Getenv("RQGO_TEST_LEASE"))
	hold, _ := time.ParseDuration(os.Getenv("RQGO_TEST_HOLD"))
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv("RQGO_TEST_ADDR")})
	defer rdb.Close()
	w := NewWorker(rdb, WorkerOptions{
		Prefix: os.Getenv("RQGO_TEST_PREFIX"),
		Lease:  lease,
		Burst:  true,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	w.Register("hold", func(ctx context.Context, j *Job) (any, error) {
		fmt.Printf("started %s %d\n", j.ID, j.Attempt)
		time.Sleep(hold)
		return "child", nil
	})
	if err := w.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("exited")
	return 0
}

// runUntilKilled runs w, in a child process, with a handler for fn that
// prints "started <id>" and holds its job until the process is killed.
func runUntilKilled(w *Worker, fn string) int {
	w.Register(fn, func(ctx context.Context, j *Job) (any, error) {
		fmt.Printf("started %s\n", j.ID)
		select {}
	})
	if err := w.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// startChild starts a child worker and returns it with its stdout lines.
func startChild(t *testing.T, e *testEnv, lease, hold time.Duration) (*exec.Cmd, <-chan string) {
	t.Helper()
	return startChildMode(t, "worker",
		"RQGO_TEST_ADDR="+e.addr,
		"RQGO_TEST_PREFIX="+e.prefix,
		"RQGO_TEST_LEASE="+lease.String(),
		"RQGO_TEST_HOLD="+hold.String(),
	)
}

// startChildMode starts this test binary as a child in the given role (see
// childModes) with env added to its environment, logs its stderr to the
// test, and returns it with its stdout lines. The child is killed when the
// test ends.
func startChildMode(t *testing.T, mode string, env ...string) (*exec.Cmd, <-chan string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), "RQGO_TEST_CHILD="+mode), env...)
	cmd.Stderr = &testLineWriter{log: testLogger(t)}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Kill()
		cmd.Wait()
	})
	lines := make(chan string, 256)
	go func() {
		defer close(lines)
		s := bufio.NewScanner(out)
		for s.Scan() {
			lines <- s.Text()
		}
	}()
	return cmd, lines
}

func expectLine(t *testing.T, lines <-chan string, prefix string) string {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("child exited before printing %q", prefix)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-timeout:
			t.Fatalf("child did not print %q within 15s", prefix)
		}
	}
}

type testLineWriter struct{ log *slog.Logger }

func (w *testLineWriter) Write(p []byte) (int, error) {
	w.log.Warn("child: " + strings.TrimSpace(string(p)))
	return len(p), nil
}

var _ io.Writer = (*testLineWriter)(nil)

// A worker killed with SIGKILL mid-job loses nothing: once its lease
// expires another worker's reaper puts the job back and it runs again.
func TestKilledWorkerJobRunsAgain(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		job, err := q.EnqueueContext(ctx, "hold", nil, Retry(3))
		if err != nil {
			t.Fatal(err)
		}
		const lease = 300 * time.Millisecond
		child, lines := startChild(t, e, lease, time.Hour)
		expectLine(t, lines, "started "+job.ID+" 1")
		if err := child.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		child.Wait()
		killed := time.Now()
		if got, _ := q.FetchJob(ctx, job.ID); got.Status != StatusStarted {
			t.Fatalf("job after the kill = %s, want still started (held by the dead worker's lease)", got.Status)
		}

		w := e.worker(t, WorkerOptions{Lease: lease})
		w.Register("hold", func(ctx context.Context, j *Job) (any, error) { return "recovered", nil })
		start(t, w)
		got := waitJob(t, q, job.ID, StatusFinished)
		t.Logf("job recovered %v after the kill (lease %v)", time.Since(killed).Round(time.Millisecond), lease)
		if got.Attempt != 2 || string(got.Result) != `"recovered"` || got.Error != "lease expired" {
			t.Errorf("recovered job: attempt %d result %s error %q; want attempt 2, \"recovered\", \"lease expired\"", got.Attempt, got.Result, got.Error)
		}
	})
}

// A worker paused past its lease (SIGSTOP) cannot write over the attempt
// that replaced it when it wakes up.
func TestZombieWorkerCannotAckOverNewOwner(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		job, _ := q.EnqueueContext(ctx, "hold", nil, Retry(3))
		const lease = 300 * time.Millisecond
		child, lines := startChild(t, e, lease, 500*time.Millisecond)
		expectLine(t, lines, "started "+job.ID+" 1")
		if err := child.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}

		w := e.worker(t, WorkerOptions{Lease: lease})
		w.Register("hold", func(ctx context.Context, j *Job) (any, error) { return "new owner", nil })
		stop := start(t, w)
		waitJob(t, q, job.ID, StatusFinished)
		stop()

		// Wake the zombie: its handler returns "child" at once and its worker
		// tries to record it, then exits.
		child.Process.Signal(syscall.SIGCONT)
		expectLine(t, lines, "exited")
		got, _ := q.FetchJob(ctx, job.ID)
		if got.Status != StatusFinished || string(got.Result) != `"new owner"` || got.Attempt != 2 || got.Worker != w.ID() {
			t.Errorf("job after the zombie woke: %s result %s attempt %d worker %s; want the new owner's finished attempt 2",
				got.Status, got.Result, got.Attempt, got.Worker)
		}
		if c, _ := q.Counts(ctx); c != (Counts{Finished: 1}) {
			t.Errorf("Counts = %+v, want exactly one finished job", c)
		}
	})
}

// The scripts themselves refuse a stale attempt token.
func TestStaleTokenIsRefused(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		job, _ := q.EnqueueContext(ctx, "f", nil)
		w := e.worker(t, WorkerOptions{Lease: 50 * time.Millisecond})
		w.handlerBase = ctx
		first := dequeueOne(t, w)
		w.finish(w.anyRun())
		// Expire the lease and reap: the job goes back to pending.
		e.rdb.ZAdd(ctx, q.k.active(), redis.Z{Score: 1, Member: job.ID})
		w.reap(ctx)
		second := dequeueOne(t, w)
		w.finish(w.anyRun())
		if first.token == second.token {
			t.Fatalf("both attempts got token %s", first.token)
		}
		k := q.k
		ack := func(token string) int64 {
			res, err := ackManyScript.Run(ctx, e.rdb, []string{k.active(), k.finished(), k.jobPrefix()}, -1, "1", job.ID, token, `"x"`).Int64Slice()
			if err != nil || len(res) != 1 {
				t.Fatalf("ack_many.lua = %v, %v; want one result", res, err)
			}
			return res[0]
		}
		fail := func(token string) int64 {
			return failScript.Run(ctx, e.rdb, []string{k.job(job.ID), k.active(), k.scheduled(), k.failed(), k.pending(), k.wake()}, job.ID, token, "e", -1, -1).Val().(int64)
		}
		extend := extendScript.Run(ctx, e.rdb, []string{k.active(), k.jobPrefix()}, 1000, job.ID, first.token).Val()
		release := releaseScript.Run(ctx, e.rdb, []string{k.job(job.ID), k.active(), k.pending(), k.wake()}, job.ID, first.token).Val()
		if a, f := ack(first.token), fail(first.token); a != 0 || f != 0 || release != int64(0) || fmt.Sprint(extend) != "["+first.token+"]" {
			t.Errorf("stale token: ack %d fail %d release %v extend lost %v; want all refused", a, f, release, extend)
		}
		if a := ack(second.token); a != 1 {
			t.Errorf("current token: ack = %d, want 1", a)
		}
		if a := ack(second.token); a != 0 {
			t.Errorf("second ack of the same attempt = %d, want 0", a)
		}
	})
}

func dequeueOne(t *testing.T, w *Worker) *Job {
	t.Helper()
	w.markAll() // as a wake-up would
	jobs, _, _, err := w.fetch(t.Context(), 1)
	if err != nil || len(jobs) != 1 {
		t.Fatalf("fetch = %d jobs, %v; want 1", len(jobs), err)
	}
	return jobs[0]
}

func (w *Worker) anyRun() *run {
	w.mu.Lock()
	defer w.mu.Unlock()
	for r := range w.running {
		r.cancel(errors.New("test"))
		return r
	}
	return nil
}

// Losing a lease cancels the handler with ErrLeaseLost and writes nothing.
func TestLostLeaseCancelsHandler(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		job, _ := q.EnqueueContext(ctx, "hold", nil)
		w := e.worker(t, WorkerOptions{Lease: 150 * time.Millisecond})
		running := make(chan struct{})
		cause := make(chan error, 1)
		w.Register("hold", func(ctx context.Context, j *Job) (any, error) {
			close(running)
			<-ctx.Done()
			cause <- context.Cause(ctx)
			return "should not be written", nil
		})
		stop := start(t, w)
		<-running
		// Someone else took the job over: its token changed.
		e.rdb.HSet(ctx, q.k.job(job.ID), "token", "other")
		if c := <-cause; !errors.Is(c, ErrLeaseLost) {
			t.Errorf("handler context cause = %v, want ErrLeaseLost", c)
		}
		stop()
		got, _ := q.FetchJob(ctx, job.ID)
		if got.Status != StatusStarted || len(got.Result) != 0 {
			t.Errorf("job after lost lease = %s result %s, want untouched (still started, no result)", got.Status, got.Result)
		}
	})
}

// Shutdown lets running handlers finish within the grace period.
func TestGracefulShutdownFinishesRunningJobs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		const n = 3
		for range n {
			q.EnqueueContext(ctx, "slow", nil)
		}
		w := e.worker(t, WorkerOptions{ShutdownTimeout: 10 * time.Second})
		started := make(chan struct{}, n)
		finish := make(chan struct{})
		w.Register("slow", func(ctx context.Context, j *Job) (any, error) {
			started <- struct{}{}
			<-finish
			return "done", nil
		})
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error)
		go func() { done <- w.Run(runCtx) }()
		for range n {
			<-started
		}
		cancel()
		q.EnqueueContext(ctx, "slow", nil) // arrives during shutdown: must not start
		close(finish)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if c, _ := q.Counts(ctx); c != (Counts{Finished: n, Queued: 1}) {
			t.Errorf("Counts after shutdown = %+v, want %d finished and the late job queued", c, n)
		}
	})
}

// Past the grace period, unfinished jobs go straight back to pending, their
// interrupted attempt not counted, and run again elsewhere.
func TestShutdownPastGraceReleasesJobs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		const n = 3
		var ids []string
		for range n {
			j, _ := q.EnqueueContext(ctx, "stuck", nil)
			ids = append(ids, j.ID)
		}
		w := e.worker(t, WorkerOptions{ShutdownTimeout: 50 * time.Millisecond})
		started := make(chan struct{}, n)
		w.Register("stuck", func(ctx context.Context, j *Job) (any, error) {
			started <- struct{}{}
			<-ctx.Done()
			return nil, context.Cause(ctx)
		})
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error)
		go func() { done <- w.Run(runCtx) }()
		for range n {
			<-started
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			got, _ := q.FetchJob(ctx, id)
			if got.Status != StatusQueued || got.Attempt != 0 {
				t.Errorf("job %s after shutdown = %s attempt %d, want queued with the attempt not counted", id, got.Status, got.Attempt)
			}
		}
		if c, _ := q.Counts(ctx); c != (Counts{Queued: n}) {
			t.Errorf("Counts after shutdown = %+v, want %d queued", c, n)
		}

		w2 := e.worker(t, WorkerOptions{})
		w2.Register("stuck", func(ctx context.Context, j *Job) (any, error) { return "ok", nil })
		runBurst(t, w2)
		for _, id := range ids {
			if got, _ := q.FetchJob(ctx, id); got.Status != StatusFinished || got.Attempt != 1 {
				t.Errorf("job %s = %s attempt %d, want finished on attempt 1", id, got.Status, got.Attempt)
			}
		}
	})
}

// A damaged job hash (written by another tool) must not make the fetch
// script fail halfway: Redis does not roll scripts back, so the jobs it had
// already popped would be lost.
func TestDamagedJobsDoNotBreakFetch(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		before, _ := q.EnqueueContext(ctx, "ok", nil)
		badAttempt, _ := q.EnqueueContext(ctx, "ok", nil)
		e.rdb.HSet(ctx, q.k.job(badAttempt.ID), "attempt", "many", "max_retries", "x", "args", "{not json")
		notAHash, _ := q.EnqueueContext(ctx, "ok", nil)
		e.rdb.Del(ctx, q.k.job(notAHash.ID))
		e.rdb.Set(ctx, q.k.job(notAHash.ID), "a string", 0)
		after, _ := q.EnqueueContext(ctx, "ok", nil)

		w := e.worker(t, WorkerOptions{})
		w.Register("ok", func(ctx context.Context, j *Job) (any, error) { return "fine", nil })
		runBurst(t, w)
		for _, id := range []string{before.ID, after.ID} {
			if got, _ := q.FetchJob(ctx, id); got.Status != StatusFinished {
				t.Errorf("healthy job %s = %s, want finished", id, got.Status)
			}
		}
		got, err := q.FetchJob(ctx, badAttempt.ID)
		if !errors.Is(err, ErrMalformedJob) || got.Status != StatusFailed || !strings.Contains(got.Error, "malformed job") {
			t.Errorf("damaged job = %v, %v; want failed as a malformed job", got, err)
		}
	})
}
