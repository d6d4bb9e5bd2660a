package rqgo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo/internal/redistest"
)

// The tests in this file damage one key of a queue, as another tool or a
// mistyped command would, and check that every script refuses to run on it
// with an error that names the key, and changes nothing: Redis does not roll
// a script back, so a script that failed halfway would leave jobs in no
// registry.

// damagedState is queue "q" with a job in every state, each put there by
// the scripts themselves: two running jobs with the tokens of a real fetch
// ("run-retry" with retries left, "run-last" on its last attempt), a
// finished, a failed and a canceled job, three queued jobs and the job of a
// periodic entry, a scheduled job that is due and one that is not, and the
// reaper's cursors (its lock free).
type damagedState struct {
	t      *testing.T
	e      *testEnv
	q      *Queue
	wq     workerQueue
	k      keys
	tokens map[string]string // running job id -> attempt token
}

// scheduleName is the periodic entry of a damagedState.
const scheduleName = "every-minute"

// newDamagedState builds the state on a miniredis of its own when e is one
// (a miniredis's SCAN and scripts slow down with every key it holds), else
// under a prefix of its own below e's.
func newDamagedState(t *testing.T, e *testEnv, n int) *damagedState {
	t.Helper()
	var sub *testEnv
	if e.mr != nil {
		sub = newMiniEnv(t)
	} else {
		sub = &testEnv{rdb: e.rdb, prefix: fmt.Sprintf("%s-%d", e.prefix, n), addr: e.addr}
		t.Cleanup(func() { redistest.DeletePrefix(t, e.rdb, sub.prefix) })
	}
	s := &damagedState{t: t, e: sub, q: sub.queue("q"), tokens: map[string]string{}}
	s.wq = newWorkerQueue(sub.prefix, "q")
	s.k = s.q.k
	ctx := t.Context()

	s.enqueue("run-retry", Retry(3))
	s.enqueue("run-last", Retry(0))
	s.fetch(2)
	s.enqueue("done")
	s.fetch(1)
	s.must("ack_many.lua", ackManyScript.Run(ctx, sub.rdb, s.wq.ackKeys, -1, "1", "done", s.tokens["done"], `"ok"`).Err())
	s.enqueue("dead", Retry(0))
	s.fetch(1)
	s.must("fail.lua", failScript.Run(ctx, sub.rdb, s.failKeys("dead"), "dead", s.tokens["dead"], "boom", -1, -1).Err())
	s.enqueue("gone")
	s.must("Cancel", s.q.Cancel(ctx, "gone"))
	for i := 1; i <= 3; i++ {
		s.enqueue("queued-" + strconv.Itoa(i))
	}
	s.enqueue("later", In(time.Hour))
	s.enqueue("due", In(time.Hour))
	due := time.Now().Add(-time.Second).UnixMilli()
	s.must("ZADD", sub.rdb.ZAddXX(ctx, s.k.scheduled(), redis.Z{Score: float64(due), Member: "due"}).Err())
	s.must("HSET", sub.rdb.HSet(ctx, s.k.job("due"), fScheduledAt, due).Err())
	keys, args := s.scheduleCall(time.Now().Truncate(time.Minute).Add(-time.Minute), true)
	s.must("schedule.lua", scheduleScript.Run(ctx, sub.rdb, keys, args...).Err())
	// A workflow: "child" waits for "run-last" in this queue, "far" in
	// queue q2 for it too.
	s.enqueue("child", DependsOn(&Job{Queue: "q", ID: "run-last"}))
	_, err := sub.queue("q2").EnqueueContext(ctx, "f", nil, JobID("far"), DependsOn(&Job{Queue: "q", ID: "run-last"}))
	s.must("enqueue far", err)
	s.must("reap.lua", reapScript.Run(ctx, sub.rdb, s.wq.reapKeys, 1000, 1000, -1, 60000).Err())
	s.must("DEL", sub.rdb.Del(ctx, s.k.reaper()).Err())

	for _, c := range []struct {
		st   Status
		want int
	}{{StatusQueued, 4}, {StatusStarted, 2}, {StatusScheduled, 2}, {StatusFinished, 1}, {StatusFailed, 1}, {StatusCanceled, 1}} {
		if ids, err := s.q.JobIDs(ctx, c.st, 0, 100); err != nil || len(ids) != c.want {
			t.Fatalf("state set up: %s jobs %v, %v; want %d", c.st, ids, err, c.want)
		}
	}
	return s
}

