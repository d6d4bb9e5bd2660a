package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// report is the outcome of a chaos run.
type report struct {
	Jobs, Finished, Failed, Lost  int
	Queues                        int
	Executions                    int // distinct (job, attempt, worker) runs recorded
	Duplicates                    int // executions beyond the first, over all jobs
	AllowedDuplicates             int // what the faults can explain
	Unexplained                   int // duplicates no fault was near
	Kills, Stops, Restarts, Drops int
	Stalls                        int
	Stalled, Full                 time.Duration // time Redis stalled, and was out of memory
	KillsHolding                  int           // kills of a worker holding jobs fetched ahead of its slots
	MaxRecovery                   time.Duration
	EnqueueErrors                 int
	EnqueuesRefused               int            // enqueues refused for lack of memory
	EnqueuesAcceptedFull          int            // enqueues accepted while Redis refused writes for lack of memory
	Probes, ProbesRepeated        int            // jobs running while Redis was full; those that ran again
	LateAcksRefused               int            // outcomes a worker could not record: its attempt was no longer the job's
	LeasesLost                    int            // handlers canceled because their lease was gone
	FailedErrors                  map[string]int // error text → failed jobs
	Settle                        time.Duration  // from the end of the faults until every job had ended

	// Workflows (see workflow.go).
	Chains, FanIns                  int
	FlowJobs, CrossQueue            int // jobs, and edges from a parent in one queue to a child in the other
	ChainsCompleted, ChainsCanceled int // chains whose last step finished; whose last step was canceled
	CallbacksRan, CallbacksCanceled int // fan-in callbacks that finished; that were canceled
	CallbacksAllowedFailure         int // callbacks that ran (AllowFailure) although a part failed
	FlowRetries                     int // runs again after a planned failure at the first attempt
	DeferredLeft, OutboxLeft        int // deferred jobs and owed deliveries left at the end
	OpenLinksLeft                   int // workflow jobs with open parents left at the end
	OrderViolations                 int // child runs that started before all their parents had ended
	DoubleReleases                  int // child runs repeated with no fault near them while the worker renewed its leases

	// Unique jobs (see unique.go).
	UniqueKeys, UniqueJobs           int
	UniqueTries, UniqueDups          int // enqueues tried; refused with ErrDuplicate
	UniqueMinPerKey, UniqueMaxPerKey int // jobs created per key
	UniqueFinished, UniqueFailed     int
	UniqueUnended                    int // created jobs that had not ended after the settle, or were gone
	UniqueRuns, UniqueNotTaken       int // runs; those whose outcome Redis did not take (or that never returned)
	UniqueRetries, UniqueRepeats     int // runs again after the planned failure; other repeats
	UniqueOverlaps                   int // pairs of runs of different jobs of a key that held valid leases at once
	UniqueEarly                      int // jobs created before their key's previous job had ended
	UniqueStuck                      int // keys held at the end by a job that has ended, is gone or is not the key's
	UniqueBadHolders                 int // duplicates that named a wrong holder

	// Flow control (see limits.go).
	CapJobs, KeyJobs                   int // jobs of the capped queue; of the keyed queue
	CapConcurrency, KeyConcurrency     int
	LimitKeys                          int
	CapSamples, CapSamplesSkipped      int // checker samples taken; failed (Redis down, stalled or the connection dropped)
	CapViolations, KeyCapViolations    int // samples over the capped queue's Concurrency; (sample, key) pairs over KeyConcurrency
	Unslotted                          int // running keyed jobs seen without their key's slot
	PeakRunning, PeakKeyRunning        int // most capped jobs, and most jobs of one key, with unexpired leases in a sample
	PeakParked                         int // most keyed jobs parked in a sample
	PeakAhead                          int // most capped jobs ahead of the Concurrency (leased, holding no slot) in a sample
	ParkedLeft                         int // jobs and keys still parked at the end
	CapFinished, CapFailed, CapUnended int
	CapRetries, CapRepeats             int // runs again after the planned failure; other repeats
	Pauses, HeldBack                   int // pause spells; jobs queued or parked at their Resume
	PausedFor                          time.Duration
	StartsWhilePaused                  int // attempts of the keyed queue dequeued while it was paused

	// Cancels (see cancel.go).
	CancelJobs                         int
	CancelTried, CancelCalls           int // jobs Cancel was called on; calls, retries included
	Cancels, CancelNotCancelable       int // jobs whose Cancel returned nil; ErrNotCancelable (the job had ended)
	CancelHitRunning, CancelHitWaiting int // jobs with cancel_requested (started when canceled); canceled without (queued or scheduled)
	Canceled, CancelFinished           int // jobs of the cancel queue that ended canceled; finished
	CanceledRunning                    int // canceled with cancel_requested
	CanceledByHandler                  int // ended canceled by their handler's error (fail.lua)
	CanceledReaped, CanceledReleased   int // by the reaper when the lease expired; by a release at shutdown
	FinishedIgnoring, FinishedRaced    int // finished with cancel_requested: handler ignores cancels; honours them but returned first
	CancelHeard                        int // cancels timed: first call returned nil on a started job, and a run heard it
	CancelP50, CancelP99, CancelMax    time.Duration
	CancelMsgP99, CancelBeatP99        time.Duration // of those heard by the message; at a heartbeat
	CancelSlow, CancelByHeartbeat      int           // heard over 1s after Cancel returned; heard with no message logged
	ProgressWrites, ProgressLeaseLost  int           // SetProgress calls stored; refused with ErrLeaseLost
	ProgressOOM                        int           // refused while Redis was out of memory
	ProgressErrors                     int           // other SetProgress errors (Redis down, stalled, …)
	CancelRepeats                      int           // runs beyond the first, explained by faults
	// Violations (each a failed check; see checkCancels).
	CancelStuck, CancelWrongRegistry int
	CancelBadEnd, CanceledUnasked    int
	RunsAfterCancel                  int
	CancelLate                       int // runs that heard of their cancel later than hearWithin, with no fault near
	ProgressViolations               int
	CancelUnresolved                 int
	CancelViolations                 int // their sum

	Problems []string
}

