package rqgo

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo/internal/redistest"
)

// fakeClock is a clock that moves only when a test moves it. Schedulers
// wait on it instead of on timers, and a test can wait until a given number
// of them are waiting: then every scheduler has done what the last move made
// due.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters map[*fakeWaiter]struct{}
	changed chan struct{} // closed and replaced whenever waiters change
}

type fakeWaiter struct {
	at time.Time
	ch chan struct{}
}

func newFakeClock(t time.Time) *fakeClock {
	return &fakeClock{now: t, waiters: map[*fakeWaiter]struct{}{}, changed: make(chan struct{})}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) notify() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// wait blocks until the clock reaches at or ctx ends.
func (c *fakeClock) wait(ctx context.Context, at time.Time) error {
	c.mu.Lock()
	if !c.now.Before(at) {
		c.mu.Unlock()
		return ctx.Err()
	}
	w := &fakeWaiter{at: at, ch: make(chan struct{})}
	c.waiters[w] = struct{}{}
	c.notify()
	c.mu.Unlock()
	select {
	case <-w.ch:
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.waiters, w)
		c.notify()
		c.mu.Unlock()
		return ctx.Err()
	}
}

// Set moves the clock to t and wakes the waiters that are due.
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
	for w := range c.waiters {
		if !t.Before(w.at) {
			close(w.ch)
			delete(c.waiters, w)
		}
	}
	c.notify()
}

func (c *fakeClock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

// waitWaiters waits until n goroutines wait on the clock.
func (c *fakeClock) waitWaiters(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		c.mu.Lock()
		got, ch := len(c.waiters), c.changed
		c.mu.Unlock()
		if got == n {
			return
		}
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("%d schedulers wait on the clock, want %d", got, n)
		}
	}
}

// scheduler returns a scheduler on e whose clock is c's plus skew.
func (c *fakeClock) scheduler(t *testing.T, e *testEnv, skew time.Duration, o SchedulerOptions) *Scheduler {
	o.Prefix = e.prefix
	o.Now = func() time.Time { return c.Now().Add(skew) }
	if o.Logger == nil {
		o.Logger = testLogger(t)
	}
	s := NewScheduler(e.rdb, o)
	s.wait = func(ctx context.Context, until time.Time) error { return c.wait(ctx, until.Add(-skew)) }
	return s
}

// runScheduler runs s until the returned stop is called (or the test ends)
// and fails the test if Run returns an error.
func runScheduler(t *testing.T, s *Scheduler) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Scheduler.Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func mustAdd(t *testing.T, s *Scheduler, e ScheduleEntry) {
	t.Helper()
	if err := s.AddEntry(e); err != nil {
		t.Fatalf("AddEntry(%+v): %v", e, err)
	}
}

func mustTick(t *testing.T, s *Scheduler) {
	t.Helper()
	if err := s.Tick(t.Context()); err != nil {
		t.Fatalf("Tick: %v", err)
	}
}

// pendingTicks returns the ticks of the jobs queued in q for the entry name,
// in queue order, and fails the test on a job id queued twice or not
// belonging to the entry.
func pendingTicks(t *testing.T, e *testEnv, queue, name string) []time.Time {
	t.Helper()
	ids, err := e.rdb.LRange(t.Context(), newKeys(e.prefix, queue).pending(), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var ticks []time.Time
	for _, id := range ids {
		if seen[id] {
			t.Errorf("job %s is queued twice", id)
		}
		seen[id] = true
		n, ok := strings.CutPrefix(id, name+"@")
		if !ok {
			continue
		}
		sec, err := strconv.ParseInt(n, 10, 64)
		if err != nil {
			t.Fatalf("job id %q: tick is not a number", id)
		}
		ticks = append(ticks, time.Unix(sec, 0).UTC())
	}
	return ticks
}

// wantTicks checks that got is exactly want.
func wantTicks(t *testing.T, what string, got, want []time.Time) {
	t.Helper()
	if !slices.EqualFunc(got, want, time.Time.Equal) {
		t.Errorf("%s: jobs for ticks\n%v\nwant\n%v", what, fmtTicks(got), fmtTicks(want))
	}
}

func fmtTicks(ts []time.Time) string {
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = t.UTC().Format(time.RFC3339)
	}
	return strings.Join(s, " ")
}

