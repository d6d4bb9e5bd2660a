package main

import (
	"bytes"
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

	"github.com/rqgo/rqgo"
)

// report is the outcome of a chaos run.
type report struct {
	Jobs, Finished, Failed, Lost  int
	Executions                    int // distinct (job, attempt, worker) runs recorded
	Duplicates                    int // executions beyond the first, over all jobs
	AllowedDuplicates             int // what the faults can explain
	Kills, Stops, Restarts, Drops int
	KillsHolding                  int // kills of a worker holding jobs fetched ahead of its slots
	MaxRecovery                   time.Duration
	EnqueueErrors                 int
	LateAcksRefused               int            // outcomes a worker could not record: its attempt was no longer the job's
	LeasesLost                    int            // handlers canceled because their lease was gone
	FailedErrors                  map[string]int // error text → failed jobs
	Problems                      []string
}

// Line is the one-line summary.
func (r *report) Line() string {
	return fmt.Sprintf("jobs=%d finished=%d failed=%d lost=%d duplicate_runs=%d kills=%d max_recovery=%.1fs",
		r.Jobs, r.Finished, r.Failed, r.Lost, r.Duplicates, r.Kills, r.MaxRecovery.Seconds())
}

// Details says what else was done and seen.
func (r *report) Details() string {
	s := fmt.Sprintf("chaos: executions=%d duplicates_allowed=%d kills_while_holding=%d pauses=%d redis_restarts=%d connection_drops=%d enqueue_retries=%d late_acks_refused=%d leases_lost=%d",
		r.Executions, r.AllowedDuplicates, r.KillsHolding, r.Stops, r.Restarts, r.Drops, r.EnqueueErrors, r.LateAcksRefused, r.LeasesLost)
	for e, n := range r.FailedErrors {
		s += fmt.Sprintf("\nchaos: %d jobs failed with %q", n, e)
	}
	return s
}

// check reads every job, registry and recorded execution and judges them.
func (h *harness) check() (*report, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h.mu.Lock()
	r := &report{Jobs: h.cfg.Jobs, Kills: h.kills, KillsHolding: h.holding, Stops: h.stops, Restarts: h.restarts, Drops: h.drops,
		EnqueueErrors: h.enqErrors, FailedErrors: map[string]int{}}
	for _, d := range h.recovery {
		r.MaxRecovery = max(r.MaxRecovery, d)
	}
	if len(h.recovery) < h.kills {
		r.Problems = append(r.Problems, fmt.Sprintf("jobs of %d killed workers were not taken up again within a minute", h.kills-len(h.recovery)))
	}
	h.mu.Unlock()
	logs, _ := filepath.Glob(filepath.Join(h.dir, "w*.log"))
	for _, name := range logs {
		b, _ := os.ReadFile(name)
		r.LateAcksRefused += bytes.Count(b, []byte("lease lost before the outcome was recorded"))
		r.LeasesLost += bytes.Count(b, []byte("lease lost; handler canceled"))
	}
	// Each kill or pause can repeat the jobs that worker was running; a
	// Redis restart or connection drop those of every worker.
	r.AllowedDuplicates = h.cfg.Concurrency*(r.Kills+r.Stops) + h.cfg.Workers*h.cfg.Concurrency*(r.Restarts+r.Drops)

	// Which registries hold each job.
	where := map[string][]string{}
	pending, err := h.rdb.LRange(ctx, prefixKey("pending"), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("reading pending: %w", err)
	}
	for _, id := range pending {
		where[id] = append(where[id], "pending")
	}
	for _, reg := range []string{"active", "scheduled", "finished", "failed", "canceled"} {
		ids, err := h.rdb.ZRange(ctx, prefixKey(reg), 0, -1).Result()
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", reg, err)
		}
		for _, id := range ids {
			where[id] = append(where[id], reg)
		}
	}

	// Every recorded execution, without the repeats a retried RPUSH makes.
	raw, err := h.rdb.LRange(ctx, execKey, 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("reading executions: %w", err)
	}
	type execution struct {
		attempt int
		worker  string
	}
	runs := map[string][]execution{}
	seen := map[string]bool{}
	for _, rec := range raw {
		if seen[rec] {
			continue
		}
		seen[rec] = true
		f := strings.Fields(rec)
		if len(f) != 3 {
			return nil, fmt.Errorf("bad execution record %q", rec)
		}
		a, _ := strconv.Atoi(f[1])
		runs[f[0]] = append(runs[f[0]], execution{a, f[2]})
		r.Executions++
	}

	ids := make([]string, h.cfg.Jobs)
	cmds := make([]*redis.MapStringStringCmd, h.cfg.Jobs)
	for i := range ids {
		ids[i] = jobID(i)
	}
	for start := 0; start < len(ids); start += 1000 {
		end := min(start+1000, len(ids))
		if _, err := h.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := start; i < end; i++ {
				cmds[i] = p.HGetAll(ctx, jobKey(ids[i]))
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
	for i, id := range ids {
		regs := where[id]
		delete(where, id)
		if len(regs) > 1 {
			problem("job %s is in %v at once", id, regs)
		}
		h := cmds[i].Val()
		ex := runs[id]
		delete(runs, id)
		r.Duplicates += max(len(ex)-1, 0)
		switch {
		case len(h) == 0:
			r.Lost++
			problem("job %s lost: its hash is gone (registries %v)", id, regs)
			continue
		case h["status"] == "finished" && slices.Contains(regs, "finished"):
			r.Finished++
		case h["status"] == "failed" && slices.Contains(regs, "failed"):
			r.Failed++
			r.FailedErrors[firstLine(h["error"])]++
			continue
		default:
			r.Lost++
			problem("job %s lost: status %q, registries %v", id, h["status"], regs)
			continue
		}
		// A finished job's stored result comes from the attempt the hash
		// names, and that is the last attempt that ran.
		var res result
		if err := json.Unmarshal([]byte(h["result"]), &res); err != nil {
			problem("job %s: result %q does not decode: %v", id, h["result"], err)
			continue
		}
		if strconv.Itoa(res.Attempt) != h["attempt"] || res.Worker != h["worker"] {
			problem("job %s: result from attempt %d on %s, but the job's last attempt is %s on %s (a late ack overwrote it)",
				id, res.Attempt, res.Worker, h["attempt"], h["worker"])
		}
		last := execution{}
		ran := false
		for _, e := range ex {
			if e.attempt > last.attempt {
				last = e
			}
			ran = ran || e == execution{res.Attempt, res.Worker}
		}
		if !ran {
			problem("job %s finished with a result from attempt %d on %s, which never ran", id, res.Attempt, res.Worker)
		} else if last.attempt > res.Attempt {
			problem("job %s: result from attempt %d on %s, but attempt %d ran later on %s (a late ack won)",
				id, res.Attempt, res.Worker, last.attempt, last.worker)
		}
	}
	for id, regs := range where {
		problem("unknown job %s in %v", id, regs)
	}
	for id := range runs {
		problem("execution of unknown job %s", id)
	}
	if r.Lost > 0 {
		problem("%d jobs lost", r.Lost)
	}
	if r.Duplicates > r.AllowedDuplicates {
		problem("%d duplicate runs, more than the %d that %d kills, %d pauses, %d Redis restarts and %d connection drops explain",
			r.Duplicates, r.AllowedDuplicates, r.Kills, r.Stops, r.Restarts, r.Drops)
	}
	return r, nil
}

func prefixKey(name string) string { return rqgo.DefaultPrefix + ":{" + queueName + "}:" + name }

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
