package otelrqgo_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo"
	"github.com/rqgo/rqgo/internal/redistest"
	"github.com/rqgo/rqgo/otelrqgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// A child process of this test binary runs a traced worker (see childWorker).
func TestMain(m *testing.M) {
	if os.Getenv("OTELRQGO_CHILD") != "" {
		os.Exit(childWorker())
	}
	os.Exit(m.Run())
}

var quiet = slog.New(slog.DiscardHandler)

type backend struct {
	rdb    *redis.Client
	addr   string
	prefix string
}

// forEachBackend runs fn on miniredis and on the real Redis at $REDIS_URL
// (skipped when none answers, unless RQGO_REQUIRE_REDIS=1).
func forEachBackend(t *testing.T, fn func(t *testing.T, b backend)) {
	prefix := func(t *testing.T) string {
		return "otelrqgo-test-" + strings.NewReplacer("/", "-").Replace(t.Name()) + fmt.Sprint(time.Now().UnixNano()%1e6)
	}
	t.Run("miniredis", func(t *testing.T) {
		mr := miniredis.RunT(t)
		rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
		t.Cleanup(func() { rdb.Close() })
		fn(t, backend{rdb: rdb, addr: mr.Addr(), prefix: prefix(t)})
	})
	t.Run("redis", func(t *testing.T) {
		if err := redistest.SharedReachable(); err != nil {
			if os.Getenv("RQGO_REQUIRE_REDIS") == "1" {
				t.Fatalf("no Redis at %s and RQGO_REQUIRE_REDIS=1: %v", redistest.SharedURL(), err)
			}
			t.Skipf("no Redis at %s (%v)", redistest.SharedURL(), err)
		}
		opts, _ := redis.ParseURL(redistest.SharedURL())
		rdb := redis.NewClient(opts)
		b := backend{rdb: rdb, addr: opts.Addr, prefix: prefix(t)}
		t.Cleanup(func() {
			redistest.DeletePrefix(t, rdb, b.prefix)
			rdb.Close()
		})
		fn(t, b)
	})
}

func attrs(kv []attribute.KeyValue) map[string]string {
	m := map[string]string{}
	for _, a := range kv {
		m[string(a.Key)] = a.Value.Emit()
	}
	return m
}

