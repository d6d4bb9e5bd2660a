package rqgo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultScheduleGrace is how late a tick may be enqueued and still count as
// on time, unless [SchedulerOptions] says otherwise.
const DefaultScheduleGrace = time.Minute

const (
	// scheduleMinTTL is the shortest life of an entry's state hash: state
	// that no scheduler touched for this long (or three periods, if longer)
	// expires, so entries taken out of every schedule disappear.
	scheduleMinTTL = 30 * 24 * time.Hour
	// schedulerMaxSleep bounds one wait of Run, so a step of the wall clock
	// (a host's clock set by hand or by NTP) is noticed within a minute.
	schedulerMaxSleep = time.Minute
	// schedulerMaxSkew is the difference between a scheduler's clock and
	// Redis's above which the scheduler warns.
	schedulerMaxSkew = 2 * time.Second
	// prevLookback is how far back a cron entry's last tick is looked for;
	// robfig/cron looks five years ahead for the next one.
	prevLookback = 10 * 365 * 24 * time.Hour
)

var scheduleScript = loadScript("schedule", true) // a second run finds the tick done

// SchedulerOptions configures a [Scheduler]. The zero value works.
type SchedulerOptions struct {
	// Prefix is the key prefix; it must match the queues'. Default: "rqgo".
	Prefix string
	// Location is the time zone of cron specs that name none (with a
	// CRON_TZ= prefix or [ScheduleEntry.Timezone]). Every scheduler of an
	// entry must use the same. Default: UTC, not the host's local time.
	Location *time.Location
	// CatchUp decides what happens to a tick that no scheduler enqueued
	// within Grace, typically because none ran at the time. With CatchUp,
	// the next scheduler to run enqueues the most recent such tick once,
	// late (older missed ticks are dropped). Default: false, missed ticks
	// are skipped. Ticks from before an entry was first seen in Redis are
	// never caught up.
	CatchUp bool
	// Grace is how late a tick may be enqueued and still count as on time,
	// for example by a scheduler started a few seconds after the tick, or
	// retrying after a Redis error. Default: [DefaultScheduleGrace] (one
	// minute).
	Grace time.Duration
	// Logger receives the scheduler's logs. Default: [slog.Default].
	Logger *slog.Logger
	// Now is the scheduler's clock; ticks are computed from it. Default:
	// [time.Now].
	Now func() time.Time
}

// ScheduleEntry is one periodic job: a cron spec and the job to enqueue at
// each of its ticks. It is also one element of a schedule file (see
// [ParseScheduleFile]).
type ScheduleEntry struct {
	// Name identifies the entry in Redis and in its jobs' ids
	// (<name>@<tick Unix seconds>). Default: derived from Func, Cron, Queue
	// and the time zone, so schedulers given the same entry agree.
	Name string
	// Cron is a five-field cron spec ("0 3 * * *"), a descriptor ("@daily",
	// "@hourly", ...) or "@every D" with D a whole number of seconds, at
	// least 1s ("@every 5m"). A CRON_TZ=Zone or TZ=Zone prefix sets the
	// time zone.
	Cron string
	// Func is the function the jobs call.
	Func string
	// Args are the jobs' arguments, encoded as JSON once, when the entry is
	// added.
	Args any
	// Queue receives the jobs. Default: "default".
	Queue string
	// Timezone is an IANA time zone name ("Europe/Berlin") for a Cron
	// without a CRON_TZ= prefix. Default: [SchedulerOptions.Location].
	Timezone string
	// Options apply to every job (Retry, Timeout, In, ...). JobID is not
	// allowed: a tick's job id is <name>@<tick Unix seconds>. Nor are
	// Debounce (each tick is a job of its own) and DependsOn. With [Unique], a tick at
	// which another job holds the key (the previous tick's job, still
	// queued or running, say) enqueues nothing: the tick counts as done,
	// and the entry's state names the holder ([ScheduleInfo.LastHeldBy]).
	Options []EnqueueOption
}