// every returns the times from first to last, step apart.
func every(first, last time.Time, step time.Duration) []time.Time {
	var ts []time.Time
	for t := first; !t.After(last); t = t.Add(step) {
		ts = append(ts, t.UTC())
	}
	return ts
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestParseSpec(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skipf("no time zone data: %v", err)
	}
	after := time.Date(2026, 1, 1, 0, 0, 30, 0, time.UTC) // a Thursday
	for _, tc := range []struct {
		spec, tz string
		next     time.Time
		zone     string
	}{
		{"0 3 * * *", "", time.Date(2026, 1, 1, 3, 0, 0, 0, time.UTC), "UTC"},
		{"  */15  * * * * ", "", time.Date(2026, 1, 1, 0, 15, 0, 0, time.UTC), "UTC"},
		{"0 3 * * *", "Europe/Berlin", time.Date(2026, 1, 1, 3, 0, 0, 0, berlin), "Europe/Berlin"},
		{"CRON_TZ=Europe/Berlin 0 3 * * *", "", time.Date(2026, 1, 1, 3, 0, 0, 0, berlin), "Europe/Berlin"},
		{"TZ=Europe/Berlin @daily", "", time.Date(2026, 1, 2, 0, 0, 0, 0, berlin), "Europe/Berlin"},
		{"@hourly", "", time.Date(2026, 1, 1, 1, 0, 0, 0, time.UTC), "UTC"},
		{"0 9 * * MON-FRI", "", time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC), "UTC"},
		{"@every 5m", "", time.Date(2026, 1, 1, 0, 5, 0, 0, time.UTC), ""},
		{"@every 1s", "", time.Date(2026, 1, 1, 0, 0, 31, 0, time.UTC), ""},
		{"@every 7m", "", time.Unix((after.Unix()/420+1)*420, 0), ""},
		{"0 0 29 2 *", "", time.Date(2028, 2, 29, 0, 0, 0, 0, time.UTC), "UTC"},
	} {
		t.Run(tc.spec+"/"+tc.tz, func(t *testing.T) {
			s, zone, err := parseSpec(tc.spec, tc.tz, time.UTC)
			if err != nil {
				t.Fatalf("parseSpec(%q, %q): %v", tc.spec, tc.tz, err)
			}
			if zone != tc.zone {
				t.Errorf("zone = %q, want %q", zone, tc.zone)
			}
			next := s.next(after)
			if !next.Equal(tc.next) {
				t.Errorf("next(%v) = %v, want %v", after, next, tc.next)
			}
			if prev := s.prev(next); !prev.Equal(next) {
				t.Errorf("prev(%v) = %v, want the tick itself", next, prev)
			}
			if prev := s.prev(next.Add(-time.Millisecond)); !prev.Before(next) || !s.next(prev).Equal(next) {
				t.Errorf("prev(just before %v) = %v, want the tick before", next, prev)
			}
		})
	}
	for _, tc := range []struct{ spec, tz, want string }{
		{"", "", "cron spec is empty"},
		{"0 3 * *", "", `bad cron spec "0 3 * *"`},
		{"61 * * * *", "", `bad cron spec "61 * * * *"`},
		{"0 3 * * * *", "", `bad cron spec`},
		{"@weekly-ish", "", `bad cron spec`},
		{"@every 1500ms", "", "whole number of seconds"},
		{"@every 0s", "", "whole number of seconds"},
		{"@every soon", "", "whole number of seconds"},
		{"0 0 30 2 *", "", "never fires"},
		{"0 3 * * *", "Europe/Berln", `unknown time zone "Europe/Berln"`},
		{"CRON_TZ=Mars/Olympus 0 3 * * *", "", `bad cron spec`},
		{"CRON_TZ=Europe/Berlin 0 3 * * *", "UTC", "has a time zone and so has the entry"},
	} {
		_, _, err := parseSpec(tc.spec, tc.tz, time.UTC)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseSpec(%q, %q) = %v, want an error containing %q", tc.spec, tc.tz, err, tc.want)
		}
	}
}

