package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// fullKey is the key the harness writes to check that Redis refuses
// writes while it is out of memory. It is outside rqgo's prefix.
const fullKey = "chaos:full-check"

// faults runs the fault schedule over cfg.Duration: a SIGKILL every
// KillEvery (and a fresh worker in its place), one worker paused past its
// lease at 20%, Redis stalled past the workers' read timeout at 30% (and
// at 85% in a run of a minute or more), a Redis restart at 45%, Redis out
// of memory at 58%, all client connections dropped at 70%. Just before
// each fault a wave of jobs is enqueued, so that the fault strikes while
// handlers run; the last wave comes at the end. The out-of-memory fault
// enqueues half its wave while Redis refuses writes. Faults do not
// overlap: one that takes time (a stall, a full Redis) delays the next.
func (h *harness) faults() error {
	type event struct {
		at time.Duration
		do func() error
		// wave, when set, enqueues the event's jobs itself.
		wave func(from, to int) error
	}
	d := h.cfg.Duration
	var events []event
	for t := h.cfg.KillEvery; t < d; t += h.cfg.KillEvery {
		events = append(events, event{at: t, do: h.killOne})
	}
	stallAt := []time.Duration{d * 3 / 10, d * 85 / 100}
	for i := range min(h.cfg.Stalls, len(stallAt)) {
		events = append(events, event{at: stallAt[i], do: h.stallRedis})
	}
	events = append(events,
		event{at: d * 2 / 10, do: func() error { h.pause(); return nil }},
		event{at: d * 45 / 100, do: h.restartRedis},
		event{at: d * 58 / 100, wave: h.fillRedis},
		event{at: d * 7 / 10, do: func() error { h.dropClients(); return nil }},
		event{at: d})
	slices.SortStableFunc(events, func(a, b event) int { return cmp.Compare(a.at, b.at) })
	wave := h.cfg.Jobs / len(events)
	next := 0
	for i, ev := range events {
		time.Sleep(time.Until(h.start.Add(ev.at)))
		to := next + wave
		if i == len(events)-1 {
			to = h.cfg.Jobs
		}
		if ev.wave != nil {
			if err := ev.wave(next, to); err != nil {
				return err
			}
		} else {
			if err := h.enqueueWave(next, to); err != nil {
				return err
			}
			if ev.do == nil {
				return nil
			}
			// Let the wave's first jobs start.
			time.Sleep(5*time.Millisecond + time.Duration(h.rnd.Int64N(int64(40*time.Millisecond))))
			if err := ev.do(); err != nil {
				return err
			}
		}
		next = to
		// Keep the pool full: replace workers that exited on their own too.
		if err := h.refill(); err != nil {
			return err
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
	h.allowed += h.cfg.Concurrency
	h.hits[p.name] = append(h.hits[p.name], window{"SIGKILL", time.Now(), time.Now()})
	h.mu.Unlock()
	p.cmd.Process.Kill()
	<-p.exited
	killed := time.Now()
	held := h.heldBy(p.name)
	h.logf("SIGKILL %s (held %d jobs)", p.name, len(held))
	h.cancelHeld(held)
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
			h.recovery = append(h.recovery, window{p.name, killed, killed.Add(d)})
		}
	}()
	return h.spawn(p.slot)
}

// heldBy returns the running jobs of a worker, over every queue, with their
// attempt numbers.
func (h *harness) heldBy(worker string) map[string]string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	held := map[string]string{}
	queues := h.allQueues()
	active := make([]*redis.StringSliceCmd, len(queues))
	if _, err := h.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, q := range queues {
			active[i] = p.ZRange(ctx, prefixKey(q, "active"), 0, -1)
		}
		return nil
	}); err != nil {
		return held
	}
	var ids []string
	for _, c := range active {
		ids = append(ids, c.Val()...)
	}
	cmds := make([]*redis.SliceCmd, len(ids))
	h.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HMGet(ctx, h.jobKeyOf(id), "worker", "attempt", "status")
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

// jobKeyOf returns the hash key of the job with this id, in its queue.
func (h *harness) jobKeyOf(id string) string {
	if j := h.flowJobs[id]; j != nil {
		return jobKey(j.q.Name(), id)
	}
	if j := h.capJobs[id]; j != nil {
		return jobKey(j.q.Name(), id)
	}
	if isCancelID(id) {
		return jobKey(cancelQueueName, id)
	}
	if k, ok := uniqueKeyOf(id); ok {
		return jobKey(h.uniqueQueue(k).Name(), id)
	}
	i, _ := jobIndex(id)
	return jobKey(h.queueOf(i), id)
}

