package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rqgo/rqgo"
	"github.com/rqgo/rqgo/dashboard"
)

var workerCommand = &command{
	name:     "worker",
	summary:  "run jobs from queues until stopped (or, with --burst, until they are empty)",
	synopsis: "[--queues Q1,Q2] [--concurrency N] [--prefetch N] [--burst] [--lease D] [--timeout D] [--grace D] [--exec NAME=COMMAND]... [--name NAME] [--with-scheduler --schedule FILE] [--metrics ADDR]",
	help: `
Run jobs from the listed queues, in strict priority order: a job of a later
queue starts only when every earlier queue has none ready. SIGINT or SIGTERM
starts a graceful shutdown: no new jobs are taken, running jobs get --grace to
finish, and jobs still running then are stopped (--exec commands are killed)
and put back in their queues at once.

--exec NAME=COMMAND (repeatable) runs jobs of function NAME as COMMAND under
/bin/sh -c, in a process group of its own:
  - stdin is the job's args JSON; the environment adds RQGO_JOB_ID,
    RQGO_FUNC, RQGO_ATTEMPT (1 on the first attempt) and RQGO_QUEUE;
  - exit status 0 finishes the job: stdout (one trailing newline removed)
    is its result, kept as JSON when it parses, else stored as a JSON string;
    stdout over 1 MiB fails the attempt;
  - a non-zero exit fails the attempt with the exit status and the last
    lines of stderr; the job is retried while it has retries left;
  - at the job's timeout, on a lost lease, or at the end of a shutdown's
    grace period the whole process group gets SIGKILL, children included;
    whatever COMMAND leaves running in its group when it exits is killed too,
    and so is the whole group when the worker dies, even by SIGKILL.
Commands come only from these flags, never from job data.

--with-scheduler --schedule FILE also runs a scheduler that enqueues the
periodic jobs listed in FILE, a JSON array such as
  [{"name": "nightly-cleanup", "cron": "0 3 * * *", "func": "cleanup",
    "args": {"days": 30}, "queue": "default", "timezone": "Europe/Berlin"}]
Any number of workers may run the same schedule: each tick becomes exactly
one job. A bad entry stops the worker at start with an error naming it.

--metrics ADDR serves Prometheus metrics of the jobs this worker runs at
http://ADDR/metrics: rqgo_job_attempts_total (by queue, func and outcome: ok,
error or panic), rqgo_job_duration_seconds, rqgo_job_attempts_running, and
Go's process metrics. The address it listens on is logged at start.

Examples:
  %[1]s worker --queues high,default --exec 'resize=./bin/resize'
  %[1]s worker --queues default --burst --concurrency 4 \
      --exec 'report=python3 report.py' --exec 'ping=echo pong'
`,
	setup: workerSetup,
}