func TestSchedulerAddErrors(t *testing.T) {
	e := newMiniEnv(t)
	s := NewScheduler(e.rdb, SchedulerOptions{Prefix: e.prefix})
	for _, tc := range []struct {
		entry ScheduleEntry
		want  string
	}{
		{ScheduleEntry{Cron: "bad", Func: "f"}, `schedule entry (func "f", cron "bad"): bad cron spec`},
		{ScheduleEntry{Name: "n", Cron: "* * * * *", Func: "f", Timezone: "Nowhere"}, `schedule entry "n": unknown time zone "Nowhere"`},
		{ScheduleEntry{Name: "a b", Cron: "* * * * *", Func: "f"}, `schedule name "a b" must not contain`},
		{ScheduleEntry{Name: "n", Cron: "* * * * *", Func: "f", Queue: "{q}"}, `queue name "{q}"`},
		{ScheduleEntry{Name: "n", Cron: "* * * * *", Func: ""}, "function name is empty"},
		{ScheduleEntry{Name: "n", Cron: "* * * * *", Func: "f", Args: func() {}}, "args do not encode to JSON"},
		{ScheduleEntry{Name: "n", Cron: "* * * * *", Func: "f", Options: []EnqueueOption{JobID("x")}}, "JobID cannot be used"},
		{ScheduleEntry{Name: "n", Cron: "* * * * *", Func: "f", Options: []EnqueueOption{Retry(-1)}}, "retry count -1 is negative"},
	} {
		err := s.AddEntry(tc.entry)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("AddEntry(%+v) = %v, want ErrInvalid containing %q", tc.entry, err, tc.want)
		}
	}
	if err := s.Add("0 3 * * *", "cleanup", nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Add("0 3 * * *", "cleanup", map[string]int{"days": 1}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "added twice") {
		t.Errorf("second Add of the same spec, func and queue = %v, want an error saying it is added twice", err)
	}
	if err := s.AddEntry(ScheduleEntry{Name: "cleanup-2", Cron: "0 3 * * *", Func: "cleanup"}); err != nil {
		t.Errorf("the same entry under another name: %v", err)
	}
	if err := NewScheduler(e.rdb, SchedulerOptions{Prefix: "a:b"}).Add("* * * * *", "f", nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("Add on a scheduler with a bad prefix = %v, want ErrInvalid", err)
	}
	if err := NewScheduler(e.rdb, SchedulerOptions{Grace: -time.Second}).Run(t.Context()); !errors.Is(err, ErrInvalid) {
		t.Errorf("Run with a negative grace = %v, want ErrInvalid", err)
	}
	if err := NewScheduler(e.rdb, SchedulerOptions{}).Run(t.Context()); !errors.Is(err, ErrInvalid) {
		t.Errorf("Run without entries = %v, want ErrInvalid", err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Run(ctx); err != nil {
		t.Errorf("Run with a canceled context = %v, want nil", err)
	}
	if err := s.Add("@hourly", "late", nil); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "after Run started") {
		t.Errorf("Add after Run = %v, want an error saying Run has started", err)
	}
	if err := s.Run(t.Context()); err == nil {
		t.Errorf("second Run = nil, want an error")
	}
}

func TestDerivedNames(t *testing.T) {
	name := func(e ScheduleEntry) string {
		t.Helper()
		ce, err := compileEntry(e, time.UTC)
		if err != nil {
			t.Fatal(err)
		}
		return ce.Name
	}
	a := name(ScheduleEntry{Cron: "0 3 * * *", Func: "cleanup"})
	if !strings.HasPrefix(a, "cleanup-") || len(a) != len("cleanup-")+12 {
		t.Errorf("derived name %q, want cleanup-<12 hex digits>", a)
	}
	for _, same := range []ScheduleEntry{
		{Cron: "0 3 * * *", Func: "cleanup", Args: 42},
		{Cron: " 0  3 * * * ", Func: "cleanup", Queue: "default"},
		{Cron: "0 3 * * *", Func: "cleanup", Timezone: "UTC"},
	} {
		if got := name(same); got != a {
			t.Errorf("name of %+v = %q, want %q like the same entry's", same, got, a)
		}
	}
	for _, other := range []ScheduleEntry{
		{Cron: "0 4 * * *", Func: "cleanup"},
		{Cron: "0 3 * * *", Func: "cleanup2"},
		{Cron: "0 3 * * *", Func: "cleanup", Queue: "low"},
		{Cron: "0 3 * * *", Func: "cleanup", Timezone: "Europe/Berlin"},
	} {
		if got := name(other); got == a {
			t.Errorf("name of %+v = %q, the same as a different entry's", other, got)
		}
	}
	if got := name(ScheduleEntry{Cron: "@daily", Func: "mail:send"}); !strings.HasPrefix(got, "schedule-") {
		t.Errorf("derived name for a function with a colon = %q, want schedule-<hex>", got)
	}
}

func TestParseScheduleFile(t *testing.T) {
	good := `[
	  {"name": "nightly-cleanup", "cron": "0 3 * * *", "func": "cleanup", "args": {"days": 30},
	   "queue": "default", "timezone": "Europe/Berlin", "retry": 2, "timeout": "10m"},
	  {"cron": "@every 5m", "func": "ping"}
	]`
	entries, err := ParseScheduleFile(strings.NewReader(good))
	if err != nil {
		t.Fatalf("ParseScheduleFile: %v", err)
	}
	if len(entries) != 2 {
		t.Fatalf("%d entries, want 2", len(entries))
	}
	e := entries[0]
	if e.Name != "nightly-cleanup" || e.Cron != "0 3 * * *" || e.Func != "cleanup" || e.Queue != "default" || e.Timezone != "Europe/Berlin" {
		t.Errorf("entry 1 = %+v", e)
	}
	if raw, ok := e.Args.(json.RawMessage); !ok || string(raw) != `{"days": 30}` {
		t.Errorf("entry 1 args = %#v, want the JSON as written", e.Args)
	}
	var o enqueueOptions
	for _, opt := range e.Options {
		opt(&o)
	}
	if o.maxRetries != 2 || o.timeout != 10*time.Minute {
		t.Errorf("entry 1 options: retry %d, timeout %s; want 2 and 10m", o.maxRetries, o.timeout)
	}
	if entries[1].Args != nil || entries[1].Name != "" {
		t.Errorf("entry 2 = %+v, want no args and no name (derived when added)", entries[1])
	}

	for _, tc := range []struct{ file, want string }{
		{`[{"name": "x", "cron": "0 3 * * *", "func": "f", "crn": "1"}]`, `entry 1 ("x"): unknown field "crn"`},
		{`[{"cron": "0 3 * * *", "func": "f"}, {"name": "y", "cron": "0 3 * *", "func": "f"}]`, `entry 2 ("y"): bad cron spec "0 3 * *"`},
		{`[{"name": "z", "cron": "0 3 * * *", "func": "f", "timezone": "Europe/Berln"}]`, `entry 1 ("z"): unknown time zone "Europe/Berln"`},
		{`[{"name": "z", "cron": "0 3 * * *"}]`, `entry 1 ("z"): "cron" and "func" are required`},
		{`[{"name": "z", "cron": "0 3 * * *", "func": "f", "timeout": "ten"}]`, `entry 1 ("z"): timeout "ten" is not a duration`},
		{`[{"name": "z", "cron": "0 3 * * *", "func": "f", "timeout": "-1s"}]`, `entry 1 ("z"): timeout -1s is not positive`},
		{`[{"name": "z", "cron": "0 3 * * *", "func": "f", "retry": -2}]`, `entry 1 ("z"): retry count -2 is negative`},
		{`[{"name": "z", "cron": "0 3 * * *", "func": "f", "retry": "2"}]`, `entry 1 ("z"): cannot unmarshal string`},
		{`[{"name": "a:b", "cron": "0 3 * * *", "func": "f"}]`, `entry 1 ("a:b"): schedule name "a:b" must not contain`},
		{`[{"name": "d", "cron": "0 3 * * *", "func": "f"}, {"name": "d", "cron": "@daily", "func": "g"}]`, `entry 2 ("d"): entry 1 has the same name "d"`},
		{`[{"cron": "0 3 * * *", "func": "f"}, {"cron": "0 3 * * *", "func": "f", "args": [1]}]`, `entry 2: entry 1 has the same name`},
		{`{"name": "x"}`, "want a JSON array of entries"},
		{`[{"name": "x", "cron": "0 3 * * *", "func": "f"}] []`, "data after the array"},
		{``, "want a JSON array of entries"},
	} {
		_, err := ParseScheduleFile(strings.NewReader(tc.file))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseScheduleFile(%s) = %v, want ErrInvalid containing %q", tc.file, err, tc.want)
		}
	}
	if entries, err := ParseScheduleFile(strings.NewReader(`[]`)); err != nil || len(entries) != 0 {
		t.Errorf("ParseScheduleFile([]) = %v, %v; want no entries", entries, err)
	}
}