// dryState is a damagedState that was never written, for the key names of
// a row's call: building a call does no I/O.
func dryState(t *testing.T, e *testEnv) *damagedState {
	q := e.queue("q")
	return &damagedState{t: t, e: e, q: q, wq: newWorkerQueue(e.prefix, "q"), k: q.k, tokens: map[string]string{}}
}

func (s *damagedState) must(what string, err error) {
	s.t.Helper()
	if err != nil {
		s.t.Fatalf("state set up: %s: %v", what, err)
	}
}

func (s *damagedState) enqueue(id string, opts ...EnqueueOption) {
	s.t.Helper()
	_, err := s.q.EnqueueContext(s.t.Context(), "f", nil, append(opts, JobID(id))...)
	s.must("enqueue "+id, err)
}

// fetch leases n jobs with dequeue.lua and keeps their tokens.
func (s *damagedState) fetch(n int) {
	s.t.Helper()
	res, err := dequeueScript.Run(s.t.Context(), s.e.rdb, s.wq.dequeueKeys, n, 30000, "w1").Slice()
	s.must("dequeue.lua", err)
	got := 0
	for r := res[dequeuedHead:]; len(r) >= dequeuedLen; r = r[dequeuedLen:] {
		id, _ := r[0].(string)
		s.tokens[id], _ = r[1].(string)
		got++
	}
	if got != n {
		s.t.Fatalf("state set up: dequeue.lua leased %d jobs, want %d", got, n)
	}
}

// prepare builds enqueue.lua's ARGV for a job of function "f".
func (s *damagedState) prepare(opts ...EnqueueOption) (id string, argv []any) {
	s.t.Helper()
	j, argv, err := s.q.prepare("f", nil, opts)
	s.must("prepare", err)
	return j.ID, argv
}

func (s *damagedState) failKeys(id string) []string {
	k := s.k
	return []string{k.job(id), k.active(), k.scheduled(), k.failed(), k.pending(), k.wake()}
}

// scheduleCall builds schedule.lua's KEYS and ARGV for the entry's tick, as
// Scheduler.fire does; opts are the options of the entry's jobs.
func (s *damagedState) scheduleCall(tick time.Time, first bool, opts ...EnqueueOption) ([]string, []any) {
	s.t.Helper()
	id := scheduleName + "@" + strconv.FormatInt(tick.Unix(), 10)
	_, jobArgv := s.prepare(append(opts, JobID(id))...)
	now := time.Now()
	argv := []any{tick.UnixMilli(), 1, 0, tick.Add(time.Minute).UnixMilli(), now.UnixMilli(),
		scheduleMinTTL.Milliseconds(), flag(first), scheduleName, "q", "f", "* * * * *", "UTC"}
	return []string{s.k.schedule(scheduleName), s.k.job(id), s.k.pending(), s.k.scheduled(), s.k.wake()},
		append(argv, jobArgv...)
}

func (s *damagedState) expireLeases() {
	s.t.Helper()
	ctx := s.t.Context()
	for id := range s.tokens {
		s.must("ZADD", s.e.rdb.ZAddXX(ctx, s.k.active(), redis.Z{Score: 1, Member: id}).Err())
	}
}

// damageCall is one row's call: the script and its KEYS and ARGV.
type damageCall struct {
	s    *script
	keys []string
	args []any
}

// keySlot is a KEYS slot of a script, numbered from 1 as in the script's
// header, and the type the key must hold there ("counter": a string of
// digits).
type keySlot struct {
	n     int
	holds string
}

// damageRow is one call of a script in a realistic state, with the slots of
// the keys it writes in that call.
type damageRow struct {
	name  string
	prep  func(s *damagedState) // before the call is built, when not nil
	call  func(s *damagedState) damageCall
	slots []keySlot
	wake  int // the wake list's slot, 0 when the script takes none
	// derived are keys the script writes that are not among its KEYS (their
	// names come from a KEYS prefix, in the queue's slot).
	derived []derivedSlot
}

// derivedSlot is a key a script derives from its KEYS, and the type it
// must hold.
type derivedSlot struct {
	key   func(k keys) string
	holds string
}

// depsSlots are the queue's keys that passing on a job's end may write
// (check_deps in prelude.lua).
var depsSlots = []derivedSlot{
	{keys.deferred, "zset"}, {keys.outbox, "zset"}, {keys.canceled, "zset"}, {keys.pending, "list"}, {keys.scheduled, "zset"},
}

