package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// env is what every measurement needs: the connection options and sizes.
type env struct {
	opt *redis.Options
	cfg config
}

// client returns a fresh client on the benchmark database with a counting
// hook, so each system starts with its own pool.
func (e *env) client() (*redis.Client, *counter) {
	rdb := redis.NewClient(e.opt)
	c := &counter{}
	rdb.AddHook(c)
	return rdb, c
}

// noopPayload is a no-op job's args: {"n":<i>}.
func noopPayload(i int) []byte {
	return append(strconv.AppendInt([]byte(`{"n":`), int64(i), 10), '}')
}

// enqueueResult is one enqueue-rate run.
type enqueueResult struct {
	rate       float64 // jobs/s
	trips      float64 // round trips the client sent, per job
	redisUsec  float64 // Redis server CPU time (INFO cpu), µs per job
	clientUsec float64 // this process's CPU time (getrusage: the producers and their client), µs per job
	byCmd      map[string]cmdStat
}

// enqueueRate enqueues n jobs from p concurrent producers, each waiting for
// its Enqueue to return before the next.
func (e *env) enqueueRate(ctx context.Context, s system, n, p int, profile string) (enqueueResult, error) {
	rdb, hook := e.client()
	defer rdb.Close()
	defer cleanup(ctx, rdb, s.keys)
	enqueue := s.producer(rdb)
	// One warm-up call loads scripts and opens a connection.
	if err := enqueue(ctx, noopPayload(-1)); err != nil {
		return enqueueResult{}, fmt.Errorf("%s enqueue: %w", s.name, err)
	}
	stats0, err := commandStats(ctx, rdb)
	if err != nil {
		return enqueueResult{}, err
	}
	cpu0, err := redisCPU(ctx, rdb)
	if err != nil {
		return enqueueResult{}, err
	}
	trips0 := hook.trips.Load()
	client0 := processCPU()
	stopProfile, err := startProfile(profile)
	if err != nil {
		return enqueueResult{}, err
	}
	start := time.Now()
	err = produce(ctx, enqueue, n, p)
	elapsed := time.Since(start)
	client1 := processCPU()
	stopProfile()
	if err != nil {
		return enqueueResult{}, fmt.Errorf("%s enqueue: %w", s.name, err)
	}
	cpu1, err := redisCPU(ctx, rdb)
	if err != nil {
		return enqueueResult{}, err
	}
	stats1, err := commandStats(ctx, rdb)
	if err != nil {
		return enqueueResult{}, err
	}
	byCmd := diffStats(stats0, stats1)
	delete(byCmd, "info")
	fn := float64(n)
	return enqueueResult{
		rate:       fn / elapsed.Seconds(),
		trips:      float64(hook.trips.Load()-trips0) / fn,
		redisUsec:  (cpu1 - cpu0) * 1e6 / fn,
		clientUsec: (client1 - client0).Seconds() * 1e6 / fn,
		byCmd:      byCmd,
	}, nil
}

