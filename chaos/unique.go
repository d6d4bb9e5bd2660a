package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rqgo/rqgo"
)

// Unique jobs: cfg.UniqueKeys keys, key k in queue 2+k (round the queues),
// each with an enqueuer of its own that, throughout the faults, tries every
// UniqueEvery or so (at random, from half to one and a half times it) to
// enqueue the key's next job with rqgo.Unique(Key) and UntilEnded. Each job
// has its own id, so an enqueue whose reply was lost is tried again as a
// plain job's is; an enqueue refused with ErrDuplicate wrote nothing, and
// the next try uses the same id. Its handler works 2 to 26 ms, or half a
// lease (one job in 20), or 2.5 leases (one in 50); one job in five fails
// at its first attempt and is retried, holding its key through the retry.
type uniqueJob struct {
	id   string
	key  int
	n    int // args.N: numbers after the workflows'
	ms   int
	fail string // failOnce or ""
}

func uniqueKeyName(k int) string { return fmt.Sprintf("key-%02d", k) }

func uniqueJobID(k, seq int) string { return fmt.Sprintf("uniq-%02d-%05d", k, seq) }

// uniqueKeyOf returns the key of a unique job's id.
func uniqueKeyOf(id string) (int, bool) {
	s, ok := strings.CutPrefix(id, "uniq-")
	if !ok || len(s) != 8 || s[2] != '-' {
		return 0, false
	}
	k, err := strconv.Atoi(s[:2])
	return k, err == nil
}

// uniqueQueue is the queue of key k's jobs.
func (h *harness) uniqueQueue(k int) *rqgo.Queue { return h.qs[(2+k)%len(h.qs)] }

// planUnique returns job seq of key k.
func (h *harness) planUnique(k, seq int) *uniqueJob {
	j := &uniqueJob{id: uniqueJobID(k, seq), key: k, n: h.cfg.Jobs + len(h.flowJobs) + k*100_000 + seq}
	lease := int(h.cfg.Lease.Milliseconds())
	switch x := (seq*7 + k*3) % 100; {
	case x < 2:
		j.ms = lease * 5 / 2
	case x < 7:
		j.ms = lease / 2
	default:
		j.ms = 2 + (seq*13+k)%25
	}
	if (seq+k)%5 == 2 {
		j.fail = failOnce
	}
	return j
}

// startUnique starts the enqueuers of the unique keys. stop ends them,
// once the enqueue each has in hand is through, and returns the first
// error one met.
func (h *harness) startUnique() (stop func() error) {
	h.uniq = make([][]*uniqueJob, h.cfg.UniqueKeys)
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, h.cfg.UniqueKeys)
	var wg sync.WaitGroup
	for k := range h.cfg.UniqueKeys {
		wg.Go(func() { errs <- h.enqueueUniques(ctx, k) })
	}
	return func() error {
		cancel()
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				return err
			}
		}
		return nil
	}
}

// enqueueUniques is key k's enqueuer, until ctx ends. A duplicate must
// name the key's newest job as its holder, in a state that holds the key.
func (h *harness) enqueueUniques(ctx context.Context, k int) error {
	rnd := rand.New(rand.NewPCG(uint64(h.cfg.Seed), uint64(k)+1))
	q, key := h.uniqueQueue(k), uniqueKeyName(k)
	every := int64(h.cfg.UniqueEvery)
	for seq := 0; ; {
		j := h.planUnique(k, seq)
		holder, err := h.enqueueAs(q, j.id, args{N: j.n, MS: j.ms, Fail: j.fail}, rqgo.Unique(rqgo.UniqueOpts{Key: key}))
		dup := errors.Is(err, rqgo.ErrDuplicate)
		h.mu.Lock()
		h.uniqTries++
		switch {
		case err == nil:
			h.uniq[k] = append(h.uniq[k], j)
			seq++
		case dup:
			h.uniqDups++
			jobs := h.uniq[k]
			switch {
			case holder == nil || len(jobs) == 0 || holder.ID != jobs[len(jobs)-1].id:
				newest := "none"
				if len(jobs) > 0 {
					newest = jobs[len(jobs)-1].id
				}
				h.uniqHolder = append(h.uniqHolder, fmt.Sprintf("%s at %.3fs: %v, but the key's newest job is %s",
					j.id, time.Since(h.start).Seconds(), err, newest))
			case holder.Status != rqgo.StatusQueued && holder.Status != rqgo.StatusScheduled && holder.Status != rqgo.StatusStarted:
				h.uniqHolder = append(h.uniqHolder, fmt.Sprintf("%s at %.3fs: %v, a holder that has ended",
					j.id, time.Since(h.start).Seconds(), err))
			}
		}
		h.mu.Unlock()
		if err != nil && !dup {
			return fmt.Errorf("unique key %s: %w", key, err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Duration(every/2 + rnd.Int64N(every))):
		}
	}
}

