package rqgo

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// tickID is the id of the job of entry name's tick.
func tickID(name string, tick time.Time) string {
	return name + "@" + strconv.FormatInt(tick.Unix(), 10)
}

// scheduleInfo returns the state of the entry name of queue.
func scheduleInfo(t *testing.T, e *testEnv, queue, name string) ScheduleInfo {
	t.Helper()
	infos, err := Schedules(t.Context(), e.rdb, e.prefix)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range infos {
		if i.Queue == queue && i.Name == name {
			return i
		}
	}
	t.Fatalf("Schedules: no entry %q in queue %q: %+v", name, queue, infos)
	return ScheduleInfo{}
}

// wantJobs checks which of the ticks' jobs exist.
func wantJobs(t *testing.T, q *Queue, name string, exist map[time.Time]bool) {
	t.Helper()
	for tick, want := range exist {
		n, err := q.rdb.Exists(t.Context(), q.k.job(tickID(name, tick))).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got := n == 1; got != want {
			t.Errorf("job of tick %s exists: %v, want %v", tick.Format(time.TimeOnly), got, want)
		}
	}
}

// A unique entry whose previous job still holds the key records the tick
// with no job, and names the holder; once the holder ended, the next tick
// enqueues a job that holds the key.
func TestScheduleUniqueSkipsWhileHeld(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		clk := newFakeClock(t0.Add(10 * time.Second))
		var logs syncBuffer
		s := clk.scheduler(t, e, 0, SchedulerOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		mustAdd(t, s, ScheduleEntry{Name: "u", Cron: "* * * * *", Func: "sync", Queue: "q",
			Options: []EnqueueOption{Unique(UniqueOpts{Key: "sync-all"})}})
		mustAdd(t, s, ScheduleEntry{Name: "plain", Cron: "* * * * *", Func: "sync", Queue: "q"})
		q := e.queue("q")
		t1, t2, t3, t4 := t0, t0.Add(time.Minute), t0.Add(2*time.Minute), t0.Add(3*time.Minute)

		mustTick(t, s)
		first := tickID("u", t1)
		if holder, err := q.UniqueHolder(ctx, "sync-all"); err != nil || holder != first {
			t.Fatalf("UniqueHolder after the first tick = %q, %v; want %s", holder, err, first)
		}
		if j, err := q.FetchJob(ctx, first); err != nil || j.UniqueKey != "sync-all" || j.Status != StatusQueued {
			t.Fatalf("first tick's job = %+v, %v; want queued with unique key sync-all", j, err)
		}

		clk.Set(t2.Add(10 * time.Second))
		mustTick(t, s)
		wantJobs(t, q, "u", map[time.Time]bool{t1: true, t2: false})
		wantJobs(t, q, "plain", map[time.Time]bool{t1: true, t2: true})
		i := scheduleInfo(t, e, "q", "u")
		if !i.LastTick.Equal(t2) || i.LastJobID != first || !i.LastHeldTick.Equal(t2) || i.LastHeldBy != first {
			t.Errorf("state after a held tick: last tick %v, last job %q, held tick %v by %q; want %v, %s, %v, %s",
				i.LastTick, i.LastJobID, i.LastHeldTick, i.LastHeldBy, t2, first, t2, first)
		}
		if l := logs.String(); !strings.Contains(l, "another job holds the unique key") || !strings.Contains(l, "holder="+first) {
			t.Errorf("logs do not name the holder %s:\n%s", first, l)
		}
		// Another scheduler, as after a restart, finds the tick done.
		again := clk.scheduler(t, e, 0, SchedulerOptions{})
		mustAdd(t, again, ScheduleEntry{Name: "u", Cron: "* * * * *", Func: "sync", Queue: "q",
			Options: []EnqueueOption{Unique(UniqueOpts{Key: "sync-all"})}})
		mustTick(t, again)
		wantJobs(t, q, "u", map[time.Time]bool{t2: false})

		if err := q.Cancel(ctx, first); err != nil {
			t.Fatal(err)
		}
		clk.Set(t3)
		mustTick(t, s)
		third := tickID("u", t3)
		wantJobs(t, q, "u", map[time.Time]bool{t3: true})
		if holder, _ := q.UniqueHolder(ctx, "sync-all"); holder != third {
			t.Errorf("UniqueHolder after the holder ended = %q, want %s", holder, third)
		}
		i = scheduleInfo(t, e, "q", "u")
		if !i.LastTick.Equal(t3) || i.LastJobID != third || !i.LastHeldTick.Equal(t2) {
			t.Errorf("state after a new job: last tick %v, last job %q, held tick %v; want %v, %s, %v",
				i.LastTick, i.LastJobID, i.LastHeldTick, t3, third, t2)
		}

		// A job enqueued by hand with the key holds it against the entry too.
		if err := q.Cancel(ctx, third); err != nil {
			t.Fatal(err)
		}
		hand := mustEnqueue(t, q, "sync", nil, Unique(UniqueOpts{Key: "sync-all"}))
		clk.Set(t4)
		mustTick(t, s)
		wantJobs(t, q, "u", map[time.Time]bool{t4: false})
		if i := scheduleInfo(t, e, "q", "u"); i.LastHeldBy != hand.ID || !i.LastHeldTick.Equal(t4) {
			t.Errorf("held by %q at %v, want %s at %v", i.LastHeldBy, i.LastHeldTick, hand.ID, t4)
		}
	})
}

