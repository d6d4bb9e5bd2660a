// Command chaos checks rqgo's delivery guarantees under failure: it runs
// jobs spread over many queues through worker processes while it SIGKILLs
// workers, pauses one past its lease, stalls Redis past the workers' read
// timeout, restarts it, fills its memory and drops every client
// connection, then checks that no job was lost, none ended in two states,
// no late acknowledgement overwrote a newer attempt, and duplicates stay
// within what the faults explain. Part of the work is workflows on two of
// the queues, chains and fan-ins with DependsOn, some of whose jobs fail
// for good: it checks that no child ran before its parents had ended, none
// was released twice, every one ended as its parents' ends say (canceled
// with the right error, or run with AllowFailure), and none is left
// deferred. And 20 unique keys (rqgo.Unique, UntilEnded) are tried by
// enqueuers of their own throughout: it checks that no two runs of
// different jobs of a key held valid leases at once, that every job
// created ended, and that no key is left held by an ended or missing job.
// Two more queues, which every worker serves, have flow control: one a
// Concurrency of 4, the other a KeyConcurrency of 2 over 10 limit keys
// (rqgo.LimitKey), one of them hot. A checker samples both every 10 ms
// with a script that reads, at one instant of Redis's clock, the jobs
// whose leases have not expired: it checks that they never number more
// than the queue's Concurrency, nor, for any key, its KeyConcurrency (a
// handler whose lease has expired may still run until its worker notices,
// and is not counted), that both caps were reached, and that every job
// ended with none left parked. The keyed queue is paused for a second at
// 75% of the faults: no attempt of it may be started (dequeued, by Redis's
// clock) while it is.
//
// A queue of its own, chaos-cancel, which every worker serves, has jobs
// that work 300 ms to two leases and report progress (Job.SetProgress)
// every 50 ms. A canceller calls Cancel on six in ten of them once it sees
// them started (one in five of those ignores the cancel and returns its
// result anyway, the others return their context's cause; one in four is
// sent right behind a CLIENT KILL TYPE pubsub, so that its message reaches
// no worker and the heartbeat must make up for it), on those a SIGKILLed
// worker held at once, and on three in ten while they are scheduled or
// queued, tried again on every error but ErrNotCancelable (the job ended
// meanwhile: counted) and ErrJobNotFound. Each handler records what it
// returned. It checks (cancel_violations) that every job of the queue
// ended, canceled or finished, in that registry only, none left queued,
// scheduled or started; that a finished one holds the result of a run
// that returned one (a job that ignores cancels, or whose ack raced the
// cancel), and a canceled one no result; that none ended canceled unless a
// Cancel of it returned nil or may have landed; that no attempt was
// dequeued (Redis's clock) after the cancel was recorded (its
// cancel_requested, or ended_at for one canceled while waiting); that the
// run a cancel was for heard of it (its context ended with ErrCanceled)
// or returned within a second, unless a fault struck; and that the
// progress a job holds comes from its latest attempt that stored one. It
// reports the latency from Cancel's return to the handler hearing of it
// (cancel_p99), and how many heard only at a heartbeat (their worker
// logged no message for it).
//
// It starts its own redis-server (from $PATH) on a free local port, with
// append-only persistence fsynced on every write, and never touches any
// other Redis. It prints one line:
//
//	jobs=20000 finished=20000 failed=0 lost=0 duplicate_runs=12 kills=30 stalls=2 oom_seconds=3.5 queues=50 max_recovery=1.4s chains=200 fanins=200 deferred_left=0 order_violations=0 double_releases=0 unique_keys=20 unique_jobs=9000 unique_dups=15000 unique_overlaps=0 capped_jobs=5020 cap_violations=0 key_cap_violations=0 starts_while_paused=0 cancel_jobs=1000 cancels=800 canceled_running=450 finished_despite_cancel=90 cancel_p99=1.2ms cancel_violations=0
//
// then a second, "chaos: …", with the other faults and what they caused,
// a third with what the workflows did, a fourth with what the unique jobs
// did, a fifth with what the capped and keyed queues did (checker
// samples, the peaks reached, jobs left parked, the pause) and a sixth
// with what the cancels did (calls, how jobs ended and by what, latency,
// progress reports, each kind of violation), and exits 1 when a check
// fails. Usage:
//
//	go run ./chaos -jobs 20000 -duration 5m
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"time"
)

func main() {
	if os.Getenv(roleEnv) == "worker" {
		os.Exit(workerMain())
	}
	os.Exit(cliMain(os.Args[1:]))
}

