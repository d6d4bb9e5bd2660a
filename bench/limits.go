package main

// Flow control (-limits): what a queue's Limits cost in processing rate,
// and whether they hold. rqgo alone: asynq has no such limits.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo"
)

// The worker setups of the flow-control runs.
const (
	// fleetWorkers workers of fleetConcurrency each serve the queue with a
	// Concurrency limit and the rated queue, as separate processes would.
	fleetWorkers     = 4
	fleetConcurrency = 10
	// queueConcurrency is the Concurrency limit of the capped runs, and the
	// concurrency of the one unlimited worker they are compared with, which
	// also serves the KeyConcurrency runs.
	queueConcurrency = 20
	// keyConcurrency is the KeyConcurrency limit of the keyed runs.
	keyConcurrency = 2
	// ratePer is the Per of the rated runs, and the width of the sliding
	// window their starts are counted in.
	ratePer = time.Second
)

// Targets of the flow-control runs.
const (
	capTarget    = 0.90 // Concurrency 20 over 4×10 workers ÷ one unlimited worker of 20
	keyTarget    = 0.70 // KeyConcurrency 2 ÷ one unlimited worker of 20
	rateTolerant = 0.02 // starts in the rate window, within this of Rate × window
)

// flowSpec is one processing run: its workers, the queue's limits and
// whether its jobs carry limit keys.
type flowSpec struct {
	name          string
	workers, conc int
	limits        rqgo.Limits
	keys          int    // jobs spread round-robin over this many limit keys; 0: none
	tag           string // names its CPU profile (-cpuprofile)
}

// flowResult is one processing run of a flowSpec.
type flowResult struct {
	rate    float64 // jobs/s, workers' start to the last handler
	peak    int64   // most handlers running at once, over all workers
	keyPeak int64   // most handlers of one limit key running at once
	// gap is the longest time between two handler starts (or from the
	// workers' start to the first): a worker fleet that stops taking jobs
	// it may start shows here.
	gap time.Duration
	// done is how many jobs ran; fewer than asked when the run timed out.
	done int64
	work flowWork
}

// flowWork is what the workers asked of Redis during a run, per job.
type flowWork struct {
	trips      float64 // round trips the workers' clients sent
	dequeues   float64 // dequeue.lua calls
	perDequeue float64 // jobs per dequeue.lua call (not per job)
	empty      float64 // dequeue.lua calls that handed out no job
	heldFull   float64 // dequeue.lua calls that answered hold 2 (Concurrency full)
	heldRate   float64 // dequeue.lua calls that answered hold 3 (Rate spent)
	redisCalls float64 // commands Redis ran (commandstats, scripts' inner calls too)
	redisUsec  float64 // Redis server CPU time (INFO cpu), µs
	workerUsec float64 // this process's CPU time (the workers, the handlers and the bench), µs
	publishes  float64 // PUBLISH calls (commandstats; the "go" messages among them)
	byCmd      map[string]cmdStat
}

// rateResult is one run of the rated queue.
type rateResult struct {
	inWindow    int           // starts (started_at, Redis's clock) in the first -rate-for
	redisMost   int           // most starts (started_at) in any closed window of ratePer
	localMost   int           // the same by the handlers' time.Now()
	localBound  int           // what localMost may reach: the bound for ratePer plus the start jitter
	jitter      time.Duration // spread of (handler's time.Now() − started_at): max − min
	jitter99    time.Duration // its 99th percentile above the least
	work        flowWork
	startsTotal int
	// span is from the first start to the last (started_at): short of
	// -rate-for when the workers stopped starting jobs that were ready.
	span time.Duration
}

// scriptCounter is a go-redis hook that counts the round trips of the
// workers' clients and their dequeue.lua calls and replies: how many jobs
// each handed out and whether it held the queue back.
type scriptCounter struct {
	trips, dequeues, dequeued, empty atomic.Int64
	holds                            [4]atomic.Int64 // by dequeue.lua's hold reason
}

func (c *scriptCounter) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return next(ctx, network, addr)
	}
}

func (c *scriptCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.trips.Add(1)
		err := next(ctx, cmd)
		c.count(cmd)
		return err
	}
}

func (c *scriptCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.trips.Add(1)
		err := next(ctx, cmds)
		for _, cmd := range cmds {
			c.count(cmd)
		}
		return err
	}
}