// UntilEnded holds the key while the job runs; UntilStarted releases it when
// the job starts. The derived key (Unique with no Key) works as an explicit
// one.
func TestScheduleUniqueUntil(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		for _, tc := range []struct {
			name         string
			until        UniqueUntil
			whileRunning bool // the next tick enqueues a job while the first runs
		}{
			{"ended", UntilEnded, false},
			{"started", UntilStarted, true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				queue := "q-" + tc.name
				clk := newFakeClock(t0)
				s := clk.scheduler(t, e, 0, SchedulerOptions{})
				mustAdd(t, s, ScheduleEntry{Name: "u", Cron: "* * * * *", Func: "long", Args: map[string]int{"n": 1}, Queue: queue,
					Options: []EnqueueOption{Unique(UniqueOpts{Until: tc.until})}})
				q := e.queue(queue)
				release := make(chan struct{})
				w := e.worker(t, WorkerOptions{Queues: []string{queue}, Concurrency: 1, Prefetch: -1})
				w.Register("long", func(ctx context.Context, j *Job) (any, error) {
					select {
					case <-release:
					case <-ctx.Done():
					}
					return nil, nil
				})
				mustTick(t, s)
				first := tickID("u", t0)
				stop := start(t, w)
				waitJob(t, q, first, StatusStarted)
				clk.Set(t0.Add(time.Minute))
				mustTick(t, s)
				wantJobs(t, q, "u", map[time.Time]bool{t0.Add(time.Minute): tc.whileRunning})
				// The next tick finds the key held: by the running job, or
				// with UntilStarted by the job that waits.
				clk.Set(t0.Add(2 * time.Minute))
				mustTick(t, s)
				wantJobs(t, q, "u", map[time.Time]bool{t0.Add(2 * time.Minute): false})
				holder := first
				if tc.whileRunning {
					holder = tickID("u", t0.Add(time.Minute))
				}
				if i := scheduleInfo(t, e, queue, "u"); i.LastHeldBy != holder {
					t.Errorf("held by %q, want %s", i.LastHeldBy, holder)
				}
				close(release)
				waitJob(t, q, first, StatusFinished)
				stop()
				if !tc.whileRunning {
					clk.Set(t0.Add(3 * time.Minute))
					mustTick(t, s)
					wantJobs(t, q, "u", map[time.Time]bool{t0.Add(3 * time.Minute): true})
				}
			})
		}
	})
}

// With For, the key stays taken for the window after the job ended.
func TestScheduleUniqueForWindow(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		clk := newFakeClock(t0)
		s := clk.scheduler(t, e, 0, SchedulerOptions{})
		mustAdd(t, s, ScheduleEntry{Name: "u", Cron: "* * * * *", Func: "f",
			Options: []EnqueueOption{Unique(UniqueOpts{Key: "k", For: time.Hour})}})
		q := e.queue("default")
		mustTick(t, s)
		if err := q.Cancel(t.Context(), tickID("u", t0)); err != nil {
			t.Fatal(err)
		}
		clk.Set(t0.Add(time.Minute))
		mustTick(t, s)
		wantJobs(t, q, "u", map[time.Time]bool{t0: true, t0.Add(time.Minute): false})
		if i := scheduleInfo(t, e, "default", "u"); i.LastHeldBy != tickID("u", t0) {
			t.Errorf("held by %q, want the ended job %s (its For window lasts)", i.LastHeldBy, tickID("u", t0))
		}
	})
}

