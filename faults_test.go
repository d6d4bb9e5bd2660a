package rqgo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo/internal/redistest"
)

// persistent are redis-server arguments that keep every acknowledged write
// across a restart: an append-only file fsynced on every write.
var persistent = []string{"--appendonly", "yes", "--appendfsync", "always"}

// logBuffer collects a worker's log lines, for tests that check what it
// reported, and passes them on to the test log.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	t   *testing.T
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	return len(p), nil
}

func (b *logBuffer) contains(s string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Contains(b.buf.String(), s)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newLogBuffer(t *testing.T) (*logBuffer, *slog.Logger) {
	b := &logBuffer{t: t}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("worker log:\n%s", b)
		}
	})
	return b, slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// waitFor polls cond until it holds or the deadline passes (for states
// nothing signals, such as goroutines ending).
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A worker keeps running through a Redis outage: Redis goes down while two
// handlers run and one of them finishes during the outage. The worker logs
// and backs off; the running handler is not canceled by the blip; the
// outcome it could not record is recorded once Redis is back; it takes new
// jobs afterwards; and when Run returns no goroutine is left behind.
func TestWorkerSurvivesRedisOutage(t *testing.T) {
	srv := redistest.StartServer(t, persistent...)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	ctx := t.Context()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	baseline := runtime.NumGoroutine()

	logs, logger := newLogBuffer(t)
	w := NewWorker(rdb, WorkerOptions{Lease: 6 * time.Second, Concurrency: 4, Logger: logger})
	var (
		mu       sync.Mutex
		started  = map[string]chan struct{}{}
		release  = map[string]chan struct{}{}
		runs     = map[string]int{}
		canceled = map[string]error{}
	)
	for _, id := range []string{"during", "after", "spans"} {
		started[id], release[id] = make(chan struct{}), make(chan struct{})
	}
	w.Register("hold", func(ctx context.Context, j *Job) (any, error) {
		mu.Lock()
		runs[j.ID]++
		s, r := started[j.ID], release[j.ID]
		mu.Unlock()
		if s != nil {
			close(s)
			<-r
		}
		mu.Lock()
		canceled[j.ID] = context.Cause(ctx)
		mu.Unlock()
		return j.Attempt, nil
	})
	runCtx, stopRun := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- w.Run(runCtx) }()
	t.Cleanup(func() {
		stopRun()
		for _, r := range release {
			select {
			case <-r:
			default:
				close(r)
			}
		}
	})

	q := NewQueue("default", rdb)
	for _, id := range []string{"spans", "during"} {
		if _, err := q.EnqueueContext(ctx, "hold", nil, JobID(id)); err != nil {
			t.Fatal(err)
		}
		<-started[id]
	}

	// Redis goes away for 2.5s: longer than go-redis's own dial retries
	// (about 1.7s), shorter than the 6s lease.
	srv.Shutdown()
	close(release["during"])            // finishes while Redis is down: its ack fails
	time.Sleep(2500 * time.Millisecond) // the outage itself
	srv.Restart()
	close(release["spans"]) // finishes after Redis is back

	for _, id := range []string{"spans", "during"} {
		j := waitJob(t, q, id, StatusFinished)
		mu.Lock()
		n, cause := runs[id], canceled[id]
		mu.Unlock()
		if j.Attempt != 1 || string(j.Result) != "1" || n != 1 || cause != nil {
			t.Errorf("job %s: attempt %d result %s, ran %d times, handler context ended with %v; want finished on its only attempt, never canceled",
				id, j.Attempt, j.Result, n, cause)
		}
	}
	// It still takes new work.
	if _, err := q.EnqueueContext(ctx, "hold", nil, JobID("after")); err != nil {
		t.Fatal(err)
	}
	<-started["after"]
	close(release["after"])
	waitJob(t, q, "after", StatusFinished)

	for _, want := range []string{"recording job outcome failed; will retry"} {
		if !logs.contains(want) {
			t.Errorf("worker log lacks %q", want)
		}
	}
	if !logs.contains("fetching jobs failed; retrying") && !logs.contains("waiting for jobs failed") {
		t.Errorf("worker log says nothing of failing to fetch or wait for jobs during the outage")
	}

	stopRun()
	select {
	case err := <-runDone:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return within 15s of its context ending")
	}
	waitFor(t, 5*time.Second, "goroutines back to the count before Run", func() bool {
		return runtime.NumGoroutine() <= baseline
	})
	t.Logf("outage of 2.5s with 2 handlers running: both finished on attempt 1; goroutines %d before Run, %d after", baseline, runtime.NumGoroutine())
}

