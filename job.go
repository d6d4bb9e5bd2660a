package rqgo

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Status is where a job is in its life.
type Status string

// Job statuses. A job moves queued → started → finished, or through
// scheduled (delayed, or waiting for a retry) and failed; canceled is set by
// [Queue.Cancel].
const (
	StatusQueued    Status = "queued"
	StatusScheduled Status = "scheduled"
	StatusStarted   Status = "started"
	StatusFinished  Status = "finished"
	StatusFailed    Status = "failed"
	StatusCanceled  Status = "canceled"
)

// Statuses lists every status in the order a job usually passes them.
var Statuses = []Status{StatusQueued, StatusScheduled, StatusStarted, StatusFinished, StatusFailed, StatusCanceled}

// Job is one unit of work as stored in its Redis hash. A Job returned by
// [Queue.FetchJob] is a snapshot; a Job passed to a handler describes the
// running attempt.
type Job struct {
	ID         string
	Queue      string
	Func       string
	Args       json.RawMessage // JSON
	Status     Status
	Attempt    int // attempts started so far, this one included
	MaxRetries int // retries after the first attempt

	Timeout     time.Duration // 0: the worker's default
	ResultTTL   time.Duration // 0 with HasResultTTL false: the worker's default
	FailureTTL  time.Duration
	Backoff     string // encoded retry policy; empty: the worker's default
	CreatedAt   time.Time
	EnqueuedAt  time.Time
	ScheduledAt time.Time
	StartedAt   time.Time
	EndedAt     time.Time
	Result      json.RawMessage // JSON; set when finished
	Error       string          // the last failed attempt's error
	Worker      string          // the worker that ran the last attempt

	hasResultTTL  bool
	hasFailureTTL bool
	token         string
}

// Decode unmarshals the job's JSON arguments into v.
func (j *Job) Decode(v any) error {
	if err := json.Unmarshal(j.Args, v); err != nil {
		return fmt.Errorf("rqgo: decode args of job %s: %w", j.ID, err)
	}
	return nil
}

// DecodeResult unmarshals the job's JSON result into v.
func (j *Job) DecodeResult(v any) error {
	if len(j.Result) == 0 {
		return fmt.Errorf("rqgo: job %s has no result", j.ID)
	}
	if err := json.Unmarshal(j.Result, v); err != nil {
		return fmt.Errorf("rqgo: decode result of job %s: %w", j.ID, err)
	}
	return nil
}

// Job hash field names: the public schema (see the README).
const (
	fID          = "id"
	fQueue       = "queue"
	fFunc        = "func"
	fArgs        = "args"
	fStatus      = "status"
	fAttempt     = "attempt"
	fMaxRetries  = "max_retries"
	fTimeout     = "timeout_ms"
	fResultTTL   = "result_ttl_ms"
	fFailureTTL  = "failure_ttl_ms"
	fBackoff     = "backoff"
	fCreatedAt   = "created_at"
	fEnqueuedAt  = "enqueued_at"
	fScheduledAt = "scheduled_at"
	fStartedAt   = "started_at"
	fEndedAt     = "ended_at"
	fResult      = "result"
	fError       = "error"
	fWorker      = "worker"
	fToken       = "token"
)

// decodeJob reads a job from its hash fields. It never panics: missing or
// unreadable fields rqgo needs give an error wrapping [ErrMalformedJob],
// together with whatever could be read.
func decodeJob(h map[string]string) (*Job, error) {
	j := &Job{
		ID:     h[fID],
		Queue:  h[fQueue],
		Func:   h[fFunc],
		Status: Status(h[fStatus]),
		Error:  h[fError],
		Worker: h[fWorker],
		token:  h[fToken],
	}
	if a, ok := h[fArgs]; ok {
		j.Args = json.RawMessage(a)
	}
	if r, ok := h[fResult]; ok {
		j.Result = json.RawMessage(r)
	}
	j.Backoff = h[fBackoff]
	var bad []string
	num := func(f string) int64 {
		s, ok := h[f]
		if !ok || s == "" {
			return 0
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			bad = append(bad, f)
		}
		return n
	}
	ms := func(f string) time.Time {
		if n := num(f); n > 0 {
			return time.UnixMilli(n)
		}
		return time.Time{}
	}
	j.Attempt = int(num(fAttempt))
	j.MaxRetries = int(num(fMaxRetries))
	j.Timeout = time.Duration(num(fTimeout)) * time.Millisecond
	_, j.hasResultTTL = h[fResultTTL]
	j.ResultTTL = time.Duration(num(fResultTTL)) * time.Millisecond
	_, j.hasFailureTTL = h[fFailureTTL]
	j.FailureTTL = time.Duration(num(fFailureTTL)) * time.Millisecond
	j.CreatedAt = ms(fCreatedAt)
	j.EnqueuedAt = ms(fEnqueuedAt)
	j.ScheduledAt = ms(fScheduledAt)
	j.StartedAt = ms(fStartedAt)
	j.EndedAt = ms(fEndedAt)

	for _, f := range []string{fID, fQueue, fFunc, fStatus} {
		if h[f] == "" {
			bad = append(bad, f)
		}
	}
	if len(j.Args) > 0 && !json.Valid(j.Args) {
		bad = append(bad, fArgs)
	}
	if len(bad) > 0 {
		return j, fmt.Errorf("%w %q: missing or unreadable fields %v", ErrMalformedJob, j.ID, bad)
	}
	return j, nil
}

// flatToMap turns an HGETALL-style flat array into a map.
func flatToMap(v any) (map[string]string, bool) {
	arr, ok := v.([]any)
	if !ok || len(arr)%2 != 0 {
		return nil, false
	}
	m := make(map[string]string, len(arr)/2)
	for i := 0; i < len(arr); i += 2 {
		k, ok1 := arr[i].(string)
		val, ok2 := arr[i+1].(string)
		if !ok1 || !ok2 {
			return nil, false
		}
		m[k] = val
	}
	return m, true
}