// Two schedulers with clocks a little apart run the same entries over many
// ticks: every tick becomes exactly one job, none is skipped.
func TestSchedulerTwoSchedulersExactlyOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		start := t0.Add(500 * time.Millisecond)
		clk := newFakeClock(start)
		skews := []time.Duration{300 * time.Millisecond, -450 * time.Millisecond}
		for _, skew := range skews {
			s := clk.scheduler(t, e, skew, SchedulerOptions{})
			mustAdd(t, s, ScheduleEntry{Name: "ten", Cron: "@every 10s", Func: "f"})
			mustAdd(t, s, ScheduleEntry{Name: "min", Cron: "* * * * *", Func: "f", Queue: "other"})
			runScheduler(t, s)
		}
		rng := rand.New(rand.NewPCG(1, 2))
		end := start.Add(30 * time.Minute)
		for clk.waitWaiters(t, 2); clk.Now().Before(end); clk.waitWaiters(t, 2) {
			clk.Advance(time.Duration(500+rng.IntN(3500)) * time.Millisecond)
		}
		last := clk.Now().Add(300 * time.Millisecond) // the fast scheduler's clock
		wantTicks(t, "@every 10s", pendingTicks(t, e, "default", "ten"), every(t0, last.Truncate(10*time.Second), 10*time.Second))
		wantTicks(t, "* * * * *", pendingTicks(t, e, "other", "min"), every(t0, last.Truncate(time.Minute), time.Minute))
	})
}