func damageRows() []damageRow {
	failRow := func(name string, id string, delay int64, slots ...keySlot) damageRow {
		return damageRow{name: name, wake: 6, slots: slots, call: func(s *damagedState) damageCall {
			return damageCall{failScript, s.failKeys(id), []any{id, s.tokens[id], "boom", delay, -1}}
		}}
	}
	failSlots := []keySlot{{1, "hash"}, {2, "zset"}, {3, "zset"}, {4, "zset"}, {5, "list"}}
	cancelRow := func(name, id string) damageRow {
		return damageRow{name: name, slots: []keySlot{{1, "hash"}, {2, "list"}, {3, "zset"}, {4, "zset"}},
			call: func(s *damagedState) damageCall {
				k := s.k
				return damageCall{cancelScript, []string{k.job(id), k.pending(), k.scheduled(), k.canceled()},
					[]any{id, ttlMillis(DefaultFailureTTL)}}
			}}
	}
	scheduleRow := func(name string, slots []keySlot, opts ...EnqueueOption) damageRow {
		return damageRow{name: name, wake: 5, slots: slots, call: func(s *damagedState) damageCall {
			keys, args := s.scheduleCall(time.Now().Truncate(time.Minute), false, opts...)
			return damageCall{scheduleScript, keys, args}
		}}
	}
	return []damageRow{
		{
			name:  "enqueue chosen id",
			wake:  4,
			slots: []keySlot{{1, "hash"}, {2, "list"}, {3, "zset"}, {5, "zset"}, {6, "zset"}, {7, "zset"}, {8, "zset"}},
			call: func(s *damagedState) damageCall {
				_, argv := s.prepare(JobID("new"))
				return damageCall{enqueueScript, s.k.enqueueKeys("new", true), argv}
			},
		},
		{
			name:  "enqueue delayed",
			wake:  4,
			slots: []keySlot{{1, "hash"}, {3, "zset"}},
			call: func(s *damagedState) damageCall {
				id, argv := s.prepare(In(time.Hour))
				return damageCall{enqueueScript, s.k.enqueueKeys(id, true), argv}
			},
		},
		{
			name:  "enqueue_many",
			wake:  3,
			slots: []keySlot{{1, "list"}, {2, "zset"}, {5, "zset"}, {6, "zset"}, {7, "zset"}, {8, "zset"}},
			call: func(s *damagedState) damageCall {
				k := s.k
				keys := []string{k.pending(), k.scheduled(), k.wake(), k.jobPrefix(), k.active(), k.finished(), k.failed(), k.canceled()}
				args := []any{"q"}
				for _, opts := range [][]EnqueueOption{{JobID("new")}, nil, {In(time.Hour)}} {
					_, argv := s.prepare(opts...)
					fields := manyFields(argv)
					args = append(append(append(args, argv[:4]...), len(fields)), fields...)
				}
				return damageCall{enqueueManyScript, keys, args}
			},
		},
		{
			name:  "dequeue",
			wake:  5,
			slots: []keySlot{{1, "list"}, {2, "zset"}, {3, "zset"}, {4, "counter"}},
			call: func(s *damagedState) damageCall {
				return damageCall{dequeueScript, s.wq.dequeueKeys, []any{10, 30000, "w1"}}
			},
		},
		{
			name:    "ack_many",
			slots:   []keySlot{{1, "zset"}, {2, "zset"}},
			derived: depsSlots,
			call: func(s *damagedState) damageCall {
				return damageCall{ackManyScript, s.wq.ackKeys,
					[]any{-1, "1", "run-retry", s.tokens["run-retry"], `"ok"`, "run-last", s.tokens["run-last"], `"ok"`}}
			},
		},
		failRow("fail retry now", "run-retry", 0, failSlots...),
		failRow("fail retry later", "run-retry", 60000, failSlots...),
		func() damageRow {
			r := failRow("fail", "run-last", -1, failSlots...)
			r.derived = depsSlots
			return r
		}(),
		{
			name:  "extend",
			slots: []keySlot{{1, "zset"}},
			call: func(s *damagedState) damageCall {
				return damageCall{extendScript, []string{s.k.active(), s.k.jobPrefix()},
					[]any{30000, "run-retry", s.tokens["run-retry"], "run-last", s.tokens["run-last"]}}
			},
		},
		{
			name:  "reap",
			wake:  5,
			prep:  (*damagedState).expireLeases,
			slots: []keySlot{{1, "zset"}, {2, "list"}, {3, "zset"}, {4, "string"}, {7, "zset"}, {8, "zset"}, {9, "hash"}, {10, "zset"}, {11, "zset"}},
			call: func(s *damagedState) damageCall {
				return damageCall{reapScript, s.wq.reapKeys, []any{1000, 1000, -1, 60000}}
			},
		},
		{
			name:  "release",
			wake:  4,
			slots: []keySlot{{1, "hash"}, {2, "zset"}, {3, "list"}},
			call: func(s *damagedState) damageCall {
				k := s.k
				return damageCall{releaseScript, []string{k.job("run-retry"), k.active(), k.pending(), k.wake()},
					[]any{"run-retry", s.tokens["run-retry"]}}
			},
		},
		cancelRow("cancel queued", "queued-1"),
		func() damageRow {
			r := cancelRow("cancel deferred", "child")
			r.derived = depsSlots
			return r
		}(),
		{
			name:  "defer",
			slots: []keySlot{{1, "hash"}, {2, "zset"}, {3, "set"}, {4, "zset"}, {5, "zset"}, {6, "zset"}, {7, "zset"}, {8, "zset"}},
			call: func(s *damagedState) damageCall {
				_, argv := s.prepare(JobID("new"))
				args := append(append([]any{}, argv[:4]...), 10000, 1, "q:run-retry")
				k := s.k
				return damageCall{deferScript, []string{k.job("new"), k.deferred(), k.parents("new"), k.active(),
					k.scheduled(), k.finished(), k.failed(), k.canceled()}, append(args, argv[4:]...)}
			},
		},
		{
			name:    "link",
			derived: []derivedSlot{{func(k keys) string { return k.dependents("run-retry") }, "set"}},
			call: func(s *damagedState) damageCall {
				return damageCall{linkScript, []string{s.k.jobPrefix()}, []any{"q2:new", "run-retry"}}
			},
		},
		{
			name:    "deliver",
			derived: depsSlots,
			call: func(s *damagedState) damageCall {
				return damageCall{deliverScript, []string{s.k.jobPrefix()}, []any{0, "child", "q:run-last", "failed"}}
			},
		},
		{
			name:  "delivered",
			slots: []keySlot{{1, "zset"}},
			prep: func(s *damagedState) {
				ctx := s.t.Context()
				s.must("HSET", s.e.rdb.HSet(ctx, s.k.owed("run-last"), "q2:far", "finished").Err())
				s.must("ZADD", s.e.rdb.ZAdd(ctx, s.k.outbox(), redis.Z{Score: 1, Member: "run-last"}).Err())
			},
			call: func(s *damagedState) damageCall {
				return damageCall{deliveredScript, []string{s.k.outbox()}, []any{"run-last", "q2:far"}}
			},
		},
		{
			name:  "unique",
			wake:  4,
			slots: []keySlot{{1, "hash"}, {2, "list"}, {3, "zset"}, {5, "string"}},
			call: func(s *damagedState) damageCall {
				j, argv, err := s.q.prepare("f", nil, []EnqueueOption{JobID("new"), Unique(UniqueOpts{Key: "k"})})
				s.must("prepare", err)
				args := append(append([]any{}, argv[:4]...), 0, 0, "null")
				k := s.k
				return damageCall{uniqueChosenScript, []string{k.job(j.ID), k.pending(), k.scheduled(), k.wake(), k.unique("k"),
					k.jobPrefix(), k.active(), k.finished(), k.failed(), k.canceled()}, append(args, argv[4:]...)}
			},
		},
		{
			name:  "wait",
			slots: []keySlot{{1, "hash"}},
			call: func(s *damagedState) damageCall {
				return damageCall{waitScript, []string{s.k.job("queued-1")}, nil}
			},
		},
		cancelRow("cancel scheduled", "later"),
		{
			name:  "requeue",
			wake:  4,
			slots: []keySlot{{1, "list"}, {2, "zset"}, {3, "zset"}},
			call: func(s *damagedState) damageCall {
				k := s.k
				return damageCall{requeueScript, []string{k.pending(), k.failed(), k.canceled(), k.wake(), k.jobPrefix()},
					[]any{"dead", "gone"}}
			},
		},
		{
			name:    "empty",
			slots:   []keySlot{{1, "list"}},
			derived: depsSlots,
			call: func(s *damagedState) damageCall {
				return damageCall{emptyScript, []string{s.k.pending(), s.k.jobPrefix()}, []any{1000}}
			},
		},
		scheduleRow("schedule", []keySlot{{1, "hash"}, {2, "hash"}, {3, "list"}}),
		scheduleRow("schedule delayed", []keySlot{{2, "hash"}, {4, "zset"}}, In(time.Hour)),
	}
}

