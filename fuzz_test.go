package rqgo

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

// FuzzDecodeJob feeds decodeJob hashes with arbitrary values in the fields
// another tool could write. decodeJob must never panic; it either reads a
// job with every required field and valid JSON args, or says why it cannot
// with an error wrapping ErrMalformedJob. Seeds: testdata/fuzz/FuzzDecodeJob.
func FuzzDecodeJob(f *testing.F) {
	f.Add("j1", "default", "send", `{"to":"a@b"}`, "queued", "0", "3", "", "")
	f.Add("j1", "default", "send", `{not json`, "started", "x", "-1", "1e3", "exp:1000:60000")
	f.Add("", "", "", "", "", "", "", "", "")
	f.Add("j1", "q", "f", "null", "finished", "99999999999999999999", "3", "5000", "int:1,2,3")
	f.Fuzz(func(t *testing.T, id, queue, fn, args, status, attempt, maxRetries, timeout, backoff string) {
		h := map[string]string{}
		for k, v := range map[string]string{fID: id, fQueue: queue, fFunc: fn, fArgs: args, fStatus: status,
			fAttempt: attempt, fMaxRetries: maxRetries, fTimeout: timeout, fBackoff: backoff,
			fCreatedAt: attempt, fEndedAt: timeout, fResultTTL: maxRetries} {
			if v != "" {
				h[k] = v
			}
		}
		j, err := decodeJob(h)
		if j == nil {
			t.Fatalf("decodeJob(%q) returned no job (err %v)", h, err)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformedJob) {
				t.Fatalf("decodeJob(%q) error %q does not wrap ErrMalformedJob", h, err)
			}
			return
		}
		if j.ID != id || j.Queue != queue || j.Func != fn || string(j.Status) != status {
			t.Errorf("decodeJob(%q) = id %q queue %q func %q status %q", h, j.ID, j.Queue, j.Func, j.Status)
		}
		if id == "" || queue == "" || fn == "" || status == "" {
			t.Errorf("decodeJob(%q) accepted a job without id, queue, func or status", h)
		}
		if len(j.Args) > 0 && !json.Valid(j.Args) {
			t.Errorf("decodeJob(%q) accepted args that are not JSON", h)
		}
		var v any
		if len(j.Args) > 0 {
			if err := j.Decode(&v); err != nil {
				t.Errorf("Decode of accepted args %q: %v", j.Args, err)
			}
		}
	})
}

// FuzzParseRetryPolicy checks the parser of the job hash's backoff field:
// it never panics, rejects with ErrMalformedJob, and what it accepts
// encodes back to a policy that parses the same and gives delays in range.
// Seeds: testdata/fuzz/FuzzParseRetryPolicy.
func FuzzParseRetryPolicy(f *testing.F) {
	for _, s := range []string{"exp:1000:3600000", "int:1000,5000,60000", "int:0", "exp:0:0", "exp:1:", "int:", "int:-1", "", "exp", "lin:5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := parseRetryPolicy(s)
		if err != nil {
			if !errors.Is(err, ErrMalformedJob) || !strings.Contains(err.Error(), "backoff") {
				t.Fatalf("parseRetryPolicy(%q) error %q: want ErrMalformedJob naming the backoff", s, err)
			}
			return
		}
		for _, d := range append([]time.Duration{p.Base, p.Cap}, p.Intervals...) {
			if d < 0 {
				t.Fatalf("parseRetryPolicy(%q) = %+v: a negative duration", s, p)
			}
		}
		again, err := parseRetryPolicy(p.encode())
		if err != nil || !reflect.DeepEqual(again, p) {
			t.Fatalf("parseRetryPolicy(%q) = %+v, which encodes to %q and parses back to %+v, %v", s, p, p.encode(), again, err)
		}
		for _, n := range []int{-1, 0, 1, 2, 3, 10, 64, 1000} {
			d := p.Delay(n)
			if d < 0 {
				t.Fatalf("parseRetryPolicy(%q).Delay(%d) = %s, negative", s, n, d)
			}
			if len(p.Intervals) == 0 && d > p.Ceiling(max(n, 1)) {
				t.Fatalf("parseRetryPolicy(%q).Delay(%d) = %s, over the ceiling %s", s, n, d, p.Ceiling(n))
			}
		}
	})
}

// A retry policy with a huge base or cap, given through the API or found in
// a job hash's backoff field, must give a capped delay, not panic: the
// panic would happen in the goroutine that judges a handler's error,
// outside any recover, and take the whole worker process down. And the
// backoff field's milliseconds must not overflow time.Duration into
// negative waits. Once retry.go is fixed, these inputs belong in
// testdata/fuzz/FuzzParseRetryPolicy too.
func TestRetryPolicyOverflow(t *testing.T) {
	for _, s := range []string{"exp:9223372036855:1", "int:9999999999999", "exp:1:9223372036855"} {
		if p, err := parseRetryPolicy(s); err == nil {
			t.Errorf("parseRetryPolicy(%q) = %+v, want an error: the milliseconds overflow time.Duration", s, p)
		}
	}
	for _, p := range []RetryPolicy{
		{Base: 1 << 62, Cap: math.MaxInt64},
		{Base: time.Hour, Cap: math.MaxInt64},
		mustParse(t, "exp:5000000000000:9223372036854"),
	} {
		for _, n := range []int{1, 2, 3, 100} {
			if c := p.Ceiling(n); c < p.Base || c > p.Cap {
				t.Errorf("%+v.Ceiling(%d) = %s, want between base and cap", p, n, c)
			}
			if d := p.Delay(n); d < 0 || d > p.Cap {
				t.Errorf("%+v.Delay(%d) = %s, want between 0 and the cap", p, n, d)
			}
		}
	}
}

func mustParse(t *testing.T, s string) RetryPolicy {
	t.Helper()
	p, err := parseRetryPolicy(s)
	if err != nil {
		t.Fatalf("parseRetryPolicy(%q): %v", s, err)
	}
	return p
}

// A job hash whose backoff field holds a huge policy (written by another
// tool) fails its attempt and is scheduled for a retry; the worker that
// judges the error does not crash.
func TestHugeBackoffInJobHash(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		j, err := q.EnqueueContext(ctx, "boom", nil, Retry(3))
		if err != nil {
			t.Fatal(err)
		}
		// The second attempt doubles the base past MaxInt64.
		e.rdb.HSet(ctx, q.k.job(j.ID), "backoff", "exp:5000000000000:9223372036854", "attempt", 1)
		w := e.worker(t, WorkerOptions{})
		w.Register("boom", func(context.Context, *Job) (any, error) { return nil, errors.New("boom") })
		start(t, w)
		if got := waitJob(t, q, j.ID, StatusScheduled); got.Error != "boom" || got.Attempt != 2 {
			t.Errorf("job after a failed attempt: error %q attempt %d, want \"boom\" on attempt 2", got.Error, got.Attempt)
		}
	})
}
