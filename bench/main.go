// Command bench measures rqgo against hibiken/asynq on the same Redis, in
// one run: enqueue rate, end-to-end no-op processing rate, enqueue → start
// latency and Redis memory per queued job, each the median of several runs,
// plus the Redis work each system does per processed job.
//
//	cd bench && go run .            # about 3 minutes
//	cd bench && go run . -quick     # a smoke run of about 20 seconds
//	cd bench && go run . -limits    # flow control (rqgo alone), 3 to 5 minutes
//
// It uses one Redis database of its own (-db, default 15), which must be
// empty at start, because asynq's keys cannot be given a prefix. It deletes
// every key it wrote there (rqgobench:* and asynq:*) and nothing else.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
)

type config struct {
	redis              string
	db                 int
	pool               int
	runs               int
	enqueueJobs        int
	producers          int
	jobs               int
	concurrency        []int
	preloaders         int
	latencyRate        float64
	latencyFor         time.Duration
	latencyConcurrency int
	timeout            time.Duration
	cpuprofile         string
	memprofile         string
	asynqTaskCheck     time.Duration
	quick              bool
	senders            bool
	limits             bool
	limitKeys          int
	figures            string
	rate               int
	rateFor            time.Duration
	rateJobs           int
	jobTime            time.Duration
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags() (config, error) {
	var cfg config
	url := os.Getenv("REDIS_URL")
	if url == "" {
		url = "redis://127.0.0.1:6379"
	}
	var conc string
	flag.StringVar(&cfg.redis, "redis", url, "Redis URL (default $REDIS_URL, else redis://127.0.0.1:6379)")
	flag.IntVar(&cfg.db, "db", 15, "Redis database to use; it must be empty, and is left empty")
	flag.IntVar(&cfg.pool, "pool", 100, "connection pool size of each system's client")
	flag.IntVar(&cfg.runs, "runs", 3, "runs per figure; the table shows the median")
	flag.IntVar(&cfg.enqueueJobs, "enqueue", 20000, "jobs per enqueue-rate run")
	flag.IntVar(&cfg.producers, "producers", 8, "concurrent producers for the second enqueue figure")
	flag.IntVar(&cfg.jobs, "jobs", 50000, "preloaded jobs per processing run")
	flag.StringVar(&conc, "concurrency", "10,50", "worker concurrencies of the processing runs, comma-separated")
	flag.IntVar(&cfg.preloaders, "preloaders", 16, "concurrent producers preloading the processing runs (not timed)")
	flag.Float64Var(&cfg.latencyRate, "latency-rate", 500, "jobs per second enqueued in the latency runs")
	flag.DurationVar(&cfg.latencyFor, "latency-for", 3*time.Second, "length of each latency run")
	flag.IntVar(&cfg.latencyConcurrency, "latency-concurrency", 10, "worker concurrency in the latency runs")
	flag.DurationVar(&cfg.timeout, "timeout", 2*time.Minute, "give up on a run after this long")
	flag.DurationVar(&cfg.asynqTaskCheck, "asynq-task-check", 0, "asynq's TaskCheckInterval, how long its idle workers sleep between polls (0: asynq's default, 1s)")
	flag.StringVar(&cfg.cpuprofile, "cpuprofile", "", "write CPU profiles of rqgo's first timed run of enqueue with -producers (FILE gets .enqueue before its extension) and of processing at each concurrency N (.cN); with -limits, of each processing figure's first run (.one, .fleet, .capped, .keyed)")
	flag.StringVar(&cfg.memprofile, "memprofile", "", "write allocation profiles around rqgo's first timed processing run at each concurrency N: FILE.cN and FILE.cN.base (compare with go tool pprof -base)")
	flag.BoolVar(&cfg.senders, "senders", false, "instead of the comparison, measure the enqueue rate with -producers for several ways of sending the same jobs: rqgo, asynq, and rqgo's enqueue.lua once per job through a plain client and through go-redis's auto-pipeliners")
	flag.BoolVar(&cfg.limits, "limits", false, "instead of the comparison, measure rqgo's flow control (Limits): Concurrency 20 over 4 workers and KeyConcurrency 2 over -limit-keys keys against an unlimited worker on -jobs jobs, and Rate -rate/s held for -rate-for")
	flag.StringVar(&cfg.figures, "figures", "", "with -limits: only these processing figures, comma-separated (one, fleet, capped, keyed), each run's line without the table or the Rate; empty: all, and the table")
	flag.IntVar(&cfg.limitKeys, "limit-keys", 1000, "with -limits: limit keys the KeyConcurrency run spreads its jobs over, round-robin")
	flag.IntVar(&cfg.rate, "rate", 1000, "with -limits: the queue's Rate, per second, in the rate runs")
	flag.DurationVar(&cfg.rateFor, "rate-for", 30*time.Second, "with -limits: how long the rate runs count starts (the window the Rate must bind over)")
	flag.DurationVar(&cfg.jobTime, "job-time", 0, "with -limits: how long each processing run's handler takes (it sleeps); 0: no-op jobs, where a slot's life is round trips only")
	flag.IntVar(&cfg.rateJobs, "rate-jobs", 0, "with -limits: jobs preloaded for each rate run (0: -rate × the longer of 4/3 × -rate-for and -rate-for + 2s, so the Rate binds throughout)")
	flag.BoolVar(&cfg.quick, "quick", false, "smoke run: smaller sizes and one run per figure, unless set by flags")
	flag.Parse()
	if flag.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if cfg.quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		quick := map[string]func(){
			"runs":        func() { cfg.runs = 1 },
			"enqueue":     func() { cfg.enqueueJobs = 3000 },
			"jobs":        func() { cfg.jobs = 5000 },
			"latency-for": func() { cfg.latencyFor = time.Second },
			"rate-for":    func() { cfg.rateFor = 3 * time.Second },
		}
		for name, f := range quick {
			if !set[name] {
				f()
			}
		}
	}
	for s := range strings.SplitSeq(conc, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || c <= 0 {
			return cfg, fmt.Errorf("-concurrency %q: want positive integers separated by commas", conc)
		}
		cfg.concurrency = append(cfg.concurrency, c)
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"runs", cfg.runs}, {"enqueue", cfg.enqueueJobs}, {"producers", cfg.producers}, {"jobs", cfg.jobs},
		{"preloaders", cfg.preloaders}, {"latency-concurrency", cfg.latencyConcurrency}, {"pool", cfg.pool},
		{"limit-keys", cfg.limitKeys}, {"rate", cfg.rate}} {
		if f.v <= 0 {
			return cfg, fmt.Errorf("-%s %d: want a positive number", f.name, f.v)
		}
	}
	if cfg.latencyRate <= 0 || cfg.latencyFor <= 0 || cfg.latencyRate*cfg.latencyFor.Seconds() < 1 {
		return cfg, fmt.Errorf("-latency-rate %g and -latency-for %s: want at least one job", cfg.latencyRate, cfg.latencyFor)
	}
	if cfg.timeout <= 0 {
		return cfg, fmt.Errorf("-timeout %s: want a positive duration", cfg.timeout)
	}
	if cfg.rateFor < time.Second {
		return cfg, fmt.Errorf("-rate-for %s: want at least 1s, the window the sliding count uses", cfg.rateFor)
	}
	if cfg.jobTime < 0 {
		return cfg, fmt.Errorf("-job-time %s: want 0 (no-op jobs) or more", cfg.jobTime)
	}
	if cfg.rateJobs < 0 {
		return cfg, fmt.Errorf("-rate-jobs %d: want a positive number, or 0 for the default", cfg.rateJobs)
	}
	if cfg.rateJobs == 0 {
		// The workers run half a second past the window: enough jobs for
		// that and more, so that the Rate binds throughout.
		cfg.rateJobs = int(float64(cfg.rate) * max(cfg.rateFor.Seconds()*4/3, cfg.rateFor.Seconds()+2))
	}
	if cfg.senders && cfg.limits {
		return cfg, fmt.Errorf("-senders and -limits: pick one")
	}
	return cfg, nil
}