// dequeueReplyHead and dequeueReplyJob are the lengths of dequeue.lua's
// reply head (next_ms, now_ms, left, active, hold, hold_ms) and of each job
// in it (see the script's header).
const (
	dequeueReplyHead = 6
	dequeueReplyJob  = 20
)

// count looks at one answered command: a dequeue.lua call is an EVALSHA
// (or EVAL) of 6 keys whose fourth is the queue's token counter, :seq.
func (c *scriptCounter) count(cmd redis.Cmder) {
	a := cmd.Args()
	if len(a) < 9 || cmd.Err() != nil {
		return
	}
	if name, _ := a[0].(string); !strings.EqualFold(name, "evalsha") && !strings.EqualFold(name, "eval") {
		return
	}
	if nk, _ := a[2].(int); nk != 6 {
		return
	}
	if k, _ := a[6].(string); !strings.HasSuffix(k, ":seq") {
		return
	}
	// The library may wrap its *redis.Cmd (to turn go-redis's retries off).
	v, ok := cmd.(interface{ Val() any })
	if !ok {
		return
	}
	res, ok := v.Val().([]any)
	if !ok || len(res) < dequeueReplyHead {
		return
	}
	c.dequeues.Add(1)
	n := int64((len(res) - dequeueReplyHead) / dequeueReplyJob)
	c.dequeued.Add(n)
	if n == 0 {
		c.empty.Add(1)
	}
	if h, _ := res[4].(int64); h > 0 && h < int64(len(c.holds)) {
		c.holds[h].Add(1)
	}
}

// startFleet starts n workers of concurrency conc on the bench queue, each
// with its own client carrying count, whose handler calls handle with the
// job, with default options otherwise. stop shuts them all down and
// returns once they have.
func (e *env) startFleet(n, conc int, count *scriptCounter, handle func(*rqgo.Job)) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, n)
	clients := make([]*redis.Client, n)
	for i := range n {
		rdb := redis.NewClient(e.opt)
		rdb.AddHook(count)
		clients[i] = rdb
		w := rqgo.NewWorker(rdb, rqgo.WorkerOptions{
			Queues:      []string{benchQueue},
			Concurrency: conc,
			Prefix:      rqgoPrefix,
			Logger:      slog.New(slog.DiscardHandler),
		})
		w.Register("noop", func(ctx context.Context, j *rqgo.Job) (any, error) {
			handle(j)
			return nil, nil
		})
		go func() { done <- w.Run(ctx) }()
	}
	return func() error {
		cancel()
		var errs []error
		for range n {
			if err := <-done; err != nil {
				errs = append(errs, fmt.Errorf("rqgo worker: %w", err))
			}
		}
		for _, c := range clients {
			c.Close()
		}
		return errors.Join(errs...)
	}
}

// preloadLimited sets the queue's limits, then enqueues n no-op jobs with
// EnqueueMany, spread round-robin over keys limit keys (none when 0).
func preloadLimited(ctx context.Context, rdb redis.UniversalClient, n, keys int, l rqgo.Limits) error {
	q := rqgo.NewQueue(benchQueue, rdb, rqgo.WithPrefix(rqgoPrefix))
	if err := q.SetLimits(ctx, l); err != nil {
		return err
	}
	const chunk = 5000
	reqs := make([]rqgo.EnqueueRequest, 0, chunk)
	for lo := 0; lo < n; lo += chunk {
		reqs = reqs[:0]
		for i := lo; i < min(lo+chunk, n); i++ {
			r := rqgo.EnqueueRequest{Func: "noop", Args: json.RawMessage(noopPayload(i))}
			if keys > 0 {
				r.Options = []rqgo.EnqueueOption{rqgo.LimitKey(limitKey(i % keys))}
			}
			reqs = append(reqs, r)
		}
		if _, err := q.EnqueueMany(ctx, reqs); err != nil {
			return fmt.Errorf("preload: %w", err)
		}
	}
	return nil
}

func limitKey(i int) string { return "k" + strconv.Itoa(i) }

// keyIndex is limitKey's inverse, -1 for another key.
func keyIndex(k string) int {
	i, err := strconv.Atoi(strings.TrimPrefix(k, "k"))
	if err != nil || !strings.HasPrefix(k, "k") {
		return -1
	}
	return i
}