// Many schedulers evaluate the same tick at the same instant.
func TestSchedulerConcurrentTick(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		clk := newFakeClock(t0)
		var ss []*Scheduler
		for range 6 {
			s := clk.scheduler(t, e, 0, SchedulerOptions{})
			mustAdd(t, s, ScheduleEntry{Name: "race", Cron: "@every 1m", Func: "f"})
			ss = append(ss, s)
		}
		const ticks = 40
		for i := range ticks {
			clk.Set(t0.Add(time.Duration(i) * time.Minute))
			var wg sync.WaitGroup
			errs := make([]error, len(ss))
			for j, s := range ss {
				wg.Go(func() { errs[j] = s.Tick(t.Context()) })
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatalf("Tick: %v", err)
			}
		}
		wantTicks(t, "6 schedulers", pendingTicks(t, e, "default", "race"), every(t0, t0.Add((ticks-1)*time.Minute), time.Minute))
	})
}

// The entry's last_tick, not only the job id, stops a second job for a tick:
// a job deleted early (result TTL 0) is not enqueued again, and a scheduler
// whose clock is behind does not enqueue an older tick.
func TestSchedulerLastTickGuard(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		clk := newFakeClock(t0.Add(2 * time.Minute))
		fast := clk.scheduler(t, e, 0, SchedulerOptions{})
		slow := clk.scheduler(t, e, -70*time.Second, SchedulerOptions{})
		for _, s := range []*Scheduler{fast, slow} {
			mustAdd(t, s, ScheduleEntry{Name: "g", Cron: "* * * * *", Func: "f"})
		}
		mustTick(t, fast)
		q := e.queue("default")
		id := "g@" + strconv.FormatInt(t0.Add(2*time.Minute).Unix(), 10)
		if _, err := q.FetchJob(t.Context(), id); err != nil {
			t.Fatalf("job of the tick: %v", err)
		}
		if err := e.rdb.Del(t.Context(), q.k.job(id)).Err(); err != nil {
			t.Fatal(err)
		}
		e.rdb.Del(t.Context(), q.k.pending())
		mustTick(t, fast)
		mustTick(t, newSchedulerLike(t, clk, e, 0, "g"))
		mustTick(t, slow) // its clock says 00:00:50: tick 00:00 is older than last_tick
		if got := pendingTicks(t, e, "default", "g"); len(got) != 0 {
			t.Errorf("ticks enqueued again: %v", fmtTicks(got))
		}
	})
}

// newSchedulerLike returns a fresh scheduler (as after a restart) with one
// every-minute entry called name.
func newSchedulerLike(t *testing.T, clk *fakeClock, e *testEnv, skew time.Duration, name string) *Scheduler {
	s := clk.scheduler(t, e, skew, SchedulerOptions{})
	mustAdd(t, s, ScheduleEntry{Name: name, Cron: "* * * * *", Func: "f"})
	return s
}