// produce enqueues n no-op jobs from p goroutines.
func produce(ctx context.Context, enqueue func(context.Context, []byte) error, n, p int) error {
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		errs = make(chan error, p)
	)
	for range p {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				if err := enqueue(ctx, noopPayload(int(i))); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// processResult is one end-to-end processing run.
type processResult struct {
	rate        float64 // jobs/s
	memPerJob   float64 // Redis used_memory growth per preloaded job, bytes
	trips, cmds float64 // round trips and commands the worker's client sent, per job
	redisCalls  float64 // commands Redis ran (commandstats, scripts' inner calls too), per job
	redisUsec   float64 // Redis server CPU time (INFO cpu), µs per job, worker start to shutdown
	allocs      float64 // Go heap allocations per job (the whole process)
	allocBytes  float64 // Go heap bytes allocated per job
	byCmd       map[string]cmdStat
}

// process preloads n jobs (not timed, memory measured), then times a worker
// of the given concurrency from its start until its handler has run n
// times. profile, when not empty, is a file for a CPU profile of the timed
// part.
func (e *env) process(ctx context.Context, s system, n, concurrency int, profile, memprofile string) (processResult, error) {
	var res processResult
	rdb, hook := e.client()
	defer rdb.Close()
	defer cleanup(ctx, rdb, s.keys)

	memBefore, err := usedMemory(ctx, rdb)
	if err != nil {
		return res, err
	}
	if err := produce(ctx, s.producer(rdb), n, e.cfg.preloaders); err != nil {
		return res, fmt.Errorf("%s preload: %w", s.name, err)
	}
	memAfter, err := usedMemory(ctx, rdb)
	if err != nil {
		return res, err
	}
	res.memPerJob = float64(memAfter-memBefore) / float64(n)

	var (
		count atomic.Int64
		all   = make(chan struct{})
	)
	handle := func([]byte) {
		if count.Add(1) == int64(n) {
			close(all)
		}
	}
	statsBefore, err := commandStats(ctx, rdb)
	if err != nil {
		return res, err
	}
	trips0, cmds0 := hook.trips.Load(), hook.cmds.Load()
	runtime.GC()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpu0, err := redisCPU(ctx, rdb)
	if err != nil {
		return res, err
	}
	if err := writeAllocs(memprofile + ".base"); memprofile != "" && err != nil {
		return res, err
	}
	stopProfile, err := startProfile(profile)
	if err != nil {
		return res, err
	}
	start := time.Now()
	stop, err := s.startWorker(rdb, concurrency, handle)
	if err != nil {
		stopProfile()
		return res, err
	}
	timeout := time.NewTimer(e.cfg.timeout)
	defer timeout.Stop()
	select {
	case <-all:
	case <-timeout.C:
	}
	elapsed := time.Since(start)
	stopProfile()
	runtime.ReadMemStats(&ms1)
	if err := writeAllocs(memprofile); memprofile != "" && err != nil {
		return res, err
	}
	if err := stop(); err != nil {
		return res, err
	}
	if got := count.Load(); got < int64(n) {
		return res, fmt.Errorf("%s: %d of %d jobs processed after %s: %w", s.name, got, n, e.cfg.timeout, errTimeout)
	} else if got > int64(n) {
		fmt.Fprintf(os.Stderr, "warning: %s ran %d handlers for %d jobs\n", s.name, got, n)
	}
	statsAfter, err := commandStats(ctx, rdb)
	if err != nil {
		return res, err
	}
	cpu1, err := redisCPU(ctx, rdb)
	if err != nil {
		return res, err
	}
	res.rate = float64(n) / elapsed.Seconds()
	fn := float64(n)
	res.trips = float64(hook.trips.Load()-trips0) / fn
	res.cmds = float64(hook.cmds.Load()-cmds0) / fn
	res.byCmd = diffStats(statsBefore, statsAfter)
	delete(res.byCmd, "info") // the harness's own
	for _, st := range res.byCmd {
		res.redisCalls += float64(st.calls)
	}
	res.redisCalls /= fn
	res.redisUsec = (cpu1 - cpu0) * 1e6 / fn
	res.allocs = float64(ms1.Mallocs-ms0.Mallocs) / fn
	res.allocBytes = float64(ms1.TotalAlloc-ms0.TotalAlloc) / fn
	return res, nil
}

// startProfile starts a CPU profile written to file, if file is not empty,
// and returns the function that stops it.
func startProfile(file string) (stop func(), err error) {
	if file == "" {
		return func() {}, nil
	}
	f, err := os.Create(file)
	if err != nil {
		return nil, fmt.Errorf("-cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("-cpuprofile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// writeAllocs writes the allocation profile so far to file; the timed
// part's allocations are this profile minus the one written before it
// (go tool pprof -sample_index=alloc_space -base FILE.base FILE).
func writeAllocs(file string) error {
	if file == "" || file == ".base" {
		return nil
	}
	f, err := os.Create(file)
	if err != nil {
		return fmt.Errorf("-memprofile: %w", err)
	}
	defer f.Close()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		return fmt.Errorf("-memprofile: %w", err)
	}
	return nil
}

// latency starts an idle worker, enqueues jobs at a steady rate for a
// while, each carrying its enqueue time, and returns the p50 and p99 of
// enqueue → handler start.
func (e *env) latency(ctx context.Context, s system) (p50, p99 time.Duration, err error) {
	rdb, _ := e.client()
	defer rdb.Close()
	defer cleanup(ctx, rdb, s.keys)
	total := int(e.cfg.latencyRate * e.cfg.latencyFor.Seconds())
	var (
		mu   sync.Mutex
		lats = make([]time.Duration, 0, total)
		all  = make(chan struct{})
	)
	handle := func(p []byte) {
		now := time.Now()
		t, ok := sentAt(p)
		if !ok {
			return
		}
		mu.Lock()
		lats = append(lats, now.Sub(t))
		if len(lats) == total {
			close(all)
		}
		mu.Unlock()
	}
	enqueue := s.producer(rdb)
	stop, err := s.startWorker(rdb, e.cfg.latencyConcurrency, handle)
	if err != nil {
		return 0, 0, err
	}
	defer func() {
		if serr := stop(); err == nil {
			err = serr
		}
	}()
	// Let the worker settle into waiting for work.
	time.Sleep(300 * time.Millisecond)

	interval := time.Duration(float64(time.Second) / e.cfg.latencyRate)
	start := time.Now()
	for i := range total {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		if err := enqueue(ctx, stamp(time.Now())); err != nil {
			return 0, 0, fmt.Errorf("%s enqueue: %w", s.name, err)
		}
	}
	select {
	case <-all:
	case <-time.After(e.cfg.timeout):
		mu.Lock()
		got := len(lats)
		mu.Unlock()
		return 0, 0, fmt.Errorf("%s latency: %d of %d jobs started: %w", s.name, got, total, errTimeout)
	}
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lats)
	return percentile(lats, 0.50), percentile(lats, 0.99), nil
}

// stamp is a payload carrying t: {"t":<unix ns>}.
func stamp(t time.Time) []byte {
	return append(strconv.AppendInt([]byte(`{"t":`), t.UnixNano(), 10), '}')
}

func sentAt(p []byte) (time.Time, bool) {
	p, ok := bytes.CutPrefix(p, []byte(`{"t":`))
	if !ok {
		return time.Time{}, false
	}
	ns, err := strconv.ParseInt(string(bytes.TrimSuffix(p, []byte("}"))), 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}

func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
