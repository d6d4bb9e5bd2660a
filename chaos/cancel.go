package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rqgo/rqgo"
)

// Cancels: a queue of its own, which every worker serves after all its
// others, with cfg.CancelJobs jobs placed evenly among the first 85% of
// the plain jobs (job n with the wave of plain job n×0.85×Jobs/CancelJobs),
// so every fault strikes them and the last are done about when the faults
// end. Each works 300 ms to two leases, reporting its progress
// (Job.SetProgress) every 50 ms. Six jobs in ten are canceled while they
// run: a canceller polls the queue's active set and calls Cancel on each
// such job it sees started, a random time (up to 1.1 times its work) after
// it first saw it; one in five of those ignores the cancel and returns its
// result anyway, the others return their context's cause as soon as it
// ends, and one in four is sent right behind a CLIENT KILL TYPE pubsub
// (killSubs), so the workers must learn of it at a heartbeat. Two in ten
// are enqueued scheduled (rqgo.In 1.5 s) and canceled up to 900 ms after
// their enqueue, one in ten is canceled as soon as its enqueue returns
// (queued, or just started), and one in ten is never canceled. When a
// worker is SIGKILLed, the jobs to cancel while they run that it held and
// the canceller had not canceled yet are canceled at once, so the reaper
// ends them. Cancel is tried again on any error but ErrNotCancelable and
// ErrJobNotFound (Redis down, stalled, the connection dropped).
const cancelQueueName = "chaos-cancel"

// How a job of the cancel queue is canceled.
const (
	cancelRunning   = iota // by the canceller, once it sees it started
	cancelScheduled        // enqueued scheduled, canceled before it is due
	cancelQueued           // canceled as soon as its enqueue returns
	cancelNever
)

// How the handler of a job of the cancel queue takes a cancel (args.Cancel).
const (
	cancelHonour = "honour" // returns its context's cause as soon as it ends
	cancelIgnore = "ignore" // works on and returns its result
)

// progressEvery is how often a job of the cancel queue reports progress.
const progressEvery = 50 * time.Millisecond

// cancelJob is one job of the cancel queue: planned before the run; the
// rest is what the canceller did, under harness.cancelMu.
type cancelJob struct {
	id     string
	n      int
	ms     int
	kind   int
	ignore bool
	drop   bool          // Cancel is sent right behind a CLIENT KILL TYPE pubsub
	after  time.Duration // from the canceller first seeing it started, or from its enqueue, until Cancel

	tried     bool      // Cancel was called
	tries     int       // Cancel calls
	uncertain bool      // a call failed without an answer: it may have landed
	outcome   string    // "ok", "not_cancelable", "not_found", "unresolved" or "" (never tried)
	sent      time.Time // when the first call was sent
	okAt      time.Time // when the call that returned nil returned
	firstOK   bool      // the first call returned nil: okAt times the cancel
}

func (j *cancelJob) ref() string { return cancelQueueName + ":" + j.id }

func isCancelID(id string) bool { return strings.HasPrefix(id, "cancel-") }

// planCancels lays out the cancel queue's jobs among the plain jobs' waves.
func (h *harness) planCancels() {
	h.cancelQ = rqgo.NewQueue(cancelQueueName, h.rdb)
	h.cancelJobs = map[string]*cancelJob{}
	h.cancelAt = map[int][]*cancelJob{}
	rnd := rand.New(rand.NewPCG(uint64(h.cfg.Seed), 0xca9ce1))
	long := max(int(2*h.cfg.Lease.Milliseconds()), 400)
	for n := range h.cfg.CancelJobs {
		j := &cancelJob{id: fmt.Sprintf("cancel-%05d", n), n: n, ms: 300 + rnd.IntN(long-300+1)}
		switch r := n % 10; {
		case r < 6:
			j.kind = cancelRunning
			m := (n/10)*6 + r // its number among those to cancel while they run
			j.ignore, j.drop = m%5 == 4, m%4 == 1
			j.after = time.Duration(20+rnd.IntN(j.ms*11/10)) * time.Millisecond
		case r < 8:
			j.kind = cancelScheduled
			j.after = time.Duration(rnd.IntN(900)) * time.Millisecond
		case r == 8:
			j.kind = cancelQueued
		default:
			j.kind = cancelNever
		}
		at := n * h.cfg.Jobs * 85 / 100 / h.cfg.CancelJobs
		h.cancelAt[at] = append(h.cancelAt[at], j)
		h.cancelJobs[j.id] = j
		h.cancelList = append(h.cancelList, j)
	}
}