func TestSchedulerCatchUp(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		entry := ScheduleEntry{Name: "ten", Cron: "*/10 * * * *", Func: "f"}
		for _, catchUp := range []bool{false, true} {
			t.Run(fmt.Sprint("CatchUp=", catchUp), func(t *testing.T) {
				entry := entry
				entry.Queue = fmt.Sprint("q", catchUp)
				clk := newFakeClock(t0)
				newS := func() *Scheduler {
					s := clk.scheduler(t, e, 0, SchedulerOptions{CatchUp: catchUp})
					mustAdd(t, s, entry)
					return s
				}
				mustTick(t, newS()) // 00:00, then every scheduler stops
				clk.Set(t0.Add(35 * time.Minute))
				mustTick(t, newS()) // 00:10, 00:20, 00:30 were missed
				clk.Set(t0.Add(36 * time.Minute))
				mustTick(t, newS()) // a second scheduler starting late changes nothing
				clk.Set(t0.Add(40 * time.Minute))
				mustTick(t, newS())
				want := []time.Time{t0, t0.Add(40 * time.Minute)}
				if catchUp {
					want = []time.Time{t0, t0.Add(30 * time.Minute), t0.Add(40 * time.Minute)}
				}
				wantTicks(t, "after missed ticks", pendingTicks(t, e, entry.Queue, entry.Name), want)

				// A new entry has missed nothing: no catch-up of ticks before it.
				fresh := ScheduleEntry{Name: "fresh", Cron: "*/10 * * * *", Func: "f", Queue: entry.Queue}
				clk.Set(t0.Add(45 * time.Minute))
				s := clk.scheduler(t, e, 0, SchedulerOptions{CatchUp: catchUp})
				mustAdd(t, s, fresh)
				mustTick(t, s)
				if got := pendingTicks(t, e, entry.Queue, "fresh"); len(got) != 0 {
					t.Errorf("a new entry enqueued ticks from before it existed: %v", fmtTicks(got))
				}
			})
		}
	})
}

// A scheduler stopped and started again (the only one, or one of two) never
// skips a tick that falls within the grace and never doubles one.
func TestSchedulerRestart(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		clk := newFakeClock(t0)
		entry := ScheduleEntry{Name: "r", Cron: "@every 30s", Func: "f"}
		start := func(skew time.Duration) func() {
			s := clk.scheduler(t, e, skew, SchedulerOptions{})
			mustAdd(t, s, entry)
			return runScheduler(t, s)
		}
		stops := []func(){start(0), start(200 * time.Millisecond)}
		clk.waitWaiters(t, 2)
		rng := rand.New(rand.NewPCG(3, 4))
		for i := range 300 {
			clk.Advance(time.Duration(1+rng.IntN(10)) * time.Second)
			clk.waitWaiters(t, 2)
			if i%7 == 0 { // restart one of them at once
				k := rng.IntN(2)
				stops[k]()
				stops[k] = start(time.Duration(k) * 200 * time.Millisecond)
				clk.waitWaiters(t, 2)
			}
			if i%50 == 25 { // restart both, seconds apart, across a tick
				stops[0]()
				stops[1]()
				clk.Advance(time.Duration(20+rng.IntN(20)) * time.Second)
				stops[0] = start(0)
				clk.waitWaiters(t, 1)
				stops[1] = start(200 * time.Millisecond)
				clk.waitWaiters(t, 2)
			}
		}
		last := clk.Now().Add(200 * time.Millisecond)
		wantTicks(t, "with restarts", pendingTicks(t, e, "default", "r"), every(t0, last.Truncate(30*time.Second), 30*time.Second))
	})
}

// "30 2 * * *" in Europe/Berlin follows robfig/cron: on the spring-forward
// day 02:30 does not exist and there is no job; on the fall-back day 02:30
// happens twice (CEST, then CET) and each is a job.
func TestSchedulerDST(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skipf("no time zone data: %v", err)
	}
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		for _, tc := range []struct {
			name string
			from time.Time
			days int
			want []time.Time
		}{
			{"spring-forward", time.Date(2026, 3, 27, 0, 0, 0, 0, berlin), 5, []time.Time{
				time.Date(2026, 3, 27, 1, 30, 0, 0, time.UTC), // 02:30 CET
				time.Date(2026, 3, 28, 1, 30, 0, 0, time.UTC),
				// 2026-03-29: 02:00 CET jumps to 03:00 CEST, no 02:30
				time.Date(2026, 3, 30, 0, 30, 0, 0, time.UTC), // 02:30 CEST
				time.Date(2026, 3, 31, 0, 30, 0, 0, time.UTC),
			}},
			{"fall-back", time.Date(2026, 10, 23, 0, 0, 0, 0, berlin), 4, []time.Time{
				time.Date(2026, 10, 23, 0, 30, 0, 0, time.UTC), // 02:30 CEST
				time.Date(2026, 10, 24, 0, 30, 0, 0, time.UTC),
				time.Date(2026, 10, 25, 0, 30, 0, 0, time.UTC), // 02:30 CEST
				time.Date(2026, 10, 25, 1, 30, 0, 0, time.UTC), // 02:30 CET, an hour later
				time.Date(2026, 10, 26, 1, 30, 0, 0, time.UTC),
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				clk := newFakeClock(tc.from)
				s := clk.scheduler(t, e, 0, SchedulerOptions{})
				mustAdd(t, s, ScheduleEntry{Name: tc.name, Cron: "30 2 * * *", Func: "f", Timezone: "Europe/Berlin"})
				for end := tc.from.AddDate(0, 0, tc.days); clk.Now().Before(end); clk.Advance(10 * time.Minute) {
					mustTick(t, s)
				}
				wantTicks(t, tc.name, pendingTicks(t, e, "default", tc.name), tc.want)
			})
		}
	})
}