// Line is the one-line summary.
func (r *report) Line() string {
	return fmt.Sprintf("jobs=%d finished=%d failed=%d lost=%d duplicate_runs=%d kills=%d stalls=%d oom_seconds=%.1f queues=%d max_recovery=%.1fs chains=%d fanins=%d deferred_left=%d order_violations=%d double_releases=%d unique_keys=%d unique_jobs=%d unique_dups=%d unique_overlaps=%d capped_jobs=%d cap_violations=%d key_cap_violations=%d starts_while_paused=%d cancel_jobs=%d cancels=%d canceled_running=%d finished_despite_cancel=%d cancel_p99=%s cancel_violations=%d",
		r.Jobs, r.Finished, r.Failed, r.Lost, r.Duplicates, r.Kills, r.Stalls, r.Full.Seconds(), r.Queues, r.MaxRecovery.Seconds(),
		r.Chains, r.FanIns, r.DeferredLeft, r.OrderViolations, r.DoubleReleases, r.UniqueKeys, r.UniqueJobs, r.UniqueDups, r.UniqueOverlaps,
		r.CapJobs+r.KeyJobs, r.CapViolations, r.KeyCapViolations, r.StartsWhilePaused,
		r.CancelJobs, r.Cancels, r.CanceledRunning, r.FinishedIgnoring+r.FinishedRaced, msStr(r.CancelP99), r.CancelViolations)
}

// msStr formats d in ms, to a tenth.
func msStr(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }

