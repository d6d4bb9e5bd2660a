package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rqgo/rqgo"
)

// Flow control: two queues of their own, which every worker serves after
// its other queues, so that the whole fleet competes for their slots:
//
//   - the capped queue, with Limits{Concurrency: cfg.CapConcurrency};
//   - the keyed queue, with Limits{KeyConcurrency: cfg.KeyConcurrency}, whose
//     jobs have one of cfg.LimitKeys limit keys (rqgo.LimitKey). Two jobs in
//     five have the first key, so its jobs are parked in every wave.
//
// cfg.CappedJobs jobs of each are placed evenly among the plain jobs (job k
// with the wave of plain job k×Jobs/CappedJobs), so every fault strikes
// them. A job works 10 to 99 ms, or 2.5 leases (one in 30: its lease is
// renewed under the cap), or, every other one of the capped queue, not at
// all; one in ten fails at its first attempt and is retried.
//
// A checker samples both queues throughout (startCapChecker), and the
// keyed queue is paused for cfg.PauseFor at 75% of the faults, while
// pauseJobs more of its jobs are enqueued (pauseSpell).
const (
	capQueueName = "chaos-capped"
	keyQueueName = "chaos-keyed"
)

// capJob is one job of the capped or the keyed queue.
type capJob struct {
	id   string
	q    *rqgo.Queue
	key  string // its limit key; "" on the capped queue
	n    int    // args.N: its number in its queue
	ms   int
	fail string // failOnce or ""
}

func (j *capJob) ref() string { return j.q.Name() + ":" + j.id }

func limitKeyName(k int) string { return fmt.Sprintf("tenant-%02d", k) }

// isCapID says whether id is the id of a job of the capped or keyed queue.
func isCapID(id string) bool {
	return strings.HasPrefix(id, "capped-") || strings.HasPrefix(id, "keyed-")
}

// newCapJob plans job n of queue q: its key (on the keyed queue), work and
// failure.
func (h *harness) newCapJob(q *rqgo.Queue, n int) *capJob {
	j := &capJob{q: q, n: n}
	if q == h.capQ {
		j.id = fmt.Sprintf("capped-%05d", n)
	} else {
		j.id = fmt.Sprintf("keyed-%05d", n)
		k := 0
		if n%5 >= 2 && h.cfg.LimitKeys > 1 {
			k = 1 + (n/5*3+n%5)%(h.cfg.LimitKeys-1)
		}
		j.key = limitKeyName(k)
	}
	switch {
	case n%30 == 15:
		j.ms = int(h.cfg.Lease.Milliseconds() * 5 / 2)
	case q == h.capQ && n%2 == 0:
		// None: its handler returns within a round trip, so the workers
		// take capped jobs ahead (see dequeue.lua) and start them in the
		// slots of those that end.
		j.ms = 0
	default:
		j.ms = 10 + (n*37)%90
	}
	if n%10 == 3 {
		j.fail = failOnce
	}
	h.capJobs[j.id] = j
	h.capList = append(h.capList, j)
	return j
}

// planCaps sets up the two queues' handles, lays out their jobs among the
// plain jobs' waves, and plans the keyed jobs enqueued while the keyed
// queue is paused. The jobs are only read after.
func (h *harness) planCaps() {
	h.capQ, h.keyQ = rqgo.NewQueue(capQueueName, h.rdb), rqgo.NewQueue(keyQueueName, h.rdb)
	h.capJobs = map[string]*capJob{}
	h.capAt = map[int][]*capJob{}
	for n := range h.cfg.CappedJobs {
		at := n * h.cfg.Jobs / h.cfg.CappedJobs
		h.capAt[at] = append(h.capAt[at], h.newCapJob(h.capQ, n), h.newCapJob(h.keyQ, n))
	}
	for n := range pauseJobs {
		h.pauseBatch = append(h.pauseBatch, h.newCapJob(h.keyQ, h.cfg.CappedJobs+n))
	}
}

// setLimits gives the two queues their limits, before any job is enqueued.
func (h *harness) setLimits() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.capQ.SetLimits(ctx, rqgo.Limits{Concurrency: h.cfg.CapConcurrency}); err != nil {
		return err
	}
	return h.keyQ.SetLimits(ctx, rqgo.Limits{KeyConcurrency: h.cfg.KeyConcurrency})
}

// capQueues are the names of the two queues, which every worker serves
// after its others.
func (h *harness) capQueues() []string { return []string{capQueueName, keyQueueName} }

// allQueues are every queue of the run's.
func (h *harness) allQueues() []string {
	return slices.Concat(h.queues, h.capQueues(), []string{cancelQueueName})
}

