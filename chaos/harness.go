package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rqgo/rqgo"
)

type config struct {
	Jobs        int
	Duration    time.Duration // faults go on this long
	Workers     int
	Concurrency int
	Lease       time.Duration
	KillEvery   time.Duration // 0: Duration/60, at least 2s
	Outage      time.Duration // Redis down time during the restart
	Settle      time.Duration // wait for the last jobs after the faults
	Seed        int64
	Keep        bool
	Verbose     bool
	// Exe is the program started as a worker process, with roleEnv set;
	// default: this executable.
	Exe string
	// Out receives the summary lines, Log each fault as it happens (nil:
	// none).
	Out, Log io.Writer
}

// harness is one chaos run.
type harness struct {
	cfg   config
	rnd   *rand.Rand
	dir   string
	redis *redisServer
	rdb   *redis.Client
	q     *rqgo.Queue
	start time.Time

	mu         sync.Mutex
	workers    map[*workerProc]bool // alive
	spawned    int
	kills      int
	holding    int // kills of a worker that held jobs fetched ahead of its slots
	stops      int
	restarts   int
	drops      int
	crashes    []string // workers that exited on their own
	recovery   []time.Duration
	recovering sync.WaitGroup
	enqErrors  int
}

type workerProc struct {
	name    string
	cmd     *exec.Cmd
	exited  chan struct{}
	killed  bool // by the harness: an expected exit
	stopped bool // SIGSTOPped right now
	zombie  bool // was paused: never killed, so it wakes and acks late
}

func (h *harness) logf(format string, a ...any) {
	if h.cfg.Log != nil {
		fmt.Fprintf(h.cfg.Log, "%6.1fs  %s\n", time.Since(h.start).Seconds(), fmt.Sprintf(format, a...))
	}
}

// run performs one chaos run and returns its report. An error means the
// run could not be carried out at all; failed checks are the report's
// Problems.
func run(cfg config) (rep *report, err error) {
	if cfg.KillEvery <= 0 {
		cfg.KillEvery = max(cfg.Duration/60, 2*time.Second)
	}
	if cfg.Seed == 0 {
		cfg.Seed = time.Now().UnixNano()
	}
	if cfg.Exe == "" {
		if cfg.Exe, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, errNoRedisServer
	}
	dir, err := os.MkdirTemp("", "rqgo-chaos-")
	if err != nil {
		return nil, err
	}
	h := &harness{cfg: cfg, rnd: rand.New(rand.NewPCG(uint64(cfg.Seed), 0)), dir: dir,
		workers: map[*workerProc]bool{}, start: time.Now()}
	defer func() {
		if cfg.Keep || rep == nil || len(rep.Problems) > 0 {
			fmt.Fprintf(cfg.Out, "chaos: Redis data and worker logs kept in %s\n", dir)
		} else {
			os.RemoveAll(dir)
		}
	}()
	if h.redis, err = startRedis(dir); err != nil {
		return nil, err
	}
	defer h.redis.kill()
	h.rdb = redis.NewClient(&redis.Options{Addr: h.redis.addr(), DialTimeout: time.Second})
	defer h.rdb.Close()
	h.q = rqgo.NewQueue(queueName, h.rdb)
	fmt.Fprintf(cfg.Out, "chaos: redis-server at %s (appendonly, appendfsync always), %d jobs, %d workers × %d, lease %s, %s of faults, seed %d\n",
		h.redis.addr(), cfg.Jobs, cfg.Workers, cfg.Concurrency, cfg.Lease, cfg.Duration, cfg.Seed)

	for range cfg.Workers {
		if err := h.spawn(); err != nil {
			return nil, err
		}
	}
	defer h.stopWorkers()

	if err := h.faults(); err != nil {
		return nil, err
	}
	h.recovering.Wait()
	settled := h.settle()
	h.stopWorkers()
	rep, err = h.check()
	if err != nil {
		return nil, err
	}
	if !settled {
		rep.Problems = append(rep.Problems, fmt.Sprintf("jobs still queued or running %s after the faults ended", cfg.Settle))
	}
	h.mu.Lock()
	for _, c := range h.crashes {
		rep.Problems = append(rep.Problems, "a worker exited on its own: "+c)
	}
	h.mu.Unlock()
	fmt.Fprintln(cfg.Out, rep.Details())
	return rep, nil
}