// A tick's job is the job Queue.Enqueue makes with the same options, and the
// entry's state is listed by Schedules.
func TestSchedulerJobAndListing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		clk := newFakeClock(t0.Add(3*time.Hour + 20*time.Second))
		s := clk.scheduler(t, e, 0, SchedulerOptions{})
		opts := []EnqueueOption{Retry(5), Timeout(time.Minute), Backoff(time.Second, time.Minute), ResultTTL(time.Hour)}
		mustAdd(t, s, ScheduleEntry{Name: "nightly", Cron: "0 3 * * *", Func: "cleanup", Args: map[string]int{"days": 30},
			Queue: "maint", Options: opts})
		mustAdd(t, s, ScheduleEntry{Name: "later", Cron: "@every 1h", Func: "ping", Options: []EnqueueOption{In(time.Hour)}})
		mustTick(t, s)

		q := e.queue("maint")
		ctx := t.Context()
		if _, err := q.EnqueueContext(ctx, "cleanup", map[string]int{"days": 30}, append(opts, JobID("by-hand"))...); err != nil {
			t.Fatal(err)
		}
		id := "nightly@" + strconv.FormatInt(t0.Add(3*time.Hour).Unix(), 10)
		got := e.rdb.HGetAll(ctx, q.k.job(id)).Val()
		want := e.rdb.HGetAll(ctx, q.k.job("by-hand")).Val()
		for _, f := range []string{fID, fCreatedAt, fEnqueuedAt} {
			if got[f] == "" {
				t.Errorf("scheduled job has no %s", f)
			}
			delete(got, f)
			delete(want, f)
		}
		if !mapsEqual(got, want) {
			t.Errorf("scheduled job hash\n%v\nwant as enqueued by hand\n%v", got, want)
		}
		j, err := q.FetchJob(ctx, id)
		if err != nil || j.Status != StatusQueued || j.Func != "cleanup" || string(j.Args) != `{"days":30}` {
			t.Errorf("FetchJob(%s) = %+v, %v", id, j, err)
		}
		later := "later@" + strconv.FormatInt(t0.Add(3*time.Hour).Unix(), 10)
		if j, err := e.queue("default").FetchJob(ctx, later); err != nil || j.Status != StatusScheduled {
			t.Errorf("job of an entry with In(1h) = %+v, %v; want scheduled", j, err)
		}

		infos, err := Schedules(ctx, e.rdb, e.prefix)
		if err != nil {
			t.Fatal(err)
		}
		if len(infos) != 2 {
			t.Fatalf("Schedules: %d entries, want 2: %+v", len(infos), infos)
		}
		i := infos[1] // sorted by queue: default, maint
		if i.Name != "nightly" || i.Queue != "maint" || i.Func != "cleanup" || i.Spec != "0 3 * * *" || i.Timezone != "UTC" ||
			i.LastJobID != id || !i.LastTick.Equal(t0.Add(3*time.Hour)) || !i.NextRun.Equal(t0.Add(27*time.Hour)) ||
			i.LastRun.IsZero() || !i.CreatedAt.Equal(clk.Now()) {
			t.Errorf("Schedules()[1] = %+v", i)
		}
		if i := infos[0]; i.Name != "later" || i.Timezone != "" || !i.NextRun.Equal(t0.Add(4*time.Hour)) {
			t.Errorf("Schedules()[0] = %+v", i)
		}
		members := e.rdb.SMembers(ctx, queuesKey(e.prefix)).Val()
		slices.Sort(members)
		if !slices.Equal(members, []string{"default", "maint"}) {
			t.Errorf("known queues %v, want default and maint", members)
		}
		if ttl := e.rdb.PTTL(ctx, q.k.schedule("nightly")).Val(); ttl < 29*24*time.Hour {
			t.Errorf("state TTL %s, want about 30 days", ttl)
		}

		// An expired entry is not listed.
		e.rdb.Del(ctx, q.k.schedule("nightly"))
		if infos, err := Schedules(ctx, e.rdb, e.prefix); err != nil || len(infos) != 1 {
			t.Errorf("Schedules after the state expired = %+v, %v; want the other entry only", infos, err)
		}
	})
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// Run keeps going through Redis errors and enqueues the tick once Redis
// answers again, within the grace.
func TestSchedulerRunRetriesRedisErrors(t *testing.T) {
	e := newMiniEnv(t)
	clk := newFakeClock(t0.Add(10 * time.Second))
	s := clk.scheduler(t, e, 0, SchedulerOptions{Logger: slog.New(slog.DiscardHandler)})
	mustAdd(t, s, ScheduleEntry{Name: "x", Cron: "* * * * *", Func: "f"})
	e.mr.SetError("LOADING Redis is loading the dataset in memory")
	runScheduler(t, s) // tick 00:00 fails
	clk.waitWaiters(t, 1)
	e.mr.SetError("")
	if got := pendingTicks(t, e, "default", "x"); len(got) != 0 {
		t.Fatalf("jobs while Redis failed: %v", fmtTicks(got))
	}
	clk.Advance(time.Second) // the retry after 1s succeeds
	clk.waitWaiters(t, 1)
	wantTicks(t, "after an error", pendingTicks(t, e, "default", "x"), []time.Time{t0})
}