// runKey names one run of a handler.
type runKey struct {
	id      string
	attempt int
	worker  string
}

// ends reads every worker's end file: when each run's handler returned.
func (h *harness) ends() (map[runKey]time.Time, error) {
	files, err := filepath.Glob(filepath.Join(h.dir, "w*.end"))
	if err != nil {
		return nil, err
	}
	out := map[runKey]time.Time{}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) != 4 {
				continue // a write cut short by SIGKILL: the handler had not returned
			}
			a, err1 := strconv.Atoi(fs[1])
			ms, err2 := strconv.ParseInt(fs[3], 10, 64)
			if err1 != nil || err2 != nil {
				continue
			}
			out[runKey{fs[0], a, fs[2]}] = time.UnixMilli(ms)
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

var (
	logTime    = regexp.MustCompile(`^time=(\S+) `)
	logJob     = regexp.MustCompile(` job_id=(\S+)`)
	logAttempt = regexp.MustCompile(` attempt=(\d+)`)
)

// leaseLogs reads from the workers' logs, for the unique jobs, the runs
// whose outcome Redis did not take (refused for a stale token, or not
// taken by a try sent again, which may mean an earlier try took it), and
// when a worker gave up a lease and canceled the handler (by job and
// worker: that line names no attempt).
func (h *harness) leaseLogs() (notTaken map[runKey]bool, canceled map[[2]string][]time.Time, err error) {
	logs, err := filepath.Glob(filepath.Join(h.dir, "w*.log"))
	if err != nil {
		return nil, nil, err
	}
	notTaken, canceled = map[runKey]bool{}, map[[2]string][]time.Time{}
	for _, name := range logs {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, nil, err
		}
		worker := strings.TrimSuffix(filepath.Base(name), ".log")
		for line := range bytes.Lines(b) {
			if !bytes.Contains(line, []byte("job_id=uniq-")) {
				continue
			}
			s := string(line)
			job := logJob.FindStringSubmatch(s)
			if job == nil {
				continue
			}
			switch {
			case strings.Contains(s, `msg="lease lost before the outcome was recorded`),
				strings.Contains(s, `msg="outcome not recorded by this try`):
				if m := logAttempt.FindStringSubmatch(s); m != nil {
					a, _ := strconv.Atoi(m[1])
					notTaken[runKey{job[1], a, worker}] = true
				}
			case strings.Contains(s, `msg="lease lost; handler canceled"`):
				if m := logTime.FindStringSubmatch(s); m != nil {
					if t, err := time.Parse(time.RFC3339Nano, m[1]); err == nil {
						canceled[[2]string{job[1], worker}] = append(canceled[[2]string{job[1], worker}], t)
					}
				}
			}
		}
	}
	return notTaken, canceled, nil
}

// span is the time a run of a unique job held a valid lease, [from, to).
type span struct {
	job      *uniqueJob
	e        execution
	from, to time.Time
	how      string // how to was found
}

// farFuture stands for a run's end that nothing bounds.
var farFuture = time.UnixMilli(1 << 50)