// enqueueCancel enqueues one job of the cancel queue (tried again like a
// plain job's) and, for those canceled before they run, has it canceled.
func (h *harness) enqueueCancel(j *cancelJob) error {
	a := args{N: j.n, MS: j.ms, Cancel: cancelHonour}
	if j.ignore {
		a.Cancel = cancelIgnore
	}
	var opts []rqgo.EnqueueOption
	if j.kind == cancelScheduled {
		opts = append(opts, rqgo.In(1500*time.Millisecond))
	}
	if _, err := h.enqueueAs(h.cancelQ, j.id, a, opts...); err != nil {
		return err
	}
	switch j.kind {
	case cancelScheduled, cancelQueued:
		h.cancelLater(j, j.after)
	}
	return nil
}

// cancelHeld cancels at once the jobs of the cancel queue, of those to
// cancel while they run, that a worker just SIGKILLed held (the canceller
// had not called Cancel on them yet): they are still started, and only
// the reaper can end them, canceled, once their leases expire.
func (h *harness) cancelHeld(held map[string]string) {
	for id := range held {
		if j := h.cancelJobs[id]; j != nil && j.kind == cancelRunning {
			h.cancelLater(j, 0)
		}
	}
}

// canceller is the goroutine that cancels the cancel queue's jobs, and the
// calls it has in hand.
type canceller struct {
	q     *rqgo.Queue // on a client of its own, with short timeouts
	drop  *rqgo.Queue // on one whose scripts go right behind a CLIENT KILL TYPE pubsub
	done  chan struct{}
	calls sync.WaitGroup
}

// killSubs is a hook that sends each script call (EVALSHA, EVAL) in one
// pipeline right behind a CLIENT KILL TYPE pubsub: Redis runs the script
// before any worker has subscribed again, so what it publishes reaches
// none, and the workers must learn of a cancel at their next heartbeat.
type killSubs struct{ c *redis.Client }

func (k *killSubs) DialHook(next redis.DialHook) redis.DialHook { return next }

func (k *killSubs) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (k *killSubs) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if n := cmd.Name(); n != "evalsha" && n != "eval" {
			return next(ctx, cmd)
		}
		_, _ = k.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.ClientKillByFilter(ctx, "TYPE", "pubsub")
			return p.Process(ctx, cmd)
		})
		return cmd.Err()
	}
}

// startCanceller starts the canceller: every 20 ms it reads the cancel
// queue's active set and, for each job to cancel while it runs that it
// sees there for the first time, calls Cancel after the job's delay. stop
// ends it once the calls it has begun are answered (a delay not yet over
// is called off: the job is never canceled).
func (h *harness) startCanceller() (stop func()) {
	opts := &redis.Options{Addr: h.redis.addr(), DialTimeout: 200 * time.Millisecond,
		ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: -1, PoolSize: 32}
	c, dc := redis.NewClient(opts), redis.NewClient(opts)
	dc.AddHook(&killSubs{dc})
	h.cancels = &canceller{q: rqgo.NewQueue(cancelQueueName, c), drop: rqgo.NewQueue(cancelQueueName, dc),
		done: make(chan struct{})}
	seen := map[string]bool{}
	var loop sync.WaitGroup
	loop.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-h.cancels.done:
				return
			case <-tick.C:
			}
			if h.redisDown.Load() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
			ids, err := c.ZRange(ctx, prefixKey(cancelQueueName, "active"), 0, -1).Result()
			cancel()
			if err != nil {
				continue
			}
			for _, id := range ids {
				j := h.cancelJobs[id]
				if j == nil || j.kind != cancelRunning || seen[id] {
					continue
				}
				seen[id] = true
				h.cancelLater(j, j.after)
			}
		}
	})
	return func() {
		close(h.cancels.done)
		loop.Wait()
		h.cancels.calls.Wait()
		c.Close()
		dc.Close()
	}
}