// enqueueCap enqueues one job of the capped or keyed queue, with its own id
// (tried again like a plain job's).
func (h *harness) enqueueCap(j *capJob) error {
	var opts []rqgo.EnqueueOption
	if j.key != "" {
		opts = append(opts, rqgo.LimitKey(j.key))
	}
	_, err := h.enqueueAs(j.q, j.id, args{N: j.n, MS: j.ms, Fail: j.fail}, opts...)
	return err
}

// capScript samples, at one instant of Redis's clock, the jobs of the two
// queues whose leases have not expired, less, in the capped queue, those
// still ahead of its Concurrency (fetched ahead, holding no slot: see
// dequeue.lua). It writes nothing, and runs while Redis is out of memory.
//
// KEYS[1] the capped queue's active zset, KEYS[2] the keyed queue's,
// KEYS[3] the keyed queue's parked zset, KEYS[4] the capped queue's ahead
// zset, KEYS[5..] the keyed queue's slots zsets, one per limit key; ARGV[1]
// the keyed queue's job key prefix.
//
// Returns {now_ms, capped ids, keyed ids, their limit keys (from the job
// hashes), per limit key the members of its slots zset whose lease has not
// expired, parked jobs, capped ids still ahead}.
var capScript = redis.NewScript(`#!lua flags=no-writes,allow-oom
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = '(' .. now
local keyed = redis.call('ZRANGEBYSCORE', KEYS[2], live, '+inf')
local keys = {}
for i, id in ipairs(keyed) do
  keys[i] = redis.call('HGET', ARGV[1] .. id, 'limit_key') or ''
end
local slots = {}
for i = 5, #KEYS do
  local held = {}
  for _, id in ipairs(redis.call('ZRANGE', KEYS[i], 0, -1)) do
    local d = tonumber(redis.call('ZSCORE', KEYS[2], id))
    if d and d > now then
      held[#held + 1] = id
    end
  end
  slots[#slots + 1] = held
end
local capped, ahead = {}, {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], live, '+inf')) do
  local a = tonumber(redis.call('ZSCORE', KEYS[4], id))
  if a and a > now then
    ahead[#ahead + 1] = id
  else
    capped[#capped + 1] = id
  end
end
return {now, capped, keyed, keys, slots, redis.call('ZCARD', KEYS[3]), ahead}
`)

// capStats is what the checker saw.
type capStats struct {
	samples, skipped             int
	capViolations, keyViolations int
	unslotted                    int // running keyed jobs missing from their key's slots
	peak, peakKey, peakParked    int
	peakAhead                    int      // most capped jobs ahead at a sample
	notes                        []string // the first violations
}

// startCapChecker samples the two queues every 10 ms with capScript until
// stop, which returns what it saw. A sample that fails (Redis down,
// stalled or the connection dropped) is skipped.
func (h *harness) startCapChecker() (stop func() capStats) {
	c := redis.NewClient(&redis.Options{Addr: h.redis.addr(), DialTimeout: 200 * time.Millisecond,
		ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond, MaxRetries: -1, PoolSize: 1})
	keys := []string{prefixKey(capQueueName, "active"), prefixKey(keyQueueName, "active"), prefixKey(keyQueueName, "parked"),
		prefixKey(capQueueName, "ahead")}
	for k := range h.cfg.LimitKeys {
		keys = append(keys, prefixKey(keyQueueName, "slots:"+limitKeyName(k)))
	}
	jobPrefix := prefixKey(keyQueueName, "job:")
	var st capStats
	note := func(format string, a ...any) {
		if len(st.notes) < 10 {
			st.notes = append(st.notes, fmt.Sprintf(format, a...))
		}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if h.redisDown.Load() {
				st.skipped++
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
			res, err := capScript.Run(ctx, c, keys, jobPrefix).Slice()
			cancel()
			if err != nil || len(res) != 7 {
				st.skipped++
				continue
			}
			st.samples++
			now, _ := res[0].(int64)
			at := fmt.Sprintf("%.3fs", time.UnixMilli(now).Sub(h.start).Seconds())
			capped, keyed, lks := strs(res[1]), strs(res[2]), strs(res[3])
			slotSets, _ := res[4].([]any)
			parked, _ := res[5].(int64)
			st.peak = max(st.peak, len(capped))
			st.peakAhead = max(st.peakAhead, len(strs(res[6])))
			st.peakParked = max(st.peakParked, int(parked))
			if len(capped) > h.cfg.CapConcurrency {
				st.capViolations++
				note("at %s (Redis clock) %d jobs of %s held unexpired leases, over its Concurrency %d: %v",
					at, len(capped), capQueueName, h.cfg.CapConcurrency, capped)
			}
			byKey := map[string][]string{}
			for i, id := range keyed {
				if i < len(lks) {
					byKey[lks[i]] = append(byKey[lks[i]], id)
				}
			}
			for k := range h.cfg.LimitKeys {
				key := limitKeyName(k)
				var slotted []string
				if k < len(slotSets) {
					slotted = strs(slotSets[k])
				}
				running := byKey[key]
				n := max(len(running), len(slotted))
				st.peakKey = max(st.peakKey, n)
				if n > h.cfg.KeyConcurrency {
					st.keyViolations++
					note("at %s (Redis clock) %d jobs of limit key %s of %s held unexpired leases (%d holding its slots), over its KeyConcurrency %d: %v",
						at, len(running), key, keyQueueName, len(slotted), h.cfg.KeyConcurrency, running)
				}
				for _, id := range running {
					if !slices.Contains(slotted, id) {
						st.unslotted++
						note("at %s (Redis clock) job %s of limit key %s of %s held an unexpired lease but not a slot of its key (slots %v)",
							at, id, key, keyQueueName, slotted)
					}
				}
				delete(byKey, key)
			}
			for key, ids := range byKey {
				st.unslotted += len(ids)
				note("at %s (Redis clock) jobs %v of %s held unexpired leases with limit key %q, none of the run's", at, ids, keyQueueName, key)
			}
		}
	})
	return func() capStats {
		close(done)
		wg.Wait()
		c.Close()
		return st
	}
}

