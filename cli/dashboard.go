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
their counts, latency, limits and whether they are paused, the live workers,
each queue's jobs by state (and its parked jobs; running jobs with their
progress), each job's fields (progress, meta, headers and when a cancel was
requested included), buttons to requeue failed jobs, cancel queued or
running ones and pause or resume a queue, and Prometheus metrics on
/metrics. It prints the address it listens on.

The dashboard has no authentication of its own. It listens on 127.0.0.1 by
default; to serve it further, put it behind a proxy that authenticates, or
give --read-only, which leaves out the buttons and refuses their requests.

Examples:
  %[1]s dashboard
  %[1]s dashboard --listen :8080 --read-only
`,
	setup: dashboardSetup,
}

// httpShutdown bounds how long an HTTP server of the command waits for
// requests in progress when it is stopped.
const httpShutdown = 5 * time.Second

func dashboardSetup(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
	listen := fs.String("listen", "127.0.0.1:8080", "`ADDR` to listen on, host:port")
	readOnly := fs.Bool("read-only", false, "leave out the requeue, cancel, pause and resume buttons, and refuse their requests")
	return func(ctx context.Context, args []string) error {
		if len(args) > 0 {
			return usagef("unexpected arguments %q", args)
		}
		if err := checkAddr("listen", *listen); err != nil {
			return err
		}
		rdb, err := e.connect(ctx)
		if err != nil {
			return err
		}
		h := dashboard.New(rdb, dashboard.Options{Prefix: e.prefix, ReadOnly: *readOnly, Logger: e.logger})
		srv, err := serveHTTP("dashboard", *listen, h)
		if err != nil {
			return err
		}
		mode := ""
		if *readOnly {
			mode = ", read-only"
		}
		fmt.Fprintf(e.stdout, "rqgo dashboard on http://%s/ (prefix %s%s)\n", srv.addr, e.prefix, mode)

		ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		select {
		case err := <-srv.failed:
			return err
		case <-ctx.Done():
		}
		return srv.stop()
	}
}

// checkAddr checks that the value of --name is host:port.
func checkAddr(name, addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return usagef("--%s %q: want host:port, like 127.0.0.1:8080 or :8080", name, addr)
	}
	return nil
}

// httpServer is an HTTP server of the command, serving in the background.
type httpServer struct {
	what   string
	addr   net.Addr
	srv    *http.Server
	failed chan error // receives the error if serving stops on its own; closed once serving stops
}

// serveHTTP listens on addr and serves h there until stop.
func serveHTTP(what, addr string, h http.Handler) (*httpServer, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", what, err)
	}
	s := &httpServer{what: what, addr: l.Addr(), failed: make(chan error, 1),
		srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}}
	go func() {
		defer close(s.failed)
		if err := s.srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			s.failed <- fmt.Errorf("%s: %v", what, err)
		}
	}()
	return s, nil
}

// stop closes the listener and waits up to httpShutdown for requests in
// progress.
func (s *httpServer) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), httpShutdown)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %v", s.what, err)
	}
	return nil
}
