package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo"
)

var infoCommand = &command{
	name:     "info",
	summary:  "show how many jobs each queue holds per state, and the live workers",
	synopsis: "[--json]",
	help: `
Show every known queue with its number of queued, started, scheduled,
finished, failed, canceled and deferred jobs (deferred: waiting for the jobs
they depend on, see enqueue --depends-on), its parked jobs (queued, but held
back over their limit key's limits: see enqueue --limit-key; QUEUED does not
count them), whether it is paused (see pause) and its limits (see limits),
and the live workers. --json prints {"queues": {NAME: {"queued": N,
"started": N, "scheduled": N, "finished": N, "failed": N, "canceled": N,
"deferred": N, "parked": N, "paused": BOOL, "limits": {"concurrency",
"rate", "per_ms", "key_concurrency", "key_rate", "key_per_ms"}}, ...},
"workers": [{"id", "host", "pid", "queues", "concurrency", "running",
"started_at"}, ...], "schedules": [...]} (the periodic jobs, as "schedule
--json" prints them), each limit a number or null when not set, times in
RFC 3339 UTC with milliseconds. On a Redis Cluster each queue also shows
the master that holds it ("shard": "HOST:PORT").

Examples:
  %[1]s info
  %[1]s info --json | jq '.queues.default.failed'
`,
	setup: infoSetup,
}

type countsOut struct {
	Queued    int64 `json:"queued"`
	Started   int64 `json:"started"`
	Scheduled int64 `json:"scheduled"`
	Finished  int64 `json:"finished"`
	Failed    int64 `json:"failed"`
	Canceled  int64 `json:"canceled"`
	Deferred  int64 `json:"deferred"`
	Parked    int64 `json:"parked"`
	// Paused and Limits are the queue's flow control (pause, limits).
	Paused bool      `json:"paused"`
	Limits limitsOut `json:"limits"`
	// Shard is the address of the Redis Cluster master that holds the
	// queue; empty (and left out of JSON) on a single Redis or Sentinel.
	Shard string `json:"shard,omitempty"`

	limits rqgo.Limits
}

type workerOut struct {
	ID          string   `json:"id"`
	Host        string   `json:"host"`
	PID         int      `json:"pid"`
	Queues      []string `json:"queues"`
	Concurrency int      `json:"concurrency"`
	Running     int64    `json:"running"`
	StartedAt   *string  `json:"started_at"`
}

type infoOut struct {
	Queues    map[string]countsOut `json:"queues"`
	Workers   []workerOut          `json:"workers"`
	Schedules []scheduleOut        `json:"schedules"`
}

func infoSetup(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
	asJSON := fs.Bool("json", false, "print JSON")
	return func(ctx context.Context, args []string) error {
		if len(args) > 0 {
			return usagef("unexpected argument %q", args[0])
		}
		rdb, err := e.connect(ctx)
		if err != nil {
			return err
		}
		names, err := rqgo.Queues(ctx, rdb, e.prefix)
		if err != nil {
			return err
		}
		slices.Sort(names)
		out := infoOut{Queues: map[string]countsOut{}, Workers: []workerOut{}}
		for _, name := range names {
			q := rqgo.NewQueue(name, rdb, rqgo.WithPrefix(e.prefix))
			c, err := q.Counts(ctx)
			if err != nil {
				return err
			}
			f, err := readFlowState(ctx, q)
			if err != nil {
				return err
			}
			shard, err := shardOf(ctx, rdb, name)
			if err != nil {
				return err
			}
			out.Queues[name] = countsOut{Queued: c.Queued, Started: c.Started, Scheduled: c.Scheduled,
				Finished: c.Finished, Failed: c.Failed, Canceled: c.Canceled, Deferred: c.Deferred, Parked: c.Parked,
				Paused: f.paused, Limits: limitsJSON(f.limits), Shard: shard, limits: f.limits}
		}
		workers, err := rqgo.Workers(ctx, rdb, e.prefix)
		if err != nil {
			return err
		}
		slices.SortFunc(workers, func(a, b rqgo.WorkerInfo) int { return strings.Compare(a.ID, b.ID) })
		for _, w := range workers {
			out.Workers = append(out.Workers, workerOut{ID: w.ID, Host: w.Host, PID: w.PID, Queues: w.Queues,
				Concurrency: w.Concurrency, Running: w.Running, StartedAt: fmtTime(w.StartedAt)})
		}
		if out.Schedules, err = schedules(ctx, rdb, e.prefix); err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(e.stdout, out)
		}
		writeInfo(e.stdout, names, out)
		if len(out.Schedules) > 0 {
			fmt.Fprintln(e.stdout)
			writeSchedules(e.stdout, out.Schedules)
		}
		return nil
	}
}

// shardOf names the Cluster master holding queue name: every key of a
// queue carries the hash tag {name}, so the tag alone gives the slot.
func shardOf(ctx context.Context, rdb redis.UniversalClient, name string) (string, error) {
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return "", nil
	}
	node, err := cc.MasterForKey(ctx, "{"+name+"}")
	if err != nil {
		return "", fmt.Errorf("find the shard of queue %s: %w", name, err)
	}
	return node.Options().Addr, nil
}

func writeInfo(w io.Writer, names []string, out infoOut) {
	sharded := false
	for _, c := range out.Queues {
		sharded = sharded || c.Shard != ""
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := "QUEUE\tQUEUED\tSTARTED\tSCHEDULED\tFINISHED\tFAILED\tCANCELED\tDEFERRED"
	if sharded {
		head += "\tSHARD"
	}
	// The flow control columns come last, after the columns older versions
	// print, so that scripts reading those by position read the same; the
	// limits, which have spaces, are the last of all.
	fmt.Fprintln(tw, head+"\tPARKED\tPAUSED\tLIMITS")
	for _, name := range names {
		c := out.Queues[name]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d", name, c.Queued, c.Started, c.Scheduled, c.Finished, c.Failed, c.Canceled, c.Deferred)
		if sharded {
			fmt.Fprintf(tw, "\t%s", c.Shard)
		}
		paused := "no"
		if c.Paused {
			paused = "yes"
		}
		fmt.Fprintf(tw, "\t%d\t%s\t%s\n", c.Parked, paused, c.limits)
	}
	tw.Flush()
	if len(names) == 0 {
		fmt.Fprintln(w, "(no queues)")
	}
	fmt.Fprintln(w)
	if len(out.Workers) == 0 {
		fmt.Fprintln(w, "no live workers")
		return
	}
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKER\tHOST\tPID\tQUEUES\tRUNNING\tSTARTED")
	for _, wk := range out.Workers {
		started := "-"
		if wk.StartedAt != nil {
			started = *wk.StartedAt
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d/%d\t%s\n", wk.ID, wk.Host, wk.PID, strings.Join(wk.Queues, ","),
			wk.Running, wk.Concurrency, started)
	}
	tw.Flush()
}
