package main

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary serve as the harness's worker processes.
func TestMain(m *testing.M) {
	if os.Getenv(roleEnv) == "worker" {
		os.Exit(workerMain())
	}
	os.Exit(m.Run())
}

// TestChaosShort is the short form of the chaos run: 2,000 jobs over 32
// queues through five worker processes (one on all 32 queues) while
// workers are killed and paused, Redis stalls past the workers' read
// timeout, restarts and runs out of memory, and connections drop. Nothing
// may be lost and duplicates stay within what the faults explain. With
// them run 20 chains and 20 fan-ins over two queues: no child may start
// before its parents end, be released twice, or be left deferred. And 20
// unique keys are tried throughout: no two jobs of a key may run at once
// with valid leases, and no key may be left held. And 250 jobs each run on
// a queue with a Concurrency of 4 and on one with a KeyConcurrency of 2
// over 10 limit keys: sampled every 10 ms, neither cap may be exceeded by
// the jobs whose leases have not expired, both must be reached, none may
// be left parked, and no attempt may start while the keyed queue is paused.
// And 100 jobs on a queue of their own are canceled while they run, while
// scheduled or queued, or not at all: each must end canceled or finished
// (finished only with a result its handler returned), in that registry,
// with no attempt started after its cancel was recorded, and the handler
// it was for must hear of it within a second (some at a heartbeat, their
// message lost to a dropped subscription).
func TestChaosShort(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos run takes about 27s; skipped with -short")
	}
	cfg := defaultConfig()
	cfg.Queues = 32
	cfg.Duration = 20 * time.Second
	cfg.KillEvery = 2 * time.Second
	// A 2s read timeout lets a 3s stall outlast it.
	cfg.ReadTimeout = 2 * time.Second
	cfg.FullFor = 3 * time.Second
	cfg.Out = &logWriter{t}
	cfg.Log = &logWriter{t}
	rep, err := run(cfg)
	if errors.Is(err, errNoRedisServer) {
		if os.Getenv("RQGO_REQUIRE_REDIS") == "1" {
			t.Fatalf("%v and RQGO_REQUIRE_REDIS=1", err)
		}
		t.Skipf("%v; install Redis to run the chaos test", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Log(rep.Line())
	for _, p := range rep.Problems {
		t.Error(p)
	}
	if rep.Kills == 0 || rep.Stops != 1 || rep.Restarts != 1 || rep.Drops != 1 || rep.Stalls != 1 {
		t.Errorf("faults: %d kills, %d pauses, %d Redis restarts, %d connection drops, %d stalls; want kills and one of each other",
			rep.Kills, rep.Stops, rep.Restarts, rep.Drops, rep.Stalls)
	}
	// Enqueues accepted while Redis was full are a failed check of their
	// own; here it is enough that some were tried.
	if tried := rep.EnqueuesRefused + rep.EnqueuesAcceptedFull; rep.Full < cfg.FullFor || tried == 0 || rep.Probes == 0 {
		t.Errorf("Redis out of memory for %s with %d enqueues tried and %d jobs running across it; want %s, some and some",
			rep.Full, tried, rep.Probes, cfg.FullFor)
	}
	if rep.ChainsCompleted == 0 || rep.ChainsCanceled == 0 || rep.CallbacksAllowedFailure == 0 || rep.CallbacksCanceled == 0 || rep.CrossQueue == 0 {
		t.Errorf("workflows: %d chains completed, %d canceled, %d callbacks ran after a part failed, %d canceled, %d edges across queues; want some of each",
			rep.ChainsCompleted, rep.ChainsCanceled, rep.CallbacksAllowedFailure, rep.CallbacksCanceled, rep.CrossQueue)
	}
	if rep.UniqueKeys != cfg.UniqueKeys || rep.UniqueMinPerKey < 1 || rep.UniqueDups == 0 || rep.UniqueRetries == 0 {
		t.Errorf("unique jobs: %d keys, %d..%d jobs per key, %d duplicates, %d planned retries; want %d keys, at least 1 job each, some and some",
			rep.UniqueKeys, rep.UniqueMinPerKey, rep.UniqueMaxPerKey, rep.UniqueDups, rep.UniqueRetries, cfg.UniqueKeys)
	}
	if rep.CapJobs == 0 || rep.KeyJobs == 0 || rep.CapSamples < 500 || rep.PeakRunning != cfg.CapConcurrency ||
		rep.PeakKeyRunning != cfg.KeyConcurrency || rep.PeakParked == 0 || rep.PeakAhead == 0 || rep.CapRetries == 0 {
		t.Errorf("flow control: %d capped and %d keyed jobs, %d cap samples, peaks %d running (cap %d) and %d of a key (cap %d), %d parked, %d ahead, %d planned retries; want some jobs, 500 samples, the caps reached, some parked, ahead and retried",
			rep.CapJobs, rep.KeyJobs, rep.CapSamples, rep.PeakRunning, cfg.CapConcurrency, rep.PeakKeyRunning, cfg.KeyConcurrency, rep.PeakParked, rep.PeakAhead, rep.CapRetries)
	}
	if rep.Pauses != 1 || rep.PausedFor < cfg.PauseFor || rep.HeldBack == 0 {
		t.Errorf("pause: %d spells, %s paused, %d jobs held back at the Resume; want 1, at least %s, some",
			rep.Pauses, rep.PausedFor, rep.HeldBack, cfg.PauseFor)
	}
	if rep.CancelJobs == 0 || rep.CanceledRunning == 0 || rep.CanceledByHandler == 0 || rep.FinishedIgnoring == 0 ||
		rep.CancelHitWaiting == 0 || rep.CancelHeard == 0 || rep.CancelByHeartbeat == 0 || rep.ProgressWrites == 0 {
		t.Errorf("cancels: %d jobs, %d canceled while running (%d by their handler's error), %d finished ignoring the cancel, %d canceled while waiting, %d cancels heard by a handler (%d at a heartbeat), %d progress reports stored; want some of each",
			rep.CancelJobs, rep.CanceledRunning, rep.CanceledByHandler, rep.FinishedIgnoring, rep.CancelHitWaiting, rep.CancelHeard,
			rep.CancelByHeartbeat, rep.ProgressWrites)
	}
	if rep.CancelViolations != 0 {
		t.Errorf("cancels: %d violations, want 0", rep.CancelViolations)
	}
	if rep.Queues != cfg.Queues {
		t.Errorf("jobs on %d queues, want %d", rep.Queues, cfg.Queues)
	}
}

type logWriter struct{ t *testing.T }

func (w *logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
