package rqgo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo/internal/redistest"
)

// The tests in this file start their own redis-server: one that takes
// DEBUG SLEEP, to stall it past the clients' read timeout, and one with
// noeviction whose maxmemory is set just below what it uses. They are
// skipped with -short.

// stallReadTimeout is the read timeout of the clients that meet a stall:
// shorter than every stall, so the reply of a command sent during one
// arrives too late and is discarded.
const stallReadTimeout = 300 * time.Millisecond

// debugServer starts a redis-server that takes DEBUG SLEEP and returns it
// with a client of default options.
func debugServer(t *testing.T) (*redistest.Server, *redis.Client) {
	t.Helper()
	skipShort(t)
	srv := redistest.StartServer(t, "--enable-debug-command", "yes")
	admin := srv.Client()
	if err := admin.Ping(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	return srv, admin
}

// stallClient is a client of srv with a short read timeout and go-redis's
// default retries, closed when the test ends. Its pool holds a few open
// connections already, as a client's pool in service does: a command sent
// again during a stall goes out on one of them at once, where a new
// connection would wait for its handshake. The hooks are added first, so
// they see every connection.
func stallClient(t *testing.T, srv *redistest.Server, hooks ...redis.Hook) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, ReadTimeout: stallReadTimeout})
	t.Cleanup(func() { rdb.Close() })
	for _, h := range hooks {
		rdb.AddHook(h)
	}
	const warm = 8
	conns := make([]*redis.Conn, warm)
	for i := range conns {
		conns[i] = rdb.Conn()
		if err := conns[i].Ping(t.Context()).Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range conns {
		c.Close() // back to the pool, open
	}
	if n := rdb.PoolStats().IdleConns; n < warm {
		t.Fatalf("pool holds %d idle connections, want %d", n, warm)
	}
	return rdb
}

// stall makes Redis answer nothing for d (DEBUG SLEEP, sent once, on a
// connection of its own), and returns once Redis is asleep: a PING then
// goes unanswered. A command sent after stall returns reaches Redis while
// it sleeps and runs when it wakes. done receives the DEBUG SLEEP's error
// when Redis answers it.
func stall(t *testing.T, addr string, d time.Duration) (done <-chan error) {
	sleeper := redis.NewClient(&redis.Options{Addr: addr, ReadTimeout: d + 10*time.Second, MaxRetries: -1})
	ch := make(chan error, 1)
	go func() {
		defer sleeper.Close()
		ch <- sleeper.Do(context.Background(), "DEBUG", "SLEEP", strconv.FormatFloat(d.Seconds(), 'f', 3, 64)).Err()
	}()
	// Asleep once two PINGs in a row go unanswered for 200 ms each: one slow
	// answer from a busy machine is not a stall.
	deadline := time.Now().Add(5 * time.Second)
	for misses := 0; misses < 2; {
		probe := redis.NewClient(&redis.Options{Addr: addr, ReadTimeout: 200 * time.Millisecond, MaxRetries: -1, PoolSize: 1})
		if probe.Ping(context.Background()).Err() != nil {
			misses++
		} else {
			misses = 0
		}
		probe.Close()
		if time.Now().After(deadline) {
			t.Errorf("Redis still answers PING 5s after DEBUG SLEEP was sent")
			break
		}
	}
	return ch
}

// stallHook stalls Redis for d (see stall) right before the first call of
// its script goes out through the client (never when d is 0), and counts:
// calls, the Process calls of the script (go-redis's own resends of one
// call happen below the hook); failed, those that ended in an error;
// written, the times the script went out on a connection, resends
// included; and received, the jobs in dequeue.lua replies that reached the
// caller.
type stallHook struct {
	t        *testing.T
	addr     string
	d        time.Duration
	s        *script
	once     sync.Once
	done     <-chan error // the stall's DEBUG SLEEP, once it is sent
	stalled  chan struct{}
	calls    atomic.Int64
	failed   atomic.Int64
	written  atomic.Int64
	received atomic.Int64
}