// Run returns and leaves no goroutine behind even when Redis is gone at the
// moment it shuts down with a handler still running.
func TestNoGoroutineLeakWhenRedisIsGone(t *testing.T) {
	srv := redistest.StartServer(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	ctx := t.Context()
	rdb.Ping(ctx)
	baseline := runtime.NumGoroutine()
	_, logger := newLogBuffer(t)
	w := NewWorker(rdb, WorkerOptions{Lease: time.Second, ShutdownTimeout: 200 * time.Millisecond, Logger: logger})
	started := make(chan struct{})
	w.Register("hold", func(ctx context.Context, j *Job) (any, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	})
	if _, err := NewQueue("default", rdb).EnqueueContext(ctx, "hold", nil); err != nil {
		t.Fatal(err)
	}
	runCtx, stopRun := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- w.Run(runCtx) }()
	<-started
	srv.Shutdown()
	stopRun()
	select {
	case <-runDone:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30s with Redis gone")
	}
	waitFor(t, 5*time.Second, "goroutines back to the count before Run", func() bool {
		return runtime.NumGoroutine() <= baseline
	})
}

// Enqueue against a Redis that cannot be reached returns an error, soon,
// and never panics: a refused port, and a server that accepts connections
// but never answers (where only the context or the client's read timeout
// can end the call).
func TestEnqueueUnreachableRedis(t *testing.T) {
	refused := func(t *testing.T) string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		return addr
	}
	silent := func(t *testing.T) string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var conns []net.Conn
		var mu sync.Mutex
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				conns = append(conns, c) // held open, never answered
				mu.Unlock()
			}
		}()
		t.Cleanup(func() {
			l.Close()
			mu.Lock()
			for _, c := range conns {
				c.Close()
			}
			mu.Unlock()
		})
		return l.Addr().String()
	}
	cases := []struct {
		name    string
		addr    func(*testing.T) string
		opts    redis.Options
		timeout time.Duration // the context's
		within  time.Duration
	}{
		{"refused port", refused, redis.Options{}, 500 * time.Millisecond, 2 * time.Second},
		{"refused port, no deadline", refused, redis.Options{}, 0, 5 * time.Second},
		{"silent server, context timeouts enabled", silent, redis.Options{ContextTimeoutEnabled: true}, 500 * time.Millisecond, 2 * time.Second},
		// go-redis applies a context's deadline to the connection only with
		// ContextTimeoutEnabled; otherwise its own dial and read timeouts
		// bound the call (5s with default options), and it checks the
		// context between retries.
		{"silent server, default options", silent, redis.Options{}, 500 * time.Millisecond, 8 * time.Second},
		{"silent server, no deadline", silent, redis.Options{ReadTimeout: 300 * time.Millisecond, MaxRetries: 1}, 0, 3 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := c.opts
			o.Addr = c.addr(t)
			rdb := redis.NewClient(&o)
			defer rdb.Close()
			ctx := context.Background()
			if c.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, c.timeout)
				defer cancel()
			}
			start := time.Now()
			done := make(chan error, 1)
			go func() {
				defer func() {
					if p := recover(); p != nil {
						done <- fmt.Errorf("panic: %v", p)
					}
				}()
				_, err := NewQueue("default", rdb).EnqueueContext(ctx, "f", map[string]int{"n": 1})
				done <- err
			}()
			select {
			case err := <-done:
				took := time.Since(start)
				t.Logf("Enqueue returned after %v: %v", took.Round(time.Millisecond), err)
				if err == nil || strings.HasPrefix(err.Error(), "panic:") {
					t.Fatalf("Enqueue = %v, want an error", err)
				}
				if !strings.HasPrefix(err.Error(), `rqgo: enqueue "f": `) {
					t.Errorf("Enqueue error %q does not say what failed", err)
				}
				if took > c.within {
					t.Errorf("Enqueue took %v, want under %v", took, c.within)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("Enqueue hung for 30s")
			}
		})
	}
}

