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

// realRedisURL is where integration tests find a real Redis.
func realRedisURL() string {
	if u := os.Getenv("REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379"
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
			t.Fatalf("no Redis at %s and RQGO_REQUIRE_REDIS=1: %v", realRedisURL(), err)
		}
		t.Skipf("no Redis at %s (%v); set REDIS_URL to run this against real Redis", realRedisURL(), err)
	}
	return e
}

var realRedis struct {
	once sync.Once
	err  error
}

// realRedisReachable pings the real Redis once per test binary, so a
// missing server costs one dial timeout, not one per test.
func realRedisReachable() error {
	realRedis.once.Do(func() {
		opts, err := redis.ParseURL(realRedisURL())
		if err != nil {
			realRedis.err = fmt.Errorf("REDIS_URL %q: %w", realRedisURL(), err)
			return
		}
		rdb := redis.NewClient(opts)
		defer rdb.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		realRedis.err = rdb.Ping(ctx).Err()
	})
	return realRedis.err
}

// dialReal connects to the real Redis, with a fresh prefix deleted when the
// test ends.
func dialReal(t testing.TB) (*testEnv, error) {
	if err := realRedisReachable(); err != nil {
		return nil, err
	}
	url := realRedisURL()
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL %q: %w", url, err)
	}
	rdb := redis.NewClient(opts)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, err
	}
	e := &testEnv{rdb: rdb, prefix: testPrefix(t), addr: opts.Addr}
	t.Cleanup(func() {
		deletePrefix(t, rdb, e.prefix)
		rdb.Close()
	})
	return e, nil
}

func testPrefix(t testing.TB) string {
	name := strings.NewReplacer("/", "-", " ", "_", ":", "_", "{", "_", "}", "_").Replace(t.Name())
	return fmt.Sprintf("rqgotest-%s-%s", name, newID()[:8])
}

// deletePrefix removes every key under prefix, and nothing else.
func deletePrefix(t testing.TB, rdb redis.UniversalClient, prefix string) {
	ctx := context.Background()
	iter := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 500 {
			rdb.Del(ctx, batch...)
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		rdb.Del(ctx, batch...)
	}
	if err := iter.Err(); err != nil {
		t.Errorf("cleaning up %s: %v", prefix, err)
	}
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
