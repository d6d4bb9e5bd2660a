package cli

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"

	"github.com/redis/go-redis/v9"

	"github.com/rqgo/rqgo"
)

var enqueueCommand = &command{
	name:     "enqueue",
	summary:  "add a job and print its id (or, with --wait, its result)",
	synopsis: "[--queue Q] [--id ID] [--retry N] [--retry-in D] [--timeout D] [--in D | --at TIME] [--depends-on [QUEUE:]ID]... [--allow-failure] [--unique [--unique-key K] [--unique-until started|ended] [--unique-for D]] [--debounce D[,MAXWAIT]] [--start-within D] [--limit-key K] [--wait [--wait-timeout D]] FUNC [ARGS_JSON | -]",
	help: `
Add a job that calls function FUNC with ARGS_JSON (any JSON value; "-" reads
it from stdin; omitted, the args are null), and print only the job's id, so
scripts can capture it. The job is retried --retry times after a failed
attempt, waiting --retry-in between attempts (default: the worker's
exponential backoff from 1s). Flags may follow FUNC; put "--" before an
ARGS_JSON that starts with "-", such as a negative number.

--depends-on ID (repeatable) makes the job wait, with status deferred, until
job ID has finished; then it is queued (or scheduled, with --in or --at).
The parent may be in any queue: ID is looked up in every known queue, and
QUEUE:ID names job ID of queue QUEUE (an id found in several queues must be
written so). When a parent fails or is canceled, the job is canceled, and so
are its own dependents; with --allow-failure it runs once every parent has
ended, however it ended. A parent that does not exist exits 1, and nothing
is enqueued.

--unique makes the job the only one of its unique key in the queue. The key
is --unique-key K, or else derived from FUNC and ARGS_JSON (key order and
whitespace in the JSON do not matter); it is held until the job has ended
(--unique-until ended, the default: through retries, until it finished,
failed for good or was canceled) or until an attempt starts (--unique-until
started), and with --unique-for D for at least D after the enqueue, even
once the job has ended. While another job holds the key nothing is
enqueued: the command prints a line naming that job on stderr and exits 1.
--unique-key, --unique-until and --unique-for imply --unique.

--debounce D starts the job D after the newest enqueue of its key (it
implies --unique): an enqueue while the job has not started gives the job
these args, moves its start to D from now, and prints the id of that job,
with exit status 0; once it has started, an enqueue is a duplicate as with
--unique. --debounce D,MAXWAIT bounds the postponement to MAXWAIT after the
first enqueue. Without --unique-key, the key is derived from the args, so
only enqueues of the same args join. --debounce cannot be combined with
--depends-on.

--start-within D cancels the job, with an error saying it expired, when no
attempt has started D after the enqueue (retries included).

--limit-key K gives the job limit key K, such as a tenant or an API
account: the queue's --key-concurrency and --key-rate (see the limits
command) apply to the jobs of each key separately. A job over its key's
limits is parked, still queued, until the key has room, and holds back no
other key's jobs. K is 1 to 200 bytes without whitespace.

--wait waits until the job has ended, then prints its result (JSON) instead
of its id and exits 0 when it finished, or prints its status and error on
stderr and exits 1 when it failed or was canceled. --wait-timeout gives up
after D, with exit status 1 and a message naming the job, which goes on.

Examples:
  %[1]s enqueue resize '{"path":"a.png","width":200}'
  id=$(%[1]s enqueue --queue high --retry 5 --timeout 2m report '[2026, 11]')
  %[1]s enqueue --in 10m --id nightly-2026-11-25 cleanup
  %[1]s enqueue import - < payload.json
  a=$(%[1]s enqueue fetch '"https://example.com/a"')
  b=$(%[1]s enqueue --queue cpu --depends-on "$a" parse)
  %[1]s enqueue --depends-on "$a" --depends-on "cpu:$b" --allow-failure --wait report
  %[1]s enqueue --unique-key reindex:doc-42 --unique-for 1h reindex '{"doc":42}'
  %[1]s enqueue --debounce 30s,5m --unique-key index:shop-7 index '{"shop":7}'
  %[1]s enqueue --start-within 10m --retry 3 notify '{"user":9}'
  %[1]s enqueue --queue mail --limit-key tenant-42 send '{"to":"a@example.com"}'
`,
	setup: enqueueSetup,
}