// waitRecovered polls until none of the held jobs is still running its old
// attempt on the dead worker (nothing signals a lease expiry). It gives up
// after a minute.
func (h *harness) waitRecovered(held map[string]string, since time.Time) (time.Duration, bool) {
	deadline := since.Add(time.Minute)
	for len(held) > 0 && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		for id, attempt := range held {
			v, err := h.rdb.HMGet(ctx, h.jobKeyOf(id), "worker", "attempt", "status").Result()
			if err != nil {
				break // Redis is restarting or stalled; look again
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
	h.allowed += h.cfg.Concurrency
	// Until SIGCONT: a job the worker fetched before the pause can start
	// after it, long after its lease expired.
	hit := len(h.hits[p.name])
	h.hits[p.name] = append(h.hits[p.name], window{"SIGSTOP", time.Now(), time.Now().Add(time.Hour)})
	h.mu.Unlock()
	p.cmd.Process.Signal(syscall.SIGSTOP)
	h.logf("SIGSTOP %s for %s", p.name, 3*h.cfg.Lease)
	time.AfterFunc(3*h.cfg.Lease, func() {
		p.cmd.Process.Signal(syscall.SIGCONT)
		h.mu.Lock()
		p.stopped = false
		h.hits[p.name][hit].to = time.Now()
		h.mu.Unlock()
		h.logf("SIGCONT %s", p.name)
	})
}

// strike records a fault that strikes every worker from from to to: each
// can repeat the jobs it was running.
func (h *harness) strike(what string, from, to time.Time, alive int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.allowed += alive * h.cfg.Concurrency
	h.windows = append(h.windows, window{what, from, to})
}

// restartRedis shuts Redis down, leaves it down for Outage, and starts it
// again on the same port and data directory.
func (h *harness) restartRedis() error {
	h.logf("Redis SHUTDOWN")
	alive, from := h.alive(), time.Now()
	h.redisDown.Store(true)
	defer h.redisDown.Store(false)
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
	h.strike("Redis restart", from, time.Now(), alive)
	h.logf("Redis up again")
	return nil
}

// dropClients closes every normal client connection, the harness's own
// included.
func (h *harness) dropClients() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	alive, at := h.alive(), time.Now()
	n, err := h.rdb.ClientKillByFilter(ctx, "TYPE", "normal").Result()
	h.mu.Lock()
	h.drops++
	h.mu.Unlock()
	h.strike("connection drop", at, time.Now(), alive)
	h.logf("CLIENT KILL TYPE normal: %d connections (%v)", n, err)
}

// stallRedis makes Redis answer nothing for cfg.Stall (DEBUG SLEEP), longer
// than the workers' read timeout: their commands in flight time out, and
// the leases of the jobs they run expire meanwhile, so each can repeat the
// jobs it was running. The harness sends DEBUG SLEEP on a connection of
// its own whose read timeout outlasts the sleep, and never sends it twice.
func (h *harness) stallRedis() error {
	c := redis.NewClient(&redis.Options{Addr: h.redis.addr(), DialTimeout: time.Second,
		ReadTimeout: h.cfg.Stall + 10*time.Second, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.Stall+15*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("before DEBUG SLEEP: %w", err)
	}
	alive, from := h.alive(), time.Now()
	h.logf("DEBUG SLEEP %s", h.cfg.Stall)
	if err := c.Do(ctx, "DEBUG", "SLEEP", strconv.FormatFloat(h.cfg.Stall.Seconds(), 'f', 3, 64)).Err(); err != nil {
		return fmt.Errorf("DEBUG SLEEP: %w", err)
	}
	to := time.Now()
	h.strike("Redis stall", from, to, alive)
	h.mu.Lock()
	h.stalls++
	h.stalled += to.Sub(from)
	h.mu.Unlock()
	h.logf("Redis answers again after %s", to.Sub(from).Round(time.Millisecond))
	return nil
}

// fillRedis makes Redis run out of memory for cfg.FullFor: maxmemory just
// below what it uses, with noeviction, so it refuses every write that could
// grow its memory. Before, it enqueues the first half of its wave, whose
// first jobs work across the whole time (probes: their leases must be
// renewed while Redis is full), and waits until they run. It enqueues the
// second half while Redis is full: the enqueues are refused and tried
// again. Then it restores maxmemory 0 and waits for the probes to end.
// Workers must go on renewing, acknowledging and fetching meanwhile, so a
// full Redis explains no duplicate run.
func (h *harness) fillRedis(from, to int) error {
	mid := from + (to-from)/2
	ms := int((h.cfg.FullFor + 2*h.cfg.Lease).Milliseconds())
	var probes []int
	for i := from; i < min(from+4, mid); i++ {
		h.probes[i] = ms
		probes = append(probes, i)
	}
	if err := h.enqueueWave(from, mid); err != nil {
		return err
	}
	started := h.waitStarted(probes, 5*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.FullFor+time.Minute)
	defer cancel()
	// Just below: by 1/16 of what Redis uses, at least 256 KiB, so that
	// the client buffers Redis frees as connections come and go, and the
	// jobs the workers finish meanwhile, do not lift it at once.
	lowered := 0
	limit := func() error {
		used, err := h.usedMemory(ctx)
		if err != nil {
			return err
		}
		lowered++
		if err := h.rdb.ConfigSet(ctx, "maxmemory", strconv.FormatInt(used-max(used/16, 256<<10), 10)).Err(); err != nil {
			return err
		}
		h.mu.Lock()
		h.fullAt = time.Now()
		h.mu.Unlock()
		return nil
	}
	if err := h.rdb.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		return fmt.Errorf("maxmemory-policy: %w", err)
	}
	if err := limit(); err != nil {
		return fmt.Errorf("maxmemory: %w", err)
	}
	if err := h.rdb.Set(ctx, fullKey, "1", 0).Err(); err == nil || !strings.Contains(err.Error(), "OOM") {
		h.rdb.ConfigSet(ctx, "maxmemory", "0")
		return fmt.Errorf("Redis takes writes with maxmemory below used_memory and noeviction (SET: %v)", err)
	}
	began := time.Now()
	h.logf("Redis full (maxmemory just below used_memory, noeviction) for %s; %d of %d probes running", h.cfg.FullFor, started, len(probes))
	during := make(chan error, 1)
	go func() { during <- h.enqueueWave(mid, to) }()
	// Keep Redis full: when a write of the harness's own goes through
	// (memory was freed), lower maxmemory again.
	for time.Since(began) < h.cfg.FullFor {
		time.Sleep(20 * time.Millisecond)
		if err := h.rdb.Set(ctx, fullKey, "1", 0).Err(); err == nil {
			h.mu.Lock()
			h.fullAt = time.Time{}
			h.mu.Unlock()
			h.rdb.Del(ctx, fullKey)
			if err := limit(); err != nil {
				return fmt.Errorf("maxmemory: %w", err)
			}
		} else if !strings.Contains(err.Error(), "OOM") {
			return fmt.Errorf("checking that Redis is full: %w", err)
		}
	}
	h.mu.Lock()
	h.fullAt = time.Time{}
	h.mu.Unlock()
	if err := h.rdb.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		return fmt.Errorf("restoring maxmemory 0: %w", err)
	}
	full := time.Since(began)
	h.mu.Lock()
	h.full += full
	h.fulls = append(h.fulls, window{"Redis out of memory", began, time.Now()})
	refused, accepted := h.enqOOM, len(h.acceptedFull)
	h.mu.Unlock()
	h.logf("Redis has memory again after %s (maxmemory set %d times); %d enqueues refused, %d accepted while Redis was full",
		full.Round(time.Millisecond), lowered, refused, accepted)
	if err := <-during; err != nil {
		return err
	}
	// The probes end before the next fault, which could otherwise explain
	// a repeat of theirs.
	h.waitEnded(probes, time.Duration(ms)*time.Millisecond+30*time.Second)
	h.mu.Lock()
	h.oomProbes = append(h.oomProbes, probes...)
	h.mu.Unlock()
	return nil
}

func (h *harness) usedMemory(ctx context.Context) (int64, error) {
	info, err := h.rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("no used_memory in INFO memory")
}

// waitStarted waits up to d until a handler ran for each of the jobs, and
// returns for how many one did.
func (h *harness) waitStarted(jobs []int, d time.Duration) int {
	deadline := time.Now().Add(d)
	for {
		runs, _ := h.executions()
		n := 0
		for _, i := range jobs {
			if len(runs[jobID(i)]) > 0 {
				n++
			}
		}
		if n == len(jobs) || time.Now().After(deadline) {
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitEnded waits up to d until each of the jobs is finished or failed.
func (h *harness) waitEnded(jobs []int, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		ended := 0
		for _, i := range jobs {
			s, _ := h.rdb.HGet(ctx, jobKey(h.queueOf(i), jobID(i)), "status").Result()
			if s == "finished" || s == "failed" {
				ended++
			}
		}
		cancel()
		if ended == len(jobs) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}
