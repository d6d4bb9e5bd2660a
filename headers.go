package rqgo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
)

// MaxHeadersSize is the largest a job's headers may be, encoded as JSON.
const MaxHeadersSize = 16 << 10

// Headers gives the job string headers: metadata that travels with it to
// its handler ([Job.Headers]) without being part of its arguments, such as
// a trace context (W3C traceparent) or the id of the request that caused
// it. They are stored in the job hash's headers field as a JSON object, so
// producers in other languages can set them. Names are 1 to 200 bytes of
// valid UTF-8 without whitespace or control characters; the whole object
// is at most [MaxHeadersSize] bytes. An [EnqueueMiddleware] may add more.
func Headers(h map[string]string) EnqueueOption {
	return func(o *enqueueOptions) {
		if o.headers == nil {
			o.headers = map[string]string{}
		}
		maps.Copy(o.headers, h)
	}
}

// EnqueueFunc writes jobs, prepared by [Queue.EnqueueContext] or
// [Queue.EnqueueMany], to Redis. It fills in each job's status and
// creation time. Its error is the call's: for EnqueueMany, an
// [*EnqueueManyError] whose Errs line up with jobs.
type EnqueueFunc func(ctx context.Context, jobs []*Job) error

// EnqueueMiddleware wraps the writing of a Queue's jobs: it may read each
// job (its ID, Queue, Func and Args are set; [JobID] or a random id), add to
// its Headers before calling next, and look at the outcome after. It may
// refuse the call by returning an error without calling next: then no job
// is written, and each gets that error. next writes the jobs it was
// prepared with, whatever slice it is given. Tracing
// is one use (package otelrqgo), stamping a tenant or request id on every
// job another. It runs once per [Queue.EnqueueContext] with one job, and
// once per [Queue.EnqueueMany] with the jobs that passed validation.
type EnqueueMiddleware func(next EnqueueFunc) EnqueueFunc

// WithEnqueueMiddleware adds middleware around the writing of the queue's
// jobs; the first is the outermost. Without any, enqueues take their
// usual path and pay nothing.
func WithEnqueueMiddleware(mw ...EnqueueMiddleware) QueueOption {
	return func(q *Queue) { q.mw = append(q.mw, mw...) }
}

// errNotWritten is the error of an enqueue whose middleware returned
// without calling next, and without an error of its own.
var errNotWritten = errors.New("enqueue middleware returned without writing the job")

// through runs jobs through the queue's middleware, with write last.
func (q *Queue) through(ctx context.Context, jobs []*Job, write EnqueueFunc) error {
	f := write
	for i := len(q.mw) - 1; i >= 0; i-- {
		f = q.mw[i](f)
	}
	return f(ctx, jobs)
}

// withHeaders adds job j's headers, as set by its options and middleware,
// to its enqueue arguments argv, with the flag that makes dequeue.lua hand
// them to the worker.
func withHeaders(j *Job, argv []any) ([]any, error) {
	if len(j.Headers) == 0 {
		return argv, nil
	}
	for name := range j.Headers {
		if err := validateToken("header name", name); err != nil {
			return nil, fmt.Errorf("rqgo: enqueue %q: %w", j.Func, err)
		}
	}
	raw, err := json.Marshal(j.Headers)
	if err != nil {
		return nil, fmt.Errorf("rqgo: enqueue %q: %w: headers: %v", j.Func, ErrInvalid, err)
	}
	if len(raw) > MaxHeadersSize {
		return nil, fmt.Errorf("rqgo: enqueue %q: %w: headers are %d bytes, over the %d-byte limit", j.Func, ErrInvalid, len(raw), MaxHeadersSize)
	}
	argv[5] = argv[5].(string) + "h"
	return append(argv, fHeaders, string(raw)), nil
}
