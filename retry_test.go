package rqgo

import (
	"testing"
	"time"
)

func TestRetryPolicyCeiling(t *testing.T) {
	p := RetryPolicy{Base: time.Second, Cap: 10 * time.Second}
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{
		{1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {4, 8 * time.Second}, {5, 10 * time.Second}, {60, 10 * time.Second},
	} {
		if got := p.Ceiling(tc.n); got != tc.want {
			t.Errorf("Ceiling(%d) = %v, want %v", tc.n, got, tc.want)
		}
	}
	if got := (RetryPolicy{}).Ceiling(1); got != DefaultBackoffBase {
		t.Errorf("zero policy Ceiling(1) = %v, want %v", got, DefaultBackoffBase)
	}
}

func TestRetryPolicyDelayFullJitter(t *testing.T) {
	p := RetryPolicy{Base: 100 * time.Millisecond, Cap: time.Second}
	for n := 1; n <= 6; n++ {
		ceil := p.Ceiling(n)
		var lo, hi bool
		for range 2000 {
			d := p.Delay(n)
			if d < 0 || d > ceil {
				t.Fatalf("Delay(%d) = %v, outside [0, %v]", n, d, ceil)
			}
			lo = lo || d < ceil/4
			hi = hi || d > ceil*3/4
		}
		if !lo || !hi {
			t.Errorf("Delay(%d) over 2000 draws never reached both ends of [0, %v]: not full jitter", n, ceil)
		}
	}
}

func TestRetryPolicyIntervals(t *testing.T) {
	p := RetryPolicy{Intervals: []time.Duration{time.Second, 5 * time.Second}}
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{{1, time.Second}, {2, 5 * time.Second}, {3, 5 * time.Second}, {0, time.Second}} {
		if got := p.Delay(tc.n); got != tc.want {
			t.Errorf("Delay(%d) = %v, want %v", tc.n, got, tc.want)
		}
	}
}

func TestRetryPolicyEncoding(t *testing.T) {
	for _, p := range []RetryPolicy{
		{Base: time.Second, Cap: time.Hour},
		{Intervals: []time.Duration{10 * time.Millisecond, time.Minute}},
	} {
		got, err := parseRetryPolicy(p.encode())
		if err != nil {
			t.Fatalf("parseRetryPolicy(%q): %v", p.encode(), err)
		}
		if got.encode() != p.encode() {
			t.Errorf("round trip of %q gave %q", p.encode(), got.encode())
		}
	}
	for _, bad := range []string{"", "exp", "exp:1", "exp:x:1", "int:", "int:1,-2", "lin:1:2"} {
		if _, err := parseRetryPolicy(bad); err == nil {
			t.Errorf("parseRetryPolicy(%q) succeeded, want an error", bad)
		}
	}
}