func enqueueSetup(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
	var (
		queue   = fs.String("queue", "default", "`QUEUE` to add the job to")
		id      = fs.String("id", "", "job `ID` (default a random one); an id already taken fails")
		retry   = fs.Int("retry", rqgo.DefaultMaxRetries, "`N` retries after a failed attempt (0: none)")
		retryIn = fs.Duration("retry-in", 0, "fixed wait between attempts (default exponential backoff from 1s)")
		timeout = fs.Duration("timeout", 0, "time limit of one attempt (default the worker's --timeout)")
		in      = fs.Duration("in", 0, "run the job after this delay")
		at      time.Time
		parents []string

		allowFailure = fs.Bool("allow-failure", false, "with --depends-on: run the job once its parents have ended, even if some failed or were canceled")
		wait         = fs.Bool("wait", false, "wait until the job has ended; print its result instead of its id, and exit 1 if it failed or was canceled")
		waitTimeout  = fs.Duration("wait-timeout", 0, "with --wait: give up after this long, with exit status 1 (default no limit)")

		unique      = fs.Bool("unique", false, "enqueue nothing, and exit 1 naming the holder, while another job of the queue holds the job's unique key")
		uniqueKey   = fs.String("unique-key", "", "the unique `KEY` (implies --unique; default derived from FUNC and ARGS_JSON)")
		uniqueUntil = rqgo.UntilEnded
		uniqueFor   = fs.Duration("unique-for", 0, "hold the unique key at least this long after the enqueue, even once the job has ended (implies --unique)")
		startWithin = fs.Duration("start-within", 0, "cancel the job as expired if no attempt has started this long after the enqueue")
		debounce    debounceFlag
		limitKey    = fs.String("limit-key", "", "the job's limit `KEY`, such as a tenant: the queue's --key-concurrency and --key-rate apply to each key's jobs separately")
	)
	fs.Func("unique-until", "release the unique key when an attempt has started or when the job has ended: `started|ended` (implies --unique; default ended)", func(v string) error {
		switch v {
		case "ended":
			uniqueUntil = rqgo.UntilEnded
		case "started":
			uniqueUntil = rqgo.UntilStarted
		default:
			return errors.New("want started or ended")
		}
		return nil
	})
	fs.Var(&debounce, "debounce", "with `D[,MAXWAIT]`, start the job D after the newest enqueue of its unique key, and at most MAXWAIT after the first (implies --unique)")
	fs.Func("depends-on", "run the job once job `[QUEUE:]ID` has finished (repeatable)", func(v string) error {
		if v == "" {
			return errors.New("empty job ID")
		}
		parents = append(parents, v)
		return nil
	})
	fs.Func("at", "run the job at this RFC 3339 `TIME`, e.g. 2026-11-25T18:00:00Z", func(v string) error {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return fmt.Errorf("want an RFC 3339 time such as 2026-11-25T18:00:00Z")
		}
		at = t
		return nil
	})
	return func(ctx context.Context, args []string) error {
		if len(args) == 0 {
			return usagef("missing FUNC")
		}
		if len(args) > 2 {
			return usagef("unexpected argument %q (quote ARGS_JSON as one argument)", args[2])
		}
		set := setFlags(fs)
		if set["in"] && set["at"] {
			return usagef("--in and --at exclude each other")
		}
		if *allowFailure && len(parents) == 0 {
			return usagef("--allow-failure needs --depends-on")
		}
		if set["wait-timeout"] && !*wait {
			return usagef("--wait-timeout needs --wait")
		}
		if *waitTimeout < 0 {
			return usagef("--wait-timeout %s is negative", *waitTimeout)
		}
		uopts, err := uniqueOptions(set, *unique, *uniqueKey, uniqueUntil, *uniqueFor, *startWithin, debounce, len(parents) > 0)
		if err != nil {
			return err
		}
		switch {
		case set["limit-key"] && *limitKey == "":
			return usagef("--limit-key is empty")
		case strings.ContainsFunc(*limitKey, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
			return usagef("--limit-key %q has whitespace or control characters", *limitKey)
		}
		fn := args[0]
		raw := json.RawMessage("null")
		if len(args) == 2 {
			raw = json.RawMessage(args[1])
			if args[1] == "-" {
				b, err := io.ReadAll(e.stdin)
				if err != nil {
					return fmt.Errorf("read ARGS_JSON from stdin: %v", err)
				}
				raw = b
			}
			if err := checkJSON(raw); err != nil {
				return usagef("ARGS_JSON is not valid JSON: %v", err)
			}
		}
		opts := []rqgo.EnqueueOption{rqgo.Retry(*retry)}
		if set["id"] {
			if *id == "" {
				return usagef("--id is empty")
			}
			opts = append(opts, rqgo.JobID(*id))
		}
		if set["retry-in"] {
			opts = append(opts, rqgo.RetryIntervals(*retryIn))
		}
		if set["timeout"] {
			opts = append(opts, rqgo.Timeout(*timeout))
		}
		if set["in"] {
			opts = append(opts, rqgo.In(*in))
		}
		if set["at"] {
			opts = append(opts, rqgo.At(at))
		}
		opts = append(opts, uopts...)
		if set["limit-key"] {
			opts = append(opts, rqgo.LimitKey(*limitKey))
		}
		rdb, err := e.connect(ctx)
		if err != nil {
			return err
		}
		if len(parents) > 0 {
			jobs, err := resolveParents(ctx, rdb, e.prefix, parents)
			if err != nil {
				return err
			}
			opts = append(opts, rqgo.DependsOn(jobs...))
			if *allowFailure {
				opts = append(opts, rqgo.AllowFailure())
			}
		}
		q := rqgo.NewQueue(*queue, rdb, rqgo.WithPrefix(e.prefix))
		j, err := q.EnqueueContext(ctx, fn, raw, opts...)
		if errors.Is(err, rqgo.ErrDuplicate) && j != nil {
			return fmt.Errorf("duplicate: job %s (%s) holds unique key %q of queue %q", j.ID, j.Status, j.UniqueKey, j.Queue)
		}
		if err != nil {
			return err
		}
		if !*wait {
			fmt.Fprintln(e.stdout, j.ID)
			return nil
		}
		return e.await(ctx, q, j.ID, *waitTimeout, "--wait-timeout",
			fmt.Errorf("job %s no longer exists: it was deleted, or ended and was kept for no time", j.ID))
	}
}