func run() error {
	cfg, err := parseFlags()
	if err != nil {
		return err
	}
	ctx := context.Background()
	opt, err := dial(ctx, cfg.redis, cfg.db, cfg.pool)
	if err != nil {
		return err
	}
	asynqTaskCheck = cfg.asynqTaskCheck
	e := &env{opt: opt, cfg: cfg}
	rdb, _ := e.client()
	defer rdb.Close()
	// Leave nothing behind, even after a failed run.
	defer func() {
		for _, s := range systems {
			cleanup(ctx, rdb, s.keys)
		}
	}()
	fmt.Printf("machine: %d CPUs, %s; Redis %s at %s db %d; %s; asynq %s\n",
		runtime.NumCPU(), cpuModel(), redisVersion(ctx, rdb), opt.Addr, opt.DB, runtime.Version(), moduleVersion("github.com/hibiken/asynq"))
	fmt.Printf("rqgo: %s\n", rqgoRevision())
	fmt.Printf("command: %s\n", commandLine())
	if cfg.limits {
		return runLimits(ctx, e)
	}
	fmt.Printf("both with their default options; go-redis pool %d per system; asynq TaskCheckInterval %s\n", cfg.pool, orDefault(cfg.asynqTaskCheck))
	fmt.Printf("sizes: %d runs; enqueue %d jobs; processing %d preloaded jobs at concurrency %v; latency %g jobs/s for %s, concurrency %d\n\n",
		cfg.runs, cfg.enqueueJobs, cfg.jobs, cfg.concurrency, cfg.latencyRate, cfg.latencyFor, cfg.latencyConcurrency)
	began := time.Now()
	if cfg.senders {
		if err := compareSenders(ctx, e); err != nil {
			return err
		}
		fmt.Printf("\ntook %s\n", time.Since(began).Round(time.Second))
		return nil
	}

	t := &table{}
	// Figures per system, in the order of systems.
	type fig = [2][]float64
	progress := func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

	var (
		enqTrips, enqCPU fig
		enqByCmd         [2]map[string]cmdStat
	)
	for _, p := range []int{1, cfg.producers} {
		var f fig
		for r := range cfg.runs {
			for i, s := range systems {
				profile := ""
				if r == 0 && s.name == "rqgo" && p == cfg.producers {
					profile = profileName(cfg.cpuprofile, "enqueue")
				}
				res, err := e.enqueueRate(ctx, s, cfg.enqueueJobs, p, profile)
				if err != nil {
					return err
				}
				progress("enqueue, %d producer%s, run %d: %s %.0f jobs/s, %.2f round trips/job", p, plural(p), r+1, s.name, res.rate, res.trips)
				f[i] = append(f[i], res.rate)
				enqTrips[i] = append(enqTrips[i], res.trips)
				enqCPU[i] = append(enqCPU[i], res.redisUsec)
				if p == cfg.producers && r == cfg.runs-1 {
					enqByCmd[i] = res.byCmd
				}
			}
		}
		t.add(fmt.Sprintf("enqueue, %d producer%s (jobs/s)", p, plural(p)), "%.0f", median(f[0]), median(f[1]), higher, targetFor(p == cfg.producers && p > 1, 2))
	}

	var mem fig
	type procFigs struct {
		rate, trips, cmds, calls, usec, allocs, bytes fig
		byCmd                                         [2]map[string]cmdStat
	}
	procs := make([]procFigs, len(cfg.concurrency))
	for ci, c := range cfg.concurrency {
		pf := &procs[ci]
		for r := range cfg.runs {
			for i, s := range systems {
				profile, memprofile := "", ""
				if r == 0 && s.name == "rqgo" {
					profile = profileName(cfg.cpuprofile, fmt.Sprintf("c%d", c))
					memprofile = profileName(cfg.memprofile, fmt.Sprintf("c%d", c))
				}
				res, err := e.process(ctx, s, cfg.jobs, c, profile, memprofile)
				if err != nil {
					return err
				}
				progress("processing, concurrency %d, run %d: %s %.0f jobs/s, %.2f round trips/job, %.1f Redis commands/job",
					c, r+1, s.name, res.rate, res.trips, res.redisCalls)
				mem[i] = append(mem[i], res.memPerJob)
				pf.rate[i] = append(pf.rate[i], res.rate)
				pf.trips[i] = append(pf.trips[i], res.trips)
				pf.cmds[i] = append(pf.cmds[i], res.cmds)
				pf.calls[i] = append(pf.calls[i], res.redisCalls)
				pf.usec[i] = append(pf.usec[i], res.redisUsec)
				pf.allocs[i] = append(pf.allocs[i], res.allocs)
				pf.bytes[i] = append(pf.bytes[i], res.allocBytes)
				if r == cfg.runs-1 {
					pf.byCmd[i] = res.byCmd
				}
			}
		}
		t.add(fmt.Sprintf("processing, concurrency %d (jobs/s)", c), "%.0f", median(pf.rate[0]), median(pf.rate[1]), higher, "≥ 3×")
	}

	var p50, p99 fig
	for r := range cfg.runs {
		for i, s := range systems {
			a, b, err := e.latency(ctx, s)
			if err != nil {
				return err
			}
			progress("latency, run %d: %s p50 %s, p99 %s", r+1, s.name, a, b)
			p50[i] = append(p50[i], ms(a))
			p99[i] = append(p99[i], ms(b))
		}
	}
	lat := fmt.Sprintf("%g jobs/s", cfg.latencyRate)
	t.add("latency enqueue→start p50 (ms), "+lat, "%.3f", median(p50[0]), median(p50[1]), lower, "< 1 ms")
	t.add("latency enqueue→start p99 (ms), "+lat, "%.3f", median(p99[0]), median(p99[1]), lower, "")
	t.add("Redis memory per queued job (bytes)", "%.0f", median(mem[0]), median(mem[1]), lower, "≤ 1×")
	t.add("round trips per enqueued job", "%.3f", median(enqTrips[0]), median(enqTrips[1]), lower, "")
	t.add("Redis CPU per enqueued job (µs, INFO cpu)", "%.1f", median(enqCPU[0]), median(enqCPU[1]), lower, "")
	for ci, c := range cfg.concurrency {
		pf := procs[ci]
		t.add(fmt.Sprintf("round trips per processed job, c=%d", c), "%.3f", median(pf.trips[0]), median(pf.trips[1]), lower, "")
		t.add(fmt.Sprintf("commands sent per processed job, c=%d", c), "%.3f", median(pf.cmds[0]), median(pf.cmds[1]), lower, "")
		t.add(fmt.Sprintf("Redis calls per processed job (commandstats), c=%d", c), "%.2f", median(pf.calls[0]), median(pf.calls[1]), lower, "")
		t.add(fmt.Sprintf("Redis CPU per processed job (µs, INFO cpu), c=%d", c), "%.1f", median(pf.usec[0]), median(pf.usec[1]), lower, "")
		t.add(fmt.Sprintf("Go allocations per processed job, c=%d", c), "%.1f", median(pf.allocs[0]), median(pf.allocs[1]), lower, "")
		t.add(fmt.Sprintf("Go bytes allocated per processed job, c=%d", c), "%.0f", median(pf.bytes[0]), median(pf.bytes[1]), lower, "")
	}
	fmt.Println(t)

	fmt.Printf("Redis calls per enqueued job by command, %d producers, last run (commandstats; calls made inside scripts count too, and a script's µs include theirs):\n\n", cfg.producers)
	fmt.Println(cmdTable(enqByCmd, cfg.enqueueJobs))
	for ci, c := range cfg.concurrency {
		fmt.Printf("Redis calls per processed job by command, concurrency %d, last run (commandstats; calls made inside scripts count too, and a script's µs include theirs):\n\n", c)
		fmt.Println(cmdTable(procs[ci].byCmd, cfg.jobs))
	}
	fmt.Printf("took %s\n", time.Since(began).Round(time.Second))
	return nil
}

