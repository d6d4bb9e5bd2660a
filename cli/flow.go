package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/redis/go-redis/v9"

	"github.com/rqgo/rqgo"
)

var pauseCommand = &command{
	name:     "pause",
	summary:  "stop every worker from starting a queue's jobs, until resume",
	synopsis: "QUEUE",
	help: `
Pause QUEUE: no worker of the fleet starts an attempt of its jobs until
'resume QUEUE'. Running jobs go on and finish; enqueues, scheduled jobs and
retries still land in the queue, and workers keep serving their other
queues. It prints "paused QUEUE"; pausing a paused queue does nothing more.
A queue no job or worker has used yet is paused all the same (so that it
starts paused), with a warning on stderr naming it, in case of a typo.

Examples:
  %[1]s pause mail
  %[1]s info        # the PAUSED column
  %[1]s resume mail
`,
	setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
		return pauseSetup(fs, e, true)
	},
}

var resumeCommand = &command{
	name:     "resume",
	summary:  "let workers start a paused queue's jobs again",
	synopsis: "QUEUE",
	help: `
Resume QUEUE after 'pause QUEUE': idle workers of the queue start its jobs
at once. It prints "resumed QUEUE"; resuming a queue that is not paused does
nothing more. Its limits (see the limits command) stay as they were.

Example:
  %[1]s resume mail
`,
	setup: func(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
		return pauseSetup(fs, e, false)
	},
}

