package rqgo

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Status is where a job is in its life.
type Status string

// Job statuses. A job moves queued → started → finished, or through
// scheduled (delayed, or waiting for a retry) and failed; canceled is set by
// [Queue.Cancel], and for the dependents of a job that did not finish. A
// job enqueued with [DependsOn] is deferred until its parents have ended.
const (
	StatusDeferred  Status = "deferred"
	StatusQueued    Status = "queued"
	StatusScheduled Status = "scheduled"
	StatusStarted   Status = "started"
	StatusFinished  Status = "finished"
	StatusFailed    Status = "failed"
	StatusCanceled  Status = "canceled"
)

// Statuses lists every status in the order a job usually passes them.
var Statuses = []Status{StatusDeferred, StatusQueued, StatusScheduled, StatusStarted, StatusFinished, StatusFailed, StatusCanceled}

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

	Parents      []JobRef // the jobs this one waits for ([DependsOn])
	AllowFailure bool     // it runs however its parents ended ([AllowFailure])

	UniqueKey   string        // its unique key ([Unique]), "" for none
	UniqueUntil UniqueUntil   // when the key is released
	UniqueFor   time.Duration // the key's shortest hold after enqueue
	StartWithin time.Duration // no attempt starts later than this after enqueue ([StartWithin])
	LimitKey    string        // its limit key ([LimitKey]), "" for none

	// Progress and Meta are what its handler reported ([Job.SetProgress],
	// [Job.SetMeta]), kept after the job ends: JSON values, nil when none.
	Progress json.RawMessage
	Meta     map[string]json.RawMessage

	// Headers is what the producer attached to the job ([Headers],
	// [EnqueueMiddleware]), nil when nothing.
	Headers map[string]string

	hasResultTTL  bool
	hasFailureTTL bool
	token         string
	// debounce and debounceMax: the options of an enqueue on its way.
	debounce, debounceMax time.Duration
	// src is where the job was read, shared with the jobs read with it.
	src *jobSource
	// leased: a worker fetched it for the attempt its token names, which
	// may report progress, through src.rep (the worker's reportLoop).
	leased bool
}