// Details says what else was done and seen.
func (r *report) Details() string {
	s := fmt.Sprintf("chaos: executions=%d duplicates_allowed=%d duplicates_unexplained=%d kills_while_holding=%d pauses=%d redis_restarts=%d connection_drops=%d stall_seconds=%.1f enqueue_retries=%d enqueues_refused_oom=%d enqueues_accepted_oom=%d oom_probes=%d oom_probes_repeated=%d late_acks_refused=%d leases_lost=%d",
		r.Executions, r.AllowedDuplicates, r.Unexplained, r.KillsHolding, r.Stops, r.Restarts, r.Drops, r.Stalled.Seconds(),
		r.EnqueueErrors, r.EnqueuesRefused, r.EnqueuesAcceptedFull, r.Probes, r.ProbesRepeated, r.LateAcksRefused, r.LeasesLost)
	s += fmt.Sprintf("\nchaos: workflow_jobs=%d cross_queue_edges=%d chains_completed=%d chains_canceled=%d callbacks_ran=%d callbacks_ran_after_failure=%d callbacks_canceled=%d planned_retries=%d outbox_left=%d open_links_left=%d settle_seconds=%.1f",
		r.FlowJobs, r.CrossQueue, r.ChainsCompleted, r.ChainsCanceled, r.CallbacksRan, r.CallbacksAllowedFailure, r.CallbacksCanceled,
		r.FlowRetries, r.OutboxLeft, r.OpenLinksLeft, r.Settle.Seconds())
	s += fmt.Sprintf("\nchaos: unique_tries=%d unique_jobs_per_key=%d..%d unique_finished=%d unique_failed=%d unique_unended=%d unique_runs=%d unique_runs_outcome_not_taken=%d unique_planned_retries=%d unique_repeats=%d unique_early_takeovers=%d unique_keys_stuck=%d unique_bad_holders=%d",
		r.UniqueTries, r.UniqueMinPerKey, r.UniqueMaxPerKey, r.UniqueFinished, r.UniqueFailed, r.UniqueUnended, r.UniqueRuns, r.UniqueNotTaken,
		r.UniqueRetries, r.UniqueRepeats, r.UniqueEarly, r.UniqueStuck, r.UniqueBadHolders)
	s += fmt.Sprintf("\nchaos: capped_queue_jobs=%d concurrency=%d keyed_queue_jobs=%d key_concurrency=%d limit_keys=%d cap_samples=%d cap_samples_skipped=%d peak_running=%d peak_key_running=%d peak_parked=%d peak_ahead=%d unslotted=%d parked_left=%d capped_finished=%d capped_failed=%d capped_unended=%d capped_planned_retries=%d capped_repeats=%d pauses=%d pause_seconds=%.1f held_back=%d",
		r.CapJobs, r.CapConcurrency, r.KeyJobs, r.KeyConcurrency, r.LimitKeys, r.CapSamples, r.CapSamplesSkipped,
		r.PeakRunning, r.PeakKeyRunning, r.PeakParked, r.PeakAhead, r.Unslotted, r.ParkedLeft, r.CapFinished, r.CapFailed, r.CapUnended,
		r.CapRetries, r.CapRepeats, r.Pauses, r.PausedFor.Seconds(), r.HeldBack)
	s += fmt.Sprintf("\nchaos: cancel_jobs=%d cancel_tried=%d cancel_calls=%d cancels=%d cancel_not_cancelable=%d cancel_hit_running=%d cancel_hit_waiting=%d canceled=%d canceled_running=%d canceled_by_handler=%d canceled_by_reaper=%d canceled_by_release=%d finished=%d finished_ignoring_cancel=%d finished_raced_cancel=%d cancel_timed=%d cancel_p50=%s cancel_p99=%s cancel_max=%s cancel_msg_p99=%s cancel_heartbeat_p99=%s cancel_over_1s=%d cancel_by_heartbeat=%d progress_stored=%d progress_lease_lost=%d progress_oom=%d progress_errors=%d cancel_repeats=%d stuck=%d wrong_registry=%d bad_end=%d canceled_unasked=%d runs_after_cancel=%d heard_late=%d progress_violations=%d cancel_unresolved=%d",
		r.CancelJobs, r.CancelTried, r.CancelCalls, r.Cancels, r.CancelNotCancelable, r.CancelHitRunning, r.CancelHitWaiting,
		r.Canceled, r.CanceledRunning, r.CanceledByHandler, r.CanceledReaped, r.CanceledReleased, r.CancelFinished,
		r.FinishedIgnoring, r.FinishedRaced, r.CancelHeard, msStr(r.CancelP50), msStr(r.CancelP99), msStr(r.CancelMax),
		msStr(r.CancelMsgP99), msStr(r.CancelBeatP99), r.CancelSlow, r.CancelByHeartbeat, r.ProgressWrites, r.ProgressLeaseLost, r.ProgressOOM, r.ProgressErrors, r.CancelRepeats,
		r.CancelStuck, r.CancelWrongRegistry, r.CancelBadEnd, r.CanceledUnasked, r.RunsAfterCancel, r.CancelLate, r.ProgressViolations, r.CancelUnresolved)
	for e, n := range r.FailedErrors {
		s += fmt.Sprintf("\nchaos: %d jobs failed with %q", n, e)
	}
	return s
}