// Scheduler enqueues periodic jobs. Any number of schedulers, in any number
// of processes, may run the same entries: each tick becomes exactly one job
// (or none, for an entry with [Unique] whose key another job holds),
// decided by a Lua script that enqueues the job and records the tick in one
// step. Ticks are computed from the scheduler's clock, so hosts that run
// schedulers need synchronized clocks (NTP).
//
// Create a Scheduler with [NewScheduler], add entries, then call Run once;
// Add returns an error once Run has started. Its methods are safe for
// concurrent use.
type Scheduler struct {
	rdb  redis.UniversalClient
	opts SchedulerOptions
	log  *slog.Logger
	err  error
	// wait blocks until the scheduler's clock reaches until or ctx ends.
	wait func(ctx context.Context, until time.Time) error

	mu         sync.Mutex
	entries    []*schedEntry
	names      map[string]bool // "<queue>:<name>" of every entry
	started    bool
	skewWarned bool
}

// schedEntry is an added entry, compiled.
type schedEntry struct {
	ScheduleEntry
	spec    string // Cron with its blanks normalized
	tz      string // the effective time zone's name; "" for @every
	sched   tickSchedule
	q       *Queue
	key     string
	next    time.Time // when Run evaluates the entry next; zero: at once
	known   bool      // recorded in the sets of queues and entries
	written bool      // the script has recorded this scheduler's description
}

// NewScheduler returns a scheduler using rdb. Invalid options are reported
// by Add and Run.
func NewScheduler(rdb redis.UniversalClient, opts SchedulerOptions) *Scheduler {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.Location == nil {
		opts.Location = time.UTC
	}
	if opts.Grace == 0 {
		opts.Grace = DefaultScheduleGrace
	}
	s := &Scheduler{rdb: rdb, opts: opts, log: opts.Logger, names: map[string]bool{}}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.err = validatePrefix(opts.Prefix)
	if opts.Grace < 0 {
		s.err = errors.Join(s.err, fmt.Errorf("%w: schedule grace %s is negative", ErrInvalid, opts.Grace))
	}
	if rdb == nil {
		s.err = errors.Join(s.err, fmt.Errorf("%w: nil Redis client", ErrInvalid))
	}
	s.wait = s.sleepUntil
	return s
}

func (s *Scheduler) now() time.Time {
	if s.opts.Now != nil {
		return s.opts.Now()
	}
	return time.Now()
}

// Add adds an entry that enqueues fn with args into the queue "default" at
// every tick of spec. See [ScheduleEntry] for the forms of spec; use
// [Scheduler.AddEntry] to name the entry or choose its queue or time zone.
func (s *Scheduler) Add(spec, fn string, args any, opts ...EnqueueOption) error {
	return s.AddEntry(ScheduleEntry{Cron: spec, Func: fn, Args: args, Options: opts})
}

// AddEntry adds an entry. It returns an error wrapping [ErrInvalid] for a bad
// spec, time zone, name, function, argument or option, and for a second
// entry with the same name and queue.
func (s *Scheduler) AddEntry(e ScheduleEntry) error {
	if s.err != nil {
		return s.err
	}
	ce, err := compileEntry(e, s.opts.Location)
	if err != nil {
		return fmt.Errorf("%w: %s: %s", ErrInvalid, entryLabel(e), reason(err))
	}
	ce.q = NewQueue(ce.Queue, s.rdb, WithPrefix(s.opts.Prefix))
	ce.key = ce.q.k.schedule(ce.Name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return fmt.Errorf("%w: schedule entry %q added after Run started", ErrInvalid, ce.Name)
	}
	id := ce.Queue + ":" + ce.Name
	if s.names[id] {
		return fmt.Errorf("%w: schedule entry %q in queue %q is added twice; give entries with the same spec, function and queue different names",
			ErrInvalid, ce.Name, ce.Queue)
	}
	s.names[id] = true
	s.entries = append(s.entries, ce)
	return nil
}

