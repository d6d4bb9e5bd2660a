package rqgo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Worker defaults, used for zero-valued [WorkerOptions] fields.
const (
	DefaultConcurrency     = 10
	DefaultLease           = 30 * time.Second
	DefaultShutdownTimeout = 10 * time.Second
	DefaultTimeout         = 30 * time.Minute
	DefaultResultTTL       = 24 * time.Hour
	DefaultFailureTTL      = 7 * 24 * time.Hour
)

// WorkerOptions configures a [Worker]. The zero value works: it listens on
// the queue "default" with the defaults below.
type WorkerOptions struct {
	// Queues to take jobs from, in strict priority order: a job of a later
	// queue starts only when every earlier queue has none ready.
	// Default: ["default"].
	Queues []string
	// Concurrency is the most handlers that run at once. Default: 10.
	Concurrency int
	// Prefetch is the most jobs the worker takes beyond its free slots, so
	// that a slot whose handler returns starts its next job without waiting
	// for Redis. The worker takes ahead only as many jobs as its handlers
	// finished during its last fetch, so a worker whose jobs run longer than
	// a round trip holds none. A job held for 100ms goes back to the head of
	// its queue, its attempt not counted. Held jobs are leased like running
	// ones and show as started. Negative turns prefetch off.
	// Default: Concurrency.
	Prefetch int
	// Lease is how long a job stays assigned to this worker without a
	// heartbeat; a killed worker's jobs run again about one Lease later. The
	// worker renews leases every Lease/3. Default: 30s.
	Lease time.Duration
	// ShutdownTimeout is how long Run waits for running handlers once its
	// context ends; jobs still running then go straight back to their queue.
	// Default: 10s.
	ShutdownTimeout time.Duration
	// Timeout bounds one attempt of a job that sets no [Timeout] of its own.
	// Default: 30m.
	Timeout time.Duration
	// ResultTTL is how long finished jobs are kept when the job sets no
	// [ResultTTL]; negative keeps them forever. Default: 24h.
	ResultTTL time.Duration
	// FailureTTL is how long failed jobs are kept when the job sets no
	// [FailureTTL]; negative keeps them forever. Default: 7 days.
	FailureTTL time.Duration
	// Retry is the backoff for jobs that set none. Default: exponential with
	// full jitter from 1s, capped at 1h.
	Retry RetryPolicy
	// Burst makes Run return nil once the queues have no ready job, nothing
	// runs and no retry this worker scheduled is outstanding. It does not
	// wait for jobs leased by other workers, live or dead: a dead worker's
	// jobs return to their queue when their lease expires, and a later run
	// picks them up. Default: false.
	Burst bool
	// Name identifies the worker in job hashes and in the worker registry.
	// Default: host.pid.random.
	Name string
	// Prefix is the key prefix; it must match the queues'. Default: "rqgo".
	Prefix string
	// Logger receives the worker's logs. Default: [slog.Default].
	Logger *slog.Logger
}

// Handler runs jobs. Its result, encoded as JSON, becomes the job's result;
// an error fails the attempt (see [SkipRetry] and [RetryAfter]). ProcessJob
// should return soon after ctx is done: at the job's timeout, when the
// worker lost the job's lease ([ErrLeaseLost] is the cause), or at the end
// of a shutdown's grace period.
type Handler interface {
	ProcessJob(ctx context.Context, j *Job) (any, error)
}

// HandlerFunc adapts a function to [Handler].
type HandlerFunc func(ctx context.Context, j *Job) (any, error)

// ProcessJob calls f(ctx, j).
func (f HandlerFunc) ProcessJob(ctx context.Context, j *Job) (any, error) { return f(ctx, j) }

// Middleware wraps a handler with code that runs around every job: logging,
// tracing, metrics. It is given the registered handler and returns the one
// the worker calls. The worker calls it once per function, when the first
// job of that function runs; it must not call the Worker's methods.
type Middleware func(Handler) Handler

