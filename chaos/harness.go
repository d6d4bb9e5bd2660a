package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/rqgo/rqgo"
)

type config struct {
	Jobs        int
	Chains      int           // workflows on the first two queues (see workflow.go); 0: Jobs/100, at least 4
	FanIns      int           // 0: Jobs/100, at least 4
	UniqueKeys  int           // unique keys, each with an enqueuer of its own (see unique.go); 0: none
	UniqueEvery time.Duration // how often, on average, each key's enqueuer tries; 0: 250ms
	Queues      int           // the jobs are spread over this many queues
	Duration    time.Duration // faults go on this long
	Workers     int           // worker processes on a share of the queues each; one more runs on all of them
	Concurrency int
	Lease       time.Duration
	ReadTimeout time.Duration // the workers' go-redis ReadTimeout; 0: go-redis's default
	KillEvery   time.Duration // 0: Duration/60, at least 2s
	Outage      time.Duration // Redis down time during the restart
	Stall       time.Duration // how long DEBUG SLEEP holds Redis; 0: the workers' read timeout plus 1s
	Stalls      int           // 0: one when Duration is under a minute, two otherwise
	FullFor     time.Duration // how long Redis stays out of memory
	Settle      time.Duration // wait for the last jobs after the faults
	Seed        int64
	Keep        bool
	Verbose     bool

	// Flow control (see limits.go): jobs on each of the capped and keyed
	// queues (0: Jobs/8, at least 40), the capped queue's Concurrency and
	// the keyed queue's KeyConcurrency and limit keys (0: 4, 2 and 10), and
	// how long the keyed queue is paused (0: 1s).
	CappedJobs     int
	CapConcurrency int
	KeyConcurrency int
	LimitKeys      int
	PauseFor       time.Duration

	// Cancels (see cancel.go): jobs of the cancel queue (0: Jobs/20, at
	// least 20).
	CancelJobs int

	// Exe is the program started as a worker process, with roleEnv set;
	// default: this executable.
	Exe string
	// Out receives the summary lines, Log each fault as it happens (nil:
	// none).
	Out, Log io.Writer
}

// harness is one chaos run.
type harness struct {
	cfg    config
	rnd    *rand.Rand
	dir    string
	redis  *redisServer
	rdb    *redis.Client
	queues []string // in priority order
	qs     []*rqgo.Queue
	start  time.Time

	mu         sync.Mutex
	workers    map[*workerProc]bool // alive
	spawned    int
	kills      int
	holding    int // kills of a worker that held jobs fetched ahead of its slots
	stops      int
	restarts   int
	drops      int
	stalls     int
	stalled    time.Duration
	full       time.Duration       // time Redis spent out of memory
	allowed    int                 // duplicate runs the faults so far explain
	hits       map[string][]window // worker → when it was killed, or paused until
	windows    []window            // faults that strike every worker
	fulls      []window            // times Redis was out of memory: no excuse for a repeat
	roles      map[string]string   // worker → its queues, for messages
	probes     map[int]int         // job → handler ms, for jobs that outlast the lease on purpose
	oomProbes  []int               // probes that ran while Redis was full
	crashes    []string            // workers that exited on their own
	recovery   []window            // from a kill until its jobs were taken up again
	recovering sync.WaitGroup
	enqErrors  int
	enqOOM     int // enqueues Redis refused for lack of memory
	// While Redis is full: fullAt is when maxmemory was last set below
	// used_memory (zero when Redis has memory), and acceptedFull the jobs
	// whose enqueue Redis accepted within fullSure of it.
	fullAt       time.Time
	acceptedFull []string
	// The workflows (see workflow.go), planned before the run and only
	// read after: by job id, and by the plain job whose wave enqueues them.
	flowJobs map[string]*flowJob
	flowsAt  map[int][]*workflow
	settled  time.Duration // from the end of the faults until every job had ended
	// The unique jobs (see unique.go), by key: those created, in the order
	// they were, and what the enqueues refused as duplicates said.
	uniq       [][]*uniqueJob
	uniqTries  int
	uniqDups   int
	uniqHolder []string // duplicates that named a holder other than the key's newest job, or an ended one
	// The capped and keyed queues (see limits.go) and their jobs, planned
	// before the run and only read after: by id, in the order planned, by
	// the plain job whose wave enqueues them, and those enqueued while the
	// keyed queue is paused; and the times it was paused.
	capQ, keyQ *rqgo.Queue
	capJobs    map[string]*capJob
	capList    []*capJob
	capAt      map[int][]*capJob
	pauseBatch []*capJob
	paused     []pauseWindow
	redisDown  atomic.Bool // from Redis's SHUTDOWN until it is started again: the cap checker waits
	// The cancel queue (see cancel.go) and its jobs, planned before the
	// run: by id, in the order planned, and by the plain job whose wave
	// enqueues them; what the canceller did is under cancelMu.
	cancelQ    *rqgo.Queue
	cancelJobs map[string]*cancelJob
	cancelList []*cancelJob
	cancelAt   map[int][]*cancelJob
	cancels    *canceller
	cancelMu   sync.Mutex
}