// cancelLater calls Cancel on j after d, unless it was called already,
// again and again until it answers (nil, ErrNotCancelable or
// ErrJobNotFound) or a minute has passed.
func (h *harness) cancelLater(j *cancelJob, d time.Duration) {
	cl := h.cancels
	cl.calls.Go(func() {
		select {
		case <-cl.done:
			return
		case <-time.After(d):
		}
		h.cancelMu.Lock()
		taken := j.tried
		j.tried = true
		h.cancelMu.Unlock()
		if taken {
			return // canceled already (its worker was killed)
		}
		deadline := time.Now().Add(time.Minute)
		for {
			sent := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			q := cl.q
			if j.drop {
				q = cl.drop
			}
			err := q.Cancel(ctx, j.id)
			cancel()
			back := time.Now()
			h.cancelMu.Lock()
			if j.sent.IsZero() {
				j.sent = sent
			}
			j.tries++
			final := true
			switch {
			case err == nil:
				j.outcome, j.okAt, j.firstOK = "ok", back, j.tries == 1
			case errors.Is(err, rqgo.ErrNotCancelable):
				j.outcome = "not_cancelable"
			case errors.Is(err, rqgo.ErrJobNotFound):
				j.outcome = "not_found"
			case time.Now().After(deadline):
				j.outcome, j.uncertain = "unresolved", true
			default:
				j.uncertain, final = true, false
			}
			h.cancelMu.Unlock()
			if final {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

// cancelRec is what the handler of one run of a cancel queue job did, from
// the worker's cancel file.
type cancelRec struct {
	key       runKey
	result    bool      // it returned a result (else an error)
	heard     time.Time // when its context ended with ErrCanceled (zero: not before it returned)
	cause     string    // its context's cause when it returned: none, canceled, lease_lost or other
	okStep    int       // the last progress step SetProgress stored (0: none)
	triedStep int       // the last step it tried
	leaseLost int       // SetProgress calls refused with ErrLeaseLost
	progOOM   int       // refused because Redis was out of memory
	progErrs  int       // other SetProgress errors
}

// cancelRecs reads every worker's cancel file.
func (h *harness) cancelRecs() (map[string][]cancelRec, error) {
	files, err := filepath.Glob(filepath.Join(h.dir, "w*.cancel"))
	if err != nil {
		return nil, err
	}
	out := map[string][]cancelRec{}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		// A worker killed in the middle of a write leaves at most its last
		// line short, with no newline: that handler had not returned.
		if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
			b = b[:i+1]
		} else {
			b = nil
		}
		for line := range bytes.Lines(b) {
			s := strings.TrimSuffix(string(line), "\n")
			fs := strings.Fields(s)
			bad := len(fs) != 11
			num := func(i int) int64 {
				if bad {
					return 0
				}
				v, err := strconv.ParseInt(fs[i], 10, 64)
				bad = bad || err != nil
				return v
			}
			rec := cancelRec{}
			a := num(1)
			us := num(4)
			rec.okStep, rec.triedStep, rec.leaseLost, rec.progOOM, rec.progErrs = int(num(6)), int(num(7)), int(num(8)), int(num(9)), int(num(10))
			if bad || (fs[3] != "result" && fs[3] != "error") {
				return nil, fmt.Errorf("bad cancel record %q in %s", s, name)
			}
			rec.key = runKey{fs[0], int(a), fs[2]}
			rec.result, rec.cause = fs[3] == "result", fs[5]
			if us > 0 {
				rec.heard = time.UnixMicro(us)
			}
			out[fs[0]] = append(out[fs[0]], rec)
		}
	}
	return out, nil
}

// toldLogs reads from the workers' logs when each was told, by the
// message Cancel publishes, to cancel a cancel queue job's handler: by job
// and worker.
func (h *harness) toldLogs() (map[[2]string][]time.Time, error) {
	logs, err := filepath.Glob(filepath.Join(h.dir, "w*.log"))
	if err != nil {
		return nil, err
	}
	told := map[[2]string][]time.Time{}
	for _, name := range logs {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		worker := strings.TrimSuffix(filepath.Base(name), ".log")
		for line := range bytes.Lines(b) {
			if !bytes.Contains(line, []byte(`msg="job canceled while running; handler told"`)) {
				continue
			}
			s := string(line)
			job, ts := logJob.FindStringSubmatch(s), logTime.FindStringSubmatch(s)
			if job == nil || ts == nil {
				continue
			}
			if t, err := time.Parse(time.RFC3339Nano, ts[1]); err == nil {
				told[[2]string{job[1], worker}] = append(told[[2]string{job[1], worker}], t)
			}
		}
	}
	return told, nil
}

// progressVal is what a cancel queue job's handler reports as progress.
type progressVal struct {
	A int    `json:"a"` // attempt
	S int    `json:"s"` // step
	W string `json:"w"` // worker
}

// Error texts of a job canceled while it ran, by what ended it (fail.lua,
// reap.lua, release.lua).
const (
	canceledPrefix   = "canceled while running: "
	canceledReaped   = canceledPrefix + "lease expired"
	canceledReleased = canceledPrefix + "the worker stopped"
)

// checkCancels judges the cancel queue's jobs (see the package doc). runs
// are the recorded executions.
//
//   - Ends: every job ended, canceled or finished (none fails: they are not
//     made to), and none is left queued, scheduled, started, parked or
//     deferred; it is in the registry of its status and no other (stuck,
//     wrong_registry). A job ends canceled only if Cancel was called on it
//     and either returned nil or failed without an answer (it may have
//     landed): canceled_unasked.
//   - One end: a finished job holds the result of a run whose handler, by
//     its cancel record, returned a result; a canceled one holds no result,
//     and when it was ended by its handler's error (not by the reaper or a
//     release) some run of it returned an error (bad_end).
//   - After a cancel: no attempt was dequeued (Job.StartedAt, Redis's
//     clock, of every run, and the hash's started_at) after the cancel was
//     recorded: its cancel_requested for a job canceled while it ran, its
//     ended_at for one canceled while waiting (runs_after_cancel).
//   - Heard: the run a cancel recorded while the job was started was for
//     (its last attempt) heard of it or returned within hearWithin, unless
//     a fault struck (see lateHearing; heard_late).
//   - Progress: the progress a job holds at the end was reported by its
//     latest attempt that had one stored, and is no older than the last
//     step that run had stored (progress_violations).
//   - A run is repeated only when a fault explains it, as for a plain job;
//     and every Cancel call was answered within a minute (unresolved).
//
// The latency of a cancel is from the return of the first Cancel call,
// when it returned nil on a started job, to the earliest time a run of the
// job saw its context end with ErrCanceled (both this host's clock; a run
// may hear of it before Cancel's reply is read: 0). The run heard of it by
// the heartbeat when its worker logged no message for it by then.
func (h *harness) checkCancels(ctx context.Context, r *report, runs map[string][]execution, problem func(string, ...any)) error {
	r.CancelJobs = len(h.cancelList)
	where := map[string][]string{}
	regs := []string{"pending", "active", "scheduled", "finished", "failed", "canceled", "deferred", "parked"}
	var cmds []*redis.StringSliceCmd
	if _, err := h.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		cmds = append(cmds, p.LRange(ctx, prefixKey(cancelQueueName, "pending"), 0, -1))
		for _, reg := range regs[1:] {
			cmds = append(cmds, p.ZRange(ctx, prefixKey(cancelQueueName, reg), 0, -1))
		}
		return nil
	}); err != nil {
		return fmt.Errorf("reading the registries of %s: %w", cancelQueueName, err)
	}
	for i, c := range cmds {
		for _, id := range c.Val() {
			where[id] = append(where[id], regs[i])
		}
	}
	hashes := make([]*redis.MapStringStringCmd, len(h.cancelList))
	if _, err := h.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, j := range h.cancelList {
			hashes[i] = p.HGetAll(ctx, jobKey(cancelQueueName, j.id))
		}
		return nil
	}); err != nil {
		return fmt.Errorf("reading the jobs of %s: %w", cancelQueueName, err)
	}
	recs, err := h.cancelRecs()
	if err != nil {
		return fmt.Errorf("reading cancel records: %w", err)
	}
	told, err := h.toldLogs()
	if err != nil {
		return fmt.Errorf("reading worker logs: %w", err)
	}
	at := func(t time.Time) string { return fmt.Sprintf("%.3fs", t.Sub(h.start).Seconds()) }
	msAt := func(ms int64) string { return at(time.UnixMilli(ms)) }
	var bad, again []string
	violation := func(n *int, format string, a ...any) {
		*n++
		bad = append(bad, fmt.Sprintf(format, a...))
	}
	ends, err := h.ends()
	if err != nil {
		return fmt.Errorf("reading end records: %w", err)
	}
	var lat, latMsg, latBeat []time.Duration
	h.cancelMu.Lock()
	defer h.cancelMu.Unlock()
	for i, j := range h.cancelList {
		hs, ex, rs := hashes[i].Val(), runs[j.id], recs[j.id]
		in := where[j.id]
		delete(where, j.id)
		st := hs["status"]
		for _, rec := range rs {
			r.ProgressWrites += rec.okStep
			r.ProgressLeaseLost += rec.leaseLost
			r.ProgressOOM += rec.progOOM
			r.ProgressErrors += rec.progErrs
		}
		if j.tried {
			r.CancelTried++
			r.CancelCalls += j.tries
		}
		switch j.outcome {
		case "ok":
			r.Cancels++
		case "not_cancelable":
			r.CancelNotCancelable++
		case "not_found", "unresolved":
			violation(&r.CancelUnresolved, "Cancel of %s answered %s (%d calls)", j.ref(), j.outcome, j.tries)
		}
		switch {
		case len(hs) == 0:
			violation(&r.CancelStuck, "%s lost: its hash is gone (registries %v, %d runs, Cancel %q)", j.ref(), in, len(ex), j.outcome)
			continue
		case st != string(rqgo.StatusCanceled) && st != string(rqgo.StatusFinished):
			violation(&r.CancelStuck, "%s is %q after the settle (attempt %s, %d runs, registries %v, Cancel %q, cancel_requested %q), want canceled or finished",
				j.ref(), st, hs["attempt"], len(ex), in, j.outcome, hs["cancel_requested"])
		case len(in) != 1 || in[0] != st:
			violation(&r.CancelWrongRegistry, "%s is %s but in registries %v", j.ref(), st, in)
		}
		var requested int64
		if v, ok := hs["cancel_requested"]; ok {
			requested, _ = strconv.ParseInt(v, 10, 64)
			r.CancelHitRunning++
		} else if st == string(rqgo.StatusCanceled) {
			r.CancelHitWaiting++
		}
		ran := func(returnedResult bool, a int, w string) bool {
			return slices.ContainsFunc(rs, func(c cancelRec) bool {
				return c.result == returnedResult && (a == 0 || c.key.attempt == a && c.key.worker == w)
			})
		}
		switch st {
		case string(rqgo.StatusFinished):
			r.CancelFinished++
			if p := resultProblem(j.ref(), hs, ex); p != "" {
				problem("cancel queue %s", p)
			}
			var res result
			_ = json.Unmarshal([]byte(hs["result"]), &res)
			if !ran(true, res.Attempt, res.Worker) {
				violation(&r.CancelBadEnd, "%s finished with the result of attempt %d on %s, whose handler did not return a result by its record (records %v)",
					j.ref(), res.Attempt, res.Worker, rs)
			}
			if requested > 0 {
				if j.ignore {
					r.FinishedIgnoring++
				} else {
					r.FinishedRaced++
				}
			}
		case string(rqgo.StatusCanceled):
			r.Canceled++
			e := hs["error"]
			switch {
			case requested == 0:
			case e == canceledReaped:
				r.CanceledReaped++
			case e == canceledReleased:
				r.CanceledReleased++
			case strings.HasPrefix(e, canceledPrefix):
				r.CanceledByHandler++
				if !ran(false, 0, "") {
					violation(&r.CancelBadEnd, "%s canceled with its handler's error %q, but no run of it returned an error by its records (%v)", j.ref(), e, rs)
				}
			default:
				violation(&r.CancelBadEnd, "%s canceled while running with error %q", j.ref(), e)
			}
			if requested > 0 {
				r.CanceledRunning++
			}
			if _, ok := hs["result"]; ok {
				violation(&r.CancelBadEnd, "%s is canceled but holds a result %q", j.ref(), hs["result"])
			}
			if !(j.outcome == "ok" || j.uncertain) {
				violation(&r.CanceledUnasked, "%s ended canceled (error %q), but Cancel was %s", j.ref(), e,
					map[bool]string{true: "answered " + j.outcome, false: "never called"}[j.tried])
			}
		}
		if requested > 0 && !j.tried {
			violation(&r.CanceledUnasked, "%s has cancel_requested %s, but Cancel was never called", j.ref(), msAt(requested))
		}
		// No attempt after the cancel was recorded.
		cut := requested
		if cut == 0 && st == string(rqgo.StatusCanceled) {
			cut, _ = strconv.ParseInt(hs["ended_at"], 10, 64)
		}
		if cut > 0 {
			for _, e := range ex {
				if e.dequeued.UnixMilli() > cut {
					violation(&r.RunsAfterCancel, "%s attempt %d on %s dequeued at %s (handler at %s), after its cancel was recorded at %s (status %s)",
						j.ref(), e.attempt, e.worker, at(e.dequeued), at(e.at), msAt(cut), st)
				}
			}
			if s, err := strconv.ParseInt(hs["started_at"], 10, 64); err == nil && s > cut &&
				!slices.ContainsFunc(ex, func(e execution) bool { return e.dequeued.UnixMilli() == s }) {
				violation(&r.RunsAfterCancel, "%s attempt %s started at %s (no handler ran), after its cancel was recorded at %s",
					j.ref(), hs["attempt"], msAt(s), msAt(cut))
			}
		}
		// Progress: written by the latest attempt that had one stored.
		latest := 0
		for _, rec := range rs {
			if rec.okStep > 0 {
				latest = max(latest, rec.key.attempt)
			}
		}
		if raw, ok := hs["progress"]; ok || latest > 0 {
			var pv progressVal
			if err := json.Unmarshal([]byte(raw), &pv); (err != nil || pv.A < latest) && latest > 0 {
				violation(&r.ProgressViolations, "%s holds progress %q, but attempt %d had its progress stored later", j.ref(), raw, latest)
			} else if err == nil {
				for _, rec := range rs {
					if rec.key.attempt == pv.A && rec.key.worker == pv.W && (pv.S < rec.okStep || pv.S > rec.triedStep) {
						violation(&r.ProgressViolations, "%s holds progress step %d of attempt %d on %s, whose last stored step was %d of %d tried",
							j.ref(), pv.S, pv.A, pv.W, rec.okStep, rec.triedStep)
					}
				}
			}
		}
		// Latency: from Cancel's return to the first run to hear of it.
		if j.firstOK && requested > 0 {
			var first *cancelRec
			for k := range rs {
				if rs[k].cause == "canceled" && !rs[k].heard.IsZero() && (first == nil || rs[k].heard.Before(first.heard)) {
					first = &rs[k]
				}
			}
			if first != nil {
				d := max(first.heard.Sub(j.okAt), 0)
				lat = append(lat, d)
				if d > time.Second {
					r.CancelSlow++
				}
				byMsg := slices.ContainsFunc(told[[2]string{j.id, first.key.worker}], func(t time.Time) bool {
					return !t.After(first.heard.Add(20 * time.Millisecond))
				})
				if byMsg {
					latMsg = append(latMsg, d)
				} else {
					r.CancelByHeartbeat++
					latBeat = append(latBeat, d)
				}
			}
		}
		// The run the cancel was for heard of it within hearWithin.
		if requested > 0 {
			if p := h.lateHearing(j, hs, requested, ex, rs, ends); p != "" {
				violation(&r.CancelLate, "%s", p)
			}
		}
		// Repeats, as for a plain job.
		for n := 0; n+1 < len(ex); n++ {
			r.CancelRepeats++
			if !h.explained(ex[n], ex[n+1]) {
				r.Unexplained++
				again = append(again, fmt.Sprintf("%s attempt %d on %s (%s) at %s, again (attempt %d on %s) at %s",
					j.ref(), ex[n].attempt, ex[n].worker, h.roles[ex[n].worker], at(ex[n].at), ex[n+1].attempt, ex[n+1].worker, at(ex[n+1].at)))
			}
		}
	}
	for id, in := range where {
		problem("unknown job %s in %s %v", id, cancelQueueName, in)
	}
	for id := range runs {
		if isCancelID(id) && h.cancelJobs[id] == nil {
			problem("execution of unknown job %s of %s", id, cancelQueueName)
		}
	}
	r.CancelHeard = len(lat)
	r.CancelP50, r.CancelP99, r.CancelMax = quantile(lat, 50), quantile(lat, 99), quantile(lat, 100)
	r.CancelMsgP99, r.CancelBeatP99 = quantile(latMsg, 99), quantile(latBeat, 99)
	r.CancelViolations = r.CancelStuck + r.CancelWrongRegistry + r.CancelBadEnd + r.CanceledUnasked + r.RunsAfterCancel +
		r.CancelLate + r.ProgressViolations + r.CancelUnresolved
	if len(bad) > 0 {
		problem("%d cancel violations (%d stuck or lost, %d in the wrong registry, %d ended wrong, %d canceled unasked, %d runs after the cancel, %d heard late, %d progress, %d Cancel calls unanswered): %s",
			r.CancelViolations, r.CancelStuck, r.CancelWrongRegistry, r.CancelBadEnd, r.CanceledUnasked, r.RunsAfterCancel,
			r.CancelLate, r.ProgressViolations, r.CancelUnresolved, strings.Join(firstFew(bad), "; "))
	}
	if len(again) > 0 {
		problem("%d runs of %s were repeated with no kill, pause, Redis restart, stall or connection drop near them: %s",
			len(again), cancelQueueName, strings.Join(firstFew(again), "; "))
	}
	return nil
}

