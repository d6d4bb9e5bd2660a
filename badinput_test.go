package rqgo

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// badInputs counts the bad inputs the tests of this file cover; each test
// adds its cases and TestBadInputCount reports the total.
var badInputs = map[string]int{}

// Every bad input to Enqueue gets an error wrapping ErrInvalid with exactly
// this text, before anything reaches Redis: never a panic, never a job
// silently dropped or changed.
func TestBadEnqueueInput(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: miniredis.RunT(t).Addr()})
	t.Cleanup(func() { rdb.Close() })
	long := strings.Repeat("x", 201)
	big := strings.Repeat("a", DefaultMaxArgsSize) // encodes to DefaultMaxArgsSize+2 bytes with its quotes
	cases := []struct {
		name  string
		queue string
		qopts []QueueOption
		fn    string
		args  any
		opts  []EnqueueOption
		want  string
	}{
		{name: "empty function name", fn: "", want: `rqgo: invalid argument: function name is empty`},
		{name: "function name with a space", fn: "send mail", want: `rqgo: invalid argument: function name "send mail" must not contain whitespace or control characters`},
		{name: "function name with a newline", fn: "send\nmail", want: `rqgo: invalid argument: function name "send\nmail" must not contain whitespace or control characters`},
		{name: "function name too long", fn: long, want: `rqgo: invalid argument: function name "` + long + `" is longer than 200 bytes`},
		{name: "empty queue name", queue: "", want: `rqgo: invalid argument: queue name is empty`},
		{name: "queue name with a space", queue: "high prio", want: `rqgo: invalid argument: queue name "high prio" must not contain braces, colons, whitespace or control characters`},
		{name: "queue name with a tab", queue: "high\tprio", want: `rqgo: invalid argument: queue name "high\tprio" must not contain braces, colons, whitespace or control characters`},
		{name: "queue name with an opening brace", queue: "a{b", want: `rqgo: invalid argument: queue name "a{b" must not contain braces, colons, whitespace or control characters`},
		{name: "queue name with a closing brace", queue: "a}b", want: `rqgo: invalid argument: queue name "a}b" must not contain braces, colons, whitespace or control characters`},
		{name: "queue name with a colon", queue: "a:b", want: `rqgo: invalid argument: queue name "a:b" must not contain braces, colons, whitespace or control characters`},
		{name: "queue name too long", queue: long, want: `rqgo: invalid argument: queue name "` + long + `" is longer than 200 bytes`},
		{name: "prefix with a colon", qopts: []QueueOption{WithPrefix("a:b")}, want: `rqgo: invalid argument: prefix "a:b" must not contain braces, colons, whitespace or control characters`},
		{name: "args a channel", args: make(chan int), want: `rqgo: invalid argument: args of "f" do not encode to JSON: json: unsupported type: chan int`},
		{name: "args a function", args: func() {}, want: `rqgo: invalid argument: args of "f" do not encode to JSON: json: unsupported type: func()`},
		{name: "args +Inf", args: math.Inf(1), want: `rqgo: invalid argument: args of "f" do not encode to JSON: json: unsupported value: +Inf`},
		{name: "args NaN in a struct", args: struct{ X float64 }{math.NaN()}, want: `rqgo: invalid argument: args of "f" do not encode to JSON: json: unsupported value: NaN`},
		{name: "args invalid json.RawMessage", args: json.RawMessage(`{"a":`), want: `rqgo: invalid argument: args of "f" do not encode to JSON: invalid JSON`},
		{name: "args invalid []byte", args: []byte(`not json`), want: `rqgo: invalid argument: args of "f" do not encode to JSON: invalid JSON`},
		{name: "args over the default limit", args: big, want: `rqgo: invalid argument: args of "f" are 524290 bytes, over the 524288-byte limit`},
		{name: "args over a configured limit", qopts: []QueueOption{WithMaxArgsSize(10)}, args: "0123456789", want: `rqgo: invalid argument: args of "f" are 12 bytes, over the 10-byte limit`},
		{name: "zero args limit", qopts: []QueueOption{WithMaxArgsSize(0)}, want: `rqgo: invalid argument: max args size 0 is not positive`},
		{name: "negative retries", opts: []EnqueueOption{Retry(-1)}, want: `rqgo: invalid argument: retry count -1 is negative`},
		{name: "zero timeout", opts: []EnqueueOption{Timeout(0)}, want: `rqgo: invalid argument: timeout 0s is not positive`},
		{name: "negative timeout", opts: []EnqueueOption{Timeout(-time.Second)}, want: `rqgo: invalid argument: timeout -1s is not positive`},
		{name: "negative delay", opts: []EnqueueOption{In(-time.Second)}, want: `rqgo: invalid argument: delay -1s is negative`},
		{name: "zero backoff base", opts: []EnqueueOption{Backoff(0, time.Second)}, want: `rqgo: invalid argument: backoff base 0s and cap 1s: want 0 < base <= cap`},
		{name: "backoff cap under base", opts: []EnqueueOption{Backoff(time.Minute, time.Second)}, want: `rqgo: invalid argument: backoff base 1m0s and cap 1s: want 0 < base <= cap`},
		{name: "no retry intervals", opts: []EnqueueOption{RetryIntervals()}, want: `rqgo: invalid argument: RetryIntervals needs at least one interval`},
		{name: "negative retry interval", opts: []EnqueueOption{RetryIntervals(time.Second, -time.Second)}, want: `rqgo: invalid argument: retry interval -1s is negative`},
		{name: "job id with a space", opts: []EnqueueOption{JobID("a b")}, want: `rqgo: invalid argument: job id "a b" must not contain whitespace or control characters`},
		{name: "job id too long", opts: []EnqueueOption{JobID(long)}, want: `rqgo: invalid argument: job id "` + long + `" is longer than 200 bytes`},
		{name: "job id not UTF-8", opts: []EnqueueOption{JobID("a\xffb")}, want: `rqgo: invalid argument: job id "a\xffb" is not valid UTF-8`},
		{name: "job id a cut UTF-8 sequence", opts: []EnqueueOption{JobID("caf\xc3")}, want: `rqgo: invalid argument: job id "caf\xc3" is not valid UTF-8`},
		{name: "job id a dot", opts: []EnqueueOption{JobID(".")}, want: `rqgo: invalid argument: job id "." must not be "." or ".."`},
		{name: "job id two dots", opts: []EnqueueOption{JobID("..")}, want: `rqgo: invalid argument: job id ".." must not be "." or ".."`},
		{name: "function name not UTF-8", fn: "send\xffmail", want: `rqgo: invalid argument: function name "send\xffmail" is not valid UTF-8`},
		{name: "queue name not UTF-8", queue: "q\xff", want: `rqgo: invalid argument: queue name "q\xff" is not valid UTF-8`},
		{name: "queue name a dot", queue: ".", want: `rqgo: invalid argument: queue name "." must not be "." or ".."`},
		{name: "queue name two dots", queue: "..", want: `rqgo: invalid argument: queue name ".." must not be "." or ".."`},
		{name: "prefix not UTF-8", qopts: []QueueOption{WithPrefix("rq\xfe")}, want: `rqgo: invalid argument: prefix "rq\xfe" is not valid UTF-8`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			queue := c.queue
			if queue == "" && !strings.Contains(c.name, "empty queue") {
				queue = "default"
			}
			fn := c.fn
			if fn == "" && !strings.Contains(c.name, "empty function") {
				fn = "f"
			}
			opts := append([]QueueOption{WithPrefix("badinput")}, c.qopts...)
			q := NewQueue(queue, rdb, opts...)
			j, err := q.EnqueueContext(t.Context(), fn, c.args, c.opts...)
			if err == nil {
				t.Fatalf("Enqueue = job %s, want error %q", j.ID, c.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Enqueue error %q does not wrap ErrInvalid", err)
			}
			if err.Error() != c.want {
				t.Errorf("Enqueue error = %q, want %q", err, c.want)
			}
		})
	}
	// Nothing reached Redis.
	if keys := rdb.Keys(context.Background(), "*").Val(); len(keys) != 0 {
		t.Errorf("keys after bad enqueues = %q, want none", keys)
	}
	badInputs[t.Name()] = len(cases)
}