// storeMax raises m to v if v is higher.
func storeMax(m *atomic.Int64, v int64) {
	for {
		old := m.Load()
		if v <= old || m.CompareAndSwap(old, v) {
			return
		}
	}
}

// snapshot is the server-wide figures a run's Redis work is the difference of.
type snapshot struct {
	stats map[string]cmdStat
	cpu   float64
	local time.Duration // processCPU
}

func takeSnapshot(ctx context.Context, rdb redis.UniversalClient) (snapshot, error) {
	stats, err := commandStats(ctx, rdb)
	if err != nil {
		return snapshot{}, err
	}
	cpu, err := redisCPU(ctx, rdb)
	return snapshot{stats, cpu, processCPU()}, err
}

// work is what the workers asked of Redis between s0 and s1, per job of n.
func work(s0, s1 snapshot, c *scriptCounter, n int) flowWork {
	fn := float64(n)
	w := flowWork{
		trips:      float64(c.trips.Load()) / fn,
		dequeues:   float64(c.dequeues.Load()) / fn,
		empty:      float64(c.empty.Load()) / fn,
		heldFull:   float64(c.holds[2].Load()) / fn,
		heldRate:   float64(c.holds[3].Load()) / fn,
		redisUsec:  (s1.cpu - s0.cpu) * 1e6 / fn,
		workerUsec: float64((s1.local - s0.local).Microseconds()) / fn,
		byCmd:      diffStats(s0.stats, s1.stats),
	}
	if d := c.dequeues.Load(); d > 0 {
		w.perDequeue = float64(c.dequeued.Load()) / float64(d)
	}
	delete(w.byCmd, "info") // the harness's own
	for _, st := range w.byCmd {
		w.redisCalls += float64(st.calls)
	}
	w.redisCalls /= fn
	w.publishes = float64(w.byCmd["publish"].calls) / fn
	return w
}

// flowProcess preloads n jobs for spec (not timed), then times its workers
// from their start until the handler has run n times. The handler counts
// how many handlers run at once, overall and per limit key.
// With profile and -cpuprofile, it writes a CPU profile of the run to
// -cpuprofile's file with spec.tag before its extension.
func (e *env) flowProcess(ctx context.Context, spec flowSpec, n int, profile bool) (flowResult, error) {
	var res flowResult
	rdb, _ := e.client()
	defer rdb.Close()
	defer cleanup(ctx, rdb, rqgoSystem.keys)
	if err := preloadLimited(ctx, rdb, n, spec.keys, spec.limits); err != nil {
		return res, err
	}
	var (
		count, running, peak, keyPeak atomic.Int64
		last, gap                     atomic.Int64 // Unix ns of the latest start; the longest wait
		perKey                        = make([]atomic.Int64, spec.keys)
		badKey                        atomic.Value
		all                           = make(chan struct{})
	)
	handle := func(j *rqgo.Job) {
		now := time.Now().UnixNano()
		storeMax(&gap, now-last.Swap(now))
		storeMax(&peak, running.Add(1))
		var k *atomic.Int64
		if spec.keys > 0 {
			if i := keyIndex(j.LimitKey); i >= 0 && i < len(perKey) {
				k = &perKey[i]
				storeMax(&keyPeak, k.Add(1))
			} else {
				badKey.Store(j.LimitKey)
			}
		}
		if e.cfg.jobTime > 0 {
			time.Sleep(e.cfg.jobTime) // a call to some service
		}
		if k != nil {
			k.Add(-1)
		}
		running.Add(-1)
		if count.Add(1) == int64(n) {
			close(all)
		}
	}
	s0, err := takeSnapshot(ctx, rdb)
	if err != nil {
		return res, err
	}
	sc := &scriptCounter{}
	file := ""
	if profile {
		file = profileName(e.cfg.cpuprofile, spec.tag)
	}
	endProfile, err := startProfile(file)
	if err != nil {
		return res, err
	}
	start := time.Now()
	last.Store(start.UnixNano())
	stop := e.startFleet(spec.workers, spec.conc, sc, handle)
	timeout := time.NewTimer(e.cfg.timeout)
	defer timeout.Stop()
	select {
	case <-all:
	case <-timeout.C:
	}
	elapsed := time.Since(start)
	endProfile()
	if err := stop(); err != nil {
		return res, err
	}
	res.done = count.Load()
	if got := res.done; got > int64(n) {
		fmt.Fprintf(os.Stderr, "warning: %s ran %d handlers for %d jobs\n", spec.name, got, n)
	}
	if k, ok := badKey.Load().(string); ok {
		return res, fmt.Errorf("%s: a job came with limit key %q, not one of those enqueued", spec.name, k)
	}
	s1, err := takeSnapshot(ctx, rdb)
	if err != nil {
		return res, err
	}
	res.rate = float64(min(res.done, int64(n))) / elapsed.Seconds()
	res.peak, res.keyPeak = peak.Load(), keyPeak.Load()
	res.gap = time.Duration(gap.Load())
	if res.done < int64(n) {
		// Timed out: the wait since the last start counts too.
		res.gap = max(res.gap, time.Duration(start.Add(elapsed).UnixNano()-last.Load()))
	}
	res.work = work(s0, s1, sc, int(max(res.done, 1)))
	return res, nil
}