// execution is one run of a job's handler.
type execution struct {
	attempt  int
	worker   string
	at       time.Time // when the handler started (the worker's clock: this host's)
	dequeued time.Time // when the attempt was started, dequeued (Job.StartedAt: Redis's clock, on this host)
}

// executions reads every worker's execution file: job id → runs, in the
// order they started.
func (h *harness) executions() (map[string][]execution, error) {
	files, err := filepath.Glob(filepath.Join(h.dir, "w*.exec"))
	if err != nil {
		return nil, err
	}
	runs := map[string][]execution{}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		// A worker killed in the middle of a write leaves at most its last
		// line short, with no newline; the handler never started then.
		if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
			b = b[:i+1]
		} else {
			b = nil
		}
		for line := range bytes.Lines(b) {
			rec := strings.TrimSuffix(string(line), "\n")
			fs := strings.Fields(rec)
			var a int
			var ms, dq int64
			var err1, err2, err3 error
			if len(fs) == 5 {
				a, err1 = strconv.Atoi(fs[1])
				ms, err2 = strconv.ParseInt(fs[3], 10, 64)
				dq, err3 = strconv.ParseInt(fs[4], 10, 64)
			}
			if len(fs) != 5 || err1 != nil || err2 != nil || err3 != nil {
				return nil, fmt.Errorf("bad execution record %q in %s", rec, name)
			}
			runs[fs[0]] = append(runs[fs[0]], execution{a, fs[2], time.UnixMilli(ms), time.UnixMilli(dq)})
		}
	}
	for _, ex := range runs {
		slices.SortFunc(ex, func(a, b execution) int { return cmp.Or(a.at.Compare(b.at), cmp.Compare(a.attempt, b.attempt)) })
	}
	return runs, nil
}

// explained reports whether a fault can account for run e of a job being
// followed by run next: e's worker was killed or paused, next's worker was
// paused (a zombie that wakes and starts a job it fetched before), or a
// fault that strikes every worker fell in between. The window starts a
// lease and the longest hold of a fetched job before e, for a job that was
// fetched before a fault and started after it; a pause counts until its
// SIGCONT.
func (h *harness) explained(e, next execution) bool {
	from := e.at.Add(-h.cfg.Lease - time.Second)
	for _, w := range slices.Concat(h.hits[e.worker], h.hits[next.worker], h.windows) {
		if !w.to.Before(from) && !w.from.After(next.at) {
			return true
		}
	}
	return false
}

