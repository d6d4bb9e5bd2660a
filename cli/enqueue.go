package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/rqgo/rqgo"
)

var enqueueCommand = &command{
	name:     "enqueue",
	summary:  "add a job and print its id",
	synopsis: "[--queue Q] [--id ID] [--retry N] [--retry-in D] [--timeout D] [--in D | --at TIME] FUNC [ARGS_JSON | -]",
	help: `
Add a job that calls function FUNC with ARGS_JSON (any JSON value; "-" reads
it from stdin; omitted, the args are null), and print only the job's id, so
scripts can capture it. The job is retried --retry times after a failed
attempt, waiting --retry-in between attempts (default: the worker's
exponential backoff from 1s). Flags may follow FUNC; put "--" before an
ARGS_JSON that starts with "-", such as a negative number.

Examples:
  %[1]s enqueue resize '{"path":"a.png","width":200}'
  id=$(%[1]s enqueue --queue high --retry 5 --timeout 2m report '[2026, 11]')
  %[1]s enqueue --in 10m --id nightly-2026-11-25 cleanup
  %[1]s enqueue import - < payload.json
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
	)
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
		j, err := rqgo.NewQueue(*queue, rdb, rqgo.WithPrefix(e.prefix)).EnqueueContext(ctx, fn, raw, opts...)
		if err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, j.ID)
		return nil
	}
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
