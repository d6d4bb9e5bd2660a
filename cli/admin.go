package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/rqgo/rqgo"
)

var requeueCommand = &command{
	name:     "requeue",
	summary:  "put failed (or canceled) jobs back in line",
	synopsis: "--queue Q (--all | ID...)",
	help: `
Put jobs of queue Q back in line with their attempts reset: with --all,
every job that was failed when the command started (each once; a job that
fails again meanwhile stays failed), or the given failed or canceled jobs. It
prints how many it requeued; an ID that is not failed or canceled is left
alone and makes the exit status 1. A job enqueued with --unique takes its
unique key again; one whose key another job holds is left alone too, and
the message names it and the holder.

Examples:
  %[1]s requeue --queue default --all
  %[1]s requeue --queue high 3f2a9c0d1e4b5a6f7081 9e8d7c6b5a4f3e2d1c0b
`,
	setup: requeueSetup,
}

func requeueSetup(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
	queue := fs.String("queue", "", "`QUEUE` of the jobs (required)")
	all := fs.Bool("all", false, "requeue every failed job of the queue")
	return func(ctx context.Context, ids []string) error {
		switch {
		case *queue == "":
			return usagef("--queue is required")
		case *all && len(ids) > 0:
			return usagef("give --all or job IDs, not both")
		case !*all && len(ids) == 0:
			return usagef("give --all or the IDs of the jobs to requeue")
		}
		rdb, err := e.connect(ctx)
		if err != nil {
			return err
		}
		q := rqgo.NewQueue(*queue, rdb, rqgo.WithPrefix(e.prefix))
		if *all {
			n, err := q.RequeueFailed(ctx)
			if n > 0 || err == nil || errors.Is(err, rqgo.ErrDuplicate) {
				fmt.Fprintf(e.stdout, "requeued %d %s\n", n, plural(n, "job"))
			}
			return err
		}
		n, err := q.Requeue(ctx, ids...)
		held := 0
		if errors.Is(err, rqgo.ErrDuplicate) {
			// The error names each job left with "ID (held by HOLDER)"; an
			// id has no spaces.
			held = strings.Count(err.Error(), " (held by ")
		} else if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "requeued %d %s\n", n, plural(n, "job"))
		var msgs []string
		if err != nil {
			msgs = append(msgs, strings.TrimPrefix(err.Error(), "rqgo: "))
		}
		if left := len(ids) - n - held; left > 0 {
			msgs = append(msgs, fmt.Sprintf("%d of the %d jobs %s not failed or canceled in queue %s (or do not exist)", left, len(ids), plural(left, "was/were"), *queue))
		}
		if len(msgs) > 0 {
			return errors.New(strings.Join(msgs, "; "))
		}
		return nil
	}
}

var cancelCommand = &command{
	name:     "cancel",
	summary:  "cancel a queued, scheduled, deferred or running job",
	synopsis: "ID [--queue Q]",
	help: `
Cancel a queued, scheduled or deferred job so it never runs; it stays in the
queue's canceled registry (requeue brings it back). The jobs that depend on
it (enqueue --depends-on) are canceled in turn, unless they were enqueued
with --allow-failure. It prints "canceled ID".

A running (started) job is asked to stop: the cancel is recorded on the job
and its worker is told, which ends the handler's context (an --exec
command's whole process group is killed). It prints "cancel requested for
ID" while the job still runs; the job ends canceled once its handler
returns (finished, should the handler return a result anyway), and rqgo
job shows when the cancel was requested. A job that has ended (finished,
failed or canceled) cannot be canceled: exit status 1. Without --queue it
looks in every known queue.

Examples:
  %[1]s cancel 3f2a9c0d1e4b5a6f7081
  %[1]s cancel nightly-2026-11-25 --queue maintenance
`,
	setup: cancelSetup,
}

func cancelSetup(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
	queue := fs.String("queue", "", "`QUEUE` of the job (default: look in every known queue)")
	return func(ctx context.Context, args []string) error {
		id, err := oneID(args)
		if err != nil {
			return err
		}
		rdb, err := e.connect(ctx)
		if err != nil {
			return err
		}
		name := *queue
		if name == "" {
			j, err := findJob(ctx, rdb, e.prefix, "", id)
			if j == nil {
				return err
			}
			name = j.Queue
		}
		q := rqgo.NewQueue(name, rdb, rqgo.WithPrefix(e.prefix))
		err = q.Cancel(ctx, id)
		switch {
		case errors.Is(err, rqgo.ErrJobNotFound):
			return fmt.Errorf("job %s not found in queue %s", id, name)
		case errors.Is(err, rqgo.ErrNotCancelable):
			if j, _ := q.FetchJob(ctx, id); j != nil && j.Status != "" {
				return fmt.Errorf("job %s cannot be canceled: it has ended, %s (only a queued, scheduled, deferred or running job can be)", id, j.Status)
			}
			return err
		case err != nil:
			return err
		}
		// Cancel answers the same when it canceled the job and when it
		// asked a running one to stop: the job's status now tells which.
		// (A malformed job is read as far as it reads.)
		j, err := q.FetchJob(ctx, id)
		switch {
		case j != nil && j.Status == rqgo.StatusStarted:
			fmt.Fprintf(e.stdout, "cancel requested for %s: the running job's worker was told; it ends canceled once its handler returns\n", id)
		case j != nil && j.Status != rqgo.StatusCanceled && j.Status != "":
			// It was running, and ended another way meanwhile (its
			// handler returned a result anyway), or was requeued.
			fmt.Fprintf(e.stdout, "cancel requested for %s, which was running; it is %s now\n", id, j.Status)
		case j != nil || errors.Is(err, rqgo.ErrJobNotFound):
			// Canceled; not found, it was canceled and kept for no
			// time (a failure TTL of 0).
			fmt.Fprintf(e.stdout, "canceled %s\n", id)
		default:
			fmt.Fprintf(e.stdout, "cancel of %s recorded\n", id)
			return fmt.Errorf("read job %s after the cancel: %w", id, err)
		}
		return nil
	}
}

var emptyCommand = &command{
	name:     "empty",
	summary:  "delete every queued job of a queue",
	synopsis: "QUEUE",
	help: `
Delete every queued job of QUEUE and print how many it deleted. Scheduled,
running, finished, failed and canceled jobs stay.

Example:
  %[1]s empty default
`,
	setup: emptySetup,
}

func emptySetup(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
	return func(ctx context.Context, args []string) error {
		switch len(args) {
		case 0:
			return usagef("missing QUEUE")
		case 1:
		default:
			return usagef("unexpected argument %q: one queue at a time", args[1])
		}
		rdb, err := e.connect(ctx)
		if err != nil {
			return err
		}
		n, err := rqgo.NewQueue(args[0], rdb, rqgo.WithPrefix(e.prefix)).Empty(ctx)
		if n > 0 || err == nil {
			fmt.Fprintf(e.stdout, "deleted %d queued %s from %s\n", n, plural(n, "job"), args[0])
		}
		return err
	}
}

// plural picks the form of word for n: "job" gives "jobs", and "was/were"
// gives "was" or "were".
func plural(n int, word string) string {
	one, many, ok := strings.Cut(word, "/")
	if !ok {
		many = word + "s"
	}
	if n == 1 {
		return one
	}
	return many
}
