package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os/signal"
	"syscall"
	"time"

	"github.com/rqgo/rqgo/dashboard"
)

var dashboardCommand = &command{
	name:     "dashboard",
	summary:  "serve the web dashboard and Prometheus metrics",
	synopsis: "[--listen ADDR] [--read-only]",
	help: `
Serve the web dashboard on ADDR until SIGINT or SIGTERM: the queues with
their counts and latency, the live workers, each queue's jobs by state, each
job's fields, buttons to requeue failed jobs and cancel queued ones, and
Prometheus metrics on /metrics. It prints the address it listens on.

The dashboard has no authentication of its own. It listens on 127.0.0.1 by
default; to serve it further, put it behind a proxy that authenticates, or
give --read-only, which leaves out the buttons and refuses their requests.

Examples:
  %[1]s dashboard
  %[1]s dashboard --listen :8080 --read-only
`,
	setup: dashboardSetup,
}

// dashboardShutdown bounds how long the dashboard waits for requests in
// progress when it is stopped.
const dashboardShutdown = 5 * time.Second

func dashboardSetup(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
	listen := fs.String("listen", "127.0.0.1:8080", "`ADDR` to listen on, host:port")
	readOnly := fs.Bool("read-only", false, "leave out the requeue and cancel buttons, and refuse their requests")
	return func(ctx context.Context, args []string) error {
		if len(args) > 0 {
			return usagef("unexpected arguments %q", args)
		}
		if _, _, err := net.SplitHostPort(*listen); err != nil {
			return usagef("--listen %q: want host:port, like 127.0.0.1:8080 or :8080", *listen)
		}
		rdb, err := e.connect(ctx)
		if err != nil {
			return err
		}
		l, err := net.Listen("tcp", *listen)
		if err != nil {
			return fmt.Errorf("dashboard: %v", err)
		}
		srv := &http.Server{
			Handler:           dashboard.New(rdb, dashboard.Options{Prefix: e.prefix, ReadOnly: *readOnly, Logger: e.logger}),
			ReadHeaderTimeout: 10 * time.Second,
		}
		mode := ""
		if *readOnly {
			mode = ", read-only"
		}
		fmt.Fprintf(e.stdout, "rqgo dashboard on http://%s/ (prefix %s%s)\n", l.Addr(), e.prefix, mode)

		ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		served := make(chan error, 1)
		go func() { served <- srv.Serve(l) }()
		select {
		case err := <-served:
			return fmt.Errorf("dashboard: %v", err)
		case <-ctx.Done():
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dashboardShutdown)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("dashboard: %v", err)
		}
		return nil
	}
}