func workerSetup(fs *flag.FlagSet, e *env) func(context.Context, []string) error {
	var (
		queues      = fs.String("queues", "default", "comma-separated `QUEUES` to take jobs from, highest priority first")
		concurrency = fs.Int("concurrency", rqgo.DefaultConcurrency, "`N` jobs at most run at once")
		prefetch    = fs.Int("prefetch", 0, "`N` jobs at most taken ahead of free slots, for handlers quicker than a round trip to Redis (0: as many as --concurrency; -1: none)")
		burst       = fs.Bool("burst", false, "exit 0 once the queues are empty and nothing runs")
		lease       = fs.Duration("lease", rqgo.DefaultLease, "how long a job stays assigned without a heartbeat; a dead worker's jobs run again about one lease later")
		timeout     = fs.Duration("timeout", rqgo.DefaultTimeout, "time limit of one attempt, for jobs enqueued without --timeout")
		grace       = fs.Duration("grace", rqgo.DefaultShutdownTimeout, "how long a shutdown waits for running jobs before stopping them and requeueing them")
		name        = fs.String("name", "", "worker `NAME` shown in jobs and in info (default host.pid.random)")
		withSched   = fs.Bool("with-scheduler", false, "also enqueue the periodic jobs of --schedule (safe in every worker)")
		schedFile   = fs.String("schedule", "", "JSON schedule `FILE` of periodic jobs, for --with-scheduler")
		metricsAddr = fs.String("metrics", "", "serve Prometheus metrics of the jobs this worker runs at http://`ADDR`/metrics (host:port)")
		execs       []*execHandler
	)
	fs.Func("exec", "register function NAME as the shell command COMMAND, given as `NAME=COMMAND` (repeatable)", func(v string) error {
		h, err := parseExec(v)
		if err != nil {
			return err
		}
		execs = append(execs, h)
		return nil
	})
	return func(ctx context.Context, args []string) error {
		if len(args) > 0 {
			return usagef("unexpected argument %q", args[0])
		}
		var qs []string
		for q := range strings.SplitSeq(*queues, ",") {
			if q = strings.TrimSpace(q); q != "" {
				qs = append(qs, q)
			}
		}
		if len(qs) == 0 {
			return usagef("--queues lists no queue")
		}
		if *concurrency < 1 {
			return usagef("--concurrency %d: want at least 1", *concurrency)
		}
		if *prefetch < -1 {
			return usagef("--prefetch %d: want -1 (none), 0 (as many as --concurrency) or more", *prefetch)
		}
		for _, d := range []struct {
			flag string
			v    time.Duration
		}{{"lease", *lease}, {"timeout", *timeout}, {"grace", *grace}} {
			if d.v <= 0 {
				return usagef("--%s %s: want a positive duration", d.flag, d.v)
			}
		}
		if *metricsAddr != "" {
			if err := checkAddr("metrics", *metricsAddr); err != nil {
				return err
			}
		}
		if len(execs) == 0 && len(e.handlers) == 0 && len(e.setups) == 0 {
			return usagef("no functions to run: pass --exec NAME=COMMAND")
		}
		var entries []rqgo.ScheduleEntry
		switch {
		case *withSched && *schedFile == "":
			return usagef("--with-scheduler needs --schedule FILE")
		case !*withSched && *schedFile != "":
			return usagef("--schedule needs --with-scheduler")
		case *withSched:
			f, err := os.Open(*schedFile)
			if err != nil {
				return usagef("--schedule: %v", err)
			}
			entries, err = rqgo.ParseScheduleFile(f)
			f.Close()
			if err != nil {
				return usagef("--schedule %s: %v", *schedFile, err)
			}
			if len(entries) == 0 {
				return usagef("--schedule %s lists no entries", *schedFile)
			}
		}
		rdb, err := e.connect(ctx)
		if err != nil {
			return err
		}
		w := rqgo.NewWorker(rdb, rqgo.WorkerOptions{
			Queues:          qs,
			Concurrency:     *concurrency,
			Prefetch:        *prefetch,
			Lease:           *lease,
			ShutdownTimeout: *grace,
			Timeout:         *timeout,
			Burst:           *burst,
			Name:            *name,
			Prefix:          e.prefix,
			Logger:          e.logger,
		})
		for _, h := range e.handlers {
			w.Handle(h.name, h.h)
		}
		for _, fn := range e.setups {
			fn(w)
		}
		groups := &processGroups{}
		for _, h := range execs {
			h.groups = groups
			w.Handle(h.name, h)
		}
		if *metricsAddr != "" {
			m := dashboard.NewJobMetrics()
			reg := prometheus.NewRegistry()
			reg.MustRegister(m, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			w.Use(m.Middleware())
			mux := http.NewServeMux()
			mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
			srv, err := serveHTTP("worker metrics", *metricsAddr, mux)
			if err != nil {
				return err
			}
			e.logger.Info("serving the worker's metrics", "url", fmt.Sprintf("http://%s/metrics", srv.addr))
			go func() {
				for err := range srv.failed {
					e.logger.Error("worker metrics server stopped", "err", err)
				}
			}()
			defer srv.stop()
		}
		// A second signal is caught too, so it cannot kill the worker and
		// orphan running commands; the grace period bounds the shutdown.
		ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		defer groups.killAll()
		if len(entries) == 0 {
			return w.Run(ctx)
		}
		s := rqgo.NewScheduler(rdb, rqgo.SchedulerOptions{Prefix: e.prefix, Logger: e.logger})
		for _, en := range entries {
			if err := s.AddEntry(en); err != nil {
				return err
			}
		}
		sctx, stopScheduler := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- s.Run(sctx) }()
		err = w.Run(ctx)
		stopScheduler() // a --burst worker that is done stops its scheduler too
		return errors.Join(err, <-done)
	}
}
