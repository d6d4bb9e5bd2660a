package main

import (
	"strings"
	"testing"
	"time"
)

func TestMostInWindow(t *testing.T) {
	for _, tc := range []struct {
		ts    []int64
		width int64
		want  int
	}{
		{nil, 1000, 0},
		{[]int64{5}, 1000, 1},
		// The window is closed: both ends count.
		{[]int64{0, 1000}, 1000, 2},
		{[]int64{0, 1001}, 1000, 1},
		{[]int64{0, 0, 0, 1000, 1001, 1001}, 1000, 4},
		{[]int64{0, 10, 20, 990, 1500, 1600, 1700, 1990, 2000}, 1000, 5},
		{[]int64{0, 10, 20, 990, 1000, 1600, 1700, 1990, 2000}, 1000, 5},
		{[]int64{0, 10, 20, 990, 1000, 1000, 1700, 1990, 2000}, 1000, 6},
		// Equal times all count in one window.
		{[]int64{7, 7, 7, 7}, 0, 4},
	} {
		if got := mostInWindow(tc.ts, tc.width); got != tc.want {
			t.Errorf("mostInWindow(%v, %d) = %d, want %d", tc.ts, tc.width, got, tc.want)
		}
	}
	// Against counting every window by brute force.
	ts := []int64{}
	for i := range int64(3000) {
		ts = append(ts, i*i%997+i/3)
	}
	sortInts(ts)
	for _, width := range []int64{0, 1, 50, 333, 1000} {
		want := 0
		for i := range ts {
			n := 0
			for j := range ts {
				if ts[j] >= ts[i] && ts[j]-ts[i] <= width {
					n++
				}
			}
			want = max(want, n)
		}
		if got := mostInWindow(ts, width); got != want {
			t.Errorf("width %d: mostInWindow = %d, brute force %d", width, got, want)
		}
	}
}

func sortInts(s []int64) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

func TestRateBound(t *testing.T) {
	for _, tc := range []struct {
		rate        int
		per, window time.Duration
		want        int
	}{
		{1000, time.Second, time.Second, 1011}, // Rate + Rate/100 + 1
		{100, time.Second, time.Second, 102},
		{50, time.Second, time.Second, 51}, // Per/100 is half a gap: no extra start
		{1000, time.Second, 1100 * time.Millisecond, 1111},
		{1000, time.Second, 0, 11}, // the burst tolerance alone
		{60, time.Minute, time.Minute, 61},
	} {
		if got := rateBound(tc.rate, tc.per, tc.window); got != tc.want {
			t.Errorf("rateBound(%d, %s, %s) = %d, want %d", tc.rate, tc.per, tc.window, got, tc.want)
		}
	}
}

func TestLimitKey(t *testing.T) {
	for i := range []int{0, 1, 999} {
		if got := keyIndex(limitKey(i)); got != i {
			t.Errorf("keyIndex(limitKey(%d)) = %d", i, got)
		}
	}
	for _, k := range []string{"", "x1", "k", "k-", "1"} {
		if got := keyIndex(k); got != -1 {
			t.Errorf("keyIndex(%q) = %d, want -1", k, got)
		}
	}
}

func TestCmdTableN(t *testing.T) {
	by := []map[string]cmdStat{
		{"evalsha": {400, 4000}, "get": {1, 1}},
		{"evalsha": {50, 1000}, "publish": {30, 30}},
	}
	s := cmdTableN([]string{"a", "b"}, by, []int{200, 50})
	for _, want := range []string{"| command ", "| evalsha ", "2.000 (20.00 µs)", "1.000 (20.00 µs)", "| publish ", "0.600 (0.60 µs)", "| total calls ", "2.005", "1.600"} {
		if !strings.Contains(s, want) {
			t.Errorf("table lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "| get ") {
		t.Errorf("get, 0.005 calls per job, should be among all others:\n%s", s)
	}
	if i, j := strings.Index(s, "evalsha"), strings.Index(s, "publish"); i > j {
		t.Errorf("evalsha (more calls per job) should come first:\n%s", s)
	}
}