// compileEntry validates e, fills in its defaults and parses its spec. Its
// errors give the reason only; callers say which entry.
func compileEntry(e ScheduleEntry, loc *time.Location) (*schedEntry, error) {
	if e.Queue == "" {
		e.Queue = "default"
	}
	if err := validateFuncName(e.Func); err != nil {
		return nil, err
	}
	sched, tz, err := parseSpec(e.Cron, e.Timezone, loc)
	if err != nil {
		return nil, err
	}
	ce := &schedEntry{spec: strings.Join(strings.Fields(e.Cron), " "), tz: tz, sched: sched}
	if e.Name == "" {
		sum := sha256.Sum256([]byte(e.Queue + "\x00" + e.Func + "\x00" + ce.spec + "\x00" + tz))
		suffix := hex.EncodeToString(sum[:6])
		e.Name = e.Func + "-" + suffix
		if len(e.Func) > 64 || validateName("", e.Name) != nil {
			e.Name = "schedule-" + suffix
		}
	}
	if err := errors.Join(validateName("schedule name", e.Name), validateQueueName(e.Queue)); err != nil {
		return nil, err
	}
	var o enqueueOptions
	for _, opt := range e.Options {
		opt(&o)
	}
	if o.err != nil {
		return nil, o.err
	}
	if o.id != "" {
		return nil, errors.New("JobID cannot be used: a tick's job id is <name>@<tick Unix seconds>")
	}
	if o.debounce > 0 {
		return nil, errors.New("Debounce cannot be used: each tick is a job of its own; use Unique to skip ticks while a job of the key is held")
	}
	if len(o.parents) > 0 || o.allowFailure {
		return nil, errors.New("DependsOn cannot be used: a tick's job is enqueued at its tick, with no parents")
	}
	raw, err := encodeArgs(e.Args)
	if err != nil {
		return nil, fmt.Errorf("args do not encode to JSON: %v", err)
	}
	if len(raw) > DefaultMaxArgsSize {
		return nil, fmt.Errorf("args are %d bytes, over the %d-byte limit", len(raw), DefaultMaxArgsSize)
	}
	e.Args = raw
	e.Options = slices.Clip(slices.Clone(e.Options))
	ce.ScheduleEntry = e
	return ce, nil
}

func entryLabel(e ScheduleEntry) string {
	if e.Name != "" {
		return fmt.Sprintf("schedule entry %q", e.Name)
	}
	return fmt.Sprintf("schedule entry (func %q, cron %q)", e.Func, e.Cron)
}

// reason is err's text without the ErrInvalid prefix.
func reason(err error) string {
	return strings.TrimPrefix(err.Error(), ErrInvalid.Error()+": ")
}

func (e *schedEntry) jobID(tick time.Time) string {
	return e.Name + "@" + strconv.FormatInt(tick.Unix(), 10)
}

func (e *schedEntry) jobOptions(tick time.Time) []EnqueueOption {
	return append(e.Options, JobID(e.jobID(tick)))
}

// Run enqueues the jobs of every entry's ticks until ctx is done, then
// returns nil. Between ticks it sleeps until the next tick of any entry (at
// most a minute, so a step of the wall clock is noticed). Redis errors are
// logged and retried after 1s, doubling up to 30s; a tick is still enqueued
// if that succeeds within the grace. Run may be called only once per
// Scheduler, after at least one Add.
func (s *Scheduler) Run(ctx context.Context) error {
	if s.err != nil {
		return s.err
	}
	s.mu.Lock()
	switch {
	case s.started:
		s.mu.Unlock()
		return errors.New("rqgo: Scheduler.Run called twice")
	case len(s.entries) == 0:
		s.mu.Unlock()
		return fmt.Errorf("%w: scheduler has no entries", ErrInvalid)
	}
	s.started = true
	s.mu.Unlock()

	var backoff time.Duration
	for {
		now := s.now()
		next, err := s.tick(ctx, now)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			backoff = min(max(2*backoff, time.Second), 30*time.Second)
			s.log.Warn("scheduler could not enqueue; retrying", "err", err, "retry_in", backoff)
			if next.IsZero() || now.Add(backoff).Before(next) {
				next = now.Add(backoff)
			}
		} else {
			backoff = 0
		}
		if next.IsZero() || now.Add(schedulerMaxSleep).Before(next) {
			next = now.Add(schedulerMaxSleep)
		}
		if s.wait(ctx, next) != nil {
			return nil
		}
	}
}

// Tick enqueues the jobs of the ticks due now, as Run does at each wake-up,
// and returns the Redis errors it met. It is for programs that drive a
// scheduler themselves (for example from a platform's own cron, once a
// minute) instead of calling Run.
func (s *Scheduler) Tick(ctx context.Context) error {
	if s.err != nil {
		return s.err
	}
	_, err := s.tick(ctx, s.now())
	return err
}