// flowRate preloads -rate-jobs jobs on a queue of Rate -rate per second and
// lets the fleet run them until -rate-for has passed since the first start.
// Each attempt's start is the job's started_at field, which dequeue.lua
// writes from Redis's clock (Unix ms) in the same step as it spends the
// Rate, so it is the time the limit counts; the handler's time.Now() is
// kept too, to show the jitter a process clock adds.
func (e *env) flowRate(ctx context.Context) (rateResult, error) {
	var res rateResult
	rdb, _ := e.client()
	defer rdb.Close()
	defer cleanup(ctx, rdb, rqgoSystem.keys)
	n := e.cfg.rateJobs
	if err := preloadLimited(ctx, rdb, n, 0, rqgo.Limits{Rate: e.cfg.rate, Per: ratePer}); err != nil {
		return res, err
	}
	type start struct {
		id       string
		redisMs  int64 // Job.StartedAt, as the worker read it from the dequeue
		localNs  int64 // the handler's time.Now()
		recorded bool
	}
	var (
		starts = make([]start, n)
		next   atomic.Int64
		first  = make(chan time.Time, 1)
		all    = make(chan struct{})
	)
	handle := func(j *rqgo.Job) {
		now := time.Now()
		i := next.Add(1) - 1
		if i >= int64(n) {
			return
		}
		starts[i] = start{j.ID, j.StartedAt.UnixMilli(), now.UnixNano(), true}
		if i == 0 {
			first <- now
		}
		if i == int64(n)-1 {
			close(all)
		}
	}
	s0, err := takeSnapshot(ctx, rdb)
	if err != nil {
		return res, err
	}
	sc := &scriptCounter{}
	stop := e.startFleet(fleetWorkers, fleetConcurrency, sc, handle)
	var t0 time.Time
	select {
	case t0 = <-first:
	case <-time.After(e.cfg.timeout):
		stop()
		return res, fmt.Errorf("rate: no job started after %s: %w", e.cfg.timeout, errTimeout)
	}
	// Run past the window by half a second: Redis's clock and this
	// process's may differ by a little, and the window is counted on
	// Redis's.
	ranOut := false
	select {
	case <-time.After(time.Until(t0.Add(e.cfg.rateFor + 500*time.Millisecond))):
	case <-all:
		ranOut = true
	}
	if err := stop(); err != nil {
		return res, err
	}
	got := int(min(next.Load(), int64(n)))
	if ranOut {
		return res, fmt.Errorf("rate: all %d jobs started within %s of the first: the rate did not bind (raise -rate-jobs)", n, e.cfg.rateFor+500*time.Millisecond)
	}
	s1, err := takeSnapshot(ctx, rdb)
	if err != nil {
		return res, err
	}
	starts = starts[:got]
	for i, s := range starts {
		if !s.recorded {
			return res, fmt.Errorf("rate: start %d of %d was not recorded", i, got)
		}
	}

	// The authoritative start times: each job's started_at hash field.
	redisMs := make([]int64, got)
	const chunk = 1000
	for lo := 0; lo < got; lo += chunk {
		hi := min(lo+chunk, got)
		cmds := make([]*redis.StringCmd, hi-lo)
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := lo; i < hi; i++ {
				cmds[i-lo] = p.HGet(ctx, rqgoPrefix+":{"+benchQueue+"}:job:"+starts[i].id, "started_at")
			}
			return nil
		})
		if err != nil {
			return res, fmt.Errorf("rate: read started_at: %w", err)
		}
		for i, c := range cmds {
			v, err := strconv.ParseInt(c.Val(), 10, 64)
			if err != nil {
				return res, fmt.Errorf("rate: job %s: started_at %q: %v", starts[lo+i].id, c.Val(), err)
			}
			if v != starts[lo+i].redisMs {
				return res, fmt.Errorf("rate: job %s: started_at %d in Redis, %d in its handler's Job", starts[lo+i].id, v, starts[lo+i].redisMs)
			}
			redisMs[lo+i] = v
		}
	}
	localNs := make([]int64, got)
	lag := make([]time.Duration, got)
	for i, s := range starts {
		localNs[i] = s.localNs
		lag[i] = time.Duration(s.localNs - s.redisMs*int64(time.Millisecond))
	}
	slices.Sort(redisMs)
	slices.Sort(localNs)
	slices.Sort(lag)

	windowMs := e.cfg.rateFor.Milliseconds()
	end, _ := slices.BinarySearch(redisMs, redisMs[0]+windowMs)
	res.inWindow = end
	res.startsTotal = got
	res.span = time.Duration(redisMs[got-1]-redisMs[0]) * time.Millisecond
	res.redisMost = mostInWindow(redisMs, ratePer.Milliseconds())
	res.localMost = mostInWindow(localNs, int64(ratePer))
	// A start's time.Now() comes after the dequeue's reply, by a lag that
	// varies by up to res.jitter from start to start (the reply's trip,
	// decoding, a goroutine's wait for a CPU, a job fetched ahead waiting
	// for a slot). So a window of ratePer on the process's clock holds
	// starts from at most ratePer + jitter of Redis's, and may see that
	// many: the bound of a window that much longer, no more.
	res.jitter = lag[got-1] - lag[0]
	res.jitter99 = percentile(lag, 0.99) - lag[0]
	res.localBound = rateBound(e.cfg.rate, ratePer, ratePer+res.jitter)
	res.work = work(s0, s1, sc, got)
	return res, nil
}

