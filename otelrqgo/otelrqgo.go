// Package otelrqgo traces rqgo jobs with OpenTelemetry: a producer span for
// each enqueue, and a consumer span for each attempt that continues the
// producer's trace, in whatever process the worker runs.
//
// Set it up once for a Queue and once for a Worker:
//
//	q := rqgo.NewQueue("default", rdb, rqgo.WithEnqueueMiddleware(otelrqgo.Producer()))
//	w.Use(otelrqgo.Consumer())
//
// The trace context travels in the job's headers (the job hash's headers
// field, a JSON object) under the W3C Trace Context names traceparent and
// tracestate, so a producer in another language can set it.
//
// Spans follow OpenTelemetry's messaging semantic conventions:
// messaging.system is "rqgo", messaging.destination.name the queue,
// messaging.message.id the job id; consumer spans add rqgo.job.attempt and
// rqgo.job.func. The producer span is "send <queue>", kind PRODUCER; the
// attempt's span is "process <queue>", kind CONSUMER, a child of the
// producer's span (one job is one message, so the attempt is part of the
// trace that enqueued it: a trace view shows the request, its enqueue and
// every attempt of the job under one root). A failed attempt sets the
// span's status to Error.
//
// This package is the only part of rqgo that imports OpenTelemetry.
package otelrqgo

import (
	"context"
	"strconv"

	"github.com/rqgo/rqgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of the spans.
const ScopeName = "github.com/rqgo/rqgo/otelrqgo"

// Option configures [Producer] and [Consumer].
type Option func(*config)

type config struct {
	tp   trace.TracerProvider
	prop propagation.TextMapPropagator
}

// WithTracerProvider sets the tracer provider. Default: otel's global one,
// read when the span starts.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tp = tp }
}

// WithPropagator sets how the trace context is written to and read from a
// job's headers. Default: W3C Trace Context (traceparent, tracestate).
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(c *config) { c.prop = p }
}

func newConfig(opts []Option) *config {
	c := &config{prop: propagation.TraceContext{}}
	for _, o := range opts {
		o(c)
	}
	return c
}

func (c *config) tracer() trace.Tracer {
	tp := c.tp
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return tp.Tracer(ScopeName)
}

var system = semconv.MessagingSystemKey.String("rqgo")

// Producer returns enqueue middleware that starts a PRODUCER span for each
// job written, as a child of the context of the Enqueue call, and puts its
// context in the job's headers.
func Producer(opts ...Option) rqgo.EnqueueMiddleware {
	c := newConfig(opts)
	return func(next rqgo.EnqueueFunc) rqgo.EnqueueFunc {
		return func(ctx context.Context, jobs []*rqgo.Job) error {
			tr := c.tracer()
			spans := make([]trace.Span, len(jobs))
			for i, j := range jobs {
				var sctx context.Context
				sctx, spans[i] = tr.Start(ctx, "send "+j.Queue,
					trace.WithSpanKind(trace.SpanKindProducer),
					trace.WithAttributes(system, semconv.MessagingOperationTypeSend,
						semconv.MessagingOperationName("enqueue"),
						semconv.MessagingDestinationName(j.Queue), semconv.MessagingMessageID(j.ID),
						attribute.String("rqgo.job.func", j.Func)))
				if j.Headers == nil {
					j.Headers = map[string]string{}
				}
				c.prop.Inject(sctx, propagation.MapCarrier(j.Headers))
			}
			err := next(ctx, jobs)
			for i, s := range spans {
				if e := jobError(err, i); e != nil {
					s.RecordError(e)
					s.SetStatus(codes.Error, e.Error())
				}
				s.End()
			}
			return err
		}
	}
}

// jobError is the error of the i-th job of a write that returned err.
func jobError(err error, i int) error {
	if me, ok := err.(*rqgo.EnqueueManyError); ok {
		if i < len(me.Errs) {
			return me.Errs[i]
		}
		return nil
	}
	return err
}

// Consumer returns worker middleware that runs each attempt in a CONSUMER
// span, a child of the span context found in the job's headers (a root
// span when there is none).
func Consumer(opts ...Option) func(rqgo.Handler) rqgo.Handler {
	c := newConfig(opts)
	return func(next rqgo.Handler) rqgo.Handler {
		return rqgo.HandlerFunc(func(ctx context.Context, j *rqgo.Job) (any, error) {
			if len(j.Headers) > 0 {
				ctx = c.prop.Extract(ctx, propagation.MapCarrier(j.Headers))
			}
			ctx, span := c.tracer().Start(ctx, "process "+j.Queue,
				trace.WithSpanKind(trace.SpanKindConsumer),
				trace.WithAttributes(system, semconv.MessagingOperationTypeProcess,
					semconv.MessagingOperationName("process"),
					semconv.MessagingDestinationName(j.Queue), semconv.MessagingMessageID(j.ID),
					attribute.Int("rqgo.job.attempt", j.Attempt), attribute.String("rqgo.job.func", j.Func)))
			defer span.End()
			res, err := next.ProcessJob(ctx, j)
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, "attempt "+strconv.Itoa(j.Attempt)+" failed: "+err.Error())
			}
			return res, err
		})
	}
}
