package main

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %g, want %g", tc.in, got, tc.want)
		}
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50}, {0.99, 99}, {1, 100}, {0, 1}} {
		if got := percentile(d, tc.q); got != tc.want {
			t.Errorf("percentile(1..100, %g) = %d, want %d", tc.q, got, tc.want)
		}
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("percentile(nil, 0.5) = %d, want 0", got)
	}
}

func TestStamp(t *testing.T) {
	now := time.Unix(1764000000, 123456789)
	got, ok := sentAt(stamp(now))
	if !ok || !got.Equal(now) {
		t.Errorf("sentAt(stamp(%v)) = %v, %v; want %v, true", now, got, ok, now)
	}
	for _, bad := range []string{"", `{"n":1}`, `{"t":x}`} {
		if _, ok := sentAt([]byte(bad)); ok {
			t.Errorf("sentAt(%q) ok, want not ok", bad)
		}
	}
	if got := string(noopPayload(42)); got != `{"n":42}` {
		t.Errorf("noopPayload(42) = %s, want {\"n\":42}", got)
	}
}

func TestDiffStats(t *testing.T) {
	before := map[string]cmdStat{"get": {10, 100}, "set": {5, 50}}
	after := map[string]cmdStat{"get": {15, 130}, "set": {5, 50}, "del": {2, 4}}
	got := diffStats(before, after)
	want := map[string]cmdStat{"get": {5, 30}, "del": {2, 4}}
	if len(got) != len(want) || got["get"] != want["get"] || got["del"] != want["del"] {
		t.Errorf("diffStats = %v, want %v", got, want)
	}
}

func TestTable(t *testing.T) {
	var tb table
	tb.add("processing (jobs/s)", "%.0f", 30000, 10000, higher, "≥ 3×")
	tb.add("enqueue (jobs/s)", "%.0f", 15000, 10000, higher, "≥ 2×")
	tb.add("bytes per job", "%.0f", 300, 500, lower, "")
	s := tb.String()
	for _, want := range []string{"| processing (jobs/s) | 30000 |", "3.00×", "≥ 3× (met)", "≥ 2× (not met)", "lower is better"} {
		if !strings.Contains(s, want) {
			t.Errorf("table lacks %q:\n%s", want, s)
		}
	}
	if n := strings.Count(s, "\n"); n != 5 {
		t.Errorf("table has %d lines, want 5 (header, rule, 3 rows):\n%s", n, s)
	}
}

func TestProfileName(t *testing.T) {
	for _, tc := range []struct{ base, part, want string }{
		{"", "c10", ""},
		{"/tmp/cpu.pprof", "c10", "/tmp/cpu.c10.pprof"},
		{"cpu", "enqueue", "cpu.enqueue"},
	} {
		if got := profileName(tc.base, tc.part); got != tc.want {
			t.Errorf("profileName(%q, %q) = %q, want %q", tc.base, tc.part, got, tc.want)
		}
	}
}

func TestDialRefuses(t *testing.T) {
	for _, tc := range []struct {
		url  string
		db   int
		want string
	}{
		{"redis://127.0.0.1:1", 0, "not 0"},
		{"redis://127.0.0.1:1", -1, "not 0"},
		{"nonsense://x", 15, "-redis"},
	} {
		_, err := dial(t.Context(), tc.url, tc.db, 10)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("dial(%q, db %d) = %v, want an error mentioning %q", tc.url, tc.db, err, tc.want)
		}
	}
}

func TestFullBatches(t *testing.T) {
	const p = 4
	sent := make(chan []int, 10)
	b := &fullBatches[int]{p: p, send: func(_ context.Context, batch []int) error {
		sent <- batch
		return nil
	}}
	ctx := context.Background()
	if err := b.add(ctx, -1); err != nil {
		t.Fatal(err)
	}
	if got := <-sent; len(got) != 1 {
		t.Fatalf("warm-up call sent %v, want it alone", got)
	}
	var wg sync.WaitGroup
	for i := range 2 * p {
		wg.Go(func() {
			if err := b.add(ctx, i); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	close(sent)
	var n int
	for batch := range sent {
		if len(batch) != p {
			t.Errorf("batch %v, want %d jobs", batch, p)
		}
		n += len(batch)
	}
	if n != 2*p {
		t.Errorf("%d jobs sent, want %d", n, 2*p)
	}

	// Every producer of a batch gets its error.
	boom := errors.New("boom")
	b.send = func(context.Context, []int) error { return boom }
	for i := range p {
		wg.Go(func() {
			if err := b.add(ctx, i); !errors.Is(err, boom) {
				t.Errorf("add = %v, want %v", err, boom)
			}
		})
	}
	wg.Wait()
}