// mostInWindow returns the most of the sorted times ts that fall in one
// closed window [t, t+width], for any t, by a sweep of two pointers.
func mostInWindow(ts []int64, width int64) int {
	most, i := 0, 0
	for j := range ts {
		for ts[j]-ts[i] > width {
			i++
		}
		most = max(most, j-i+1)
	}
	return most
}

// rateBound is the most attempts a Rate of rate per per lets start within
// a closed window of the given width, as limits.go documents it: by GCRA
// starts are per/rate apart, with a burst tolerance of per/100, so the
// first and the n-th start are at least (n-1)·per/rate − per/100 apart.
// For a window of per that is rate + rate/100 + 1.
func rateBound(rate int, per, window time.Duration) int {
	return int(int64(rate)*int64(window+per/100)/int64(per)) + 1
}

// runLimits measures flow control, rqgo alone: each scenario -runs times,
// and prints the table. Limits broken (more handlers at once than the
// limit allows, more starts in a window than the Rate allows) fail it after
// the table is printed.
func runLimits(ctx context.Context, e *env) error {
	cfg := e.cfg
	began := time.Now()
	fmt.Printf("rqgo alone, default WorkerOptions; go-redis pool %d per worker\n", cfg.pool)
	kind := "no-op jobs"
	if cfg.jobTime > 0 {
		kind = fmt.Sprintf("jobs of %s (the handler sleeps)", cfg.jobTime)
	}
	fmt.Printf("sizes: %d runs; %d preloaded %s per processing run; %d limit keys; Rate %d/%s for %s on %d preloaded jobs\n\n",
		cfg.runs, cfg.jobs, kind, cfg.limitKeys, cfg.rate, ratePer, cfg.rateFor, cfg.rateJobs)
	progress := func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

	specs := []flowSpec{
		{name: fmt.Sprintf("1 worker × c=%d, no limits", queueConcurrency), workers: 1, conc: queueConcurrency, tag: "one"},
		// The same fleet without limits: what the fleet itself costs, apart
		// from the limit.
		{name: fmt.Sprintf("%d workers × c=%d, no limits", fleetWorkers, fleetConcurrency), workers: fleetWorkers, conc: fleetConcurrency, tag: "fleet"},
		{name: fmt.Sprintf("%d workers × c=%d, Concurrency %d", fleetWorkers, fleetConcurrency, queueConcurrency),
			workers: fleetWorkers, conc: fleetConcurrency, limits: rqgo.Limits{Concurrency: queueConcurrency}, tag: "capped"},
		{name: fmt.Sprintf("1 worker × c=%d, KeyConcurrency %d over %d keys", queueConcurrency, keyConcurrency, cfg.limitKeys),
			workers: 1, conc: queueConcurrency, limits: rqgo.Limits{KeyConcurrency: keyConcurrency}, keys: cfg.limitKeys, tag: "keyed"},
	}
	const (
		base = iota
		fleetBase
		capped
		keyed
	)
	results := make([][]flowResult, len(specs))
	var stalled []string
	var rates []rateResult
	some := cfg.figures != ""
	for r := range cfg.runs {
		for i, spec := range specs {
			if some && !slices.Contains(strings.Split(cfg.figures, ","), spec.tag) {
				continue
			}
			res, err := e.flowProcess(ctx, spec, cfg.jobs, r == 0)
			if err != nil {
				return err
			}
			if res.done < int64(cfg.jobs) {
				progress("%s, run %d: TIMED OUT, %d of %d jobs processed after %s", spec.name, r+1, res.done, cfg.jobs, cfg.timeout)
				stalled = append(stalled, fmt.Sprintf("%s, run %d: %d of %d jobs processed after %s", spec.name, r+1, res.done, cfg.jobs, cfg.timeout))
			}
			progress("%s, run %d: %.0f jobs/s, longest wait between starts %s, %d running at once (%d of one key), %.3f dequeues/job, %.1f jobs/dequeue, %.3f held full/job, %.1f Redis calls/job, %.1f µs Redis CPU/job, %.1f µs worker CPU/job",
				spec.name, r+1, res.rate, res.gap.Round(time.Millisecond), res.peak, res.keyPeak, res.work.dequeues, res.work.perDequeue, res.work.heldFull, res.work.redisCalls, res.work.redisUsec, res.work.workerUsec)
			results[i] = append(results[i], res)
		}
		if some {
			continue // the figures asked for only: their lines above, no table
		}
		res, err := e.flowRate(ctx)
		if err != nil {
			return err
		}
		progress("Rate %d/%s, run %d: %d starts in %s, the last %s after the first, most in any %s %d (started_at) / %d (process clock, bound %d), jitter p99 %s max %s, %.3f dequeues/start",
			cfg.rate, ratePer, r+1, res.inWindow, cfg.rateFor, res.span, ratePer, res.redisMost, res.localMost, res.localBound, res.jitter99, res.jitter, res.work.dequeues)
		rates = append(rates, res)
	}

	if some {
		return nil
	}
	rateOf := func(i int) float64 {
		var xs []float64
		for _, r := range results[i] {
			xs = append(xs, r.rate)
		}
		return median(xs)
	}
	gapOf := func(i int) string {
		var g time.Duration
		for _, r := range results[i] {
			g = max(g, r.gap)
		}
		return g.Round(time.Millisecond).String()
	}
	mostOf := func(i int, f func(flowResult) int64) int64 {
		var m int64
		for _, r := range results[i] {
			m = max(m, f(r))
		}
		return m
	}
	var broken []string
	t := &flowTable{}
	baseRate := rateOf(base)
	t.add(specs[base].name+" (jobs/s)", fmt.Sprintf("%.0f", baseRate), "")
	t.add("  longest wait between two starts, any run", gapOf(base), "")

	fleetRate := rateOf(fleetBase)
	t.add(specs[fleetBase].name+" (jobs/s)", fmt.Sprintf("%.0f", fleetRate), "")
	t.add("  the same ÷ 1 worker, no limits", fmt.Sprintf("%.2f×", fleetRate/baseRate), "")
	t.add("  longest wait between two starts, any run", gapOf(fleetBase), "")
	capRate := rateOf(capped)
	capPeak := mostOf(capped, func(r flowResult) int64 { return r.peak })
	t.add(specs[capped].name+" (jobs/s)", fmt.Sprintf("%.0f", capRate), "")
	t.add("  the same ÷ 1 worker, no limits", fmt.Sprintf("%.2f×", capRate/baseRate), target(capRate/baseRate >= capTarget, fmt.Sprintf("≥ %.2f×", capTarget)))
	t.add(fmt.Sprintf("  the same ÷ %d workers, no limits", fleetWorkers), fmt.Sprintf("%.2f×", capRate/fleetRate), "")
	t.add("  longest wait between two starts, any run", gapOf(capped), "")
	t.add("  most handlers running at once, any run", strconv.FormatInt(capPeak, 10), check(capPeak <= queueConcurrency, fmt.Sprintf("≤ %d", queueConcurrency)))
	if capPeak > queueConcurrency {
		broken = append(broken, fmt.Sprintf("Concurrency %d: %d handlers ran at once", queueConcurrency, capPeak))
	}

	keyRate := rateOf(keyed)
	keyPeak := mostOf(keyed, func(r flowResult) int64 { return r.keyPeak })
	t.add(specs[keyed].name+" (jobs/s)", fmt.Sprintf("%.0f", keyRate), "")
	t.add("  the same ÷ 1 worker, no limits", fmt.Sprintf("%.2f×", keyRate/baseRate), target(keyRate/baseRate >= keyTarget, fmt.Sprintf("≥ %.2f×", keyTarget)))
	t.add("  longest wait between two starts, any run", gapOf(keyed), "")
	t.add("  most handlers of one key running at once, any run", strconv.FormatInt(keyPeak, 10), check(keyPeak <= keyConcurrency, fmt.Sprintf("≤ %d", keyConcurrency)))
	if keyPeak > keyConcurrency {
		broken = append(broken, fmt.Sprintf("KeyConcurrency %d: %d handlers of one key ran at once", keyConcurrency, keyPeak))
	}

	want := float64(cfg.rate) * cfg.rateFor.Seconds() / ratePer.Seconds()
	var inWindow []float64
	redisMost, localMost, localBound := 0, 0, 0
	var jitter99, jitter time.Duration
	span := rates[0].span
	for _, r := range rates {
		span = min(span, r.span)
		inWindow = append(inWindow, float64(r.inWindow))
		redisMost = max(redisMost, r.redisMost)
		if r.localMost-r.localBound > localMost-localBound || localBound == 0 {
			localMost, localBound = r.localMost, r.localBound
		}
		jitter99, jitter = max(jitter99, r.jitter99), max(jitter, r.jitter)
	}
	bound := rateBound(cfg.rate, ratePer, ratePer)
	rated := fmt.Sprintf("%d workers × c=%d, Rate %d/%s", fleetWorkers, fleetConcurrency, cfg.rate, ratePer)
	got := median(inWindow)
	t.add(fmt.Sprintf("%s: starts in the first %s (started_at)", rated, cfg.rateFor), fmt.Sprintf("%.0f", got),
		target(got >= want*(1-rateTolerant) && got <= want*(1+rateTolerant), fmt.Sprintf("%.0f ± %.0f%%", want, rateTolerant*100)))
	t.add("  the last start, after the first (started_at), the shortest run", span.String(), target(span >= cfg.rateFor, fmt.Sprintf("≥ %s", cfg.rateFor)))
	t.add(fmt.Sprintf("  most starts in any %s, started_at (Redis's clock), any run", ratePer), strconv.Itoa(redisMost), check(redisMost <= bound, fmt.Sprintf("≤ %d", bound)))
	if redisMost > bound {
		broken = append(broken, fmt.Sprintf("Rate %d/%s: %d attempts started (started_at) within %s; at most %d may", cfg.rate, ratePer, redisMost, ratePer, bound))
	}
	t.add(fmt.Sprintf("  most starts in any %s, the handlers' time.Now(), the worst run", ratePer), strconv.Itoa(localMost),
		check(localMost <= localBound, fmt.Sprintf("≤ %d (the bound for %s + the start jitter)", localBound, ratePer)))
	if localMost > localBound {
		broken = append(broken, fmt.Sprintf("Rate %d/%s: %d handlers started within %s of this process's clock; at most %d may, with the jitter measured", cfg.rate, ratePer, localMost, ratePer, localBound))
	}
	t.add("  start jitter (handler's time.Now() − started_at, above the least), p99 / max, any run",
		fmt.Sprintf("%.1f / %.1f ms", ms(jitter99), ms(jitter)), "")
	fmt.Println(t)

	fmt.Printf("What the workers asked of Redis, per processed job (per started job for the Rate), medians of %d runs; round trips and dequeue.lua calls\n"+
		"are counted by the workers' clients, the rest (INFO) are server-wide, so other clients of the Redis count too, most in the long, slow Rate runs:\n\n", cfg.runs)
	cols := []string{"1 worker, no limits", fmt.Sprintf("%d workers, no limits", fleetWorkers), fmt.Sprintf("Concurrency %d", queueConcurrency), fmt.Sprintf("KeyConcurrency %d", keyConcurrency), fmt.Sprintf("Rate %d/%s", cfg.rate, ratePer)}
	works := make([][]flowWork, 0, 4)
	for i := range specs {
		var ws []flowWork
		for _, r := range results[i] {
			ws = append(ws, r.work)
		}
		works = append(works, ws)
	}
	var ws []flowWork
	for _, r := range rates {
		ws = append(ws, r.work)
	}
	works = append(works, ws)
	fmt.Println(workTable(cols, works))

	fmt.Printf("Redis calls per job by command, last run (commandstats; calls made inside scripts count too, and a script's µs include theirs):\n\n")
	var by []map[string]cmdStat
	for _, ws := range works {
		by = append(by, ws[len(ws)-1].byCmd)
	}
	jobs := []int{cfg.jobs, cfg.jobs, cfg.jobs, cfg.jobs, rates[len(rates)-1].startsTotal}
	var heads []string
	for _, c := range cols {
		heads = append(heads, c+" calls/job (µs/job)")
	}
	fmt.Println(cmdTableN(heads, by, jobs))
	fmt.Printf("took %s\n", time.Since(began).Round(time.Second))
	var errs []error
	if len(broken) > 0 {
		errs = append(errs, fmt.Errorf("limits broken: %s", strings.Join(broken, "; ")))
	}
	if len(stalled) > 0 {
		errs = append(errs, fmt.Errorf("runs that did not finish (%w): %s", errTimeout, strings.Join(stalled, "; ")))
	}
	return errors.Join(errs...)
}

