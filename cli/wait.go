package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/rqgo/rqgo"
)

var waitCommand = &command{
	name:     "wait",
	summary:  "wait until a job has ended and print its result",
	synopsis: "ID [--queue Q] [--timeout D]",
	help: `
Wait until the job has ended. When it finished, print its result (the JSON
value its handler returned, null when none) on stdout and exit 0; when it
failed or was canceled, print its status and last error on stderr as one line
and exit 1 (a job canceled because a job it depends on failed is canceled
too). A job that has already ended answers at once. Without --queue it looks
in every known queue.

The wait is pushed by Redis, not polled: it answers within about a
millisecond of the job's end. --timeout gives up after D with exit status 1;
the job itself goes on. An ID that does not exist, or no longer does (its
result TTL has passed), exits 1.

Examples:
  %[1]s wait 3f2a9c0d1e4b5a6f7081
  %[1]s wait 3f2a9c0d1e4b5a6f7081 --queue high --timeout 5m | jq -r .url
`,
	setup: waitSetup,
}

func waitSetup(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
	queue := fs.String("queue", "", "`QUEUE` of the job (default: look in every known queue)")
	timeout := fs.Duration("timeout", 0, "give up after this long, with exit status 1 (default no limit)")
	return func(ctx context.Context, args []string) error {
		id, err := oneID(args)
		if err != nil {
			return err
		}
		if *timeout < 0 {
			return usagef("--timeout %s is negative", *timeout)
		}
		rdb, err := e.connect(ctx)
		if err != nil {
			return err
		}
		j, err := findJob(ctx, rdb, e.prefix, *queue, id)
		if j == nil {
			return err
		}
		q := rqgo.NewQueue(j.Queue, rdb, rqgo.WithPrefix(e.prefix))
		return e.await(ctx, q, id, *timeout, "--timeout", errJobNotFound(id))
	}
}

// await waits for job id of q to end, for at most timeout (0: no limit),
// and reports how it ended: its result on stdout when it finished, else an
// error with its status and its own error. timeoutFlag names the flag that
// set timeout, for the message when it passes; gone is the error when the
// job does not exist.
func (e *env) await(ctx context.Context, q *rqgo.Queue, id string, timeout time.Duration, timeoutFlag string, gone error) error {
	wctx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	j, err := q.Wait(wctx, id)
	switch {
	case errors.Is(err, rqgo.ErrJobNotFound):
		return gone
	case err != nil && ctx.Err() == nil && errors.Is(wctx.Err(), context.DeadlineExceeded):
		status := "has not ended"
		if now, ferr := q.FetchJob(ctx, id); now != nil && ferr == nil {
			status = "is still " + string(now.Status)
		}
		return fmt.Errorf("job %s %s after %s (%s); it goes on: run '%s wait %s --queue %s' to wait again",
			id, status, timeout, timeoutFlag, e.prog, id, q.Name())
	case err != nil:
		return err
	}
	if j.Status == rqgo.StatusFinished {
		_, err := fmt.Fprintf(e.stdout, "%s\n", rawOrNull(j.Result))
		return err
	}
	msg := fmt.Sprintf("job %s %s", id, j.Status)
	if s := strings.TrimSpace(j.Error); s != "" {
		msg += ": " + s
	}
	return errors.New(msg)
}
