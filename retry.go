package rqgo

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// Retry defaults, used when neither the job nor the worker sets a policy.
const (
	DefaultMaxRetries  = 3
	DefaultBackoffBase = time.Second
	DefaultBackoffCap  = time.Hour
)

// RetryPolicy says how long a failed job waits before its next attempt.
// With Intervals set, retry n waits Intervals[n-1] (the last one repeats);
// otherwise it waits a random time between 0 and min(Cap, Base·2^(n-1))
// ("full jitter", which spreads retries of many jobs that failed together).
// The zero value is exponential backoff with [DefaultBackoffBase] and
// [DefaultBackoffCap].
type RetryPolicy struct {
	Base      time.Duration
	Cap       time.Duration
	Intervals []time.Duration
}

// Delay returns the wait before retry n (n ≥ 1: the first retry is 1).
func (p RetryPolicy) Delay(n int) time.Duration {
	if n < 1 {
		n = 1
	}
	if len(p.Intervals) > 0 {
		return p.Intervals[min(n, len(p.Intervals))-1]
	}
	c := p.Ceiling(n)
	if c < math.MaxInt64 {
		c++ // rand.N's bound is exclusive: the ceiling itself can be drawn
	}
	return rand.N(c)
}

// Ceiling returns the longest wait before retry n under exponential backoff:
// min(Cap, Base·2^(n-1)).
func (p RetryPolicy) Ceiling(n int) time.Duration {
	base, ceil := p.Base, p.Cap
	if base <= 0 {
		base = DefaultBackoffBase
	}
	if ceil <= 0 {
		ceil = DefaultBackoffCap
	}
	d := base
	for i := 1; i < n && d < ceil; i++ {
		if d > ceil/2 {
			return ceil // doubling would pass the cap (or overflow)
		}
		d *= 2
	}
	return min(d, ceil)
}

// encode gives the policy's form in the job hash's `backoff` field:
// "exp:<base_ms>:<cap_ms>" or "int:<ms>,<ms>,...".
func (p RetryPolicy) encode() string {
	if len(p.Intervals) > 0 {
		parts := make([]string, len(p.Intervals))
		for i, d := range p.Intervals {
			parts[i] = strconv.FormatInt(d.Milliseconds(), 10)
		}
		return "int:" + strings.Join(parts, ",")
	}
	return fmt.Sprintf("exp:%d:%d", p.Base.Milliseconds(), p.Cap.Milliseconds())
}

func parseRetryPolicy(s string) (RetryPolicy, error) {
	kind, rest, _ := strings.Cut(s, ":")
	bad := fmt.Errorf("%w: backoff %q", ErrMalformedJob, s)
	ms := func(v string) (time.Duration, error) {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || n > math.MaxInt64/int64(time.Millisecond) {
			return 0, bad
		}
		return time.Duration(n) * time.Millisecond, nil
	}
	switch kind {
	case "exp":
		b, c, ok := strings.Cut(rest, ":")
		if !ok {
			return RetryPolicy{}, bad
		}
		base, err1 := ms(b)
		ceil, err2 := ms(c)
		if err1 != nil || err2 != nil {
			return RetryPolicy{}, bad
		}
		return RetryPolicy{Base: base, Cap: ceil}, nil
	case "int":
		var p RetryPolicy
		for _, v := range strings.Split(rest, ",") {
			d, err := ms(v)
			if err != nil {
				return RetryPolicy{}, bad
			}
			p.Intervals = append(p.Intervals, d)
		}
		return p, nil
	}
	return RetryPolicy{}, bad
}