// damage is one way to damage a key.
type damage struct {
	name  string
	write func(ctx context.Context, rdb redis.UniversalClient, key string) error
	typ   string // the type it leaves, "" when it leaves a string of the wrong form
}

var (
	asString = damage{"string", func(ctx context.Context, rdb redis.UniversalClient, key string) error {
		return rdb.Set(ctx, key, "garbage", 0).Err()
	}, "string"}
	asList = damage{"list", func(ctx context.Context, rdb redis.UniversalClient, key string) error {
		return rdb.LPush(ctx, key, "garbage").Err()
	}, "list"}
	asZset = damage{"zset", func(ctx context.Context, rdb redis.UniversalClient, key string) error {
		return rdb.ZAdd(ctx, key, redis.Z{Score: 1, Member: "garbage"}).Err()
	}, "zset"}
	asHash = damage{"hash", func(ctx context.Context, rdb redis.UniversalClient, key string) error {
		return rdb.HSet(ctx, key, "garbage", "1").Err()
	}, "hash"}
	notANumber = damage{"notanumber", func(ctx context.Context, rdb redis.UniversalClient, key string) error {
		return rdb.Set(ctx, key, "notanumber", 0).Err()
	}, ""}
	tooBig = damage{"overflowing", func(ctx context.Context, rdb redis.UniversalClient, key string) error {
		return rdb.Set(ctx, key, "99999999999999999999", 0).Err() // past int64: INCRBY would fail
	}, ""}
)