// spawn starts one more worker process.
func (h *harness) spawn() error {
	h.mu.Lock()
	h.spawned++
	name := fmt.Sprintf("w%03d", h.spawned)
	h.mu.Unlock()
	logf, err := os.Create(filepath.Join(h.dir, name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(h.cfg.Exe)
	cmd.Env = append(os.Environ(),
		roleEnv+"=worker",
		addrEnv+"="+h.redis.addr(),
		nameEnv+"="+name,
		leaseEnv+"="+h.cfg.Lease.String(),
		fmt.Sprintf("%s=%d", concurrencyEnv, h.cfg.Concurrency))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting worker %s: %w", name, err)
	}
	p := &workerProc{name: name, cmd: cmd, exited: make(chan struct{})}
	h.mu.Lock()
	h.workers[p] = true
	h.mu.Unlock()
	go func() {
		err := cmd.Wait()
		logf.Close()
		close(p.exited)
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.workers, p)
		if !p.killed {
			h.crashes = append(h.crashes, fmt.Sprintf("%s (%v; log %s)", name, err, logf.Name()))
		}
	}()
	return nil
}

// pick returns a random live worker that is not paused.
func (h *harness) pick() *workerProc {
	h.mu.Lock()
	defer h.mu.Unlock()
	var live []*workerProc
	for p := range h.workers {
		if !p.zombie && !p.killed {
			live = append(live, p)
		}
	}
	if len(live) == 0 {
		return nil
	}
	// Map order is random but not seeded; sort for a reproducible pick.
	for i := range live {
		for j := i + 1; j < len(live); j++ {
			if live[j].name < live[i].name {
				live[i], live[j] = live[j], live[i]
			}
		}
	}
	return live[h.rnd.IntN(len(live))]
}

// enqueueWave enqueues jobs [from, to) from a few goroutines, each job with
// its own id. An enqueue that fails (Redis down) is tried again until it
// succeeds or the id turns out to exist (the reply was lost).
func (h *harness) enqueueWave(from, to int) error {
	ids := make(chan int)
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ids {
				if err := h.enqueueOne(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var err error
	for i := from; i < to && err == nil; i++ {
		select {
		case ids <- i:
		case err = <-errs:
		}
	}
	close(ids)
	wg.Wait()
	close(errs)
	if err != nil {
		return err
	}
	return <-errs
}

func (h *harness) enqueueOne(i int) error {
	id := jobID(i)
	deadline := time.Now().Add(time.Minute)
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := h.q.EnqueueContext(ctx, funcName, map[string]int{"n": i}, rqgo.JobID(id), rqgo.Retry(25),
			rqgo.Backoff(50*time.Millisecond, time.Second))
		cancel()
		switch {
		case err == nil, errors.Is(err, rqgo.ErrJobExists) && attempt > 0:
			return nil
		case errors.Is(err, rqgo.ErrInvalid), errors.Is(err, rqgo.ErrJobExists), time.Now().After(deadline):
			return fmt.Errorf("enqueue %s: %w", id, err)
		}
		h.mu.Lock()
		h.enqErrors++
		h.mu.Unlock()
		time.Sleep(100 * time.Millisecond)
	}
}

func jobID(i int) string { return fmt.Sprintf("job-%06d", i) }

// faults runs the fault schedule over cfg.Duration: a SIGKILL every
// KillEvery (and a fresh worker in its place), one worker paused past its
// lease at 20%, a Redis restart at 45%, all client connections dropped at
// 70%. Just before each fault a wave of jobs is enqueued, so that the fault
// strikes while handlers run; the last wave comes at the end.
func (h *harness) faults() error {
	type event struct {
		at time.Duration
		do func() error
	}
	d := h.cfg.Duration
	var events []event
	for t := h.cfg.KillEvery; t < d; t += h.cfg.KillEvery {
		events = append(events, event{t, h.killOne})
	}
	events = append(events,
		event{d * 2 / 10, func() error { h.pause(); return nil }},
		event{d * 45 / 100, h.restartRedis},
		event{d * 7 / 10, func() error { h.dropClients(); return nil }},
		event{d, nil})
	slices.SortStableFunc(events, func(a, b event) int { return cmp.Compare(a.at, b.at) })
	wave := h.cfg.Jobs / len(events)
	next := 0
	for i, ev := range events {
		time.Sleep(time.Until(h.start.Add(ev.at)))
		to := next + wave
		if i == len(events)-1 {
			to = h.cfg.Jobs
		}
		if err := h.enqueueWave(next, to); err != nil {
			return err
		}
		next = to
		if ev.do == nil {
			return nil
		}
		// Let the wave's first jobs start.
		time.Sleep(5*time.Millisecond + time.Duration(h.rnd.Int64N(int64(40*time.Millisecond))))
		if err := ev.do(); err != nil {
			return err
		}
		// Keep the pool full: replace workers that exited on their own too.
		h.mu.Lock()
		n := len(h.workers)
		h.mu.Unlock()
		for ; n < h.cfg.Workers; n++ {
			if err := h.spawn(); err != nil {
				return err
			}
		}
	}
	return nil
}

// killOne SIGKILLs a random worker, starts another in its place, and
// measures how long the jobs the dead worker held take to be taken up again.
func (h *harness) killOne() error {
	p := h.pick()
	if p == nil {
		return nil
	}
	h.mu.Lock()
	p.killed = true
	h.kills++
	h.mu.Unlock()
	p.cmd.Process.Kill()
	<-p.exited
	killed := time.Now()
	held := h.heldBy(p.name)
	h.logf("SIGKILL %s (held %d jobs)", p.name, len(held))
	if len(held) > h.cfg.Concurrency {
		// More started jobs than slots: some were fetched ahead (prefetch).
		h.mu.Lock()
		h.holding++
		h.mu.Unlock()
	}
	h.recovering.Add(1)
	go func() {
		defer h.recovering.Done()
		d, ok := h.waitRecovered(held, killed)
		h.mu.Lock()
		defer h.mu.Unlock()
		if ok {
			h.recovery = append(h.recovery, d)
		}
	}()
	return h.spawn()
}

// heldBy returns the running jobs of a worker, with their attempt numbers.
func (h *harness) heldBy(worker string) map[string]string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	held := map[string]string{}
	ids, err := h.q.JobIDs(ctx, rqgo.StatusStarted, 0, 100000)
	if err != nil || len(ids) == 0 {
		return held
	}
	cmds := make([]*redis.SliceCmd, len(ids))
	h.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HMGet(ctx, jobKey(id), "worker", "attempt", "status")
		}
		return nil
	})
	for i, c := range cmds {
		v := c.Val()
		if len(v) == 3 && v[0] == worker && v[2] == "started" {
			a, _ := v[1].(string)
			held[ids[i]] = a
		}
	}
	return held
}