// debounceFlag is the value of --debounce: D, or D,MAXWAIT.
type debounceFlag struct {
	set        bool
	d, maxWait time.Duration
}

func (f *debounceFlag) String() string {
	if f == nil || !f.set {
		return ""
	}
	if f.maxWait > 0 {
		return f.d.String() + "," + f.maxWait.String()
	}
	return f.d.String()
}

func (f *debounceFlag) Set(v string) error {
	ds, ms, hasMax := strings.Cut(v, ",")
	d, err := time.ParseDuration(ds)
	if err != nil {
		return fmt.Errorf("want a duration D or D,MAXWAIT such as 30s,5m")
	}
	if d <= 0 {
		return fmt.Errorf("delay %s is not positive", d)
	}
	var maxWait time.Duration
	if hasMax {
		if maxWait, err = time.ParseDuration(ms); err != nil {
			return fmt.Errorf("MAXWAIT %q: want a duration such as 5m", ms)
		}
		if maxWait < d {
			return fmt.Errorf("MAXWAIT %s is shorter than the delay %s", maxWait, d)
		}
	}
	*f = debounceFlag{set: true, d: d, maxWait: maxWait}
	return nil
}

// uniqueOptions checks the flags of unique jobs, debounce and
// --start-within, and returns their enqueue options.
func uniqueOptions(set map[string]bool, unique bool, key string, until rqgo.UniqueUntil, keepFor, startWithin time.Duration,
	debounce debounceFlag, hasParents bool) ([]rqgo.EnqueueOption, error) {
	var opts []rqgo.EnqueueOption
	if set["start-within"] {
		if startWithin <= 0 {
			return nil, usagef("--start-within %s is not positive", startWithin)
		}
		opts = append(opts, rqgo.StartWithin(startWithin))
	}
	implied := ""
	for _, f := range []string{"unique-key", "unique-until", "unique-for"} {
		if set[f] {
			implied = f
			break
		}
	}
	if set["unique"] && !unique && (implied != "" || debounce.set) {
		return nil, usagef("--unique=false contradicts --%s", cmp.Or(implied, "debounce"))
	}
	switch {
	case set["unique-key"] && key == "":
		return nil, usagef("--unique-key is empty")
	case strings.ContainsFunc(key, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
		return nil, usagef("--unique-key %q has whitespace or control characters", key)
	case keepFor < 0:
		return nil, usagef("--unique-for %s is negative", keepFor)
	case debounce.set && hasParents:
		return nil, usagef("--debounce and --depends-on exclude each other: a deferred job starts when its parents end")
	}
	if unique || implied != "" {
		opts = append(opts, rqgo.Unique(rqgo.UniqueOpts{Key: key, Until: until, For: keepFor}))
	}
	if debounce.set {
		opts = append(opts, rqgo.Debounce(debounce.d, debounce.maxWait))
	}
	return opts, nil
}

// resolveParents finds the jobs that the values of --depends-on name, each
// once, in the order given.
func resolveParents(ctx context.Context, rdb redis.UniversalClient, prefix string, values []string) ([]*rqgo.Job, error) {
	var jobs []*rqgo.Job
	seen := map[rqgo.JobRef]bool{}
	for _, v := range values {
		j, err := resolveParent(ctx, rdb, prefix, v)
		if err != nil {
			return nil, err
		}
		if r := (rqgo.JobRef{Queue: j.Queue, ID: j.ID}); !seen[r] {
			seen[r] = true
			jobs = append(jobs, j)
		}
	}
	return jobs, nil
}

// resolveParent finds the job that one value of --depends-on names: the
// job with v as its id in whichever known queue holds it or, when none
// does and v has a colon, job ID of queue QUEUE for v = QUEUE:ID (a queue
// name has no colon; an id may). An id held by several queues is an error
// naming them.
func resolveParent(ctx context.Context, rdb redis.UniversalClient, prefix, v string) (*rqgo.Job, error) {
	found, err := rqgo.FindJob(ctx, rdb, prefix, v)
	if err != nil && !errors.Is(err, rqgo.ErrMalformedJob) {
		return nil, err
	}
	switch len(found) {
	case 0:
	case 1:
		return found[0], nil
	default:
		qs := make([]string, len(found))
		for i, j := range found {
			qs[i] = j.Queue
		}
		return nil, usagef("--depends-on %s: job %s exists in queues %s: write QUEUE:ID, such as %s:%s",
			v, v, strings.Join(qs, ", "), qs[0], v)
	}
	name, id, ok := strings.Cut(v, ":")
	if !ok || name == "" || id == "" {
		return nil, fmt.Errorf("--depends-on %s: job %s not found", v, v)
	}
	j, err := rqgo.NewQueue(name, rdb, rqgo.WithPrefix(prefix)).FetchJob(ctx, id)
	switch {
	case j != nil:
		return &rqgo.Job{Queue: name, ID: id}, nil
	case errors.Is(err, rqgo.ErrJobNotFound), errors.Is(err, rqgo.ErrInvalid):
		return nil, fmt.Errorf("--depends-on %s: job %s not found, in any queue, nor job %s in queue %s", v, v, id, name)
	}
	return nil, err
}

// setFlags returns the names of the flags given on the command line.
func setFlags(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// checkJSON reports why raw is not one JSON value.
func checkJSON(raw []byte) error {
	if json.Valid(raw) {
		return nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return err
	}
	return fmt.Errorf("trailing data")
}