// Many schedulers evaluate each tick of a unique entry at the same instant:
// while a job holds the key no tick adds one, and every tick after the
// holder ended adds exactly one.
func TestScheduleUniqueConcurrentSchedulers(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		clk := newFakeClock(t0)
		var ss []*Scheduler
		for range 6 {
			s := clk.scheduler(t, e, 0, SchedulerOptions{Logger: slog.New(slog.DiscardHandler)})
			mustAdd(t, s, ScheduleEntry{Name: "race", Cron: "@every 1m", Func: "f",
				Options: []EnqueueOption{Unique(UniqueOpts{Key: "race"})}})
			ss = append(ss, s)
		}
		q := e.queue("default")
		const ticks = 20
		exist := map[time.Time]bool{}
		for i := range ticks {
			tick := t0.Add(time.Duration(i) * time.Minute)
			clk.Set(tick)
			var wg sync.WaitGroup
			errs := make([]error, len(ss))
			for j, s := range ss {
				wg.Go(func() { errs[j] = s.Tick(t.Context()) })
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatalf("Tick: %v", err)
			}
			// Jobs of ticks 0, 3, 6, ...: each is canceled two ticks later,
			// so the tick after that finds the key free.
			exist[tick] = i%3 == 0
			if i%3 == 2 {
				if err := q.Cancel(t.Context(), tickID("race", tick.Add(-2*time.Minute))); err != nil {
					t.Fatalf("tick %d: Cancel: %v", i, err)
				}
			}
		}
		wantJobs(t, q, "race", exist)
		wantTicks(t, "held key", pendingTicks(t, e, "default", "race"), []time.Time{t0.Add(18 * time.Minute)})
	})
}

// A unique key of the wrong type fails the tick with an error naming it,
// and writes nothing.
func TestScheduleUniqueDamagedKey(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		clk := newFakeClock(t0)
		s := clk.scheduler(t, e, 0, SchedulerOptions{})
		mustAdd(t, s, ScheduleEntry{Name: "u", Cron: "* * * * *", Func: "f",
			Options: []EnqueueOption{Unique(UniqueOpts{Key: "k"})}})
		q := e.queue("default")
		if err := e.rdb.HSet(ctx, q.k.unique("k"), "x", "1").Err(); err != nil {
			t.Fatal(err)
		}
		err := s.Tick(ctx)
		if err == nil || !strings.Contains(err.Error(), q.k.unique("k")+" holds a hash") {
			t.Fatalf("Tick with a damaged unique key = %v, want an error naming it", err)
		}
		if n := e.rdb.Exists(ctx, q.k.schedule("u"), q.k.job(tickID("u", t0))).Val(); n != 0 {
			t.Errorf("%d of the state hash and the job exist, want none", n)
		}
		e.rdb.Del(ctx, q.k.unique("k"))
		mustTick(t, s)
		wantJobs(t, q, "u", map[time.Time]bool{t0: true})
	})
}

func TestScheduleEntryDebounceRejected(t *testing.T) {
	s := NewScheduler(newMiniEnv(t).rdb, SchedulerOptions{})
	err := s.AddEntry(ScheduleEntry{Name: "d", Cron: "* * * * *", Func: "f", Options: []EnqueueOption{Debounce(time.Second, 0)}})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `schedule entry "d": Debounce cannot be used`) {
		t.Errorf("AddEntry with Debounce = %v, want ErrInvalid saying Debounce cannot be used", err)
	}
	parent := &Job{Queue: "default", ID: "p"}
	err = s.AddEntry(ScheduleEntry{Name: "p", Cron: "* * * * *", Func: "f", Options: []EnqueueOption{DependsOn(parent)}})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `schedule entry "p": DependsOn cannot be used`) {
		t.Errorf("AddEntry with DependsOn = %v, want ErrInvalid saying DependsOn cannot be used", err)
	}
}