func newStallHook(t *testing.T, addr string, d time.Duration, s *script) *stallHook {
	return &stallHook{t: t, addr: addr, d: d, s: s, stalled: make(chan struct{})}
}

func (h *stallHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &countingConn{Conn: c, h: h}, nil
	}
}

// countingConn counts the script's digest and source in what goes out: one
// per EVALSHA or EVAL of it (go-redis writes each command whole).
type countingConn struct {
	net.Conn
	h *stallHook
}

func (c *countingConn) Write(p []byte) (int, error) {
	s := c.h.s
	n := bytes.Count(p, []byte(s.full.sha)) + bytes.Count(p, []byte("-- "+s.name+".lua: "))
	if s.bare.sha != s.full.sha {
		n += bytes.Count(p, []byte(s.bare.sha))
	}
	c.h.written.Add(int64(n))
	return c.Conn.Write(p)
}

func (h *stallHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !isScript(cmd, h.s) {
			return next(ctx, cmd)
		}
		if h.d > 0 {
			h.once.Do(func() {
				h.done = stall(h.t, h.addr, h.d)
				close(h.stalled)
			})
		}
		h.calls.Add(1)
		err := next(ctx, cmd)
		if err != nil {
			h.failed.Add(1)
		} else if c, ok := cmd.(interface{ Slice() ([]any, error) }); ok && h.s == dequeueScript {
			if res, err := c.Slice(); err == nil && len(res) >= dequeuedHead {
				h.received.Add(int64((len(res) - dequeuedHead) / dequeuedLen))
			}
		}
		return err
	}
}

func (h *stallHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// waitStallOver waits until the hook's stall has been sent and answered.
func (h *stallHook) waitStallOver(t *testing.T) {
	t.Helper()
	select {
	case <-h.stalled:
	case <-time.After(15 * time.Second):
		t.Fatal("the stalled command was never sent")
	}
	select {
	case err := <-h.done:
		if err != nil {
			t.Fatalf("DEBUG SLEEP: %v", err)
		}
	case <-time.After(h.d + 15*time.Second):
		t.Fatal("DEBUG SLEEP never answered")
	}
}

// isScript reports whether cmd runs s (EVALSHA of its digest, or EVAL of
// its source).
func isScript(cmd redis.Cmder, s *script) bool {
	a := cmd.Args()
	if len(a) < 2 {
		return false
	}
	switch strings.ToLower(fmt.Sprint(a[0])) {
	case "evalsha":
		return a[1] == s.full.sha || a[1] == s.bare.sha
	case "eval":
		return a[1] == s.full.src || a[1] == s.bare.src
	}
	return false
}

// monitor counts, from Redis's MONITOR stream, the commands Redis
// executed: what it ran, whoever sent it and whether the reply reached them.
type monitor struct {
	mu    sync.Mutex
	lines []string
}

func startMonitor(t *testing.T, addr string) *monitor {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	rd := bufio.NewReader(conn)
	if _, err := conn.Write([]byte("MONITOR\r\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := rd.ReadString('\n'); err != nil || strings.TrimSpace(line) != "+OK" {
		t.Fatalf("MONITOR = %q, %v; want +OK", line, err)
	}
	m := &monitor{}
	go func() {
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				return // closed when the test ends
			}
			m.mu.Lock()
			m.lines = append(m.lines, line)
			m.mu.Unlock()
		}
	}()
	return m
}

// sync returns once the monitor has read every command Redis executed
// before sync was called: it sends an ECHO of its own and waits for it.
func (m *monitor) sync(t *testing.T, rdb *redis.Client) {
	t.Helper()
	marker := "monitor-sync-" + newID()
	if err := rdb.Echo(t.Context(), marker).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "MONITOR shows the sync marker", func() bool { return m.has(marker) })
}