func init() { childModes["scheduler"] = childScheduler }

// childScheduler runs a scheduler with one "@every 1s" entry until its
// standard input closes, logging each job it enqueues on stdout.
func childScheduler() int {
	opts, err := redis.ParseURL(os.Getenv("RQGO_TEST_URL"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	s := NewScheduler(rdb, SchedulerOptions{
		Prefix: os.Getenv("RQGO_TEST_PREFIX"),
		Logger: slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err := s.AddEntry(ScheduleEntry{Name: "sec", Cron: "@every 1s", Func: "f"}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	fmt.Println("ready")
	if err := s.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// Two scheduler processes on the real clock and real Redis: one job per
// second, none skipped, none doubled.
func TestSchedulerProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("takes a few seconds of real time")
	}
	e := newRealEnv(t)
	type child struct {
		cmd   *exec.Cmd
		stdin io.Closer
		won   int
	}
	enqueued := make(chan int, 64)
	var children []*child
	var readers sync.WaitGroup
	for k := range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "RQGO_TEST_CHILD=scheduler", "RQGO_TEST_URL="+redistest.SharedURL(), "RQGO_TEST_PREFIX="+e.prefix)
		cmd.Stderr = &testLineWriter{log: testLogger(t)}
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		children = append(children, &child{cmd: cmd, stdin: stdin})
		readers.Go(func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if strings.Contains(sc.Text(), "periodic job enqueued") {
					enqueued <- k
				}
			}
		})
	}
	const ticks = 5
	timeout := time.After(30 * time.Second)
	for range ticks {
		select {
		case k := <-enqueued:
			children[k].won++
		case <-timeout:
			t.Fatalf("fewer than %d jobs enqueued within 30s", ticks)
		}
	}
	for _, c := range children {
		c.stdin.Close()
	}
	readers.Wait() // before Wait, which closes the pipes
	for _, c := range children {
		if err := c.cmd.Wait(); err != nil {
			t.Errorf("scheduler process: %v", err)
		}
	}
	close(enqueued)
	for k := range enqueued {
		children[k].won++
	}
	got := pendingTicks(t, e, "default", "sec")
	if len(got) < ticks {
		t.Fatalf("%d jobs, want at least %d", len(got), ticks)
	}
	wantTicks(t, "two processes", got, every(got[0], got[len(got)-1], time.Second))
	if n := children[0].won + children[1].won; n != len(got) {
		t.Errorf("the processes logged %d enqueued jobs, Redis holds %d", n, len(got))
	}
	t.Logf("%d ticks: process 1 enqueued %d, process 2 enqueued %d", len(got), children[0].won, children[1].won)
}

// BenchmarkSchedulerTick measures one tick of one entry: computing the tick
// and the one script call that records it and enqueues its job.
func BenchmarkSchedulerTick(b *testing.B) {
	e := benchEnv(b)
	var now time.Time
	s := NewScheduler(e.rdb, SchedulerOptions{Prefix: e.prefix, Now: func() time.Time { return now }})
	if err := s.AddEntry(ScheduleEntry{Name: "bench", Cron: "@every 1s", Func: "resize",
		Args: map[string]any{"image": "photos/42.jpg", "width": 640}}); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	now = t0
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Second)
		if err := s.Tick(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
