package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rqgo/rqgo"
)

var jobCommand = &command{
	name:     "job",
	summary:  "show a job's status, attempts, times, result and error",
	synopsis: "ID [--queue Q] [--json]",
	help: `
Show a job: its status, attempts, timestamps, args, result and last error.
Without --queue it looks in every known queue. --json prints one object with
the fields id, queue, func, args, status, attempt, max_retries, result, error,
created_at, enqueued_at, started_at, ended_at; args and result are embedded
JSON values, times are RFC 3339 in UTC with milliseconds, and a time, result
or error the job does not have yet is null.

Examples:
  %[1]s job 3f2a9c0d1e4b5a6f7081
  %[1]s job 3f2a9c0d1e4b5a6f7081 --queue high --json | jq -r .status
`,
	setup: jobSetup,
}

func jobSetup(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
	queue := fs.String("queue", "", "`QUEUE` of the job (default: look in every known queue)")
	asJSON := fs.Bool("json", false, "print JSON")
	return func(ctx context.Context, args []string) error {
		id, err := oneID(args)
		if err != nil {
			return err
		}
		rdb, err := e.connect(ctx)
		if err != nil {
			return err
		}
		j, err := findJob(ctx, rdb, e.prefix, *queue, id)
		if j == nil {
			return err
		}
		// A malformed job is shown as far as it reads, then reported.
		if *asJSON {
			if werr := writeJSON(e.stdout, jobJSON(j)); werr != nil {
				return werr
			}
		} else {
			writeJob(e.stdout, j)
		}
		return err
	}
}

func oneID(args []string) (string, error) {
	switch len(args) {
	case 0:
		return "", usagef("missing job ID")
	case 1:
		return args[0], nil
	}
	return "", usagef("unexpected argument %q: one job ID at a time", args[1])
}

// errJobNotFound is the one-line error for an id no queue holds.
func errJobNotFound(id string) error { return fmt.Errorf("job %s not found", id) }

// findJob reads job id from queue, or, with queue empty, from whichever
// known queue holds it. An id held by several queues is an error naming
// them.
func findJob(ctx context.Context, rdb redis.UniversalClient, prefix, queue, id string) (*rqgo.Job, error) {
	if queue != "" {
		j, err := rqgo.NewQueue(queue, rdb, rqgo.WithPrefix(prefix)).FetchJob(ctx, id)
		if errors.Is(err, rqgo.ErrJobNotFound) {
			return nil, fmt.Errorf("job %s not found in queue %s", id, queue)
		}
		return j, err
	}
	found, err := rqgo.FindJob(ctx, rdb, prefix, id)
	switch {
	case err != nil && !errors.Is(err, rqgo.ErrMalformedJob):
		return nil, err
	case len(found) == 0:
		return nil, errJobNotFound(id)
	case len(found) == 1:
		return found[0], err
	}
	qs := make([]string, len(found))
	for i, j := range found {
		qs[i] = j.Queue
	}
	return nil, usagef("job %s exists in queues %s: pass --queue", id, strings.Join(qs, ", "))
}

// timeFormat is how every time is printed: RFC 3339 in UTC with
// milliseconds.
const timeFormat = "2006-01-02T15:04:05.000Z07:00"

func fmtTime(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := t.UTC().Format(timeFormat)
	return &s
}

// jobOut is the documented JSON form of a job (job --json).
type jobOut struct {
	ID         string          `json:"id"`
	Queue      string          `json:"queue"`
	Func       string          `json:"func"`
	Args       json.RawMessage `json:"args"`
	Status     rqgo.Status     `json:"status"`
	Attempt    int             `json:"attempt"`
	MaxRetries int             `json:"max_retries"`
	Result     json.RawMessage `json:"result"`
	Error      *string         `json:"error"`
	CreatedAt  *string         `json:"created_at"`
	EnqueuedAt *string         `json:"enqueued_at"`
	StartedAt  *string         `json:"started_at"`
	EndedAt    *string         `json:"ended_at"`
}

func jobJSON(j *rqgo.Job) jobOut {
	o := jobOut{
		ID: j.ID, Queue: j.Queue, Func: j.Func, Status: j.Status,
		Attempt: j.Attempt, MaxRetries: j.MaxRetries,
		Args: rawOrNull(j.Args), Result: rawOrNull(j.Result),
		CreatedAt: fmtTime(j.CreatedAt), EnqueuedAt: fmtTime(j.EnqueuedAt),
		StartedAt: fmtTime(j.StartedAt), EndedAt: fmtTime(j.EndedAt),
	}
	if j.Error != "" {
		o.Error = &j.Error
	}
	return o
}

// rawOrNull keeps a stored JSON value, or null when there is none or it is
// not JSON (a hash written by another tool).
func rawOrNull(r json.RawMessage) json.RawMessage {
	if len(r) == 0 || !json.Valid(r) {
		return json.RawMessage("null")
	}
	return r
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // the JSON is printed, not put in a page
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func writeJob(w io.Writer, j *rqgo.Job) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	tm := func(t time.Time) string {
		if s := fmtTime(t); s != nil {
			return *s
		}
		return "-"
	}
	row("id", j.ID)
	row("queue", j.Queue)
	row("func", j.Func)
	row("status", string(j.Status))
	row("attempt", fmt.Sprintf("%d of at most %d", j.Attempt, j.MaxRetries+1))
	row("args", string(j.Args))
	row("created_at", tm(j.CreatedAt))
	if !j.ScheduledAt.IsZero() {
		row("scheduled_at", tm(j.ScheduledAt))
	}
	row("enqueued_at", tm(j.EnqueuedAt))
	row("started_at", tm(j.StartedAt))
	row("ended_at", tm(j.EndedAt))
	if j.Timeout > 0 {
		row("timeout", j.Timeout.String())
	}
	if j.Worker != "" {
		row("worker", j.Worker)
	}
	if len(j.Result) > 0 {
		row("result", string(j.Result))
	}
	tw.Flush()
	if j.Error != "" {
		// Last, unaligned: it may span lines (a stderr tail, a stack).
		fmt.Fprintf(w, "error:\n  %s\n", strings.ReplaceAll(strings.TrimRight(j.Error, "\n"), "\n", "\n  "))
	}
}