// damagesFor returns the damages of a key that must hold holds.
func damagesFor(holds string) []damage {
	switch holds {
	case "list":
		return []damage{asString, asZset}
	case "string":
		return []damage{asList, asHash}
	case "counter":
		return []damage{asList, asHash, notANumber, tooBig}
	}
	return []damage{asString, asList} // zset, hash
}

// keyName is the part of a key after the queue's hash tag: "active",
// "job:run-retry".
func keyName(key string) string {
	_, name, _ := strings.Cut(key, "}:")
	return name
}

// Every script, called with its KEYS and ARGV in a realistic state, refuses
// to run when a key it would write holds the wrong type (or the token
// counter is not a count): its error reply names the key, and not one key
// under the prefix changed. Each call is first made on an undamaged state,
// where it must succeed and write.
func TestDamagedKeyRefusedByEveryScript(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		n := 0
		for _, row := range damageRows() {
			// The state the row's call is made in.
			build := func(t *testing.T) (*damagedState, damageCall) {
				n++
				s := newDamagedState(t, e, n)
				if row.prep != nil {
					row.prep(s)
				}
				return s, row.call(s)
			}
			t.Run(row.name+"/undamaged", func(t *testing.T) {
				s, c := build(t)
				before := snapshotKeys(t, s.e.rdb, s.e.prefix)
				if err := c.s.Run(t.Context(), s.e.rdb, c.keys, c.args...).Err(); err != nil {
					t.Fatalf("%s.lua on an undamaged state: %v, want no error", c.s.name, err)
				}
				if diffSnapshots(before, snapshotKeys(t, s.e.rdb, s.e.prefix)) == "" {
					t.Errorf("%s.lua on an undamaged state changed nothing; the row does not test a write", c.s.name)
				}
			})
			keys := row.call(dryState(t, e)).keys
			type target struct {
				key   func(s *damagedState, c damageCall) string
				holds string
			}
			var targets []target
			for _, slot := range row.slots {
				targets = append(targets, target{func(_ *damagedState, c damageCall) string { return c.keys[slot.n-1] }, slot.holds})
			}
			for _, d := range row.derived {
				targets = append(targets, target{func(s *damagedState, _ damageCall) string { return d.key(s.k) }, d.holds})
			}
			dry := dryState(t, e)
			for _, slot := range targets {
				name, _, _ := strings.Cut(keyName(slot.key(dry, damageCall{keys: keys})), ":") // "job", not its id
				for _, d := range damagesFor(slot.holds) {
					t.Run(fmt.Sprintf("%s/%s=%s", row.name, name, d.name), func(t *testing.T) {
						s, c := build(t)
						ctx := t.Context()
						key := slot.key(s, c)
						if err := errors.Join(s.e.rdb.Del(ctx, key).Err(), d.write(ctx, s.e.rdb, key)); err != nil {
							t.Fatal(err)
						}
						before := snapshotKeys(t, s.e.rdb, s.e.prefix)
						res, err := c.s.Run(ctx, s.e.rdb, c.keys, c.args...).Result()
						if diff := diffSnapshots(before, snapshotKeys(t, s.e.rdb, s.e.prefix)); diff != "" {
							t.Errorf("%s.lua with %s damaged (%s) changed keys, want none changed:\n%s", c.s.name, name, d.name, diff)
						}
						if msg := refusalProblem(c.s.name, key, slot.holds, d, res, err); msg != "" {
							t.Error(msg)
						}
					})
				}
			}
		}
	})
}