func pauseSetup(fs *flag.FlagSet, e *env, pause bool) func(context.Context, []string) error {
	return func(ctx context.Context, args []string) error {
		name, err := oneQueue(args)
		if err != nil {
			return err
		}
		rdb, err := e.connect(ctx)
		if err != nil {
			return err
		}
		q := rqgo.NewQueue(name, rdb, rqgo.WithPrefix(e.prefix))
		known, err := knownQueue(ctx, rdb, e.prefix, name)
		if err != nil {
			return err
		}
		done := "resumed"
		if pause {
			err, done = q.Pause(ctx), "paused"
		} else {
			err = q.Resume(ctx)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s %s\n", done, name)
		if !known {
			e.warnf("queue %s was not known: no job or worker had used it (check the name); it is %s now", name, done)
		}
		return nil
	}
}

var limitsCommand = &command{
	name:     "limits",
	summary:  "show or change a queue's concurrency and rate limits, fleet-wide",
	synopsis: "QUEUE [--concurrency N] [--rate N/DURATION] [--key-concurrency N] [--key-rate N/DURATION] [--clear] [--json]",
	help: `
Show QUEUE's limits, whether it is paused, and how many of its jobs are
parked over their limit key's limits. The limits hold for every worker of
the fleet at its next fetch, without a restart:

  --concurrency N          at most N of the queue's jobs run at once
  --rate N/DURATION        at most N attempts start per DURATION
  --key-concurrency N      the same as --concurrency, for the jobs of each
  --key-rate N/DURATION    limit key (enqueue --limit-key) separately; a job
                           over its key's limits is parked, and holds back
                           no other key's jobs

With any of them, the command changes those limits, keeps the others, and
prints the queue's limits as they are now. N is a whole number; 0 removes
that limit (--rate 0 and --key-rate 0 need no DURATION). DURATION is a
duration such as 1s, 90s, 1m or 1h, a whole number of milliseconds, at
least 1ms; a bare unit means one of it (100/s is 100/1s). --clear removes
every limit, and cannot be combined with the other four.

The text form is one "name: value" line each: queue, paused (true or false),
one line per limit set (concurrency, rate, key-concurrency, key-rate) or
"limits: none", and parked. --json prints {"queue", "paused", "parked",
"limits": {"concurrency", "rate", "per_ms", "key_concurrency", "key_rate",
"key_per_ms"}}, each limit a number, or null when not set. Limits set on a
queue no job or worker has used yet apply from its first job, with a
warning on stderr naming it, in case of a typo.

Examples:
  %[1]s limits payments --concurrency 5
  %[1]s limits mail --rate 100/1s --key-concurrency 2
  %[1]s limits mail --key-rate 3/1m
  %[1]s limits mail --rate 0
  %[1]s limits mail --json | jq .limits.concurrency
  %[1]s limits mail --clear
`,
	setup: limitsSetup,
}

// limitsChange is what the flags of the limits command set: each field
// applies only when its flag was given.
type limitsChange struct {
	concurrency, keyConcurrency int
	rate, keyRate               rateFlag
}

func limitsSetup(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
	var c limitsChange
	countFlag(fs, "concurrency", "at most `N` of the queue's jobs run at once, over all workers (0 removes the limit)", &c.concurrency)
	countFlag(fs, "key-concurrency", "at most `N` jobs of each limit key run at once (0 removes the limit)", &c.keyConcurrency)
	fs.Var(&c.rate, "rate", "at most N attempts start per DURATION: `N/DURATION`, such as 100/1s (0 removes the limit)")
	fs.Var(&c.keyRate, "key-rate", "at most N attempts of each limit key start per DURATION: `N/DURATION` (0 removes the limit)")
	clearAll := fs.Bool("clear", false, "remove every limit of the queue")
	asJSON := fs.Bool("json", false, "print JSON")
	return func(ctx context.Context, args []string) error {
		name, err := oneQueue(args)
		if err != nil {
			return err
		}
		set := setFlags(fs)
		var changed []string
		for _, f := range []string{"concurrency", "rate", "key-concurrency", "key-rate"} {
			if set[f] {
				changed = append(changed, "--"+f)
			}
		}
		if *clearAll && len(changed) > 0 {
			return usagef("--clear removes every limit: it cannot be combined with %s", strings.Join(changed, ", "))
		}
		rdb, err := e.connect(ctx)
		if err != nil {
			return err
		}
		q := rqgo.NewQueue(name, rdb, rqgo.WithPrefix(e.prefix))
		known, err := knownQueue(ctx, rdb, e.prefix, name)
		if err != nil {
			return err
		}
		if *clearAll {
			if err := q.SetLimits(ctx, rqgo.Limits{}); err != nil {
				return err
			}
		} else if len(changed) > 0 {
			// Only the limits given change, even against another change at
			// the same moment.
			err := q.UpdateLimits(ctx, func(l *rqgo.Limits) {
				if set["concurrency"] {
					l.Concurrency = c.concurrency
				}
				if set["key-concurrency"] {
					l.KeyConcurrency = c.keyConcurrency
				}
				if set["rate"] {
					l.Rate, l.Per = c.rate.n, c.rate.per
				}
				if set["key-rate"] {
					l.KeyRate, l.KeyPer = c.keyRate.n, c.keyRate.per
				}
			})
			if err != nil {
				return err
			}
		}
		out, err := readFlow(ctx, q)
		if err != nil {
			return err
		}
		if *asJSON {
			err = writeJSON(e.stdout, out)
		} else {
			writeFlow(e.stdout, out)
		}
		if err == nil && !known {
			if *clearAll || len(changed) > 0 {
				e.warnf("queue %s was not known: no job or worker had used it (check the name); its limits apply from its first job", name)
			} else {
				e.warnf("queue %s is not known: no job or worker has used it (check the name)", name)
			}
		}
		return err
	}
}

// oneQueue returns the one QUEUE argument of a command.
func oneQueue(args []string) (string, error) {
	switch len(args) {
	case 0:
		return "", usagef("missing QUEUE")
	case 1:
		return args[0], nil
	}
	return "", usagef("unexpected argument %q: one queue at a time", args[1])
}

// knownQueue says whether name is among the queues known under prefix
// (those something was enqueued to, or a worker listened on). A queue
// name that is not valid is reported by the command's next call.
func knownQueue(ctx context.Context, rdb redis.UniversalClient, prefix, name string) (bool, error) {
	names, err := rqgo.Queues(ctx, rdb, prefix)
	return slices.Contains(names, name), err
}

// warnf writes a warning, one line on stderr, for a command that goes on
// and exits 0.
func (e *env) warnf(format string, a ...any) {
	fmt.Fprintf(e.stderr, "%s %s: warning: %s\n", e.prog, e.cmd.name, e.redact(fmt.Sprintf(format, a...)))
}

// countFlag defines a flag of a limit's N: a whole number, 0 for none.
func countFlag(fs *flag.FlagSet, name, usage string, p *int) {
	fs.Func(name, usage, func(v string) error {
		n, err := parseCount(v)
		*p = n
		return err
	})
}

func parseCount(v string) (int, error) {
	n, err := strconv.Atoi(v)
	switch {
	case err != nil:
		return 0, errors.New("want a whole number N (0 removes the limit)")
	case n < 0:
		return 0, fmt.Errorf("%d is negative (0 removes the limit)", n)
	}
	return n, nil
}

// rateFlag is the value of --rate and --key-rate: N/DURATION, or 0 for no
// rate limit.
type rateFlag struct {
	n   int
	per time.Duration
}

func (f *rateFlag) String() string {
	if f == nil || f.n == 0 {
		return ""
	}
	return strconv.Itoa(f.n) + "/" + f.per.String()
}

func (f *rateFlag) Set(v string) error {
	ns, ds, hasPer := strings.Cut(v, "/")
	n, err := strconv.Atoi(ns)
	switch {
	case err != nil:
		return errors.New("want N/DURATION, such as 100/1s, or 0 to remove the limit")
	case n < 0:
		return fmt.Errorf("N %d is negative (0 removes the limit)", n)
	case n == 0 && !hasPer:
		*f = rateFlag{}
		return nil
	case !hasPer:
		return fmt.Errorf("want N/DURATION, such as %d/1s: the DURATION the %d attempts are counted over is missing", n, n)
	}
	per, err := parsePer(ds)
	if err != nil {
		return err
	}
	if n == 0 {
		per = 0
	}
	*f = rateFlag{n: n, per: per}
	return nil
}

// parsePer reads the DURATION of N/DURATION: a duration such as 1s or 1m,
// or a bare unit such as s, meaning one of it. It must be a whole number of
// milliseconds, at least 1ms, as Redis keeps it in milliseconds.
func parsePer(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil && s != "" && unicode.IsLetter(rune(s[0])) {
		d, err = time.ParseDuration("1" + s)
	}
	switch {
	case err != nil:
		return 0, fmt.Errorf("DURATION %q: want a duration such as 1s, 1m or 1h", s)
	case d <= 0:
		return 0, fmt.Errorf("DURATION %s is not positive", d)
	case d < time.Millisecond:
		return 0, fmt.Errorf("DURATION %s is under 1ms", d)
	case d%time.Millisecond != 0:
		return 0, fmt.Errorf("DURATION %s is not a whole number of milliseconds", d)
	}
	return d, nil
}

// limitsOut is the JSON form of a queue's limits: each is null when not
// set.
type limitsOut struct {
	Concurrency    *int   `json:"concurrency"`
	Rate           *int   `json:"rate"`
	PerMS          *int64 `json:"per_ms"`
	KeyConcurrency *int   `json:"key_concurrency"`
	KeyRate        *int   `json:"key_rate"`
	KeyPerMS       *int64 `json:"key_per_ms"`
}

func limitsJSON(l rqgo.Limits) limitsOut {
	var o limitsOut
	n := func(v int) *int {
		if v <= 0 {
			return nil
		}
		return &v
	}
	ms := func(v int, d time.Duration) *int64 {
		if v <= 0 {
			return nil
		}
		m := d.Milliseconds()
		return &m
	}
	o.Concurrency, o.KeyConcurrency = n(l.Concurrency), n(l.KeyConcurrency)
	o.Rate, o.PerMS = n(l.Rate), ms(l.Rate, l.Per)
	o.KeyRate, o.KeyPerMS = n(l.KeyRate), ms(l.KeyRate, l.KeyPer)
	return o
}

// flowOut is what the limits command prints (and --json writes) of a
// queue: its limits, whether it is paused, its parked jobs.
type flowOut struct {
	Queue  string    `json:"queue"`
	Paused bool      `json:"paused"`
	Parked int64     `json:"parked"`
	Limits limitsOut `json:"limits"`

	limits rqgo.Limits
}

// flow is a queue's limits and whether it is paused.
type flow struct {
	limits rqgo.Limits
	paused bool
}

// readFlowState reads q's limits and whether it is paused.
func readFlowState(ctx context.Context, q *rqgo.Queue) (flow, error) {
	l, err := q.Limits(ctx)
	if err != nil {
		return flow{}, err
	}
	paused, err := q.Paused(ctx)
	return flow{limits: l, paused: paused}, err
}

func readFlow(ctx context.Context, q *rqgo.Queue) (flowOut, error) {
	f, err := readFlowState(ctx, q)
	if err != nil {
		return flowOut{}, err
	}
	c, err := q.Counts(ctx)
	if err != nil {
		return flowOut{}, err
	}
	return flowOut{Queue: q.Name(), Paused: f.paused, Parked: c.Parked, Limits: limitsJSON(f.limits), limits: f.limits}, nil
}

func writeFlow(w io.Writer, f flowOut) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("queue", f.Queue)
	row("paused", strconv.FormatBool(f.Paused))
	l := f.limits
	if l.IsZero() {
		row("limits", "none")
	}
	if l.Concurrency > 0 {
		row("concurrency", strconv.Itoa(l.Concurrency))
	}
	if l.Rate > 0 {
		row("rate", strconv.Itoa(l.Rate)+"/"+l.Per.String())
	}
	if l.KeyConcurrency > 0 {
		row("key-concurrency", strconv.Itoa(l.KeyConcurrency))
	}
	if l.KeyRate > 0 {
		row("key-rate", strconv.Itoa(l.KeyRate)+"/"+l.KeyPer.String())
	}
	row("parked", strconv.FormatInt(f.Parked, 10))
	tw.Flush()
}

// parkedKey is the key of the queue's parked jobs (id -> when parked, Unix
// ms), as the README's key schema names it.
func parkedKey(prefix, queue string) string {
	return prefix + ":{" + queue + "}:parked"
}

// parkedSince says when j was parked over its limit key's limits, the zero
// time when it is not parked (or has no limit key).
func parkedSince(ctx context.Context, rdb redis.UniversalClient, prefix string, j *rqgo.Job) (time.Time, error) {
	if j.LimitKey == "" || j.Status != rqgo.StatusQueued {
		return time.Time{}, nil
	}
	ms, err := rdb.ZScore(ctx, parkedKey(prefix, j.Queue), j.ID).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return time.Time{}, nil
	case err != nil:
		return time.Time{}, fmt.Errorf("read whether job %s is parked: %w", j.ID, err)
	}
	return time.UnixMilli(int64(ms)), nil
}