func orDefault(d time.Duration) string {
	if d <= 0 {
		return "default (1s)"
	}
	return d.String()
}

// profileName is the CPU profile file for one part of the run: base with
// .part before its extension, or "" when no profile was asked for.
func profileName(base, part string) string {
	if base == "" {
		return ""
	}
	ext := filepath.Ext(base)
	return strings.TrimSuffix(base, ext) + "." + part + ext
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func targetFor(ok bool, x int) string {
	if !ok {
		return ""
	}
	return fmt.Sprintf("≥ %d×", x)
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func moduleVersion(path string) string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == path {
				return m.Version
			}
		}
	}
	return "unknown"
}

// rqgoRevision names the library code measured: the commit of the
// repository this module sits in, and whether its files had uncommitted
// changes.
func rqgoRevision() string {
	out, err := exec.Command("git", "-C", "..", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown revision (not a git checkout)"
	}
	rev := "commit " + strings.TrimSpace(string(out))
	st, err := exec.Command("git", "-C", "..", "status", "--porcelain", "--", ":(glob)*.go", ":(glob)scripts/*").Output()
	if err == nil && len(strings.TrimSpace(string(st))) > 0 {
		rev += " with uncommitted changes to the library"
	}
	return rev
}

// commandLine is how this run was started, for the report.
func commandLine() string {
	args := os.Args[1:]
	if len(args) == 0 {
		return "go run ."
	}
	quoted := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " \t'\"$") {
			a = strconv.Quote(a)
		}
		quoted[i] = a
	}
	return "go run . " + strings.Join(quoted, " ")
}
