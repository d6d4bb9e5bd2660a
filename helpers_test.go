package rqgo

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo/internal/redistest"
)

// testEnv is one backend a scenario runs against: miniredis, or the real
// Redis at $REDIS_URL. Each env has a key prefix of its own, deleted when the
// test ends.
type testEnv struct {
	rdb    redis.UniversalClient
	prefix string
	mr     *miniredis.Miniredis // nil on real Redis
	addr   string
}

// forEachBackend runs fn against miniredis, then against real Redis. The
// real-Redis run is skipped with a message when none answers, unless
// RQGO_REQUIRE_REDIS=1, when it fails instead.
func forEachBackend(t *testing.T, fn func(t *testing.T, e *testEnv)) {
	t.Helper()
	t.Run("miniredis", func(t *testing.T) { fn(t, newMiniEnv(t)) })
	t.Run("redis", func(t *testing.T) { fn(t, newRealEnv(t)) })
}

func newMiniEnv(t testing.TB) *testEnv {
	t.Helper()
	mr := miniredis.RunT(t)
	mr.ClockTTL(true) // keys expire with the wall clock, as in Redis
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	return &testEnv{rdb: rdb, prefix: testPrefix(t), mr: mr, addr: mr.Addr()}
}

func newRealEnv(t *testing.T) *testEnv {
	t.Helper()
	e, err := dialReal(t)
	if err != nil {
		if os.Getenv("RQGO_REQUIRE_REDIS") == "1" {
			t.Fatalf("no Redis at %s and RQGO_REQUIRE_REDIS=1: %v", redistest.SharedURL(), err)
		}
		t.Skipf("no Redis at %s (%v); set REDIS_URL to run this against real Redis", redistest.SharedURL(), err)
	}
	return e
}

// dialReal connects to the real Redis, with a fresh prefix deleted when the
// test ends.
func dialReal(t testing.TB) (*testEnv, error) {
	if err := redistest.SharedReachable(); err != nil {
		return nil, err
	}
	opts, _ := redis.ParseURL(redistest.SharedURL()) // parsed by SharedReachable
	rdb := redis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, err
	}
	e := &testEnv{rdb: rdb, prefix: testPrefix(t), addr: opts.Addr}
	t.Cleanup(func() {
		redistest.DeletePrefix(t, rdb, e.prefix)
		rdb.Close()
	})
	return e, nil
}

func testPrefix(t testing.TB) string {
	name := strings.NewReplacer("/", "-", " ", "_", ":", "_", "{", "_", "}", "_").Replace(t.Name())
	return fmt.Sprintf("rqgotest-%s-%s", name, newID()[:8])
}

func (e *testEnv) queue(name string, opts ...QueueOption) *Queue {
	return NewQueue(name, e.rdb, append([]QueueOption{WithPrefix(e.prefix)}, opts...)...)
}

// worker builds a worker on the env's prefix, logging to the test.
func (e *testEnv) worker(t *testing.T, o WorkerOptions) *Worker {
	o.Prefix = e.prefix
	if o.Logger == nil {
		o.Logger = testLogger(t)
	}
	return NewWorker(e.rdb, o)
}

// start runs w until the test ends (or the returned stop is called) and
// fails the test if Run returns an error.
func start(t *testing.T, w *Worker) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Worker.Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// runBurst runs w in burst mode to completion.
func runBurst(t *testing.T, w *Worker) {
	t.Helper()
	w.opts.Burst = true
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.Run(ctx); err != nil {
		t.Fatalf("Worker.Run: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("burst worker did not finish within 30s")
	}
}

// waitJob polls until the job has the wanted status (nothing can signal a
// change made by another process) and returns it.
func waitJob(t *testing.T, q *Queue, id string, want Status) *Job {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var last *Job
	for time.Now().Before(deadline) {
		j, err := q.FetchJob(context.Background(), id)
		if err == nil && j.Status == want {
			return j
		}
		last = j
		time.Sleep(5 * time.Millisecond)
	}
	if last != nil {
		t.Fatalf("job %s: status %s, want %s (error %q)", id, last.Status, want, last.Error)
	}
	t.Fatalf("job %s: never reached status %s", id, want)
	return nil
}

// testLogger logs warnings and worse to the test, and nothing once the test
// has ended.
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.close)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

var _ io.Writer = (*testWriter)(nil)