// quantile returns the q-th percentile of ds (100: the largest; 0 when
// there are none). It sorts ds.
func quantile(ds []time.Duration, q int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[min(len(ds)*q/100, len(ds)-1)]
}

// hearWithin is how long after a cancel is recorded (or, for a run that
// starts later, held for a slot, after its handler starts) the run it is
// for must hear of it when no fault strikes: the message takes
// milliseconds, the heartbeat that makes up for a lost one a third of a
// lease.
const hearWithin = time.Second

// lateHearing checks that the run a cancel recorded at requested (Unix ms,
// Redis's clock) was for heard of it in time: the job's last attempt (the
// hash's attempt and worker), when its handler ran and returned. Its
// context must have ended with ErrCanceled within hearWithin of the later
// of the cancel and its handler's start, or it must have returned by then.
// A kill or pause of its worker, or a fault that strikes every worker,
// from 2 s before the cancel until it heard or returned excuses it. It
// returns what is wrong, or "".
func (h *harness) lateHearing(j *cancelJob, hs map[string]string, requested int64, ex []execution, rs []cancelRec,
	ends map[runKey]time.Time) string {
	a, _ := strconv.Atoi(hs["attempt"])
	k := runKey{j.id, a, hs["worker"]}
	var e *execution
	for i := range ex {
		if ex[i].attempt == a && ex[i].worker == k.worker {
			e = &ex[i]
		}
	}
	var rec *cancelRec
	for i := range rs {
		if rs[i].key == k {
			rec = &rs[i]
		}
	}
	end, returned := ends[k]
	if e == nil || rec == nil || !returned || rec.cause == "lease_lost" {
		return "" // it never ran, never returned (killed), or lost its lease
	}
	cut := time.UnixMilli(requested)
	from := maxTime(cut, e.at)
	until := end
	if !rec.heard.IsZero() {
		until = rec.heard
	}
	if until.Sub(from) <= hearWithin {
		return ""
	}
	for _, w := range slices.Concat(h.hits[k.worker], h.windows) {
		if !w.to.Before(cut.Add(-2*time.Second)) && !w.from.After(until) {
			return ""
		}
	}
	at := func(t time.Time) string { return fmt.Sprintf("%.3fs", t.Sub(h.start).Seconds()) }
	if rec.heard.IsZero() {
		return fmt.Sprintf("%s attempt %d on %s (handler from %s) never heard of its cancel, recorded at %s, and returned at %s, with no fault near",
			j.ref(), a, k.worker, at(e.at), at(cut), at(end))
	}
	return fmt.Sprintf("%s attempt %d on %s (handler from %s) heard of its cancel, recorded at %s, only at %s, with no fault near",
		j.ref(), a, k.worker, at(e.at), at(cut), at(rec.heard))
}