// Worker runs the handlers registered on it for jobs from its queues.
// Register handlers, then call Run once. Register, Handle and Use are safe
// to call concurrently with Run.
type Worker struct {
	rdb  redis.UniversalClient
	opts WorkerOptions
	log  *slog.Logger
	id   string
	// nonce tells this Worker's leases from those of others, of the same
	// name too: it ends the attempt tokens it is given.
	nonce string

	mu         sync.Mutex
	handlers   map[string]Handler
	middleware []Middleware
	wrapped    map[string]Handler // handlers with the middleware around them
	regErr     error
	running    map[*run]struct{}

	queues   []workerQueue
	held     []*run       // fetched jobs waiting for a slot, oldest first; guarded by mu
	stopping bool         // shutting down: held jobs start no more; guarded by mu
	inflight atomic.Int64 // handlers running
	settling atomic.Int64 // returned handlers whose outcome is not recorded yet
	acking   atomic.Int64 // outcomes in the batch the ack loop is writing now
	quick    atomic.Int64 // handlers that returned within roundTrip of starting
	// ackedQuick is quick when the ack loop last fetched with acks
	// (fetchWithAcks, under fetchMu).
	ackedQuick int64
	roundTrip  atomic.Int64  // duration of the last fetch, ns
	freed      chan struct{} // a slot came free
	outcomes   chan *outcome
	retryDue   atomic.Int64 // Unix ms of the latest retry this worker scheduled
	reapEvery  time.Duration
	started    atomic.Bool
	qstate     []*queueState // per queue, as w.queues
	src        *jobSource    // of the jobs it fetches
	// fetchMu is held by whoever fetches: the fetch loop, or the ack loop
	// when it sends a fetch with its acks (see settle). fetchDone: the fetch
	// loop has returned. fetchCtx is Run's context. Guarded by fetchMu.
	fetchMu   sync.Mutex
	fetchDone bool
	fetchCtx  context.Context
	// firstSettling: the returned handlers whose outcome is not recorded
	// yet (settling) that ran jobs of the first queue.
	firstSettling atomic.Int64
	wake          chan struct{} // a wake-up came (subscribed workers)
	// subscribed: the worker waits for messages on the wake channels rather
	// than in a BLPOP over blockKeys (see block).
	subscribed  bool
	blockKeys   []string       // the BLPOP's keys: this worker's own wake key, then each queue's
	wakeKeys    map[string]int // queue index by wake key (and channel)
	slotKeys    map[string]int // queue index by slot key (and channel): a slot of its Concurrency freed
	channels    map[string]int // queue index by active-set channel
	waiting     func()         // called when the fetch loop starts an idle wait; tests only
	reapReplied func()         // called once a reap's scripts have answered, before their replies are read; tests only
	blocking    atomic.Bool    // the fetch loop is in its BLPOP, or about to be (see block)
	reports     chan *report   // SetProgress and SetMeta of its handlers (reportLoop)
	reportsDone chan struct{}  // closed when reportLoop has stopped
	hook        stepHook       // tests: stops a hand-over between queues
	// waitFailures counts the idle waits in a row that failed (fetch loop only).
	waitFailures int
	// handlerBase is the parent of every handler's context; it ends when
	// the shutdown grace period does.
	handlerBase context.Context
	startedAt   time.Time
	maxBlock    time.Duration // longest idle wait before looking at every queue: maxBlock
	maxHold     time.Duration // longest a fetched job waits for a slot: maxHold, shorter in tests
}

type workerQueue struct {
	name string
	k    keys
	// Key lists of the hot-path scripts, built once.
	dequeueKeys []string
	ackKeys     []string
	reapKeys    []string
}

func newWorkerQueue(prefix, name string) workerQueue {
	k := newKeys(prefix, name)
	return workerQueue{name: name, k: k,
		dequeueKeys: []string{k.pending(), k.active(), k.scheduled(), k.seq(), k.wake(), k.jobPrefix()},
		ackKeys:     []string{k.active(), k.finished(), k.jobPrefix()},
		reapKeys: []string{k.active(), k.pending(), k.failed(), k.reaper(), k.wake(), k.jobPrefix(), k.finished(),
			k.canceled(), k.reaped(), k.outbox(), k.deferred()},
	}
}