func cliMain(args []string) int {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.IntVar(&cfg.Jobs, "jobs", cfg.Jobs, "number of jobs to run")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long the faults go on; jobs are enqueued in waves, one before each fault")
	fs.IntVar(&cfg.Chains, "chains", 0, "workflow chains on the first two queues (default: jobs/100, at least 4)")
	fs.IntVar(&cfg.FanIns, "fanins", 0, "workflow fan-ins on the first two queues (default: jobs/100, at least 4)")
	fs.IntVar(&cfg.UniqueKeys, "unique-keys", cfg.UniqueKeys, "unique keys, each tried by an enqueuer of its own throughout the faults (0: none)")
	fs.DurationVar(&cfg.UniqueEvery, "unique-every", 0, "how often, on average, each unique key's enqueuer tries (default: 250ms)")
	fs.IntVar(&cfg.CappedJobs, "capped-jobs", 0, "jobs on each of the capped and keyed queues (default: jobs/8, at least 40)")
	fs.IntVar(&cfg.CapConcurrency, "cap-concurrency", cfg.CapConcurrency, "Limits.Concurrency of the capped queue")
	fs.IntVar(&cfg.KeyConcurrency, "key-concurrency", cfg.KeyConcurrency, "Limits.KeyConcurrency of the keyed queue")
	fs.IntVar(&cfg.LimitKeys, "limit-keys", cfg.LimitKeys, "limit keys of the keyed queue's jobs")
	fs.DurationVar(&cfg.PauseFor, "pause-for", cfg.PauseFor, "how long the keyed queue is paused, at 75% of the faults")
	fs.IntVar(&cfg.CancelJobs, "cancel-jobs", 0, "jobs on the cancel queue, most of them canceled (default: jobs/20, at least 20)")
	fs.IntVar(&cfg.Queues, "queues", cfg.Queues, "queues the jobs are spread over")
	fs.IntVar(&cfg.Workers, "workers", cfg.Workers, "worker processes on a share of the queues each; one more runs on all of them")
	fs.IntVar(&cfg.Concurrency, "concurrency", cfg.Concurrency, "handlers per worker process")
	fs.DurationVar(&cfg.Lease, "lease", cfg.Lease, "the workers' lease")
	fs.DurationVar(&cfg.ReadTimeout, "read-timeout", 0, "the workers' go-redis ReadTimeout (default: go-redis's)")
	fs.DurationVar(&cfg.KillEvery, "kill-every", 0, "SIGKILL a random worker this often (default: duration/60, at least 2s)")
	fs.DurationVar(&cfg.Outage, "outage", cfg.Outage, "how long Redis stays down when it is restarted")
	fs.DurationVar(&cfg.Stall, "stall", 0, "how long DEBUG SLEEP stalls Redis (default: the workers' read timeout plus 1s)")
	fs.IntVar(&cfg.Stalls, "stalls", 0, "Redis stalls, 1 or 2 (default: 1 under a minute of faults, 2 otherwise)")
	fs.DurationVar(&cfg.FullFor, "full-for", cfg.FullFor, "how long Redis stays out of memory")
	fs.DurationVar(&cfg.Settle, "settle", cfg.Settle, "how long to wait, after the faults, for every job to end")
	fs.Int64Var(&cfg.Seed, "seed", 0, "random seed (default: from the clock)")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the Redis data and worker logs directory")
	fs.BoolVar(&cfg.Verbose, "v", false, "print each fault as it happens")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "chaos: unexpected arguments %q\n", fs.Args())
		return 2
	}
	cfg.Out = os.Stdout
	if cfg.Verbose {
		cfg.Log = os.Stderr
	}
	rep, err := run(cfg)
	if errors.Is(err, errNoRedisServer) {
		if os.Getenv("RQGO_REQUIRE_REDIS") == "1" {
			fmt.Fprintf(os.Stderr, "chaos: %v and RQGO_REQUIRE_REDIS=1\n", err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "chaos: skipped: %v\n", err)
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos: %v\n", err)
		return 1
	}
	fmt.Println(rep.Line())
	if len(rep.Problems) > 0 {
		for _, p := range rep.Problems {
			fmt.Fprintln(os.Stderr, "chaos: FAIL:", p)
		}
		return 1
	}
	return 0
}

func defaultConfig() config {
	return config{
		Jobs:        2000,
		Queues:      50,
		UniqueKeys:  20,
		Duration:    30 * time.Second,
		Workers:     4,
		Concurrency: 4,
		Lease:       time.Second,
		Outage:      500 * time.Millisecond,
		FullFor:     3500 * time.Millisecond,
		Settle:      time.Minute,

		CapConcurrency: 4,
		KeyConcurrency: 2,
		LimitKeys:      10,
		PauseFor:       time.Second,
	}
}