// fullSure is how long after maxmemory is set 1/16 below used_memory Redis
// surely still refuses writes that grow it: the workers free far less in
// that time. (At 1/32 and 500 ms, a run with every workload once saw an
// enqueue go through after the workers' acks had freed enough.)
const fullSure = 250 * time.Millisecond

// window is a time span of a fault that strikes every worker at once.
type window struct {
	what     string
	from, to time.Time
}

type workerProc struct {
	name    string
	slot    int // 0..Workers-1: a share of the queues; Workers: all of them
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

// defaultReadTimeout is go-redis's ReadTimeout for options that set none:
// what the workers use unless -read-timeout says otherwise.
func defaultReadTimeout() time.Duration {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:0"}) // never dialed
	defer c.Close()
	return c.Options().ReadTimeout
}

// run performs one chaos run and returns its report. An error means the
// run could not be carried out at all; failed checks are the report's
// Problems.
func run(cfg config) (rep *report, err error) {
	if cfg.KillEvery <= 0 {
		cfg.KillEvery = max(cfg.Duration/60, 2*time.Second)
	}
	if cfg.Queues <= 0 {
		cfg.Queues = 1
	}
	if cfg.Chains <= 0 {
		cfg.Chains = max(cfg.Jobs/100, 4)
	}
	if cfg.FanIns <= 0 {
		cfg.FanIns = max(cfg.Jobs/100, 4)
	}
	if cfg.UniqueEvery <= 0 {
		cfg.UniqueEvery = 250 * time.Millisecond
	}
	if cfg.CappedJobs <= 0 {
		cfg.CappedJobs = max(cfg.Jobs/8, 40)
	}
	if cfg.CapConcurrency <= 0 {
		cfg.CapConcurrency = 4
	}
	if cfg.KeyConcurrency <= 0 {
		cfg.KeyConcurrency = 2
	}
	if cfg.LimitKeys <= 0 {
		cfg.LimitKeys = 10
	}
	if cfg.PauseFor <= 0 {
		cfg.PauseFor = time.Second
	}
	if cfg.CancelJobs <= 0 {
		cfg.CancelJobs = max(cfg.Jobs/20, 20)
	}
	readTimeout := cfg.ReadTimeout
	if readTimeout <= 0 {
		readTimeout = defaultReadTimeout()
	}
	if cfg.Stall <= 0 {
		cfg.Stall = readTimeout + time.Second
	}
	if cfg.Stalls <= 0 {
		cfg.Stalls = 1
		if cfg.Duration >= time.Minute {
			cfg.Stalls = 2
		}
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
		workers: map[*workerProc]bool{}, hits: map[string][]window{}, roles: map[string]string{}, probes: map[int]int{}, start: time.Now()}
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
	for i := range cfg.Queues {
		name := "chaos"
		if i > 0 {
			name = fmt.Sprintf("chaos-%02d", i)
		}
		h.queues = append(h.queues, name)
		h.qs = append(h.qs, rqgo.NewQueue(name, h.rdb))
	}
	// One job in a hundred works for 2.5 leases, so leases are renewed
	// under every fault.
	for i := 50; i < cfg.Jobs; i += 100 {
		h.probes[i] = int(cfg.Lease.Milliseconds() * 5 / 2)
	}
	h.planFlows()
	h.planCaps()
	h.planCancels()
	if err := h.setLimits(); err != nil {
		return nil, err
	}
	fmt.Fprintf(cfg.Out, "chaos: redis-server %s at %s (appendonly, appendfsync always), %d jobs on %d queues and %d workflows (%d jobs) on two, %d unique keys tried every %s, %d jobs on %s (concurrency %d) and %d on %s (key concurrency %d over %d keys, paused for %s), %d on %s (canceled running, scheduled and queued), %d workers × %d and 1 on all queues, lease %s, read timeout %s, %s of faults, seed %d\n",
		h.redis.version, h.redis.addr(), cfg.Jobs, cfg.Queues, cfg.Chains+cfg.FanIns, len(h.flowJobs), cfg.UniqueKeys, cfg.UniqueEvery,
		cfg.CappedJobs, capQueueName, cfg.CapConcurrency, cfg.CappedJobs+len(h.pauseBatch), keyQueueName, cfg.KeyConcurrency, cfg.LimitKeys, cfg.PauseFor,
		cfg.CancelJobs, cancelQueueName, cfg.Workers, cfg.Concurrency, cfg.Lease, readTimeout, cfg.Duration, cfg.Seed)

	for slot := range cfg.Workers + 1 {
		if err := h.spawn(slot); err != nil {
			return nil, err
		}
	}
	defer h.stopWorkers()

	stopChecker := h.startCapChecker()
	checked := false
	defer func() {
		if !checked {
			stopChecker()
		}
	}()
	stopCanceller := h.startCanceller()
	cancellerStopped := false
	defer func() {
		if !cancellerStopped {
			stopCanceller()
		}
	}()
	stopUnique := h.startUnique()
	stopPause := h.startPause()
	err = h.faults()
	if uerr := stopUnique(); err == nil {
		err = uerr
	}
	if perr := stopPause(); err == nil {
		err = perr
	}
	if err != nil {
		return nil, err
	}
	faulted := time.Now()
	h.recovering.Wait()
	settled := h.settle(faulted)
	cancellerStopped = true
	stopCanceller()
	h.stopWorkers()
	checked = true
	rep, err = h.check(stopChecker())
	if err != nil {
		return nil, err
	}
	if !settled {
		rep.Problems = append(rep.Problems, fmt.Sprintf("jobs still queued, running or deferred, or deliveries owed, %s after the faults ended", cfg.Settle))
	}
	h.mu.Lock()
	for _, c := range h.crashes {
		rep.Problems = append(rep.Problems, "a worker exited on its own: "+c)
	}
	h.mu.Unlock()
	fmt.Fprintln(cfg.Out, rep.Details())
	return rep, nil
}

// slotQueues returns the queues of a worker slot, in priority order: slot
// Workers has all of them, slot s < Workers the queues s, s+Workers,
// s+2×Workers, … (the first, when there are fewer queues than slots).
func (h *harness) slotQueues(slot int) []string {
	if slot == h.cfg.Workers {
		return h.queues
	}
	var qs []string
	for i := slot; i < len(h.queues); i += h.cfg.Workers {
		qs = append(qs, h.queues[i])
	}
	if len(qs) == 0 {
		qs = []string{h.queues[slot%len(h.queues)]}
	}
	return qs
}

// spawn starts a worker process for a slot.
func (h *harness) spawn(slot int) error {
	h.mu.Lock()
	h.spawned++
	name := fmt.Sprintf("w%03d", h.spawned)
	h.mu.Unlock()
	logf, err := os.Create(filepath.Join(h.dir, name+".log"))
	if err != nil {
		return err
	}
	queues := slices.Concat(h.slotQueues(slot), h.capQueues(), []string{cancelQueueName})
	if slot%2 == 1 {
		// The capped queue first: these workers fetch from it in the round
		// trip of their acks (see the root package's settle).
		queues = slices.Concat(h.capQueues(), h.slotQueues(slot), []string{cancelQueueName})
	}
	cmd := exec.Command(h.cfg.Exe)
	cmd.Env = append(os.Environ(),
		roleEnv+"=worker",
		addrEnv+"="+h.redis.addr(),
		nameEnv+"="+name,
		leaseEnv+"="+h.cfg.Lease.String(),
		readTimeoutEnv+"="+h.cfg.ReadTimeout.String(),
		queuesEnv+"="+strings.Join(queues, ","),
		execFileEnv+"="+filepath.Join(h.dir, name+".exec"),
		endFileEnv+"="+filepath.Join(h.dir, name+".end"),
		cancelFileEnv+"="+filepath.Join(h.dir, name+".cancel"),
		fmt.Sprintf("%s=%d", concurrencyEnv, h.cfg.Concurrency))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting worker %s: %w", name, err)
	}
	p := &workerProc{name: name, slot: slot, cmd: cmd, exited: make(chan struct{})}
	role := fmt.Sprintf("%d queues", len(queues))
	if slot == h.cfg.Workers {
		role = fmt.Sprintf("all %d queues", len(queues))
	}
	h.mu.Lock()
	h.workers[p] = true
	h.roles[name] = role
	h.mu.Unlock()
	h.logf("worker %s on %s (%s … %s)", name, role, queues[0], queues[len(queues)-1])
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

// refill starts a worker for every slot that has none, so the pool stays
// full: after a kill, and after a worker exited on its own.
func (h *harness) refill() error {
	h.mu.Lock()
	taken := map[int]bool{}
	for p := range h.workers {
		taken[p.slot] = true
	}
	h.mu.Unlock()
	for slot := range h.cfg.Workers + 1 {
		if !taken[slot] {
			if err := h.spawn(slot); err != nil {
				return err
			}
		}
	}
	return nil
}

// alive is the number of worker processes, paused ones included.
func (h *harness) alive() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.workers)
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
	slices.SortFunc(live, func(a, b *workerProc) int { return strings.Compare(a.name, b.name) })
	return live[h.rnd.IntN(len(live))]
}