// NewWorker returns a worker using rdb. Invalid options are reported by Run.
func NewWorker(rdb redis.UniversalClient, opts WorkerOptions) *Worker {
	o := opts
	if len(o.Queues) == 0 {
		o.Queues = []string{"default"}
	}
	o.Queues = append([]string(nil), o.Queues...)
	if o.Concurrency == 0 {
		o.Concurrency = DefaultConcurrency
	}
	switch {
	case o.Prefetch == 0:
		o.Prefetch = max(o.Concurrency, 0)
	case o.Prefetch < 0:
		o.Prefetch = 0
	}
	if o.Lease == 0 {
		o.Lease = DefaultLease
	}
	if o.ShutdownTimeout == 0 {
		o.ShutdownTimeout = DefaultShutdownTimeout
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.ResultTTL == 0 {
		o.ResultTTL = DefaultResultTTL
	}
	if o.FailureTTL == 0 {
		o.FailureTTL = DefaultFailureTTL
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.Name == "" {
		host, _ := os.Hostname()
		o.Name = fmt.Sprintf("%s.%d.%s", host, os.Getpid(), newID()[:6])
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	w := &Worker{
		rdb:         rdb,
		opts:        o,
		id:          o.Name,
		nonce:       newID()[:8],
		log:         o.Logger.With("worker", o.Name),
		handlers:    map[string]Handler{},
		running:     map[*run]struct{}{},
		reports:     make(chan *report, 256),
		reportsDone: make(chan struct{}),
		freed:       make(chan struct{}, 1),
		maxBlock:    maxBlock,
		maxHold:     maxHold,
		reapEvery:   min(max(o.Lease/3, 10*time.Millisecond), 5*time.Second),
		wake:        make(chan struct{}, 1),
		wakeKeys:    map[string]int{},
		slotKeys:    map[string]int{},
		channels:    map[string]int{},
	}
	w.src = &jobSource{rdb: rdb, prefix: o.Prefix, rep: w.reports, repDone: w.reportsDone}
	for i, name := range o.Queues {
		q := newWorkerQueue(o.Prefix, name)
		w.queues = append(w.queues, q)
		st := &queueState{}
		st.dirty.Store(true)
		w.qstate = append(w.qstate, st)
		w.wakeKeys[q.k.wake()] = i
		w.slotKeys[q.k.slot()] = i
		w.channels[q.k.active()] = i
	}
	_, cluster := rdb.(*redis.ClusterClient)
	w.subscribed = cluster && len(w.queues) > 1
	if len(w.queues) > 0 {
		// Its own, even among workers of the same name.
		w.blockKeys = append(w.blockKeys, w.queues[0].k.wakeWorker(w.id+"."+w.nonce))
		for _, q := range w.queues {
			w.blockKeys = append(w.blockKeys, q.k.wake())
		}
	}
	if o.Concurrency > 0 {
		w.outcomes = make(chan *outcome, o.Concurrency+o.Prefetch)
	}
	return w
}

// ID returns the worker's id, as recorded in the jobs it runs.
func (w *Worker) ID() string { return w.id }

// Handle registers h for jobs whose function is name; a later registration
// of the same name replaces the earlier one.
func (w *Worker) Handle(name string, h Handler) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := validateFuncName(name); err != nil {
		w.regErr = errors.Join(w.regErr, err)
		return
	}
	if h == nil {
		w.regErr = errors.Join(w.regErr, fmt.Errorf("%w: nil handler for %q", ErrInvalid, name))
		return
	}
	w.handlers[name] = h
	delete(w.wrapped, name)
}

// Use adds middleware around every handler of the worker, those registered
// before and after; the first added is the outermost. A panic in middleware,
// or in building it, fails the attempt like a panic in a handler. A job whose function is not
// registered fails without reaching the middleware.
func (w *Worker) Use(mw ...Middleware) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, m := range mw {
		if m == nil {
			w.regErr = errors.Join(w.regErr, fmt.Errorf("%w: nil middleware", ErrInvalid))
			return
		}
	}
	w.middleware = append(w.middleware, mw...)
	clear(w.wrapped)
}

// Register registers fn for jobs whose function is name.
func (w *Worker) Register(name string, fn HandlerFunc) {
	if fn == nil {
		w.Handle(name, nil)
		return
	}
	w.Handle(name, fn)
}

// RegisterFunc registers fn for jobs whose function is name, decoding each
// job's JSON args into an A. Args that do not decode fail the job without
// retry.
func RegisterFunc[A, R any](w *Worker, name string, fn func(ctx context.Context, args A) (R, error)) {
	if fn == nil {
		w.Handle(name, nil)
		return
	}
	w.Handle(name, HandlerFunc(func(ctx context.Context, j *Job) (any, error) {
		var a A
		if err := j.Decode(&a); err != nil {
			return nil, SkipRetry(err)
		}
		return fn(ctx, a)
	}))
}

// handler returns the handler for name with the middleware around it,
// wrapped once and kept until Handle or Use changes it.
func (w *Worker) handler(name string) Handler {
	w.mu.Lock()
	defer w.mu.Unlock()
	h := w.handlers[name]
	if h == nil || len(w.middleware) == 0 {
		return h
	}
	if wh, ok := w.wrapped[name]; ok {
		return wh
	}
	for i := len(w.middleware) - 1; i >= 0 && h != nil; i-- {
		h = w.middleware[i](h)
	}
	if h == nil {
		h = HandlerFunc(func(context.Context, *Job) (any, error) {
			return nil, fmt.Errorf("%w: middleware returned a nil handler for %q", ErrInvalid, name)
		})
	}
	if w.wrapped == nil {
		w.wrapped = map[string]Handler{}
	}
	w.wrapped[name] = h
	return h
}

func (w *Worker) validate() error {
	o := w.opts
	err := errors.Join(w.regErr, validatePrefix(o.Prefix), validateToken("worker name", o.Name))
	seen := map[string]bool{}
	for _, q := range o.Queues {
		err = errors.Join(err, validateQueueName(q))
		if seen[q] {
			err = errors.Join(err, fmt.Errorf("%w: queue %q listed twice", ErrInvalid, q))
		}
		seen[q] = true
	}
	if w.rdb == nil {
		err = errors.Join(err, fmt.Errorf("%w: nil Redis client", ErrInvalid))
	}
	for _, c := range []struct {
		name string
		bad  bool
	}{
		{"concurrency", o.Concurrency < 0},
		{"lease", o.Lease < 0 || (o.Lease > 0 && o.Lease < 30*time.Millisecond)},
		{"shutdown timeout", o.ShutdownTimeout < 0},
		{"timeout", o.Timeout < 0},
	} {
		if c.bad {
			err = errors.Join(err, fmt.Errorf("%w: worker %s out of range", ErrInvalid, c.name))
		}
	}
	return err
}

// Run takes and runs jobs until ctx is done (or, with Burst, until the work
// runs out), then shuts down gracefully: it stops taking jobs, waits up to
// ShutdownTimeout for running handlers, and puts jobs still running back in
// their queues at once. It returns nil after a shutdown that lost nothing;
// Run may be called only once per Worker.
func (w *Worker) Run(ctx context.Context) error {
	if !w.started.CompareAndSwap(false, true) {
		return errors.New("rqgo: Worker.Run called twice")
	}
	w.mu.Lock()
	err := w.validate()
	w.mu.Unlock()
	if err != nil {
		return err
	}
	if err := w.register(ctx); err != nil {
		return err
	}
	sub, err := w.subscribe(ctx)
	if err != nil {
		w.unregister(ctx)
		return err
	}
	defer sub.Close()
	w.checkEviction(ctx)
	w.log.Info("worker started", "queues", w.opts.Queues, "concurrency", w.opts.Concurrency, "prefetch", w.opts.Prefetch, "lease", w.opts.Lease)

	// Handlers and the bookkeeping around them outlive ctx by the grace
	// period, so they run under contexts of their own.
	bg := context.WithoutCancel(ctx)
	handlerCtx, stopHandlers := context.WithCancelCause(bg)
	defer stopHandlers(nil)
	w.handlerBase = handlerCtx

	ackDone := make(chan struct{})
	ackStop := make(chan struct{})
	go func() { defer close(ackDone); w.ackLoop(bg, ackStop) }()
	reportStop := make(chan struct{})
	go func() { defer close(w.reportsDone); w.reportLoop(reportStop) }()
	beatCtx, stopBeat := context.WithCancel(bg)
	beatDone := make(chan struct{})
	go func() { defer close(beatDone); w.heartbeatLoop(beatCtx) }()

	w.fetchMu.Lock()
	w.fetchCtx = ctx
	w.fetchMu.Unlock()
	w.fetchLoop(ctx)

	w.drain(bg, stopHandlers)
	close(reportStop) // the handlers have returned, or were given up on
	<-w.reportsDone
	close(ackStop)
	<-ackDone
	stopBeat()
	<-beatDone
	w.unregister(bg)
	w.log.Info("worker stopped")
	return nil
}