// check reads every job, registry and recorded execution and judges them;
// caps is what the cap checker saw.
func (h *harness) check(caps capStats) (*report, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h.mu.Lock()
	defer h.mu.Unlock()
	r := &report{Jobs: h.cfg.Jobs, Queues: len(h.queues), Kills: h.kills, KillsHolding: h.holding, Stops: h.stops,
		Restarts: h.restarts, Drops: h.drops, Stalls: h.stalls, Stalled: h.stalled, Full: h.full,
		EnqueueErrors: h.enqErrors, EnqueuesRefused: h.enqOOM, EnqueuesAcceptedFull: len(h.acceptedFull), AllowedDuplicates: h.allowed,
		FailedErrors: map[string]int{}, Settle: h.settled, Chains: h.cfg.Chains, FanIns: h.cfg.FanIns}
	// A recovery does not count the time Redis stalled or was down: the
	// jobs of a worker killed just before wait for Redis, whatever rqgo
	// does.
	for _, rec := range h.recovery {
		d := rec.to.Sub(rec.from)
		for _, w := range h.windows {
			if w.what == "Redis stall" || w.what == "Redis restart" {
				d -= max(minTime(rec.to, w.to).Sub(maxTime(rec.from, w.from)), 0)
			}
		}
		r.MaxRecovery = max(r.MaxRecovery, d)
	}
	if len(h.recovery) < h.kills {
		r.Problems = append(r.Problems, fmt.Sprintf("jobs of %d killed workers were not taken up again within a minute", h.kills-len(h.recovery)))
	}
	logs, _ := filepath.Glob(filepath.Join(h.dir, "w*.log"))
	// worker → when a renewal of its leases failed (Redis did not answer
	// in time): it may lose leases without any fault of the harness's.
	renewFailed := map[string][]time.Time{}
	for _, name := range logs {
		b, _ := os.ReadFile(name)
		r.LateAcksRefused += bytes.Count(b, []byte("lease lost before the outcome was recorded"))
		r.LeasesLost += bytes.Count(b, []byte("lease lost; handler canceled"))
		worker := strings.TrimSuffix(filepath.Base(name), ".log")
		for line := range bytes.Lines(b) {
			if !bytes.Contains(line, []byte(`msg="renewing leases failed"`)) {
				continue
			}
			ts, _, _ := strings.Cut(strings.TrimPrefix(string(line), "time="), " ")
			if t, err := time.Parse(time.RFC3339Nano, ts); err == nil {
				renewFailed[worker] = append(renewFailed[worker], t)
			}
		}
	}

	// Which registries of which queues hold each job.
	where := map[string][]string{}
	regs := []string{"pending", "active", "scheduled", "finished", "failed", "canceled", "deferred"}
	cmds := make([]*redis.StringSliceCmd, 0, len(h.queues)*len(regs))
	if _, err := h.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, q := range h.queues {
			cmds = append(cmds, p.LRange(ctx, prefixKey(q, "pending"), 0, -1))
			for _, reg := range regs[1:] {
				cmds = append(cmds, p.ZRange(ctx, prefixKey(q, reg), 0, -1))
			}
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("reading the registries: %w", err)
	}
	for i, c := range cmds {
		q, reg := h.queues[i/len(regs)], regs[i%len(regs)]
		for _, id := range c.Val() {
			where[id] = append(where[id], q+"/"+reg)
		}
	}

	runs, err := h.executions()
	if err != nil {
		return nil, fmt.Errorf("reading executions: %w", err)
	}
	for _, ex := range runs {
		r.Executions += len(ex)
	}

	ids := make([]string, h.cfg.Jobs)
	jobs := make([]*redis.MapStringStringCmd, h.cfg.Jobs)
	for i := range ids {
		ids[i] = jobID(i)
	}
	for start := 0; start < len(ids); start += 1000 {
		end := min(start+1000, len(ids))
		if _, err := h.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := start; i < end; i++ {
				jobs[i] = p.HGetAll(ctx, jobKey(h.queueOf(i), ids[i]))
			}
			return nil
		}); err != nil {
			return nil, fmt.Errorf("reading jobs: %w", err)
		}
	}
	problem := func(format string, a ...any) {
		if len(r.Problems) < 50 {
			r.Problems = append(r.Problems, fmt.Sprintf(format, a...))
		}
	}
	var unexplained []string
	for i, id := range ids {
		in := where[id]
		delete(where, id)
		if len(in) > 1 {
			problem("job %s is in %v at once", id, in)
		}
		for _, reg := range in {
			if q, _, _ := strings.Cut(reg, "/"); q != h.queueOf(i) {
				problem("job %s of queue %s is in %s", id, h.queueOf(i), reg)
			}
		}
		ex := runs[id]
		r.Duplicates += max(len(ex)-1, 0)
		for k := 0; k+1 < len(ex); k++ {
			if !h.explained(ex[k], ex[k+1]) {
				r.Unexplained++
				note := ""
				for _, w := range h.fulls {
					if !w.to.Before(ex[k].at) && !w.from.After(ex[k+1].at) {
						note = ", " + w.what + " in between"
					}
				}
				unexplained = append(unexplained, fmt.Sprintf("%s attempt %d on %s (%s) at %.1fs, again at %.1fs%s",
					id, ex[k].attempt, ex[k].worker, h.roles[ex[k].worker], ex[k].at.Sub(h.start).Seconds(),
					ex[k+1].at.Sub(h.start).Seconds(), note))
			}
		}
		hash := jobs[i].Val()
		switch {
		case len(hash) == 0:
			r.Lost++
			problem("job %s lost: its hash is gone (registries %v)", id, in)
			continue
		case hash["status"] == "finished" && slices.Contains(in, h.queueOf(i)+"/finished"):
			r.Finished++
		case hash["status"] == "failed" && slices.Contains(in, h.queueOf(i)+"/failed"):
			r.Failed++
			r.FailedErrors[firstLine(hash["error"])]++
			continue
		default:
			r.Lost++
			problem("job %s lost: status %q, attempt %s, worker %s, registries %v, %d executions",
				id, hash["status"], hash["attempt"], hash["worker"], in, len(ex))
			continue
		}
		if p := resultProblem(id, hash, ex); p != "" {
			problem("%s", p)
		}
	}
	if err := h.checkFlows(ctx, r, where, runs, renewFailed, problem); err != nil {
		return nil, err
	}
	if err := h.checkUnique(ctx, r, where, runs, problem); err != nil {
		return nil, err
	}
	if err := h.checkCaps(ctx, r, caps, runs, problem); err != nil {
		return nil, err
	}
	if err := h.checkCancels(ctx, r, runs, problem); err != nil {
		return nil, err
	}
	for id, in := range where {
		problem("unknown job %s in %v", id, in)
	}
	for id := range runs {
		if _, ok := uniqueKeyOf(id); ok || h.flowJobs[id] != nil || isCapID(id) || isCancelID(id) {
			continue // judged by checkFlows, checkUnique, checkCaps or checkCancels
		}
		if i, ok := jobIndex(id); !ok || i >= h.cfg.Jobs || jobID(i) != id {
			problem("execution of unknown job %s", id)
		}
	}
	// The jobs that ran while Redis was full kept their leases: they ran
	// once.
	for _, i := range h.oomProbes {
		r.Probes++
		ex := runs[jobID(i)]
		if len(ex) != 1 {
			r.ProbesRepeated++
			var s []string
			for _, e := range ex {
				s = append(s, fmt.Sprintf("attempt %d on %s (%s) at %.1fs", e.attempt, e.worker, h.roles[e.worker], e.at.Sub(h.start).Seconds()))
			}
			problem("job %s ran across the time Redis was out of memory and ran %d times (%s): its lease was not kept",
				jobID(i), len(ex), strings.Join(s, ", "))
		}
	}
	if n := len(h.acceptedFull); n > 0 {
		problem("%d enqueues were accepted while Redis was over its maxmemory (noeviction) and refused other writes, e.g. %s",
			n, strings.Join(h.acceptedFull[:min(n, 5)], ", "))
	}
	if r.Lost > 0 {
		problem("%d jobs lost", r.Lost)
	}
	if r.Duplicates > r.AllowedDuplicates {
		problem("%d duplicate runs, more than the %d that %d kills, %d pauses, %d Redis restarts, %d stalls and %d connection drops explain",
			r.Duplicates, r.AllowedDuplicates, r.Kills, r.Stops, r.Restarts, r.Stalls, r.Drops)
	}
	if len(unexplained) > 0 {
		problem("%d runs were repeated with no kill, pause, Redis restart, stall or connection drop near them (a lease lost on a healthy worker): %s",
			len(unexplained), strings.Join(firstFew(unexplained), "; "))
	}
	return r, nil
}