func jobID(i int) string { return fmt.Sprintf("job-%06d", i) }

// queueOf returns the queue of job i: the jobs go round the queues.
func (h *harness) queueOf(i int) string { return h.queues[i%len(h.queues)] }

func jobIndex(id string) (int, bool) {
	s, ok := strings.CutPrefix(id, "job-")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(s)
	return i, err == nil
}

func jobKey(queue, id string) string { return prefixKey(queue, "job:"+id) }

func prefixKey(queue, name string) string { return rqgo.DefaultPrefix + ":{" + queue + "}:" + name }

// settle waits until no job of any queue is queued, parked, scheduled,
// running or deferred, and no queue owes a delivery to another (its outbox
// is empty), and records how long after since that was.
func (h *harness) settle(since time.Time) bool {
	deadline := time.Now().Add(h.cfg.Settle)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		var waiting, ended []*redis.IntCmd
		_, err := h.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, q := range h.allQueues() {
				waiting = append(waiting, p.LLen(ctx, prefixKey(q, "pending")),
					p.ZCard(ctx, prefixKey(q, "active")), p.ZCard(ctx, prefixKey(q, "scheduled")),
					p.ZCard(ctx, prefixKey(q, "deferred")), p.ZCard(ctx, prefixKey(q, "outbox")),
					p.ZCard(ctx, prefixKey(q, "parked")))
				ended = append(ended, p.ZCard(ctx, prefixKey(q, "finished")),
					p.ZCard(ctx, prefixKey(q, "failed")), p.ZCard(ctx, prefixKey(q, "canceled")))
			}
			return nil
		})
		cancel()
		if err == nil && sum(waiting) == 0 && sum(ended) >= int64(h.cfg.Jobs+len(h.flowJobs)+len(h.capList)+len(h.cancelList)) {
			h.settled = time.Since(since)
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

func sum(cmds []*redis.IntCmd) int64 {
	var n int64
	for _, c := range cmds {
		n += c.Val()
	}
	return n
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
