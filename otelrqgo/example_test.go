package otelrqgo_test

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo"
	"github.com/rqgo/rqgo/otelrqgo"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// A trace that enqueues a job continues into its handler. (This example
// records spans in memory; an application sets an exporter instead.)
func Example() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	q := rqgo.NewQueue("default", rdb,
		rqgo.WithEnqueueMiddleware(otelrqgo.Producer(otelrqgo.WithTracerProvider(tp))))
	w := rqgo.NewWorker(rdb, rqgo.WorkerOptions{Burst: true, Logger: slog.New(slog.DiscardHandler)})
	w.Use(otelrqgo.Consumer(otelrqgo.WithTracerProvider(tp)))
	w.Register("resize", func(ctx context.Context, j *rqgo.Job) (any, error) { return "ok", nil })

	ctx, span := tp.Tracer("app").Start(ctx, "upload")
	if _, err := q.EnqueueContext(ctx, "resize", map[string]int{"w": 64}); err != nil {
		fmt.Println(err)
	}
	span.End()
	if err := w.Run(context.Background()); err != nil {
		fmt.Println(err)
	}
	for _, s := range rec.Ended() {
		fmt.Printf("%s (%s), same trace: %v\n", s.Name(), s.SpanKind(), s.SpanContext().TraceID() == span.SpanContext().TraceID())
	}
	// Output:
	// send default (producer), same trace: true
	// upload (internal), same trace: true
	// process default (consumer), same trace: true
}
