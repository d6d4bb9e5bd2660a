package cli

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/redis/go-redis/v9"

	"github.com/rqgo/rqgo"
)

var jobCommand = &command{
	name:     "job",
	summary:  "show a job's status, attempts, times, progress, result, error, parents and dependents",
	synopsis: "ID [--queue Q] [--json]",
	help: `
Show a job: its status, attempts, timestamps, args, result and last error;
the progress and named values (meta) its handler reported, the headers its
producer attached, and when a cancel of the running job was requested; in
a workflow, the jobs it depends on (parents, from enqueue --depends-on)
and the jobs that depend on it (dependents), each with its status now; and,
for a job enqueued with --unique, its unique key, when the key is released,
and whether the job holds it now; for a job enqueued with --limit-key, its
limit key and whether it is parked now (held back, still queued, until its
key has room under the queue's limits), and since when. Without --queue it
looks in every known queue. --json prints one object with the fields id,
queue, func, args, status, attempt, max_retries, result, error, created_at,
enqueued_at, started_at, ended_at, allow_failure, parents, dependents,
unique_key, unique_until, unique_for_ms, start_within_ms, holds_unique_key,
limit_key, parked, progress, meta, headers and cancel_requested; args,
result and progress are embedded JSON values, times are RFC 3339 in UTC
with milliseconds, and a time, result or error the job does not have yet
is null. parents and dependents are arrays (empty when there are none) of
{"queue", "id", "status"}, where status is null for a job that no longer
exists (its result TTL passed, say). unique_key is the job's
unique key, or null; unique_until is "ended" or "started" (null without a
key); unique_for_ms and start_within_ms are the --unique-for and
--start-within durations in milliseconds, or null when not given;
holds_unique_key is true while the job holds its key (false once the key is
released or another job has taken it, and for a job without a key);
limit_key is the job's limit key, or null; parked is true while the job is
parked over its limit key's limits. progress is the last value the
handler reported, or null; meta is an object of the named values it
reported (name -> JSON value), or null when none; headers is an object of
strings, or null when none; cancel_requested is when a cancel of the job
was requested while it ran, or null (a running job with it set ends
canceled once its handler returns).

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
		links, lerr := readLinks(ctx, rdb, e.prefix, j)
		holds, herr := holdsKey(ctx, rdb, e.prefix, j)
		parked, perr := parkedSince(ctx, rdb, e.prefix, j)
		cancelAt, cerr := cancelRequested(ctx, rdb, e.prefix, j)
		extra := jobExtra{holds: holds, parked: parked, cancelRequested: cancelAt}
		// A malformed job, or one whose links, unique key, parking or
		// cancel do not read, is shown as far as it reads, then reported.
		if *asJSON {
			if werr := writeJSON(e.stdout, jobJSON(j, links, extra)); werr != nil {
				return werr
			}
		} else {
			writeJob(e.stdout, j, links, extra)
		}
		return cmp.Or(err, lerr, herr, perr, cerr)
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

	AllowFailure bool     `json:"allow_failure"`
	Parents      []refOut `json:"parents"`
	Dependents   []refOut `json:"dependents"`

	UniqueKey      *string `json:"unique_key"`
	UniqueUntil    *string `json:"unique_until"`
	UniqueForMS    *int64  `json:"unique_for_ms"`
	StartWithinMS  *int64  `json:"start_within_ms"`
	HoldsUniqueKey bool    `json:"holds_unique_key"`

	LimitKey *string `json:"limit_key"`
	Parked   bool    `json:"parked"`

	Progress        json.RawMessage            `json:"progress"`
	Meta            map[string]json.RawMessage `json:"meta"`
	Headers         map[string]string          `json:"headers"`
	CancelRequested *string                    `json:"cancel_requested"`
}

// jobExtra is what job shows of a job besides its hash and links: whether
// it holds its unique key, since when it is parked (zero: it is not), and
// when a cancel of it was requested while it ran (zero: never).
type jobExtra struct {
	holds           bool
	parked          time.Time
	cancelRequested time.Time
}

func jobJSON(j *rqgo.Job, l links, x jobExtra) jobOut {
	o := jobOut{
		ID: j.ID, Queue: j.Queue, Func: j.Func, Status: j.Status,
		Attempt: j.Attempt, MaxRetries: j.MaxRetries,
		Args: rawOrNull(j.Args), Result: rawOrNull(j.Result),
		CreatedAt: fmtTime(j.CreatedAt), EnqueuedAt: fmtTime(j.EnqueuedAt),
		StartedAt: fmtTime(j.StartedAt), EndedAt: fmtTime(j.EndedAt),
		AllowFailure: j.AllowFailure, Parents: l.parents, Dependents: l.dependents,
	}
	if j.Error != "" {
		o.Error = &j.Error
	}
	if j.UniqueKey != "" {
		until := untilName(j.UniqueUntil)
		o.UniqueKey, o.UniqueUntil, o.HoldsUniqueKey = &j.UniqueKey, &until, x.holds
		if j.UniqueFor > 0 {
			ms := j.UniqueFor.Milliseconds()
			o.UniqueForMS = &ms
		}
	}
	if j.StartWithin > 0 {
		ms := j.StartWithin.Milliseconds()
		o.StartWithinMS = &ms
	}
	if j.LimitKey != "" {
		o.LimitKey, o.Parked = &j.LimitKey, !x.parked.IsZero()
	}
	o.Progress = rawOrNull(j.Progress)
	if len(j.Meta) > 0 {
		o.Meta = make(map[string]json.RawMessage, len(j.Meta))
		for name, v := range j.Meta {
			o.Meta[name] = rawOrNull(v)
		}
	}
	if len(j.Headers) > 0 {
		o.Headers = j.Headers
	}
	o.CancelRequested = fmtTime(x.cancelRequested)
	return o
}

// jobKey is the key of a job's hash, as the README's key schema names it.
func jobKey(prefix, queue, id string) string {
	return prefix + ":{" + queue + "}:job:" + id
}

// cancelRequestedField is the job hash's field that holds when a cancel of
// the running job was requested (Unix ms), as the README's schema names it.
const cancelRequestedField = "cancel_requested"

// cancelRequested says when a cancel of j was requested while it ran, the
// zero time when none was.
func cancelRequested(ctx context.Context, rdb redis.UniversalClient, prefix string, j *rqgo.Job) (time.Time, error) {
	v, err := rdb.HGet(ctx, jobKey(prefix, j.Queue, j.ID), cancelRequestedField).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return time.Time{}, nil
	case err != nil:
		return time.Time{}, fmt.Errorf("read whether a cancel of job %s was requested: %w", j.ID, err)
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms <= 0 {
		return time.Time{}, fmt.Errorf("job %s: field %s is %q, want a time in Unix ms", j.ID, cancelRequestedField, v)
	}
	return time.UnixMilli(ms), nil
}

// untilName is the name of u in job's output and enqueue --unique-until.
func untilName(u rqgo.UniqueUntil) string {
	if u == rqgo.UntilStarted {
		return "started"
	}
	return "ended"
}

// holdsKey reports whether j holds its unique key now: false for a job
// without one.
func holdsKey(ctx context.Context, rdb redis.UniversalClient, prefix string, j *rqgo.Job) (bool, error) {
	if j.UniqueKey == "" {
		return false, nil
	}
	id, err := rqgo.NewQueue(j.Queue, rdb, rqgo.WithPrefix(prefix)).UniqueHolder(ctx, j.UniqueKey)
	return err == nil && id == j.ID, err
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

func writeJob(w io.Writer, j *rqgo.Job, l links, x jobExtra) {
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
	if !x.cancelRequested.IsZero() {
		v := tm(x.cancelRequested)
		if j.Status == rqgo.StatusStarted {
			v += " (its worker was told; the job ends canceled once its handler returns)"
		}
		row("cancel_requested", v)
	}
	if j.Timeout > 0 {
		row("timeout", j.Timeout.String())
	}
	if j.StartWithin > 0 {
		row("start_within", fmt.Sprintf("%s (by %s)", j.StartWithin, tm(j.CreatedAt.Add(j.StartWithin))))
	}
	if j.UniqueKey != "" {
		row("unique_key", j.UniqueKey)
		row("unique_until", untilName(j.UniqueUntil))
		if j.UniqueFor > 0 {
			row("unique_for", j.UniqueFor.String())
		}
		row("holds_unique_key", fmt.Sprint(x.holds))
	}
	if j.LimitKey != "" {
		row("limit_key", j.LimitKey)
		if x.parked.IsZero() {
			row("parked", "false")
		} else {
			row("parked", "true (since "+tm(x.parked)+")")
		}
	}
	if j.Worker != "" {
		row("worker", j.Worker)
	}
	if len(j.Progress) > 0 {
		row("progress", oneLineJSON(j.Progress))
	}
	named := func(k string, names []string, value func(string) string) {
		for i, name := range names {
			if i > 0 {
				k = ""
			}
			fmt.Fprintf(tw, "%s\t%s: %s\n", k, name, value(name))
		}
	}
	named("meta:", slices.Sorted(maps.Keys(j.Meta)), func(name string) string { return oneLineJSON(j.Meta[name]) })
	named("headers:", slices.Sorted(maps.Keys(j.Headers)), func(name string) string { return oneLineText(j.Headers[name]) })
	if len(j.Result) > 0 {
		row("result", string(j.Result))
	}
	refs := func(k string, rs []refOut) {
		for i, r := range rs {
			if i > 0 {
				k = ""
			}
			st := "gone"
			if r.Status != nil {
				st = string(*r.Status)
			}
			fmt.Fprintf(tw, "%s\t%s:%s (%s)\n", k, r.Queue, r.ID, st)
		}
	}
	refs("parents:", l.parents)
	if len(l.parents) > 0 || j.AllowFailure {
		row("allow_failure", fmt.Sprint(j.AllowFailure))
	}
	refs("dependents:", l.dependents)
	tw.Flush()
	if j.Error != "" {
		// Last, unaligned: it may span lines (a stderr tail, a stack).
		fmt.Fprintf(w, "error:\n  %s\n", strings.ReplaceAll(strings.TrimRight(j.Error, "\n"), "\n", "\n  "))
	}
}

// oneLineJSON is a stored JSON value compacted onto one line; what is not
// JSON (a hash written by another tool) is quoted.
func oneLineJSON(r json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, r) != nil {
		return strconv.Quote(string(r))
	}
	return b.String()
}

// oneLineText is s as it is, or quoted when it holds a control character
// (a newline would break the table) or is empty.
func oneLineText(s string) string {
	if s == "" || strings.ContainsFunc(s, unicode.IsControl) {
		return strconv.Quote(s)
	}
	return s
}

// refOut is a parent or dependent of a job, with its status now; Status
// is nil (null in JSON) for a job that no longer exists.
type refOut struct {
	Queue  string       `json:"queue"`
	ID     string       `json:"id"`
	Status *rqgo.Status `json:"status"`
}

// links are the parents and dependents of a job, never nil (empty arrays
// in JSON).
type links struct {
	parents, dependents []refOut
}

// readLinks reads the status of j's parents, and j's dependents sorted by
// queue and id with their status, in one round trip each. On an error, the
// lists read so far are kept.
func readLinks(ctx context.Context, rdb redis.UniversalClient, prefix string, j *rqgo.Job) (links, error) {
	l := links{parents: []refOut{}, dependents: []refOut{}}
	p, err := refStatuses(ctx, j, j.Parents)
	if err != nil {
		return l, err
	}
	l.parents = p
	deps, err := rqgo.NewQueue(j.Queue, rdb, rqgo.WithPrefix(prefix)).Dependents(ctx, j.ID)
	if err != nil {
		return l, err
	}
	slices.SortFunc(deps, func(a, b rqgo.JobRef) int {
		return cmp.Or(strings.Compare(a.Queue, b.Queue), strings.Compare(a.ID, b.ID))
	})
	d, err := refStatuses(ctx, j, deps)
	if err != nil {
		return l, err
	}
	l.dependents = d
	return l, nil
}

// refStatuses reads the jobs refs name, in one round trip, through
// FetchParents of a copy of j (read from Redis) whose parents are refs.
func refStatuses(ctx context.Context, j *rqgo.Job, refs []rqgo.JobRef) ([]refOut, error) {
	out := make([]refOut, len(refs))
	if len(refs) == 0 {
		return out, nil
	}
	c := *j
	c.Parents = refs
	jobs, err := c.FetchParents(ctx)
	if err != nil {
		return nil, err
	}
	for i, r := range refs {
		out[i] = refOut{Queue: r.Queue, ID: r.ID}
		if i < len(jobs) && jobs[i] != nil {
			out[i].Status = &jobs[i].Status
		}
	}
	return out, nil
}