// strs returns the strings of a script's array reply.
func strs(v any) []string {
	a, _ := v.([]any)
	out := make([]string, 0, len(a))
	for _, x := range a {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

// pauseWindow is the time the keyed queue was surely paused: from when a
// Pause call that succeeded returned until the first Resume call was sent.
type pauseWindow struct {
	from, to time.Time
	heldBack int // the queue's queued and parked jobs just before the Resume
	jobs     int // jobs enqueued while it was paused
}

// pauseJobs is how many keyed jobs are enqueued while the queue is paused.
const pauseJobs = 20

// startPause pauses the keyed queue at 75% of the faults for cfg.PauseFor,
// enqueues pauseJobs of its jobs meanwhile, and resumes it. Pause and
// Resume are tried again until they succeed (Redis may be down, stalled or
// full). stop waits for a spell that has begun to end, calls off one that
// has not, and returns the spell's error.
func (h *harness) startPause() (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- h.pauseSpell(ctx) }()
	return func() error {
		cancel()
		return <-errc
	}
}

func (h *harness) pauseSpell(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(time.Until(h.start.Add(h.cfg.Duration * 3 / 4))):
	}
	try := func(what string, f func(context.Context) error) error {
		deadline := time.Now().Add(time.Minute)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			err := f(ctx)
			cancel()
			if err == nil {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s %s: %w", what, keyQueueName, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if err := try("pause", h.keyQ.Pause); err != nil {
		return err
	}
	w := pauseWindow{from: time.Now()}
	h.logf("paused %s for %s", keyQueueName, h.cfg.PauseFor)
	for _, j := range h.pauseBatch {
		if err := h.enqueueCap(j); err != nil {
			return err
		}
		w.jobs++
	}
	time.Sleep(time.Until(w.from.Add(h.cfg.PauseFor)))
	if err := try("count the held back jobs of", func(ctx context.Context) error {
		c, err := h.keyQ.Counts(ctx)
		w.heldBack = int(c.Queued + c.Parked)
		return err
	}); err != nil {
		return err
	}
	w.to = time.Now()
	if err := try("resume", h.keyQ.Resume); err != nil {
		return err
	}
	h.logf("resumed %s (%d jobs held back)", keyQueueName, w.heldBack)
	h.mu.Lock()
	h.paused = append(h.paused, w)
	h.mu.Unlock()
	return nil
}

// checkCaps judges the capped and keyed queues' jobs. st is what the
// checker saw, runs the recorded executions.
//
//   - Caps: at no sample did more jobs of the capped queue hold unexpired
//     leases (their score in its active set above Redis's now) than its
//     Concurrency, nor more jobs of one limit key (by the job hashes'
//     limit_key, and by the key's slots zset) than KeyConcurrency, and
//     every keyed job that held one held its key's slot. A handler whose
//     lease expired may still run until its worker notices: it is not
//     counted. Both caps were reached at some sample, and some keyed job
//     was parked: the workload could have exceeded them.
//   - Pause: no attempt of a keyed job was started (dequeued: the Job's
//     StartedAt, Redis's clock, as the handler saw it, and the started_at
//     of its last attempt) strictly within the pause window, to the ms. A
//     job fetched before the pause may start its handler during it (held
//     by a worker for a free slot, or by a SIGSTOPped one): that counts as
//     started before.
//   - Every job ended, finished or failed, in the registry of its status,
//     none is left parked, and a run is repeated only for its planned retry
//     or when a fault explains it, as for a plain job.
func (h *harness) checkCaps(ctx context.Context, r *report, st capStats, runs map[string][]execution, problem func(string, ...any)) error {
	r.CapConcurrency, r.KeyConcurrency, r.LimitKeys = h.cfg.CapConcurrency, h.cfg.KeyConcurrency, h.cfg.LimitKeys
	r.CapSamples, r.CapSamplesSkipped = st.samples, st.skipped
	r.CapViolations, r.KeyCapViolations, r.Unslotted = st.capViolations, st.keyViolations, st.unslotted
	r.PeakRunning, r.PeakKeyRunning, r.PeakParked, r.PeakAhead = st.peak, st.peakKey, st.peakParked, st.peakAhead

	// Which registries of the two queues hold each job.
	where := map[string][]string{}
	regs := []string{"pending", "active", "scheduled", "finished", "failed", "canceled", "deferred", "parked"}
	var cmds []*redis.StringSliceCmd
	var parked []*redis.IntCmd
	if _, err := h.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, q := range h.capQueues() {
			cmds = append(cmds, p.LRange(ctx, prefixKey(q, "pending"), 0, -1))
			for _, reg := range regs[1:] {
				cmds = append(cmds, p.ZRange(ctx, prefixKey(q, reg), 0, -1))
			}
			parked = append(parked, p.ZCard(ctx, prefixKey(q, "parked")), p.ZCard(ctx, prefixKey(q, "parkkeys")))
		}
		for k := range h.cfg.LimitKeys {
			parked = append(parked, p.LLen(ctx, prefixKey(keyQueueName, "park:"+limitKeyName(k))))
		}
		return nil
	}); err != nil {
		return fmt.Errorf("reading the registries of the capped queues: %w", err)
	}
	for i, c := range cmds {
		q, reg := h.capQueues()[i/len(regs)], regs[i%len(regs)]
		for _, id := range c.Val() {
			where[id] = append(where[id], q+"/"+reg)
		}
	}
	for _, c := range parked {
		r.ParkedLeft += int(c.Val())
	}
	if r.ParkedLeft > 0 {
		problem("%d jobs or keys still parked in %s after the settle (parked, parkkeys and park lists)", r.ParkedLeft, keyQueueName)
	}
	for _, q := range []*rqgo.Queue{h.capQ, h.keyQ} {
		if p, err := q.Paused(ctx); err != nil {
			return err
		} else if p {
			problem("%s is still paused after the run", q.Name())
		}
	}

	hashes := make([]*redis.MapStringStringCmd, len(h.capList))
	for start := 0; start < len(h.capList); start += 1000 {
		end := min(start+1000, len(h.capList))
		if _, err := h.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := start; i < end; i++ {
				hashes[i] = p.HGetAll(ctx, jobKey(h.capList[i].q.Name(), h.capList[i].id))
			}
			return nil
		}); err != nil {
			return fmt.Errorf("reading the capped queues' jobs: %w", err)
		}
	}
	at := func(t time.Time) string { return fmt.Sprintf("%.3fs", t.Sub(h.start).Seconds()) }
	inPause := func(t time.Time) bool {
		ms := t.UnixMilli()
		for _, w := range h.paused {
			if ms > w.from.UnixMilli() && ms < w.to.UnixMilli() {
				return true
			}
		}
		return false
	}
	var again, whilePaused []string
	for i, j := range h.capList {
		if j.q == h.capQ {
			r.CapJobs++
		} else {
			r.KeyJobs++
		}
		hs, ex := hashes[i].Val(), runs[j.id]
		in := where[j.id]
		delete(where, j.id)
		status := hs["status"]
		switch {
		case len(hs) == 0:
			r.CapUnended++
			problem("capped job %s lost: its hash is gone (registries %v, %d runs)", j.ref(), in, len(ex))
		case status != string(rqgo.StatusFinished) && status != string(rqgo.StatusFailed):
			r.CapUnended++
			problem("capped job %s is %q after the settle (attempt %s, %d runs, registries %v), want finished or failed",
				j.ref(), status, hs["attempt"], len(ex), in)
		case len(in) != 1 || in[0] != j.q.Name()+"/"+status:
			problem("capped job %s is %s but in registries %v", j.ref(), status, in)
		}
		switch status {
		case string(rqgo.StatusFinished):
			r.CapFinished++
			if p := resultProblem(j.ref(), hs, ex); p != "" {
				problem("capped %s", p)
			}
		case string(rqgo.StatusFailed):
			r.CapFailed++
			r.FailedErrors[firstLine(hs["error"])]++
		}
		if len(hs) > 0 && hs["limit_key"] != j.key {
			problem("capped job %s has limit_key %q, want %q", j.ref(), hs["limit_key"], j.key)
		}
		if j.q == h.keyQ {
			for _, e := range ex {
				if inPause(e.dequeued) {
					r.StartsWhilePaused++
					whilePaused = append(whilePaused, fmt.Sprintf("%s attempt %d on %s dequeued at %s (handler at %s)",
						j.ref(), e.attempt, e.worker, at(e.dequeued), at(e.at)))
				}
			}
			if ms, err := strconv.ParseInt(hs["started_at"], 10, 64); err == nil && inPause(time.UnixMilli(ms)) &&
				!slices.ContainsFunc(ex, func(e execution) bool { return e.dequeued.UnixMilli() == ms }) {
				r.StartsWhilePaused++
				whilePaused = append(whilePaused, fmt.Sprintf("%s attempt %s started_at %s (no handler ran)", j.ref(), hs["attempt"], at(time.UnixMilli(ms))))
			}
		}
		retried := false
		for n := 0; n+1 < len(ex); n++ {
			if j.fail == failOnce && !retried && ex[n].attempt == 1 && ex[n+1].attempt > 1 {
				retried = true
				r.CapRetries++
				continue
			}
			r.CapRepeats++
			if !h.explained(ex[n], ex[n+1]) {
				r.Unexplained++
				again = append(again, fmt.Sprintf("%s attempt %d on %s (%s) at %s, again (attempt %d on %s) at %s",
					j.ref(), ex[n].attempt, ex[n].worker, h.roles[ex[n].worker], at(ex[n].at), ex[n+1].attempt, ex[n+1].worker, at(ex[n+1].at)))
			}
		}
	}
	for id, in := range where {
		problem("unknown job %s in %v", id, in)
	}
	for id := range runs {
		if isCapID(id) && h.capJobs[id] == nil {
			problem("execution of unknown capped job %s", id)
		}
	}
	for _, w := range h.paused {
		r.Pauses++
		r.PausedFor += w.to.Sub(w.from)
		r.HeldBack += w.heldBack
	}

	if r.CapViolations > 0 || r.KeyCapViolations > 0 || r.Unslotted > 0 {
		problem("%d samples over %s's Concurrency, %d over a KeyConcurrency of %s, %d running jobs without their key's slot: %s",
			r.CapViolations, capQueueName, r.KeyCapViolations, keyQueueName, r.Unslotted, strings.Join(firstFew(st.notes), "; "))
	}
	if r.PeakRunning < h.cfg.CapConcurrency || r.PeakKeyRunning < h.cfg.KeyConcurrency || r.PeakParked == 0 {
		problem("the caps were never reached (peak %d of %s's Concurrency %d, peak %d of a KeyConcurrency %d, peak %d parked, in %d samples): the cap check proved nothing",
			r.PeakRunning, capQueueName, h.cfg.CapConcurrency, r.PeakKeyRunning, h.cfg.KeyConcurrency, r.PeakParked, r.CapSamples)
	}
	if r.Pauses == 0 {
		problem("%s was never paused", keyQueueName)
	}
	if len(whilePaused) > 0 {
		problem("%d attempts of %s started while it was paused (%s): %s", len(whilePaused), keyQueueName,
			h.pauseSpan(), strings.Join(firstFew(whilePaused), "; "))
	}
	if len(again) > 0 {
		problem("%d capped job runs were repeated with no kill, pause, Redis restart, stall or connection drop near them: %s",
			len(again), strings.Join(firstFew(again), "; "))
	}
	return nil
}

// pauseSpan names the pause windows, for a message.
func (h *harness) pauseSpan() string {
	var s []string
	for _, w := range h.paused {
		s = append(s, fmt.Sprintf("%.3fs–%.3fs", w.from.Sub(h.start).Seconds(), w.to.Sub(h.start).Seconds()))
	}
	return strings.Join(s, ", ")
}