// refusalProblem checks a script's reply to a damaged key, and says what is
// wrong with it: "" for an error reply of the script (the worker's
// isScriptRefusal) that names the key and says nothing was changed.
func refusalProblem(script, key, holds string, d damage, res any, err error) string {
	if err == nil {
		return fmt.Sprintf("%s.lua with %s holding a %s = %v, want an error naming the key", script, keyName(key), d.name, res)
	}
	msg := err.Error()
	want := "rqgo: key " + key + " holds "
	switch {
	case d.typ != "":
		if holds == "counter" {
			holds = "string"
		}
		want += "a " + d.typ + ", not a " + holds + "; nothing was changed"
	default:
		want += `"`
	}
	if !strings.HasPrefix(msg, want) || !strings.Contains(msg, "nothing was changed") || !isScriptRefusal(err) {
		return fmt.Sprintf("%s.lua with %s holding a %s: error %q, want a refusal starting %q that says nothing was changed",
			script, keyName(key), d.name, msg, want)
	}
	return ""
}

// A wake list cannot make a script fail: the scripts only look whether it
// exists (prelude.lua's wake), so a damaged one is left as it is (or deleted
// by dequeue.lua when the queue runs dry), and the script does its work.
func TestDamagedWakeListFailsNoScript(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		n := 0
		for _, row := range damageRows() {
			if row.wake == 0 {
				continue
			}
			for _, d := range []damage{asString, asZset} {
				t.Run(fmt.Sprintf("%s/wake=%s", row.name, d.name), func(t *testing.T) {
					n++
					s := newDamagedState(t, e, n)
					if row.prep != nil {
						row.prep(s)
					}
					c := row.call(s)
					ctx := t.Context()
					key := c.keys[row.wake-1]
					if err := errors.Join(s.e.rdb.Del(ctx, key).Err(), d.write(ctx, s.e.rdb, key)); err != nil {
						t.Fatal(err)
					}
					before := snapshotKeys(t, s.e.rdb, s.e.prefix)[key]
					if err := c.s.Run(ctx, s.e.rdb, c.keys, c.args...).Err(); err != nil {
						t.Errorf("%s.lua with the wake list holding a %s: %v, want no error", c.s.name, d.name, err)
					}
					if after, ok := snapshotKeys(t, s.e.rdb, s.e.prefix)[key]; ok && after != before {
						t.Errorf("%s.lua wrote to the damaged wake list: %s, was %s", c.s.name, after, before)
					}
				})
			}
		}
	})
}

// snapshotKeys reads every key under prefix: its type, its whole content,
// and whether it has a time to live.
func snapshotKeys(t *testing.T, rdb redis.UniversalClient, prefix string) map[string]string {
	t.Helper()
	ctx := t.Context()
	var keys []string
	iter := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatalf("SCAN %s:*: %v", prefix, err)
	}
	snap := make(map[string]string, len(keys))
	for _, k := range keys {
		typ, err := rdb.Type(ctx, k).Result()
		var v any
		if err == nil {
			switch typ {
			case "string":
				v, err = rdb.Get(ctx, k).Result()
			case "list":
				v, err = rdb.LRange(ctx, k, 0, -1).Result()
			case "hash":
				v, err = rdb.HGetAll(ctx, k).Result() // fmt prints a map sorted by key
			case "zset":
				v, err = rdb.ZRangeWithScores(ctx, k, 0, -1).Result()
			case "set":
				var m []string
				m, err = rdb.SMembers(ctx, k).Result()
				slices.Sort(m)
				v = m
			default:
				v = "(not read)"
			}
		}
		if err != nil {
			t.Fatalf("reading %s: %v", k, err)
		}
		ttl, err := rdb.PTTL(ctx, k).Result()
		if err != nil {
			t.Fatalf("PTTL %s: %v", k, err)
		}
		snap[k] = fmt.Sprintf("%s %v (expires: %v)", typ, v, ttl > 0)
	}
	return snap
}