func TestParseScheduleFileUnique(t *testing.T) {
	uniqueOf := func(t *testing.T, e ScheduleEntry) *UniqueOpts {
		t.Helper()
		var o enqueueOptions
		for _, opt := range e.Options {
			opt(&o)
		}
		if o.err != nil {
			t.Fatalf("options: %v", o.err)
		}
		return o.unique
	}
	for _, tc := range []struct {
		unique string
		want   *UniqueOpts
	}{
		{`true`, &UniqueOpts{}},
		{`false`, nil},
		{`null`, nil},
		{`{}`, &UniqueOpts{}},
		{`{"key": "sync:all"}`, &UniqueOpts{Key: "sync:all"}},
		{`{"until": "started"}`, &UniqueOpts{Until: UntilStarted}},
		{`{"until": "ended", "for": "10m"}`, &UniqueOpts{Until: UntilEnded, For: 10 * time.Minute}},
		{`{"key": "k", "until": "started", "for": "90s"}`, &UniqueOpts{Key: "k", Until: UntilStarted, For: 90 * time.Second}},
	} {
		t.Run(tc.unique, func(t *testing.T) {
			file := `[{"name": "n", "cron": "@every 5m", "func": "f", "unique": ` + tc.unique + `}]`
			entries, err := ParseScheduleFile(strings.NewReader(file))
			if err != nil {
				t.Fatalf("ParseScheduleFile: %v", err)
			}
			got := uniqueOf(t, entries[0])
			if (got == nil) != (tc.want == nil) || got != nil && *got != *tc.want {
				t.Errorf("unique = %+v, want %+v", got, tc.want)
			}
		})
	}
	for _, tc := range []struct{ unique, want string }{
		{`"yes"`, `entry 1 ("n"): unique is "yes": want true, false or an object`},
		{`1`, `entry 1 ("n"): unique is 1: want true, false or an object`},
		{`["k"]`, `entry 1 ("n"): unique is ["k"]`},
		{`{"kee": "k"}`, `entry 1 ("n"): unique: unknown field "kee"`},
		{`{"key": 42}`, `entry 1 ("n"): unique: cannot unmarshal number`},
		{`{"key": ""}`, `entry 1 ("n"): unique key is empty`},
		{`{"key": "a b"}`, `entry 1 ("n"): unique key "a b" must be valid UTF-8 without whitespace`},
		{`{"until": "done"}`, `entry 1 ("n"): unique until "done" is not "started" or "ended"`},
		{`{"until": true}`, `entry 1 ("n"): unique: cannot unmarshal bool`},
		{`{"for": "ten minutes"}`, `entry 1 ("n"): unique for "ten minutes" is not a duration`},
		{`{"for": "-1m"}`, `entry 1 ("n"): unique for -1m is not positive`},
		{`{"for": "0s"}`, `entry 1 ("n"): unique for 0s is not positive`},
	} {
		file := `[{"name": "n", "cron": "@every 5m", "func": "f", "unique": ` + tc.unique + `}]`
		_, err := ParseScheduleFile(strings.NewReader(file))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("unique %s: ParseScheduleFile = %v, want ErrInvalid containing %q", tc.unique, err, tc.want)
		}
	}
}

// An entry of a schedule file with "unique" skips ticks while its job holds
// the key, as one added with the option does.
func TestScheduleFileUniqueRuns(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		entries, err := ParseScheduleFile(strings.NewReader(
			`[{"name": "f", "cron": "* * * * *", "func": "f", "args": {"a": 1}, "unique": true}]`))
		if err != nil {
			t.Fatal(err)
		}
		clk := newFakeClock(t0)
		s := clk.scheduler(t, e, 0, SchedulerOptions{})
		mustAdd(t, s, entries[0])
		mustTick(t, s)
		clk.Set(t0.Add(time.Minute))
		mustTick(t, s)
		q := e.queue("default")
		wantJobs(t, q, "f", map[time.Time]bool{t0: true, t0.Add(time.Minute): false})
		key, err := uniqueKey(&UniqueOpts{}, "f", []byte(`{"a": 1}`))
		if err != nil {
			t.Fatal(err)
		}
		if holder, _ := q.UniqueHolder(t.Context(), key); holder != tickID("f", t0) {
			t.Errorf("holder of the derived key %s = %q, want %s", key, holder, tickID("f", t0))
		}
	})
}