// flowTable is the flow-control results: figure, measured, target.
type flowTable struct{ rows [][]string }

func (t *flowTable) add(name, value, target string) {
	t.rows = append(t.rows, []string{name, value, target})
}

func (t *flowTable) String() string {
	return markdown([]string{"figure", "measured", "target"}, t.rows)
}

// target marks a performance target met or not.
func target(met bool, s string) string {
	if met {
		return s + " (met)"
	}
	return s + " (not met)"
}

// check marks a limit that must hold as held or broken; a broken one fails
// the run.
func check(held bool, s string) string {
	if held {
		return s + " (held)"
	}
	return s + " (BROKEN)"
}

// workTable shows the median of each flowWork figure per column.
func workTable(cols []string, works [][]flowWork) string {
	rows := []struct {
		name, format string
		f            func(flowWork) float64
	}{
		{"round trips", "%.3f", func(w flowWork) float64 { return w.trips }},
		{"dequeue.lua calls", "%.3f", func(w flowWork) float64 { return w.dequeues }},
		{"jobs per dequeue.lua call", "%.1f", func(w flowWork) float64 { return w.perDequeue }},
		{"dequeue.lua calls that handed out none", "%.3f", func(w flowWork) float64 { return w.empty }},
		{"dequeue.lua calls answering Concurrency full (hold 2)", "%.3f", func(w flowWork) float64 { return w.heldFull }},
		{"dequeue.lua calls answering Rate spent (hold 3)", "%.3f", func(w flowWork) float64 { return w.heldRate }},
		{"PUBLISH calls (commandstats)", "%.3f", func(w flowWork) float64 { return w.publishes }},
		{"Redis calls (commandstats)", "%.2f", func(w flowWork) float64 { return w.redisCalls }},
		{"Redis CPU (µs, INFO cpu)", "%.1f", func(w flowWork) float64 { return w.redisUsec }},
		{"worker process CPU (µs, getrusage)", "%.1f", func(w flowWork) float64 { return w.workerUsec }},
	}
	var out [][]string
	for _, r := range rows {
		line := []string{r.name}
		for _, ws := range works {
			var xs []float64
			for _, w := range ws {
				xs = append(xs, r.f(w))
			}
			line = append(line, fmt.Sprintf(r.format, median(xs)))
		}
		out = append(out, line)
	}
	return markdown(append([]string{"per job"}, cols...), out)
}
