package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rqgo/rqgo"
)

var enqueueCommand = &command{
	name:     "enqueue",
	summary:  "add a job and print its id (or, with --wait, its result)",
	synopsis: "[--queue Q] [--id ID] [--retry N] [--retry-in D] [--timeout D] [--in D | --at TIME] [--depends-on [QUEUE:]ID]... [--allow-failure] [--wait [--wait-timeout D]] FUNC [ARGS_JSON | -]",
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
	)
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