// A job hash deleted, rewritten or replaced by another type while its
// handler runs: the worker reports it (a log line, or a failed job) and
// goes on; it never crashes, and the other jobs it runs are unaffected.
func TestJobDamagedWhileRunning(t *testing.T) {
	cases := []struct {
		name   string
		damage func(ctx context.Context, e *testEnv, key string)
		want   string // in the worker's log
	}{
		{"hash deleted", func(ctx context.Context, e *testEnv, key string) { e.rdb.Del(ctx, key) },
			"lease lost"},
		{"token overwritten", func(ctx context.Context, e *testEnv, key string) { e.rdb.HSet(ctx, key, "token", "forged") },
			"lease lost"},
		{"fields removed and args not JSON", func(ctx context.Context, e *testEnv, key string) {
			e.rdb.HDel(ctx, key, "func", "status", "queue")
			e.rdb.HSet(ctx, key, "args", "{not json")
		}, ""},
		{"replaced by a string", func(ctx context.Context, e *testEnv, key string) {
			e.rdb.Del(ctx, key)
			e.rdb.Set(ctx, key, "not a hash", 0)
		}, "lease lost"},
	}
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		for i, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				ctx := t.Context()
				name := fmt.Sprintf("damaged%d", i)
				q := e.queue(name)
				logs, logger := newLogBuffer(t)
				const lease = 300 * time.Millisecond
				w := e.worker(t, WorkerOptions{Queues: []string{name}, Lease: lease, Logger: logger})
				var (
					startedDamaged = make(chan struct{})
					startedOther   = make(chan struct{})
					release        = make(chan struct{})
					otherCause     atomic.Value
				)
				var onceDamaged, onceOther sync.Once
				w.Register("damaged", func(ctx context.Context, j *Job) (any, error) {
					onceDamaged.Do(func() { close(startedDamaged) })
					<-release
					return j.Attempt, nil
				})
				w.Register("other", func(ctx context.Context, j *Job) (any, error) {
					onceOther.Do(func() { close(startedOther) })
					<-release
					if err := context.Cause(ctx); err != nil {
						otherCause.Store(err)
					}
					return "fine", nil
				})
				w.Register("next", func(ctx context.Context, j *Job) (any, error) { return "next", nil })
				stop := start(t, w)
				damaged, err := q.EnqueueContext(ctx, "damaged", nil)
				if err != nil {
					t.Fatal(err)
				}
				other, _ := q.EnqueueContext(ctx, "other", nil)
				<-startedDamaged
				<-startedOther
				c.damage(ctx, e, q.k.job(damaged.ID))
				// Leave the damage in place for three leases (nine renewals).
				time.Sleep(3 * lease)
				close(release)

				if got := waitJob(t, q, other.ID, StatusFinished); string(got.Result) != `"fine"` || got.Attempt != 1 {
					t.Errorf("healthy job: result %s on attempt %d, want \"fine\" on attempt 1", got.Result, got.Attempt)
				}
				if cause := otherCause.Load(); cause != nil {
					t.Errorf("healthy job's handler was canceled: %v", cause)
				}
				// The worker goes on taking jobs.
				next, _ := q.EnqueueContext(ctx, "next", nil)
				waitJob(t, q, next.ID, StatusFinished)
				waitFor(t, 5*time.Second, "damaged job out of the active set", func() bool {
					return e.rdb.ZScore(ctx, q.k.active(), damaged.ID).Err() == redis.Nil
				})
				stop()
				if c.want != "" && !logs.contains(c.want) {
					t.Errorf("worker log lacks %q", c.want)
				}
				// Whatever is left of the job is consistent: a result, if any,
				// comes from the attempt the hash names.
				j, err := q.FetchJob(ctx, damaged.ID)
				switch {
				case err != nil && !errors.Is(err, ErrJobNotFound) && !errors.Is(err, ErrMalformedJob) && !strings.Contains(err.Error(), "WRONGTYPE"):
					t.Errorf("FetchJob of the damaged job = %v", err)
				case j != nil && len(j.Result) > 0 && string(j.Result) != strconv.Itoa(j.Attempt):
					t.Errorf("damaged job has the result of attempt %s but its last attempt is %d: a stale attempt's outcome was recorded", j.Result, j.Attempt)
				}
			})
		}
	})
}