// leaseSpan returns when run e of job j held a valid lease: from the start
// of its handler until it returned, when Redis took its outcome. Otherwise
// (Redis refused or did not take the outcome, the worker gave the lease up,
// or the handler never returned) until the first of: the handler's return,
// the worker's SIGKILL, the worker's cancel for a lost lease, the start of
// a later attempt of the job (each dequeue replaces the attempt token, so
// the lease was gone by then), and the job's end (ended_at).
func (h *harness) leaseSpan(j *uniqueJob, e execution, ex []execution, ended time.Time,
	ends map[runKey]time.Time, notTaken map[runKey]bool, canceled map[[2]string][]time.Time) span {
	rk := runKey{j.id, e.attempt, e.worker}
	end, returned := ends[rk]
	var lost time.Time
	for _, t := range canceled[[2]string{j.id, e.worker}] {
		if !t.Before(e.at) && (!returned || !t.After(end)) && (lost.IsZero() || t.Before(lost)) {
			lost = t
		}
	}
	if returned && !notTaken[rk] && lost.IsZero() {
		return span{j, e, e.at, end, "outcome taken"}
	}
	sp := span{job: j, e: e, from: e.at, to: farFuture, how: "never returned"}
	if returned {
		sp.to, sp.how = end, "returned, outcome not taken"
	}
	cut := func(t time.Time, how string) {
		if t.Before(sp.to) {
			sp.to, sp.how = t, how
		}
	}
	for _, w := range h.hits[e.worker] {
		if w.what == "SIGKILL" && !w.from.Before(e.at) {
			cut(w.from, "worker killed")
		}
	}
	if !lost.IsZero() {
		cut(lost, "lease lost, handler canceled")
	}
	for _, f := range ex {
		if f.attempt > e.attempt {
			cut(f.at, fmt.Sprintf("attempt %d started", f.attempt))
		}
	}
	if !ended.IsZero() {
		cut(ended, "job ended")
	}
	return sp
}