// jobSource is where jobs were read: the client and prefix FetchParents
// reads their parents with and, for a worker's jobs, its reportLoop. One is
// shared by a Queue's, a Worker's or a FetchJobs call's jobs, which keeps a
// fetched Job small.
type jobSource struct {
	rdb     redis.UniversalClient
	prefix  string
	rep     chan<- *report
	repDone <-chan struct{} // closed when the reportLoop has stopped
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

// nullJSON is the encoding of a nil value. Never written to: the slices
// marshalJSON returns of it have no room to append in place.
var nullJSON = []byte("null")

// marshalJSON is [json.Marshal] without its HTML escaping, for values
// stored in a job's hash: a result such as "https://x/?img=dog.jpg&w=64" or
// "<b>" is stored as written, not with \u0026 and \u003c in it.
func marshalJSON(v any) ([]byte, error) {
	if v == nil {
		// Most handlers return no result: no encoder for them.
		return nullJSON[:len(nullJSON):len(nullJSON)], nil
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
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
	// Workflows (see depend.go).
	fParents      = "parents"
	fAllowFailure = "allow_failure"
	// fFlags tells the scripts that start and end a job what more to do
	// for it (see flag in scripts/prelude.lua); plain jobs have none.
	fFlags = "flags"
	// Unique keys, debounce and StartWithin (see unique.go).
	fUniqueKey   = "unique_key"
	fUniqueUntil = "unique_until"
	fUniqueFor   = "unique_for_ms"
	fDebounce    = "debounce_ms"
	fStartWithin = "start_within_ms"
	// Flow control (see limits.go).
	fLimitKey = "limit_key"
	// Running jobs (see progress.go): the handler's progress, its named
	// values (one field per name, after this prefix), and when a cancel of
	// the running job was asked.
	fProgress        = "progress"
	fMetaPrefix      = "meta:"
	fCancelRequested = "cancel_requested"
	// Headers (see headers.go): a JSON object of strings.
	fHeaders = "headers"
)

// Indexes of a job's fields in jobValues. The first fetchedFields, less
// xQueue, are the ones dequeue.lua returns for each job, in its order.
const (
	xID = iota
	xQueue
	xFunc
	xArgs
	xMaxRetries
	xTimeout
	xResultTTL
	xFailureTTL
	xBackoff
	xCreatedAt
	xEnqueuedAt
	xScheduledAt
	xEndedAt
	xResult
	xError
	fetchedFields // then one element with these three, false for a plain job:
	xParents      = iota - 1
	xLimitKey
	xHeaders
	xStatus // the fields below are set by dequeue.lua itself
	xAttempt
	xStartedAt
	xWorker
	xToken
	xAllowFailure
	xUniqueKey
	xUniqueUntil
	xUniqueFor
	xStartWithin
	xProgress
	numFields
)

// fieldNames names the hash field at each index of jobValues.
var fieldNames = [numFields]string{
	xID: fID, xQueue: fQueue, xFunc: fFunc, xArgs: fArgs, xMaxRetries: fMaxRetries,
	xTimeout: fTimeout, xResultTTL: fResultTTL, xFailureTTL: fFailureTTL, xBackoff: fBackoff,
	xCreatedAt: fCreatedAt, xEnqueuedAt: fEnqueuedAt, xScheduledAt: fScheduledAt,
	xEndedAt: fEndedAt, xResult: fResult, xError: fError, xParents: fParents,
	xStatus: fStatus, xAttempt: fAttempt, xStartedAt: fStartedAt, xWorker: fWorker, xToken: fToken,
	xAllowFailure: fAllowFailure, xUniqueKey: fUniqueKey, xUniqueUntil: fUniqueUntil, xUniqueFor: fUniqueFor,
	xStartWithin: fStartWithin, xLimitKey: fLimitKey, xProgress: fProgress, xHeaders: fHeaders,
}

// jobValues is a job hash read into fixed slots: v[i] is the value of field
// fieldNames[i], ok[i] whether the hash has it.
type jobValues struct {
	v  [numFields]string
	ok [numFields]bool
}

// decodeJob reads a job from its hash fields. It never panics: missing or
// unreadable fields rqgo needs give an error wrapping [ErrMalformedJob],
// together with whatever could be read.
func decodeJob(h map[string]string) (*Job, error) {
	var jv jobValues
	for i, f := range fieldNames {
		jv.v[i], jv.ok[i] = h[f]
	}
	j, err := jv.decode()
	for f, v := range h {
		if name, ok := strings.CutPrefix(f, fMetaPrefix); ok {
			if j.Meta == nil {
				j.Meta = map[string]json.RawMessage{}
			}
			j.Meta[name] = json.RawMessage(v)
		}
	}
	return j, err
}

// decode is decodeJob's work, on fields already in their slots.
func (jv *jobValues) decode() (*Job, error) {
	j := &Job{
		ID:      jv.v[xID],
		Queue:   jv.v[xQueue],
		Func:    jv.v[xFunc],
		Status:  Status(jv.v[xStatus]),
		Error:   jv.v[xError],
		Worker:  jv.v[xWorker],
		token:   jv.v[xToken],
		Backoff: jv.v[xBackoff],
	}
	if jv.ok[xArgs] {
		j.Args = json.RawMessage(jv.v[xArgs])
	}
	if jv.ok[xResult] {
		j.Result = json.RawMessage(jv.v[xResult])
	}
	if jv.ok[xProgress] {
		j.Progress = json.RawMessage(jv.v[xProgress])
	}

	var bad []string
	num := func(i int) int64 {
		s := jv.v[i]
		if !jv.ok[i] || s == "" {
			return 0
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			bad = append(bad, fieldNames[i])
		}
		return n
	}
	ms := func(i int) time.Time {
		if n := num(i); n > 0 {
			return time.UnixMilli(n)
		}
		return time.Time{}
	}
	j.Attempt = int(num(xAttempt))
	j.MaxRetries = int(num(xMaxRetries))
	j.Timeout = time.Duration(num(xTimeout)) * time.Millisecond
	j.hasResultTTL = jv.ok[xResultTTL]
	j.ResultTTL = time.Duration(num(xResultTTL)) * time.Millisecond
	j.hasFailureTTL = jv.ok[xFailureTTL]
	j.FailureTTL = time.Duration(num(xFailureTTL)) * time.Millisecond
	j.CreatedAt = ms(xCreatedAt)
	j.EnqueuedAt = ms(xEnqueuedAt)
	j.ScheduledAt = ms(xScheduledAt)
	j.StartedAt = ms(xStartedAt)
	j.EndedAt = ms(xEndedAt)
	j.AllowFailure = jv.v[xAllowFailure] == "1"
	j.UniqueKey = jv.v[xUniqueKey]
	if jv.v[xUniqueUntil] == "started" {
		j.UniqueUntil = UntilStarted
	}
	j.UniqueFor = time.Duration(num(xUniqueFor)) * time.Millisecond
	j.StartWithin = time.Duration(num(xStartWithin)) * time.Millisecond
	j.LimitKey = jv.v[xLimitKey]
	if jv.v[xHeaders] != "" && json.Unmarshal([]byte(jv.v[xHeaders]), &j.Headers) != nil {
		bad = append(bad, fHeaders)
	}
	if jv.v[xParents] != "" {
		for _, s := range strings.Fields(jv.v[xParents]) {
			r, ok := parseRef(s)
			if !ok {
				bad = append(bad, fParents)
				break
			}
			j.Parents = append(j.Parents, r)
		}
	}

	for _, i := range [...]int{xID, xQueue, xFunc, xStatus} {
		if jv.v[i] == "" {
			bad = append(bad, fieldNames[i])
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