// diffSnapshots lists the keys that differ, one line each, sorted; "" when
// none does.
func diffSnapshots(before, after map[string]string) string {
	var lines []string
	for k, b := range before {
		switch a, ok := after[k]; {
		case !ok:
			lines = append(lines, fmt.Sprintf("deleted %s: was %s", k, b))
		case a != b:
			lines = append(lines, fmt.Sprintf("changed %s: %s, was %s", k, a, b))
		}
	}
	for k, a := range after {
		if _, ok := before[k]; !ok {
			lines = append(lines, fmt.Sprintf("created %s: %s", k, a))
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// queueSnapshot is snapshotKeys of q's keys but its wake list, which an
// idle worker's BLPOP takes tokens from.
func queueSnapshot(t *testing.T, e *testEnv, q *Queue) map[string]string {
	t.Helper()
	snap := snapshotKeys(t, e.rdb, e.prefix)
	for k := range snap {
		if !strings.HasPrefix(k, q.k.base) || k == q.k.wake() {
			delete(snap, k)
		}
	}
	return snap
}

// A worker of queues q and other, started while q's active set is a string:
// it logs an error naming the key, runs other's job, and leaves q's 20 jobs
// as they were. Once the key is deleted, the same worker runs each of them
// exactly once.
func TestDamagedActiveKeyHoldsBackOnlyItsQueue(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q, other := e.queue("q"), e.queue("other")
		var ids []string
		for i := range 20 {
			j, err := q.EnqueueContext(ctx, "count", i)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, j.ID)
		}
		oj, err := other.EnqueueContext(ctx, "other", nil)
		if err != nil {
			t.Fatal(err)
		}
		if c, err := q.Counts(ctx); err != nil || c != (Counts{Queued: 20}) {
			t.Fatalf("Counts = %+v, %v; want 20 queued", c, err)
		}
		if err := e.rdb.Set(ctx, q.k.active(), "garbage", 0).Err(); err != nil {
			t.Fatal(err)
		}
		before := queueSnapshot(t, e, q)

		log, rec := recordingLogger(t)
		var (
			mu    sync.Mutex
			calls = map[string]int{}
		)
		w := e.worker(t, WorkerOptions{Queues: []string{"q", "other"}, Logger: log})
		w.Register("count", func(ctx context.Context, j *Job) (any, error) {
			mu.Lock()
			calls[j.ID]++
			mu.Unlock()
			return "counted", nil
		})
		w.Register("other", func(ctx context.Context, j *Job) (any, error) { return "other", nil })
		start(t, w)

		waitJob(t, other, oj.ID, StatusFinished)
		refusals := func() []string {
			var out []string
			for _, l := range rec.matching(q.k.active()) {
				if strings.Contains(l, "level=ERROR") && strings.Contains(l, "queue=q ") {
					out = append(out, l)
				}
			}
			return out
		}
		waitFor(t, 10*time.Second, "an error logged naming "+q.k.active(), func() bool { return len(refusals()) > 0 })
		if diff := diffSnapshots(before, queueSnapshot(t, e, q)); diff != "" {
			t.Errorf("q's keys changed while its active set was damaged, want none changed:\n%s", diff)
		}
		if n, err := e.rdb.LLen(ctx, q.k.pending()).Result(); err != nil || n != 20 {
			t.Errorf("q's pending list holds %d, %v; want the 20 jobs", n, err)
		}
		for _, id := range ids {
			if j, err := q.FetchJob(ctx, id); err != nil || j.Status != StatusQueued || j.Attempt != 0 {
				t.Fatalf("job %s while the key was damaged = %+v, %v; want queued, attempt 0", id, j, err)
			}
		}
		mu.Lock()
		ran := len(calls)
		mu.Unlock()
		if ran != 0 {
			t.Errorf("%d of q's jobs ran while its active set was damaged, want none", ran)
		}

		if err := e.rdb.Del(ctx, q.k.active()).Err(); err != nil {
			t.Fatal(err)
		}
		repaired := time.Now()
		waitFor(t, 30*time.Second, "q's 20 jobs finished after the repair", func() bool {
			c, err := q.Counts(ctx)
			return err == nil && c.Finished == 20
		})
		t.Logf("q's jobs finished %v after the repair (%d refusals logged)", time.Since(repaired).Round(time.Millisecond), len(refusals()))
		if c, err := q.Counts(ctx); err != nil || c != (Counts{Finished: 20}) {
			t.Errorf("q's Counts = %+v, %v; want 20 finished", c, err)
		}
		if c, err := other.Counts(ctx); err != nil || c != (Counts{Finished: 1}) {
			t.Errorf("other's Counts = %+v, %v; want 1 finished", c, err)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, id := range ids {
			if calls[id] != 1 {
				t.Errorf("job %s ran %d times, want once", id, calls[id])
			}
			if j, err := q.FetchJob(ctx, id); err != nil || j.Status != StatusFinished || j.Attempt != 1 {
				t.Errorf("job %s = %+v, %v; want finished on attempt 1", id, j, err)
			}
		}
	})
}

// A job that fails for good while the failed registry is damaged does not
// end in limbo: the worker logs the refusal, keeps the job leased and tries
// again to record it; once the key is deleted the job is failed, in the
// failed registry, and RequeueFailed finds it.
func TestDamagedFailedKeyKeepsFailedJobLeased(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("q")
		job, err := q.EnqueueContext(ctx, "boom", nil, Retry(0))
		if err != nil {
			t.Fatal(err)
		}
		if err := e.rdb.Set(ctx, q.k.failed(), "garbage", 0).Err(); err != nil {
			t.Fatal(err)
		}
		log, rec := recordingLogger(t)
		var calls atomic.Int64
		w := e.worker(t, WorkerOptions{Queues: []string{"q"}, Lease: 600 * time.Millisecond, Logger: log})
		w.Register("boom", func(ctx context.Context, j *Job) (any, error) {
			calls.Add(1)
			return nil, errors.New("boom")
		})
		stop := start(t, w)

		waitFor(t, 10*time.Second, "the refused outcome logged, naming "+q.k.failed(), func() bool {
			for _, l := range rec.matching(q.k.failed()) {
				if strings.Contains(l, "recording job outcome failed; will retry") && strings.Contains(l, "job_id="+job.ID) {
					return true
				}
			}
			return false
		})
		first, err := e.rdb.ZScore(ctx, q.k.active(), job.ID).Result()
		if err != nil {
			t.Fatalf("job not in the active set after its outcome was refused: %v", err)
		}
		waitFor(t, 10*time.Second, "the job's lease renewed", func() bool {
			s, err := e.rdb.ZScore(ctx, q.k.active(), job.ID).Result()
			return err == nil && s > first
		})
		got, err := q.FetchJob(ctx, job.ID)
		if err != nil || got.Status != StatusStarted || got.Attempt != 1 || got.Worker != w.ID() {
			t.Errorf("job while its outcome is refused = %+v, %v; want started, attempt 1, on the worker", got, err)
		}
		if tok, err := e.rdb.HGet(ctx, q.k.job(job.ID), "token").Result(); err != nil || tok == "" {
			t.Errorf("job's token while its outcome is refused = %q, %v; want the attempt's", tok, err)
		}
		if v, err := e.rdb.Get(ctx, q.k.failed()).Result(); err != nil || v != "garbage" {
			t.Errorf("damaged failed key = %q, %v; want it untouched", v, err)
		}

		if err := e.rdb.Del(ctx, q.k.failed()).Err(); err != nil {
			t.Fatal(err)
		}
		got = waitJob(t, q, job.ID, StatusFailed)
		if got.Attempt != 1 || !strings.Contains(got.Error, "boom") {
			t.Errorf("failed job: attempt %d error %q, want attempt 1 and the handler's error", got.Attempt, got.Error)
		}
		if ids, err := q.JobIDs(ctx, StatusFailed, 0, 10); err != nil || !slices.Equal(ids, []string{job.ID}) {
			t.Errorf("failed registry = %v, %v; want [%s]", ids, err, job.ID)
		}
		if c, err := q.Counts(ctx); err != nil || c != (Counts{Failed: 1}) {
			t.Errorf("Counts = %+v, %v; want 1 failed", c, err)
		}
		stop()
		if n := calls.Load(); n != 1 {
			t.Errorf("handler ran %d times, want once", n)
		}
		if n, err := q.RequeueFailed(ctx); err != nil || n != 1 {
			t.Fatalf("RequeueFailed = %d, %v; want 1", n, err)
		}
		if got, err := q.FetchJob(ctx, job.ID); err != nil || got.Status != StatusQueued || got.Attempt != 0 {
			t.Errorf("requeued job = %+v, %v; want queued, attempt 0", got, err)
		}
	})
}

// Counts names a damaged key rather than passing on Redis's WRONGTYPE.
func TestCountsNamesDamagedKey(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		q := e.queue("q")
		e.rdb.Set(t.Context(), q.k.active(), "garbage", 0)
		_, err := q.Counts(t.Context())
		want := "key " + q.k.active() + " holds a string, not a zset"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Counts with a damaged active set = %v, want an error saying %q", err, want)
		}
	})
}