func (m *monitor) has(s string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, l := range m.lines {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// runs counts the calls of s that Redis executed: EVALSHA of its digest or
// EVAL of its source, sent by a client (not a command a script called).
func (m *monitor) runs(s *script) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, l := range m.lines {
		low := strings.ToLower(l)
		if strings.Contains(low, `"evalsha" "`+s.full.sha+`"`) || strings.Contains(low, `"evalsha" "`+s.bare.sha+`"`) ||
			(strings.Contains(low, `"eval" "`) && strings.Contains(l, "-- "+s.name+".lua: ")) {
			n++
		}
	}
	return n
}

// A stall longer than the worker's read timeout loses the reply of the
// dequeue.lua call that meets it. Redis runs that call once, when it wakes:
// the worker sends it once per fetch, and go-redis does not send it again
// (a second run would lease a second batch that nobody receives). The
// worker then finds the batch the lost reply leased to it (their tokens
// carry its nonce) and gives it back without counting the attempt, so jobs
// that allow no retry still run, exactly once, on their first attempt.
func TestStallLosesDequeueReplyOnce(t *testing.T) {
	flagsTaken(t)
	srv, admin := debugServer(t)
	ctx := t.Context()
	if err := dequeueScript.Load(ctx, admin); err != nil { // EVALSHA must run, not answer NOSCRIPT
		t.Fatal(err)
	}
	q := NewQueue("default", admin)
	const jobs = 8
	ids := make([]string, jobs)
	for i := range ids {
		j, err := q.EnqueueContext(ctx, "count", nil, Retry(0))
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = j.ID
	}
	mon := startMonitor(t, srv.Addr)

	hook := newStallHook(t, srv.Addr, 2*time.Second, dequeueScript)
	rdb := stallClient(t, srv, hook)
	logs, logger := newLogBuffer(t)
	w := NewWorker(rdb, WorkerOptions{Concurrency: 2, Prefetch: -1, Lease: 500 * time.Millisecond, Logger: logger})
	var (
		mu   sync.Mutex
		runs = map[string]int{}
	)
	w.Register("count", func(ctx context.Context, j *Job) (any, error) {
		mu.Lock()
		runs[j.ID]++
		mu.Unlock()
		return j.Attempt, nil
	})
	stop := start(t, w)
	hook.waitStallOver(t)

	retried := 0
	for _, id := range ids {
		j := waitJob(t, q, id, StatusFinished)
		mu.Lock()
		n := runs[id]
		mu.Unlock()
		if n != 1 {
			t.Errorf("job %s: handler ran %d times, want 1", id, n)
		}
		if j.Attempt == 2 {
			retried++
		}
	}
	stop()
	mon.sync(t, admin)

	calls, failed, written, executed := hook.calls.Load(), hook.failed.Load(), hook.written.Load(), int64(mon.runs(dequeueScript))
	seq, _ := admin.Get(ctx, q.k.seq()).Int64()
	leasedToNobody := seq - hook.received.Load()
	t.Logf("dequeue.lua: %d calls by the worker, %d of them failed; written %d times, executed %d times by Redis; %d jobs leased by lost replies, %d jobs ran on attempt 2",
		calls, failed, written, executed, leasedToNobody, retried)
	if leasedToNobody < 1 {
		t.Fatalf("no job was leased by a reply that never reached the worker: the stall did not outlast the read timeout")
	}
	if written > calls {
		t.Errorf("dequeue.lua went out %d times for %d calls; want at most once per call (go-redis must not send it again)", written, calls)
	}
	if executed != written {
		t.Errorf("Redis executed dequeue.lua %d times; want the %d times it was written", executed, written)
	}
	if failed == 0 {
		t.Errorf("replies were lost but no fetch failed: a resend's reply stood in for the lost one")
	}
	if retried != 0 {
		t.Errorf("%d jobs ran on attempt 2, want none: the %d that lost replies leased go back uncounted", retried, leasedToNobody)
	}
	if !logs.contains("gave back jobs leased by a fetch whose reply was lost") {
		t.Errorf("worker log does not say that it gave back the jobs of the lost reply")
	}
	if !logs.contains("fetching jobs failed; retrying") {
		t.Errorf("worker log does not say that a fetch failed")
	}
	if c, _ := q.Counts(ctx); c.Failed != 0 || c.Finished != jobs {
		t.Errorf("counts = %+v, want %d finished and none failed", c, jobs)
	}
}

// Enqueue calls made while Redis stalls, again and again, past the
// client's read timeout: go-redis sends enqueue.lua (or enqueue_many.lua,
// for calls that went together) again when a reply is lost, and the second
// run finds the job the first one wrote. For an id rqgo made up that job
// is the call's own, so no call reports ErrJobExists, and every job a call
// reported exists, once. A call may fail (its sends all timed out); its job
// may then exist or not.
func TestStallEnqueueNeverReportsItsOwnJob(t *testing.T) {
	flagsTaken(t)
	srv, admin := debugServer(t)
	ctx := t.Context()
	for _, s := range []*script{enqueueScript, enqueueManyScript} {
		if err := s.Load(ctx, admin); err != nil {
			t.Fatal(err)
		}
	}
	one := newStallHook(t, srv.Addr, 0, enqueueScript) // counts only: the stalls come from below
	many := newStallHook(t, srv.Addr, 0, enqueueManyScript)
	rdb := stallClient(t, srv, one, many)
	q := NewQueue("default", rdb)
	mon := startMonitor(t, srv.Addr)

	const producers = 8
	var (
		mu      sync.Mutex
		created []string
		errs    = map[string]int{}
		exists  []error
		wg      sync.WaitGroup
	)
	stop := make(chan struct{})
	for range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				j, err := q.EnqueueContext(context.Background(), "f", nil)
				mu.Lock()
				switch {
				case errors.Is(err, ErrJobExists):
					exists = append(exists, err)
				case err != nil:
					errs[strings.TrimPrefix(err.Error(), `rqgo: enqueue "f": `)]++
				default:
					created = append(created, j.ID)
				}
				mu.Unlock()
			}
		}()
	}
	// Stalls of 500ms: the send they meet times out after 300ms, and a
	// resend lands before Redis wakes, so its reply is the one that counts.
	const stalls = 4
	for range stalls {
		time.Sleep(150 * time.Millisecond)
		if err := <-stall(t, srv.Addr, 500*time.Millisecond); err != nil {
			t.Fatalf("DEBUG SLEEP: %v", err)
		}
	}
	time.Sleep(150 * time.Millisecond)
	close(stop)
	wg.Wait()
	mon.sync(t, admin)

	for _, err := range exists {
		t.Errorf("Enqueue of a job with a made-up id = %v, want its own job", err)
	}
	pending, err := admin.LRange(ctx, q.k.pending(), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	inList := map[string]int{}
	for _, id := range pending {
		inList[id]++
	}
	for id, n := range inList {
		if n != 1 {
			t.Errorf("job %s is in the pending list %d times, want once", id, n)
		}
	}
	for _, id := range created {
		if inList[id] != 1 {
			t.Errorf("job %s was reported created but is in the pending list %d times, want once", id, inList[id])
		}
		if n, _ := admin.Exists(ctx, q.k.job(id)).Result(); n != 1 {
			t.Errorf("job %s was reported created but its hash does not exist", id)
		}
	}
	failed := 0
	for _, n := range errs {
		failed += n
	}
	calls := one.calls.Load() + many.calls.Load()
	written := one.written.Load() + many.written.Load()
	executed := int64(mon.runs(enqueueScript) + mon.runs(enqueueManyScript))
	t.Logf("%d stalls: %d jobs enqueued, %d calls failed %v, %d returned ErrJobExists; %d jobs in the queue (%d from failed calls); enqueue scripts: %d calls, written %d times, executed %d times",
		stalls, len(created), failed, errs, len(exists), len(pending), len(pending)-len(created), calls, written, executed)
	if written <= calls {
		t.Errorf("the enqueue scripts went out %d times for %d calls; want resends (go-redis retries lost replies of enqueues): the stalls did not meet a call", written, calls)
	}
	if len(pending) < len(created) || len(pending) > len(created)+failed+len(exists) {
		t.Errorf("%d jobs in the queue, want the %d created plus at most the %d whose calls failed", len(pending), len(created), failed+len(exists))
	}
}