func (s *Scheduler) sleepUntil(ctx context.Context, until time.Time) error {
	d := until.Sub(s.now())
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// tick evaluates every entry due at now and returns when the next is due.
func (s *Scheduler) tick(ctx context.Context, now time.Time) (time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var next time.Time
	var errs []error
	for _, e := range s.entries {
		if e.next.IsZero() || !now.Before(e.next) {
			if err := s.fire(ctx, e, now); err != nil {
				errs = append(errs, err) // retried at Run's next wake-up
				continue
			}
			e.next = e.sched.next(now)
		}
		if !e.next.IsZero() && (next.IsZero() || e.next.Before(next)) {
			next = e.next
		}
	}
	return next, errors.Join(errs...)
}

// fire runs the schedule script for the entry's last tick at or before now.
func (s *Scheduler) fire(ctx context.Context, e *schedEntry, now time.Time) error {
	if !e.known {
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.SAdd(ctx, queuesKey(s.opts.Prefix), e.Queue)
			p.SAdd(ctx, schedulesKey(s.opts.Prefix), e.Queue+":"+e.Name)
			return nil
		})
		if err != nil {
			return fmt.Errorf("rqgo: schedule %q: %w", e.Name, err)
		}
		e.known = true
	}
	tick, nextRun := e.sched.prev(now), e.sched.next(now)
	ttl := scheduleMinTTL
	if !nextRun.IsZero() {
		ttl = max(ttl, 3*nextRun.Sub(now))
	}
	argv := []any{unixMilli(tick), flag(!tick.IsZero() && now.Sub(tick) <= s.opts.Grace), flag(s.opts.CatchUp),
		unixMilli(nextRun), now.UnixMilli(), ttl.Milliseconds(), flag(!e.written),
		e.Name, e.Queue, e.Func, e.spec, e.tz}
	id, uniqueKey := e.Name+"@0", ""
	if !tick.IsZero() {
		id = e.jobID(tick)
		j, jobArgv, err := e.q.prepare(e.Func, e.Args, e.jobOptions(tick))
		if err != nil {
			return fmt.Errorf("rqgo: schedule %q: %w", e.Name, err)
		}
		argv = append(argv, sendable(jobArgv)...)
		uniqueKey = j.UniqueKey
	}
	k := e.q.k
	keys := []string{e.key, k.job(id), k.pending(), k.scheduled(), k.wake()}
	if uniqueKey != "" {
		keys = append(keys, k.unique(uniqueKey), k.jobPrefix())
	}
	sent := time.Now()
	res, err := scheduleScript.Run(ctx, s.rdb, keys, argv...).Slice()
	if err != nil {
		return fmt.Errorf("rqgo: schedule %q: %w", e.Name, err)
	}
	if len(res) != 4 {
		return fmt.Errorf("rqgo: schedule %q: unexpected reply %v", e.Name, res)
	}
	code, _ := res[0].(int64)
	redisNow, _ := res[1].(int64)
	holder, _ := res[2].(string)
	holderStatus, _ := res[3].(string)
	e.written = true
	s.checkSkew(sent, redisNow)
	log := s.log.With("schedule", e.Name, "queue", e.Queue, "func", e.Func)
	switch code {
	case 1, 2:
		log.Debug("periodic job enqueued", "job_id", id, "tick", tick)
	case 3:
		log.Debug("periodic job existed already", "job_id", id, "tick", tick)
	case 4:
		log.Warn("tick missed: no scheduler enqueued it within the grace; skipped (CatchUp is off)", "tick", tick)
	case 6:
		log.Info("tick skipped: another job holds the unique key", "job_id", id, "tick", tick,
			"unique_key", uniqueKey, "holder", holder, "holder_status", holderStatus)
	}
	return nil
}

// checkSkew warns once when the host's clock and Redis's differ by more than
// schedulerMaxSkew: ticks come from the host's clock.
func (s *Scheduler) checkSkew(sent time.Time, redisMillis int64) {
	if s.opts.Now != nil || s.skewWarned {
		return
	}
	mid := sent.Add(time.Since(sent) / 2)
	skew := mid.Sub(time.UnixMilli(redisMillis))
	if skew > schedulerMaxSkew || skew < -schedulerMaxSkew {
		s.skewWarned = true
		s.log.Warn("this host's clock differs from Redis's; schedulers on different hosts need synchronized clocks (NTP)",
			"skew", skew.Round(time.Millisecond))
	}
}

func unixMilli(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func flag(b bool) int {
	if b {
		return 1
	}
	return 0
}