// An enqueue under a span gives a PRODUCER span, child of it, and each
// attempt a CONSUMER span, child of the producer's, with the messaging
// attributes; a failed attempt's span has an error status.
func TestTraceContinuesIntoTheHandler(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := t.Context()
		rec := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
		q := rqgo.NewQueue("mail", b.rdb, rqgo.WithPrefix(b.prefix),
			rqgo.WithEnqueueMiddleware(otelrqgo.Producer(otelrqgo.WithTracerProvider(tp))))
		rctx, root := tp.Tracer("test").Start(ctx, "request")
		j, err := q.EnqueueContext(rctx, "send", nil, rqgo.Retry(1), rqgo.Backoff(time.Millisecond, time.Millisecond))
		root.End()
		if err != nil {
			t.Fatal(err)
		}
		if tp := b.rdb.HGet(ctx, b.prefix+":{mail}:job:"+j.ID, "headers").Val(); !strings.Contains(tp, `"traceparent":"00-`+root.SpanContext().TraceID().String()) {
			t.Fatalf("headers field %s: no traceparent of the request's trace", tp)
		}
		w := rqgo.NewWorker(b.rdb, rqgo.WorkerOptions{Queues: []string{"mail"}, Prefix: b.prefix, Burst: true, Logger: quiet})
		w.Use(otelrqgo.Consumer(otelrqgo.WithTracerProvider(tp)))
		w.Register("send", func(ctx context.Context, j *rqgo.Job) (any, error) {
			if !trace.SpanContextFromContext(ctx).IsValid() {
				return nil, rqgo.SkipRetry(errors.New("no span in the handler's context"))
			}
			if j.Attempt == 1 {
				return nil, errors.New("smtp down")
			}
			return "sent", nil
		})
		if err := w.Run(ctx); err != nil {
			t.Fatal(err)
		}
		var producer sdktrace.ReadOnlySpan
		var consumers []sdktrace.ReadOnlySpan
		for _, s := range rec.Ended() {
			switch s.SpanKind() {
			case trace.SpanKindProducer:
				producer = s
			case trace.SpanKindConsumer:
				consumers = append(consumers, s)
			}
		}
		if producer == nil || producer.Name() != "send mail" || producer.Parent().SpanID() != root.SpanContext().SpanID() {
			t.Fatalf("producer span %v: want \"send mail\", child of the request", producer)
		}
		pa := attrs(producer.Attributes())
		if pa["messaging.system"] != "rqgo" || pa["messaging.destination.name"] != "mail" || pa["messaging.message.id"] != j.ID || pa["messaging.operation.type"] != "send" {
			t.Errorf("producer attributes %v", pa)
		}
		if len(consumers) != 2 {
			t.Fatalf("%d consumer spans, want one per attempt (2)", len(consumers))
		}
		for i, s := range consumers {
			a := attrs(s.Attributes())
			if s.Name() != "process mail" || s.Parent().SpanID() != producer.SpanContext().SpanID() || s.SpanContext().TraceID() != root.SpanContext().TraceID() {
				t.Errorf("consumer span %d: %s, parent %s; want \"process mail\", child of the producer span", i, s.Name(), s.Parent().SpanID())
			}
			if a["messaging.system"] != "rqgo" || a["messaging.destination.name"] != "mail" || a["messaging.message.id"] != j.ID ||
				a["messaging.operation.type"] != "process" || a["rqgo.job.attempt"] != fmt.Sprint(i+1) {
				t.Errorf("consumer span %d attributes %v", i, a)
			}
			if want := map[bool]codes.Code{true: codes.Error, false: codes.Unset}[i == 0]; s.Status().Code != want {
				t.Errorf("attempt %d span status %v, want %v", i+1, s.Status().Code, want)
			}
		}
	})
}

// The trace crosses processes: a worker in another process continues the
// trace of the enqueue, through the job hash alone.
func TestTraceCrossesProcesses(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := t.Context()
		rec := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
		q := rqgo.NewQueue("default", b.rdb, rqgo.WithPrefix(b.prefix),
			rqgo.WithEnqueueMiddleware(otelrqgo.Producer(otelrqgo.WithTracerProvider(tp))))
		if _, err := q.EnqueueContext(ctx, "traced", nil); err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "OTELRQGO_CHILD=1", "OTELRQGO_ADDR="+b.addr, "OTELRQGO_PREFIX="+b.prefix)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("child worker: %v: %s", err, out)
		}
		producer := rec.Ended()[0]
		want := fmt.Sprintf("trace=%s parent=%s", producer.SpanContext().TraceID(), producer.SpanContext().SpanID())
		if got := strings.TrimSpace(string(out)); got != want {
			t.Errorf("child's consumer span: %s, want %s", got, want)
		}
	})
}

// childWorker runs a traced burst worker and prints the trace and parent
// span of the consumer span of its one job.
func childWorker() int {
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv("OTELRQGO_ADDR")})
	defer rdb.Close()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	w := rqgo.NewWorker(rdb, rqgo.WorkerOptions{Prefix: os.Getenv("OTELRQGO_PREFIX"), Burst: true, Logger: quiet})
	w.Use(otelrqgo.Consumer(otelrqgo.WithTracerProvider(tp)))
	w.Register("traced", func(ctx context.Context, j *rqgo.Job) (any, error) { return nil, nil })
	if err := w.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, s := range rec.Ended() {
		if s.SpanKind() == trace.SpanKindConsumer {
			fmt.Printf("trace=%s parent=%s\n", s.SpanContext().TraceID(), s.Parent().SpanID())
		}
	}
	return 0
}

// The root package stays free of OpenTelemetry (and of Prometheus): only
// this package imports it.
func TestRootPackageImportsNoOpenTelemetry(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/rqgo/rqgo").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "go.opentelemetry.io/") || strings.HasPrefix(dep, "github.com/prometheus/") {
			t.Errorf("package rqgo depends on %s", dep)
		}
	}
}