// A Queue built without a client reports it on every call instead of
// panicking on the first use.
func TestQueueWithoutClient(t *testing.T) {
	q := NewQueue("default", nil)
	const want = `rqgo: invalid argument: nil Redis client`
	ctx := t.Context()
	calls := map[string]error{}
	_, calls["Enqueue"] = q.EnqueueContext(ctx, "f", nil)
	_, calls["FetchJob"] = q.FetchJob(ctx, "x")
	_, calls["Counts"] = q.Counts(ctx)
	_, calls["JobIDs"] = q.JobIDs(ctx, StatusQueued, 0, 10)
	_, calls["Requeue"] = q.Requeue(ctx, "x")
	_, calls["RequeueFailed"] = q.RequeueFailed(ctx)
	calls["Cancel"] = q.Cancel(ctx, "x")
	_, calls["Empty"] = q.Empty(ctx)
	for name, err := range calls {
		if err == nil || err.Error() != want || !errors.Is(err, ErrInvalid) {
			t.Errorf("%s on a Queue with a nil client = %v, want %q", name, err, want)
		}
	}
	badInputs[t.Name()] = 1
}

// Bad worker options and registrations make Run return an error naming
// each problem, before the worker touches Redis.
func TestBadWorkerInput(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: miniredis.RunT(t).Addr()})
	t.Cleanup(func() { rdb.Close() })
	cases := []struct {
		name string
		rdb  redis.UniversalClient
		opts WorkerOptions
		reg  func(w *Worker)
		want string
	}{
		{name: "nil client", opts: WorkerOptions{}, want: `rqgo: invalid argument: nil Redis client`},
		{name: "queue name with a colon", rdb: rdb, opts: WorkerOptions{Queues: []string{"a:b"}}, want: `rqgo: invalid argument: queue name "a:b" must not contain braces, colons, whitespace or control characters`},
		{name: "empty queue name", rdb: rdb, opts: WorkerOptions{Queues: []string{"default", ""}}, want: `rqgo: invalid argument: queue name is empty`},
		{name: "queue listed twice", rdb: rdb, opts: WorkerOptions{Queues: []string{"a", "a"}}, want: `rqgo: invalid argument: queue "a" listed twice`},
		{name: "negative concurrency", rdb: rdb, opts: WorkerOptions{Concurrency: -1}, want: `rqgo: invalid argument: worker concurrency out of range`},
		{name: "negative lease", rdb: rdb, opts: WorkerOptions{Lease: -time.Second}, want: `rqgo: invalid argument: worker lease out of range`},
		{name: "lease under 30ms", rdb: rdb, opts: WorkerOptions{Lease: time.Millisecond}, want: `rqgo: invalid argument: worker lease out of range`},
		{name: "negative timeout", rdb: rdb, opts: WorkerOptions{Timeout: -time.Second}, want: `rqgo: invalid argument: worker timeout out of range`},
		{name: "negative shutdown timeout", rdb: rdb, opts: WorkerOptions{ShutdownTimeout: -time.Second}, want: `rqgo: invalid argument: worker shutdown timeout out of range`},
		{name: "worker name with a space", rdb: rdb, opts: WorkerOptions{Name: "my worker"}, want: `rqgo: invalid argument: worker name "my worker" must not contain whitespace or control characters`},
		{name: "worker name not UTF-8", rdb: rdb, opts: WorkerOptions{Name: "w\xff"}, want: `rqgo: invalid argument: worker name "w\xff" is not valid UTF-8`},
		{name: "queue name not UTF-8", rdb: rdb, opts: WorkerOptions{Queues: []string{"q\xff"}}, want: `rqgo: invalid argument: queue name "q\xff" is not valid UTF-8`},
		{name: "queue name two dots", rdb: rdb, opts: WorkerOptions{Queues: []string{".."}}, want: `rqgo: invalid argument: queue name ".." must not be "." or ".."`},
		{name: "function name not UTF-8 registered", rdb: rdb, reg: func(w *Worker) { w.Register("f\xff", func(context.Context, *Job) (any, error) { return nil, nil }) }, want: `rqgo: invalid argument: function name "f\xff" is not valid UTF-8`},
		{name: "empty function name registered", rdb: rdb, reg: func(w *Worker) { w.Register("", func(context.Context, *Job) (any, error) { return nil, nil }) }, want: `rqgo: invalid argument: function name is empty`},
		{name: "nil handler", rdb: rdb, reg: func(w *Worker) { w.Register("f", nil) }, want: `rqgo: invalid argument: nil handler for "f"`},
		{name: "nil generic handler", rdb: rdb, reg: func(w *Worker) { RegisterFunc[int, int](w, "f", nil) }, want: `rqgo: invalid argument: nil handler for "f"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.opts.Prefix = "badinput"
			c.opts.Logger = testLogger(t)
			w := NewWorker(c.rdb, c.opts)
			if c.reg != nil {
				c.reg(w)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			err := w.Run(ctx)
			if err == nil {
				t.Fatalf("Run = nil, want error %q", c.want)
			}
			if !errors.Is(err, ErrInvalid) || err.Error() != c.want {
				t.Errorf("Run error = %q, want %q wrapping ErrInvalid", err, c.want)
			}
		})
	}
	if keys := rdb.Keys(context.Background(), "*").Val(); len(keys) != 0 {
		t.Errorf("keys after invalid workers = %q, want none", keys)
	}
	badInputs[t.Name()] = len(cases)
}

// At in the past is not an error: the job is ready at once and runs.
func TestAtInThePastIsReadyAndRuns(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		q := e.queue("default")
		j, err := q.EnqueueContext(t.Context(), "f", nil, At(time.Now().Add(-24*time.Hour)))
		if err != nil {
			t.Fatalf("Enqueue with At in the past: %v", err)
		}
		if j.Status != StatusQueued {
			t.Errorf("status = %s, want queued", j.Status)
		}
		w := e.worker(t, WorkerOptions{})
		w.Register("f", func(context.Context, *Job) (any, error) { return "ran", nil })
		runBurst(t, w)
		if got, _ := q.FetchJob(t.Context(), j.ID); got.Status != StatusFinished || string(got.Result) != `"ran"` {
			t.Errorf("job = %s result %s, want finished with \"ran\"", got.Status, got.Result)
		}
	})
	badInputs[t.Name()] = 1
}

// A job hash written by hand (another tool, or damage) that lacks fields
// rqgo needs: FetchJob returns ErrMalformedJob naming the fields, and a
// worker fails the job, without retry, instead of crashing.
func TestHandWrittenJobHash(t *testing.T) {
	cases := []struct {
		name   string
		fields []any
		want   string // FetchJob's error
	}{
		{"only args", []any{"args", `{}`},
			`rqgo: malformed job "": missing or unreadable fields [id queue func status]`},
		{"no func", []any{"id", "j1", "queue", "default", "status", "queued", "args", `{}`},
			`rqgo: malformed job "j1": missing or unreadable fields [func]`},
		{"args not JSON", []any{"id", "j1", "queue", "default", "func", "f", "status", "queued", "args", `{not json`},
			`rqgo: malformed job "j1": missing or unreadable fields [args]`},
		{"numbers not numbers", []any{"id", "j1", "queue", "default", "func", "f", "status", "queued", "attempt", "one", "max_retries", "x", "timeout_ms", "1.5s", "created_at", "yesterday"},
			`rqgo: malformed job "j1": missing or unreadable fields [attempt max_retries timeout_ms created_at]`},
	}
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				id := "hand-" + newID()[:8]
				fields := append([]any(nil), c.fields...)
				for i := 0; i < len(fields); i += 2 {
					if fields[i] == "id" {
						fields[i+1] = id
					}
				}
				want := strings.ReplaceAll(c.want, `"j1"`, `"`+id+`"`)
				if err := e.rdb.HSet(ctx, q.k.job(id), fields...).Err(); err != nil {
					t.Fatal(err)
				}
				_, err := q.FetchJob(ctx, id)
				if !errors.Is(err, ErrMalformedJob) || err.Error() != want {
					t.Errorf("FetchJob = %v, want %q wrapping ErrMalformedJob", err, want)
				}

				// Queue it by hand; a worker fails it and goes on.
				e.rdb.RPush(ctx, q.k.pending(), id)
				w := e.worker(t, WorkerOptions{})
				ran := false
				w.Register("f", func(context.Context, *Job) (any, error) { ran = true; return nil, nil })
				runBurst(t, w)
				if ran {
					t.Errorf("handler ran for a malformed job")
				}
				got, _ := q.FetchJob(ctx, id)
				if got == nil || got.Status != StatusFailed || !strings.Contains(got.Error, "malformed job") || got.Attempt != 1 {
					t.Errorf("malformed job after a worker = %+v, want failed on attempt 1 with a malformed-job error", got)
				}
				if n := e.rdb.ZScore(ctx, q.k.failed(), id).Val(); n == 0 {
					t.Errorf("malformed job not in the failed registry")
				}
			})
		}
	})
	badInputs[t.Name()] = len(cases)
}

// Args that are valid JSON but not what the handler's type wants fail the
// job without retry, with the decoding error.
func TestArgsOfTheWrongShape(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		q := e.queue("default")
		j, err := q.EnqueueContext(t.Context(), "sum", json.RawMessage(`{"a":"not a number"}`), Retry(5))
		if err != nil {
			t.Fatal(err)
		}
		w := e.worker(t, WorkerOptions{})
		RegisterFunc(w, "sum", func(ctx context.Context, a struct{ A int }) (int, error) { return a.A, nil })
		runBurst(t, w)
		got, _ := q.FetchJob(t.Context(), j.ID)
		const want = `rqgo: decode args of job ` // + id + ": json: ..."
		if got.Status != StatusFailed || got.Attempt != 1 || !strings.HasPrefix(got.Error, want+j.ID+": json: cannot unmarshal string") {
			t.Errorf("job = %s attempt %d error %q; want failed on attempt 1 with %q…", got.Status, got.Attempt, got.Error, want+j.ID)
		}
	})
	badInputs[t.Name()] = 1
}

// TestBadInputCount reports how many bad inputs the tests above cover.
func TestBadInputCount(t *testing.T) {
	total := 0
	for _, n := range badInputs {
		total += n
	}
	t.Logf("bad inputs covered: %d (in %d tests; counted for the tests that ran before this one)", total, len(badInputs))
}