// A job with an id the caller chose, whose first send's reply is lost in a
// stall: Enqueue does not report it as someone else's (ErrJobExists); it
// returns an error that says the call timed out. The job exists, so an
// Enqueue again with the id returns ErrJobExists.
func TestStallEnqueueChosenID(t *testing.T) {
	flagsTaken(t)
	srv, admin := debugServer(t)
	ctx := t.Context()
	if err := enqueueScript.Load(ctx, admin); err != nil {
		t.Fatal(err)
	}
	// 500ms: the first send waits past the 300ms read timeout, and a resend
	// would be answered before its own timeout.
	hook := newStallHook(t, srv.Addr, 2*time.Second, enqueueScript)
	rdb := stallClient(t, srv, hook)
	q := NewQueue("default", rdb)
	if err := q.remember(ctx); err != nil {
		t.Fatal(err)
	}
	const id = "chosen-1"
	_, err := q.EnqueueContext(ctx, "f", nil, JobID(id))
	hook.waitStallOver(t)
	t.Logf("Enqueue during the stall = %v (enqueue.lua written %d times for %d calls)", err, hook.written.Load(), hook.calls.Load())
	switch {
	case errors.Is(err, ErrJobExists):
		t.Errorf("Enqueue of job %q whose reply was lost = %v, want a timeout error: the job is the call's own", id, err)
	case err == nil:
		t.Fatalf("Enqueue during the stall succeeded: the stall did not outlast the read timeout")
	case !strings.Contains(err.Error(), "timeout"):
		t.Errorf("Enqueue during the stall = %v, want an error that says it timed out", err)
	}
	var j *Job
	waitFor(t, 5*time.Second, "the job the stalled send wrote", func() bool {
		j, err = q.FetchJob(ctx, id)
		return err == nil
	})
	if j.Status != StatusQueued {
		t.Fatalf("FetchJob(%q) = %s, want the queued job the stalled send wrote", id, j.Status)
	}
	if _, err := q.EnqueueContext(ctx, "f", nil, JobID(id)); !errors.Is(err, ErrJobExists) {
		t.Errorf("Enqueue again with id %q = %v, want ErrJobExists", id, err)
	}
	if n, _ := admin.LLen(ctx, q.k.pending()).Result(); n != 1 {
		t.Errorf("pending list holds %d jobs, want 1", n)
	}
}

