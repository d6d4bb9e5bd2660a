package rqgo

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors, checked with [errors.Is].
var (
	// ErrJobNotFound: no job with that id exists (or its hash expired).
	ErrJobNotFound = errors.New("rqgo: job not found")
	// ErrJobExists: Enqueue was given a JobID that is already taken.
	ErrJobExists = errors.New("rqgo: job already exists")
	// ErrNotCancelable: the job has ended (finished, failed or canceled);
	// only queued, scheduled, deferred and running jobs can be canceled.
	ErrNotCancelable = errors.New("rqgo: job cannot be canceled")
	// ErrCanceled is the cause of a handler's context cancellation when
	// [Queue.Cancel] canceled its running job.
	ErrCanceled = errors.New("rqgo: job canceled")
	// ErrInvalid wraps every validation error: bad names, ids, options,
	// arguments that do not encode to JSON or exceed the payload limit.
	ErrInvalid = errors.New("rqgo: invalid argument")
	// ErrUnknownFunc: a job names a function the worker has not registered.
	ErrUnknownFunc = errors.New("rqgo: unknown function")
	// ErrLeaseLost is the cause of a handler's context cancellation when the
	// worker lost the job's lease (another worker may run it now).
	ErrLeaseLost = errors.New("rqgo: lease lost")
	// ErrMalformedJob: a job hash lacks fields rqgo needs, or holds values it
	// cannot read (for example written by another tool).
	ErrMalformedJob = errors.New("rqgo: malformed job")
	// ErrNotReplicated: an enqueue with [WithWait] was written to the
	// master, but fewer replicas than asked acknowledged it in time; the job
	// exists, and is lost if the master fails before replicating it.
	ErrNotReplicated = errors.New("rqgo: job not acknowledged by enough replicas")
	// ErrDuplicate: another job holds the unique key ([Unique]); nothing
	// was enqueued.
	ErrDuplicate = errors.New("rqgo: duplicate job")
)

// SkipRetry wraps err so the job fails at once, retries left or not.
func SkipRetry(err error) error {
	if err == nil {
		err = errors.New("skip retry")
	}
	return &skipRetryError{err}
}

type skipRetryError struct{ err error }

func (e *skipRetryError) Error() string { return e.err.Error() }
func (e *skipRetryError) Unwrap() error { return e.err }

// RetryAfter wraps err so that, if the job has retries left, the next attempt
// is scheduled after d instead of after the job's backoff.
func RetryAfter(d time.Duration, err error) error {
	if err == nil {
		err = fmt.Errorf("retry after %s", d)
	}
	return &RetryAfterError{Delay: d, Err: err}
}

// RetryAfterError is the error [RetryAfter] returns; use [errors.As] to read it.
type RetryAfterError struct {
	Delay time.Duration
	Err   error
}

func (e *RetryAfterError) Error() string { return e.Err.Error() }
func (e *RetryAfterError) Unwrap() error { return e.Err }