// resultProblem checks a finished job: its stored result comes from the
// attempt the hash names, and that is the last attempt that ran. It
// returns what is wrong, or "".
func resultProblem(id string, hash map[string]string, ex []execution) string {
	var res result
	if err := json.Unmarshal([]byte(hash["result"]), &res); err != nil {
		return fmt.Sprintf("job %s: result %q does not decode: %v", id, hash["result"], err)
	}
	if strconv.Itoa(res.Attempt) != hash["attempt"] || res.Worker != hash["worker"] {
		return fmt.Sprintf("job %s: result from attempt %d on %s, but the job's last attempt is %s on %s (a late ack overwrote it)",
			id, res.Attempt, res.Worker, hash["attempt"], hash["worker"])
	}
	last := execution{}
	ran := false
	for _, e := range ex {
		if e.attempt > last.attempt {
			last = e
		}
		ran = ran || e.attempt == res.Attempt && e.worker == res.Worker
	}
	if !ran {
		return fmt.Sprintf("job %s finished with a result from attempt %d on %s, which never ran", id, res.Attempt, res.Worker)
	}
	if last.attempt > res.Attempt {
		return fmt.Sprintf("job %s: result from attempt %d on %s, but attempt %d ran later on %s (a late ack won)",
			id, res.Attempt, res.Worker, last.attempt, last.worker)
	}
	return ""
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