// fullRedis makes Redis with noeviction full: maxmemory 256 KiB below the
// memory it uses, so it refuses every command that may add to it, and
// answers the rest. Until the returned release is called, it checks every
// 20ms that Redis still refuses a plain SET, and fails the test if one goes
// through; release restores maxmemory 0.
func fullRedis(t *testing.T, admin *redis.Client) (release func()) {
	t.Helper()
	ctx := t.Context()
	info, err := admin.Info(ctx, "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	var used int64
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			used, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	if used == 0 {
		t.Fatalf("no used_memory in INFO memory:\n%s", info)
	}
	if err := admin.ConfigSet(ctx, "maxmemory", strconv.FormatInt(used-256<<10, 10)).Err(); err != nil {
		t.Fatal(err)
	}
	const probe = "probe:full"
	if err := admin.Set(ctx, probe, "1", 0).Err(); !isOOM(err) {
		admin.ConfigSet(ctx, "maxmemory", "0")
		t.Fatalf("SET with maxmemory below used_memory = %v, want an OOM error", err)
	}
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if err := admin.Set(context.Background(), probe, "1", 0).Err(); !isOOM(err) {
				t.Errorf("Redis meant to be full answered SET with %v, want an OOM error", err)
				return
			}
		}
	}()
	var once sync.Once
	release = func() {
		once.Do(func() {
			close(stop)
			<-stopped
			if err := admin.ConfigSet(context.Background(), "maxmemory", "0").Err(); err != nil {
				t.Errorf("CONFIG SET maxmemory 0: %v", err)
			}
		})
	}
	t.Cleanup(release)
	return release
}