func jobKey(id string) string { return rqgo.DefaultPrefix + ":{" + queueName + "}:job:" + id }

// waitRecovered polls until none of the held jobs is still running its old
// attempt on the dead worker (nothing signals a lease expiry). It gives up
// after a minute.
func (h *harness) waitRecovered(held map[string]string, since time.Time) (time.Duration, bool) {
	deadline := since.Add(time.Minute)
	for len(held) > 0 && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		for id, attempt := range held {
			v, err := h.rdb.HMGet(ctx, jobKey(id), "worker", "attempt", "status").Result()
			if err != nil {
				break // Redis is restarting; look again
			}
			if v[1] != attempt || v[2] != "started" {
				delete(held, id)
			}
		}
		cancel()
		if len(held) > 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	return time.Since(since), len(held) == 0
}

// pause SIGSTOPs a worker for three leases (plus the reaper's period), so
// its jobs go to others, then SIGCONTs it: it wakes as a zombie whose
// handlers finish and try to record attempts that are no longer theirs.
func (h *harness) pause() {
	p := h.pick()
	if p == nil {
		return
	}
	h.mu.Lock()
	p.stopped, p.zombie = true, true
	h.stops++
	h.mu.Unlock()
	p.cmd.Process.Signal(syscall.SIGSTOP)
	h.logf("SIGSTOP %s for %s", p.name, 3*h.cfg.Lease)
	time.AfterFunc(3*h.cfg.Lease, func() {
		p.cmd.Process.Signal(syscall.SIGCONT)
		h.mu.Lock()
		p.stopped = false
		h.mu.Unlock()
		h.logf("SIGCONT %s", p.name)
	})
}

// restartRedis shuts Redis down, leaves it down for Outage, and starts it
// again on the same port and data directory.
func (h *harness) restartRedis() error {
	h.logf("Redis SHUTDOWN")
	if err := h.redis.shutdown(); err != nil {
		return err
	}
	h.mu.Lock()
	h.restarts++
	h.mu.Unlock()
	time.Sleep(h.cfg.Outage)
	if err := h.redis.start(); err != nil {
		return fmt.Errorf("restarting Redis: %w", err)
	}
	h.logf("Redis up again")
	return nil
}

// dropClients closes every normal client connection, the harness's own
// included.
func (h *harness) dropClients() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := h.rdb.ClientKillByFilter(ctx, "TYPE", "normal").Result()
	h.mu.Lock()
	h.drops++
	h.mu.Unlock()
	h.logf("CLIENT KILL TYPE normal: %d connections (%v)", n, err)
}

// settle waits until no job is queued, scheduled or running.
func (h *harness) settle() bool {
	deadline := time.Now().Add(h.cfg.Settle)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := h.q.Counts(ctx)
		cancel()
		if err == nil && c.Queued == 0 && c.Started == 0 && c.Scheduled == 0 &&
			c.Finished+c.Failed+c.Canceled >= int64(h.cfg.Jobs) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// stopWorkers ends every worker with SIGTERM (SIGKILL after 10s).
func (h *harness) stopWorkers() {
	h.mu.Lock()
	var procs []*workerProc
	for p := range h.workers {
		p.killed = true
		procs = append(procs, p)
	}
	h.mu.Unlock()
	for _, p := range procs {
		p.cmd.Process.Signal(syscall.SIGCONT)
		p.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range procs {
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
		}
	}
}
