package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo"
)

var scheduleCommand = &command{
	name:     "schedule",
	summary:  "list the periodic jobs: spec, queue, function, next run, last run and job",
	synopsis: "[--json]",
	help: `
List the periodic jobs that schedulers (worker --with-scheduler) have
recorded in Redis, with their cron spec and time zone, queue, function, next
run, and the last tick enqueued with its job id. Entries no scheduler has run
for 30 days are gone. --json prints [{"name", "queue", "func", "spec",
"timezone", "next_run", "last_tick", "last_run", "last_job_id"}, ...], times
in RFC 3339 UTC with milliseconds (null when there is none).

Examples:
  %[1]s schedule
  %[1]s schedule --json | jq -r '.[].last_job_id'
`,
	setup: scheduleSetup,
}

type scheduleOut struct {
	Name      string  `json:"name"`
	Queue     string  `json:"queue"`
	Func      string  `json:"func"`
	Spec      string  `json:"spec"`
	Timezone  string  `json:"timezone"`
	NextRun   *string `json:"next_run"`
	LastTick  *string `json:"last_tick"`
	LastRun   *string `json:"last_run"`
	LastJobID string  `json:"last_job_id"`
}

func scheduleSetup(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
	asJSON := fs.Bool("json", false, "print JSON")
	return func(ctx context.Context, args []string) error {
		if len(args) > 0 {
			return usagef("unexpected argument %q", args[0])
		}
		rdb, err := e.connect(ctx)
		if err != nil {
			return err
		}
		out, err := schedules(ctx, rdb, e.prefix)
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(e.stdout, out)
		}
		if len(out) == 0 {
			fmt.Fprintln(e.stdout, "no periodic jobs")
			return nil
		}
		writeSchedules(e.stdout, out)
		return nil
	}
}

func schedules(ctx context.Context, rdb redis.UniversalClient, prefix string) ([]scheduleOut, error) {
	infos, err := rqgo.Schedules(ctx, rdb, prefix)
	if err != nil {
		return nil, err
	}
	out := make([]scheduleOut, 0, len(infos))
	for _, i := range infos {
		out = append(out, scheduleOut{Name: i.Name, Queue: i.Queue, Func: i.Func, Spec: i.Spec, Timezone: i.Timezone,
			NextRun: fmtTime(i.NextRun), LastTick: fmtTime(i.LastTick), LastRun: fmtTime(i.LastRun), LastJobID: i.LastJobID})
	}
	return out, nil
}

func writeSchedules(w io.Writer, out []scheduleOut) {
	str := func(p *string) string {
		if p == nil {
			return "-"
		}
		return *p
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCHEDULE\tQUEUE\tFUNC\tSPEC\tTZ\tNEXT RUN\tLAST RUN\tLAST JOB")
	for _, s := range out {
		tz, job := s.Timezone, s.LastJobID
		if tz == "" {
			tz = "-"
		}
		if job == "" {
			job = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Queue, s.Func, s.Spec, tz, str(s.NextRun), str(s.LastRun), job)
	}
	tw.Flush()
}