// A Redis with noeviction that runs out of memory refuses new jobs but
// goes on serving the jobs it has. Jobs running when it fills keep their
// leases for three leases and finish; Enqueue and EnqueueMany fail with an
// error that says OOM and write nothing; a worker started while it is
// full runs and drains the queue; the reaper recovers a job whose lease
// expired, and it runs; and once Redis has memory again, Enqueue works.
func TestOOMFullRedisKeepsLeasesAndDrains(t *testing.T) {
	flagsTaken(t)
	skipShort(t)
	srv := redistest.StartServer(t, "--maxmemory-policy", "noeviction")
	admin := srv.Client()
	ctx := t.Context()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	q := NewQueue("default", rdb)
	const lease = 500 * time.Millisecond

	var (
		mu       sync.Mutex
		runs     = map[string]int{}
		canceled = map[string]error{}
	)
	started := make(chan string, 16)
	release := make(chan struct{})
	register := func(w *Worker) {
		w.Register("slow", func(ctx context.Context, j *Job) (any, error) {
			mu.Lock()
			runs[j.ID]++
			mu.Unlock()
			started <- j.ID
			select {
			case <-release:
			case <-ctx.Done():
				mu.Lock()
				canceled[j.ID] = context.Cause(ctx)
				mu.Unlock()
				return nil, ctx.Err()
			}
			return j.Attempt, nil
		})
		w.Register("quick", func(ctx context.Context, j *Job) (any, error) {
			mu.Lock()
			runs[j.ID]++
			mu.Unlock()
			return j.Attempt, nil
		})
	}
	logsA, loggerA := newLogBuffer(t)
	a := NewWorker(rdb, WorkerOptions{Name: "a", Concurrency: 2, Prefetch: -1, Lease: lease, Logger: loggerA})
	register(a)
	stopA := start(t, a)
	var slow []string
	for range 2 {
		j, err := q.EnqueueContext(ctx, "slow", nil)
		if err != nil {
			t.Fatal(err)
		}
		slow = append(slow, j.ID)
	}
	for range slow {
		<-started
	}
	// Worker a's slots are taken: these wait in the queue. The first is
	// leased by hand to a worker that then dies.
	var queued []string
	for range 5 {
		j, err := q.EnqueueContext(ctx, "quick", nil)
		if err != nil {
			t.Fatal(err)
		}
		queued = append(queued, j.ID)
	}
	victim := queued[0]
	res, err := dequeueScript.Run(ctx, rdb, newWorkerQueue(DefaultPrefix, "default").dequeueKeys, 1, time.Minute.Milliseconds(), "dead").Slice()
	if err != nil || len(res) != dequeuedHead+dequeuedLen || res[dequeuedHead] != victim {
		t.Fatalf("dequeue for a worker that dies = %v, %v; want job %s", res, err, victim)
	}

	before, err := q.Counts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	full := time.Now()
	unfill := fullRedis(t, admin)

	// No new job while Redis is full, and nothing written.
	_, err = q.EnqueueContext(ctx, "quick", nil, JobID("refused"))
	if err == nil || !strings.Contains(err.Error(), "OOM") {
		t.Errorf("Enqueue into a full Redis = %v, want an error that says OOM", err)
	}
	_, err = q.EnqueueMany(ctx, []EnqueueRequest{{Func: "quick"}, {Func: "quick"}})
	if err == nil || !strings.Contains(err.Error(), "OOM") {
		t.Errorf("EnqueueMany into a full Redis = %v, want an error that says OOM", err)
	}
	if _, err := q.FetchJob(ctx, "refused"); !errors.Is(err, ErrJobNotFound) {
		t.Errorf("FetchJob of the refused job = %v, want ErrJobNotFound", err)
	}
	if after, err := q.Counts(ctx); err != nil || after != before {
		t.Errorf("counts after the refused enqueues = %+v, %v; want %+v as before", after, err, before)
	}

	// The dead worker's lease expires (plain ZADD is refused too: a script
	// allowed to run out of memory sets it).
	if err := admin.ZAdd(ctx, q.k.active(), redis.Z{Score: 1, Member: victim}).Err(); !isOOM(err) {
		t.Errorf("ZADD into a full Redis = %v, want an OOM error", err)
	}
	if err := admin.Eval(ctx, "#!lua flags=allow-oom\nreturn redis.call('ZADD', KEYS[1], 'XX', 1, ARGV[1])",
		[]string{q.k.active()}, victim).Err(); err != nil {
		t.Fatalf("expiring the dead worker's lease: %v", err)
	}

	// A worker started now runs, and drains the queue.
	logsB, loggerB := newLogBuffer(t)
	b := NewWorker(rdb, WorkerOptions{Name: "b", Concurrency: 4, Lease: lease, Logger: loggerB})
	register(b)
	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	bDone := make(chan error, 1)
	go func() { bDone <- b.Run(runCtx) }()
	for _, id := range queued {
		j := waitJob(t, q, id, StatusFinished)
		want := 1
		if id == victim {
			want = 2 // the dead worker's attempt, then this one
		}
		if j.Attempt != want || j.Worker != "b" {
			t.Errorf("queued job %s: attempt %d on worker %q, want attempt %d on b", id, j.Attempt, j.Worker, want)
		}
	}
	select {
	case err := <-bDone:
		t.Fatalf("worker started while Redis is full: Run = %v before its context ended", err)
	default:
	}

	// The slow jobs have run through three leases of a full Redis.
	time.Sleep(time.Until(full.Add(3 * lease)))
	close(release)
	for _, id := range slow {
		j := waitJob(t, q, id, StatusFinished)
		if j.Attempt != 1 || j.Worker != "a" || j.Error != "" {
			t.Errorf("slow job %s: attempt %d on worker %q, error %q; want its first attempt on a, no error", id, j.Attempt, j.Worker, j.Error)
		}
	}
	fullFor := time.Since(full)
	unfill()
	mu.Lock()
	for id, n := range runs {
		if n != 1 {
			t.Errorf("job %s: handler ran %d times, want 1", id, n)
		}
	}
	for id, cause := range canceled {
		t.Errorf("job %s: handler canceled: %v", id, cause)
	}
	mu.Unlock()
	for _, l := range []*logBuffer{logsA, logsB} {
		for _, bad := range []string{"lease lost", "renewing leases failed", "reaping expired leases failed", "recording job outcome failed"} {
			if l.contains(bad) {
				t.Errorf("worker log says %q", bad)
			}
		}
	}
	if !logsA.contains("recovered jobs whose lease expired") && !logsB.contains("recovered jobs whose lease expired") {
		t.Errorf("no worker log says it recovered the dead worker's job")
	}
	t.Logf("Redis full for %s (%d leases): %d jobs ran through it, %d queued jobs were drained by a worker started meanwhile",
		fullFor.Round(time.Millisecond), int(fullFor/lease), len(slow), len(queued))

	// Memory again: jobs go in.
	j, err := q.EnqueueContext(ctx, "quick", nil)
	if err != nil {
		t.Fatalf("Enqueue once Redis has memory again: %v", err)
	}
	waitJob(t, q, j.ID, StatusFinished)
	stopRun()
	if err := <-bDone; err != nil {
		t.Errorf("worker started while Redis was full: Run = %v", err)
	}
	stopA()
}

// flagsTaken makes rqgo send the scripts with their flags line, as to any
// Redis 7, for the rest of the test: a miniredis test earlier in this
// process made it send them without, which costs a real Redis a NOSCRIPT
// round trip per call, and these tests count every send.
func flagsTaken(t *testing.T) {
	was := rejectsFlags.Swap(false)
	t.Cleanup(func() { rejectsFlags.Store(was) })
}