// checkUnique judges the unique jobs. where holds the registries of every
// job (the unique jobs' are taken out), runs the recorded executions.
//
//   - No overlap: for every key, no two runs of different jobs of the key
//     held a valid lease (see leaseSpan) at the same time, to the ms; and
//     each job was created (created_at) no earlier than the key's job
//     before it ended (ended_at), both by Redis's clock.
//   - Every created job ended, finished or failed, in the registry of its
//     status, holding its key; a finished one holds the result of its last
//     attempt; a run is repeated only for its planned retry or when a fault
//     explains it, as for a plain job.
//   - Nothing stuck: at the end no key is held by a job that has ended or
//     is gone, every key got at least one job, and every duplicate named
//     the key's newest job as its holder, in a state that holds the key.
func (h *harness) checkUnique(ctx context.Context, r *report, where map[string][]string, runs map[string][]execution,
	problem func(string, ...any)) error {
	r.UniqueKeys = h.cfg.UniqueKeys
	r.UniqueTries, r.UniqueDups = h.uniqTries, h.uniqDups
	r.UniqueBadHolders = len(h.uniqHolder)
	var jobs []*uniqueJob
	for _, js := range h.uniq {
		jobs = append(jobs, js...)
	}
	r.UniqueJobs = len(jobs)
	hashes := make([]*redis.MapStringStringCmd, len(jobs))
	for start := 0; start < len(jobs); start += 1000 {
		end := min(start+1000, len(jobs))
		if _, err := h.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := start; i < end; i++ {
				hashes[i] = p.HGetAll(ctx, jobKey(h.uniqueQueue(jobs[i].key).Name(), jobs[i].id))
			}
			return nil
		}); err != nil {
			return fmt.Errorf("reading unique jobs: %w", err)
		}
	}
	hash := map[string]map[string]string{}
	for i, j := range jobs {
		hash[j.id] = hashes[i].Val()
	}
	ends, err := h.ends()
	if err != nil {
		return fmt.Errorf("reading the ends of executions: %w", err)
	}
	notTaken, canceled, err := h.leaseLogs()
	if err != nil {
		return fmt.Errorf("reading the workers' logs: %w", err)
	}
	ms := func(s string) time.Time {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return time.Time{}
		}
		return time.UnixMilli(n)
	}
	at := func(t time.Time) string {
		if t.Equal(farFuture) {
			return "never"
		}
		return fmt.Sprintf("%.3fs", t.Sub(h.start).Seconds())
	}

	var overlaps, early, again []string
	for k, kjobs := range h.uniq {
		key := uniqueKeyName(k)
		qname := h.uniqueQueue(k).Name()
		if k == 0 || len(kjobs) < r.UniqueMinPerKey {
			r.UniqueMinPerKey = len(kjobs)
		}
		r.UniqueMaxPerKey = max(r.UniqueMaxPerKey, len(kjobs))
		if len(kjobs) == 0 {
			problem("unique key %s of %s: no job was created", key, qname)
		}
		var spans []span
		for m, j := range kjobs {
			hs, ex := hash[j.id], runs[j.id]
			in := where[j.id]
			delete(where, j.id)
			st := hs["status"]
			switch {
			case len(hs) == 0:
				r.UniqueUnended++
				problem("unique job %s:%s lost: its hash is gone (registries %v)", qname, j.id, in)
			case st != string(rqgo.StatusFinished) && st != string(rqgo.StatusFailed):
				r.UniqueUnended++
				problem("unique job %s:%s is %q after the settle (attempt %s, %d runs, registries %v), want finished or failed",
					qname, j.id, st, hs["attempt"], len(ex), in)
			case len(in) != 1 || in[0] != qname+"/"+st:
				problem("unique job %s:%s is %s but in registries %v", qname, j.id, st, in)
			}
			switch st {
			case string(rqgo.StatusFinished):
				r.UniqueFinished++
				if p := resultProblem(qname+":"+j.id, hs, ex); p != "" {
					problem("unique %s", p)
				}
			case string(rqgo.StatusFailed):
				r.UniqueFailed++
				r.FailedErrors[firstLine(hs["error"])]++
			}
			if len(hs) > 0 && hs["unique_key"] != key {
				problem("unique job %s:%s has unique_key %q, want %q", qname, j.id, hs["unique_key"], key)
			}
			ended := ms(hs["ended_at"])
			if m > 0 {
				prev := hash[kjobs[m-1].id]
				created, pend := ms(hs["created_at"]), ms(prev["ended_at"])
				if created.IsZero() || pend.IsZero() || created.Before(pend) {
					r.UniqueEarly++
					early = append(early, fmt.Sprintf("%s created at %s (created_at %q), its key's job %s %s ended at %s (ended_at %q)",
						j.id, at(created), hs["created_at"], kjobs[m-1].id, prev["status"], at(pend), prev["ended_at"]))
				}
			}
			// Repeats: the planned retry, or a fault near.
			retried := false
			for n := 0; n+1 < len(ex); n++ {
				if j.fail == failOnce && !retried && ex[n].attempt == 1 && ex[n+1].attempt > 1 {
					retried = true
					r.UniqueRetries++
					continue
				}
				r.UniqueRepeats++
				if !h.explained(ex[n], ex[n+1]) {
					r.Unexplained++
					again = append(again, fmt.Sprintf("%s:%s attempt %d on %s (%s) at %s, again (attempt %d on %s) at %s",
						qname, j.id, ex[n].attempt, ex[n].worker, h.roles[ex[n].worker], at(ex[n].at), ex[n+1].attempt, ex[n+1].worker, at(ex[n+1].at)))
				}
			}
			for _, e := range ex {
				sp := h.leaseSpan(j, e, ex, ended, ends, notTaken, canceled)
				r.UniqueRuns++
				if sp.how != "outcome taken" {
					r.UniqueNotTaken++
				}
				if sp.to.After(sp.from) {
					spans = append(spans, sp)
				}
			}
		}
		// Any two spans of different jobs of the key that intersect.
		slices.SortFunc(spans, func(a, b span) int { return cmp.Or(a.from.Compare(b.from), a.to.Compare(b.to)) })
		for a := range spans {
			for b := a + 1; b < len(spans) && spans[b].from.Before(spans[a].to); b++ {
				x, y := spans[a], spans[b]
				if x.job == y.job {
					continue
				}
				r.UniqueOverlaps++
				overlaps = append(overlaps, fmt.Sprintf("key %s of %s: %s attempt %d on %s (%s) held its lease %s–%s (%s; job %s, created_at %s, ended_at %s) and %s attempt %d on %s (%s) %s–%s (%s; job %s, created_at %s, ended_at %s)%s",
					key, qname,
					x.job.id, x.e.attempt, x.e.worker, h.roles[x.e.worker], at(x.from), at(x.to), x.how, hash[x.job.id]["status"], hash[x.job.id]["created_at"], hash[x.job.id]["ended_at"],
					y.job.id, y.e.attempt, y.e.worker, h.roles[y.e.worker], at(y.from), at(y.to), y.how, hash[y.job.id]["status"], hash[y.job.id]["created_at"], hash[y.job.id]["ended_at"],
					h.faultsNear(x.from, minTime(x.to, y.to))))
			}
		}

		// The key at the end: free, or held by a job that has not ended.
		holder, err := h.uniqueQueue(k).UniqueHolder(ctx, key)
		if err != nil {
			return err
		}
		if holder != "" {
			st, err := h.rdb.HGet(ctx, jobKey(qname, holder), "status").Result()
			if err != nil && err != redis.Nil {
				return err
			}
			switch {
			case !slices.ContainsFunc(kjobs, func(j *uniqueJob) bool { return j.id == holder }):
				r.UniqueStuck++
				problem("unique key %s of %s is held by %s (%q), which is none of the key's jobs", key, qname, holder, st)
			case st == "" || st == string(rqgo.StatusFinished) || st == string(rqgo.StatusFailed) || st == string(rqgo.StatusCanceled):
				r.UniqueStuck++
				problem("unique key %s of %s is still held by %s after the settle, which is %q", key, qname, holder, cmp.Or(st, "gone"))
			}
		}
	}
	for id, in := range where {
		if _, ok := uniqueKeyOf(id); ok {
			problem("unique job %s in %v was never created by the enqueuer (an enqueue it took as refused wrote it)", id, in)
			delete(where, id)
		}
	}
	created := map[string]bool{}
	for _, j := range jobs {
		created[j.id] = true
	}
	for id := range runs {
		if _, ok := uniqueKeyOf(id); ok && !created[id] {
			problem("execution of unique job %s, which the enqueuer never created", id)
		}
	}
	if r.UniqueOverlaps > 0 {
		problem("%d pairs of runs of different jobs of one unique key held valid leases at once: %s", r.UniqueOverlaps, strings.Join(firstFew(overlaps), "; "))
	}
	if len(early) > 0 {
		problem("%d unique jobs were created before their key's previous job had ended: %s", len(early), strings.Join(firstFew(early), "; "))
	}
	if len(h.uniqHolder) > 0 {
		problem("%d duplicates named a wrong holder: %s", len(h.uniqHolder), strings.Join(firstFew(h.uniqHolder), "; "))
	}
	if len(again) > 0 {
		problem("%d unique job runs were repeated with no kill, pause, Redis restart, stall or connection drop near them: %s",
			len(again), strings.Join(firstFew(again), "; "))
	}
	return nil
}

// faultsNear names the faults that struck between from and to, for a
// message.
func (h *harness) faultsNear(from, to time.Time) string {
	var s []string
	for worker, ws := range h.hits {
		for _, w := range ws {
			if !w.to.Before(from.Add(-h.cfg.Lease)) && !w.from.After(to) {
				s = append(s, fmt.Sprintf("%s of %s at %.3fs", w.what, worker, w.from.Sub(h.start).Seconds()))
			}
		}
	}
	for _, w := range slices.Concat(h.windows, h.fulls) {
		if !w.to.Before(from.Add(-h.cfg.Lease)) && !w.from.After(to) {
			s = append(s, fmt.Sprintf("%s %.3fs–%.3fs", w.what, w.from.Sub(h.start).Seconds(), w.to.Sub(h.start).Seconds()))
		}
	}
	if len(s) == 0 {
		return ", no fault near"
	}
	slices.Sort(s)
	return ", near " + strings.Join(s, ", ")
}
