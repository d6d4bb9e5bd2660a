package rqgo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// maxBlock is the longest an idle worker waits before it looks at every
// queue again (one LLEN and one ZRANGE each, in one round trip), in case a
// wake-up was lost. Wake-ups are not lost while the connection that carries
// them lives, and a worker looks at every queue when it reconnects, so this
// is a last resort.
const maxBlock = 5 * time.Minute

// maxHold is the longest a job fetched ahead waits for a slot
// before the worker gives it back to its queue (see WorkerOptions.Prefetch).
const maxHold = 100 * time.Millisecond

// queueState is what a worker knows of one of its queues.
type queueState struct {
	// dirty: the queue may have ready jobs (a wake-up came, or the last
	// fetch left some). A fetch looks only at dirty queues and queues whose
	// next scheduled job is due.
	dirty atomic.Bool
	due   atomic.Int64 // Unix ms of its earliest scheduled job, 0 when none
	// reapAt is the Unix ms of its next reap (heartbeat loop).
	reapAt atomic.Int64
	// reapAsked is set by whatever asks for a reap (reapSoon, markAll), so
	// that a reap already in flight, whose reply predates the ask, does not
	// put the next reap off past it.
	reapAsked atomic.Bool
	// broken: a fetch was refused (a damaged key); not fetched from until
	// brokenUntil, Unix ms (broken under the worker's fetchMu).
	brokenUntil atomic.Int64
	broken      int
	// reclaim: a dequeue failed, and may have leased jobs this worker never
	// got (under the worker's fetchMu).
	reclaim bool
	// heldUntil: the queue has work the worker must not ask for before this
	// Unix ms (0 = none): it is paused, its Concurrency is full or its Rate
	// spent (hold, dequeue.lua's reason). A message on its active set's
	// channel ends the hold sooner (see listen).
	heldUntil atomic.Int64
	hold      atomic.Int64
	// goes counts the messages that end a hold (see listen, markAll), so
	// that the hold a fetch reports does not undo one that came while the
	// fetch was on its way.
	goes atomic.Int64
	// capped: the queue answered that its Concurrency was full, so its acks
	// leave the slots they free to this worker (see settle).
	capped atomic.Bool
	// parked: how many of its jobs its last fetch found parked for their
	// limit keys; a burst worker waits for them.
	parked atomic.Int64
	// noFlow: its last fetch found no flow hash (no limits, not paused), so
	// the acks of the jobs it leased need not tell anyone of the slots
	// they free (ack_many.lua's ARGV[2]).
	noFlow atomic.Bool
}

func (s *queueState) ready(nowMs int64) bool {
	if s.brokenUntil.Load() > nowMs || s.heldUntil.Load() > nowMs {
		return false
	}
	due := s.due.Load()
	return s.dirty.Load() || (due > 0 && due <= nowMs)
}

// markAll makes the worker look at every queue, and reap each soon.
func (w *Worker) markAll() {
	for i, st := range w.qstate {
		st.reapAsked.Store(true)
		st.reapAt.Store(0)
		w.endHold(i)
	}
	w.signalWake()
}

// signalWake ends the fetch loop's idle wait.
func (w *Worker) signalWake() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// fetchLoop takes jobs while slots are free, waiting for a wake-up when
// there are none, until ctx ends or, in burst mode, the work runs out.
func (w *Worker) fetchLoop(ctx context.Context) {
	backoff := RetryPolicy{Base: 50 * time.Millisecond, Cap: 5 * time.Second}
	failures := 0
	ahead, lastQuick := 0, int64(0) // jobs to take beyond the free slots
	lastSweep := time.Now()
	defer func() {
		w.fetchMu.Lock()
		w.fetchDone = true // the ack loop fetches no more (see settle)
		w.fetchMu.Unlock()
	}()
	for ctx.Err() == nil {
		want, held := w.want(ahead)
		if want <= 0 {
			w.waitFreed(ctx)
			continue
		}
		w.fetchMu.Lock()
		w.reclaimLost(ctx)
		if w.opts.Burst {
			// A burst worker waits for no wake-up: it looks at every queue.
			for _, st := range w.qstate {
				st.dirty.Store(true)
			}
		} else if time.Since(lastSweep) >= w.maxBlock {
			lastSweep = time.Now()
			w.look(ctx)
		}
		fetched, idle := time.Now(), w.inflight.Load()+w.settling.Load()+int64(held) == 0
		// Take ahead as many jobs as handlers returned within a round trip
		// since the last fetch: handlers that quick would otherwise leave
		// their slots idle while the next fetch is in flight. A worker whose
		// handlers take longer than a round trip takes none ahead.
		quick := w.quick.Load()
		ahead = min(w.opts.Prefetch, int(quick-lastQuick))
		lastQuick = quick
		jobs, more, asked, err := w.fetch(ctx, want)
		ready := w.anyReady()
		w.fetchMu.Unlock()
		if asked {
			w.roundTrip.Store(int64(time.Since(fetched)))
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			d := backoff.Ceiling(failures)
			reloadTopology(w.rdb)
			w.log.Warn("fetching jobs failed; retrying", "err", err, "in", d)
			sleepCtx(ctx, d)
			continue
		}
		failures = 0
		if more {
			// A later queue waits for a slot to free.
			w.waitFreed(ctx)
			continue
		}
		if len(jobs) == want || (len(jobs) > 0 && w.opts.Burst) {
			continue
		}
		if w.opts.Burst && len(jobs) == 0 {
			if idle && w.retriesDue(fetched) && !w.limited() {
				return
			}
			w.waitBurst(ctx, w.nextDue())
			continue
		}
		switch {
		case ready:
		case w.holding():
			w.waitFreed(ctx) // a held job goes back after maxHold
		default:
			w.block(ctx, lastSweep.Add(w.maxBlock))
		}
	}
}

// look reads, in one round trip, how many jobs each queue has ready and when
// its next scheduled job is due, and marks the queues a fetch must look at.
// When the reads fail, every queue is marked.
func (w *Worker) look(ctx context.Context) {
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	lens := make([]*redis.IntCmd, len(w.queues))
	firsts := make([]*redis.ZSliceCmd, len(w.queues))
	parks := make([]*redis.ZSliceCmd, len(w.queues))
	_, err := w.rdb.Pipelined(c, func(p redis.Pipeliner) error {
		for i, q := range w.queues {
			lens[i] = p.LLen(c, q.k.pending())
			firsts[i] = p.ZRangeWithScores(c, q.k.scheduled(), 0, 0)
			parks[i] = p.ZRangeWithScores(c, q.k.parkKeys(), 0, 0) // parked jobs' next look
		}
		return nil
	})
	for i, st := range w.qstate {
		n, lerr := lens[i].Result()
		first, ferr := firsts[i].Result()
		park, perr := parks[i].Result()
		if perr == nil && len(park) == 1 && int64(park[0].Score) <= time.Now().UnixMilli() {
			// A parked key whose time has come is taken up by the next
			// fetch, unless the queue lost its flow hash: then the reap
			// sends its jobs back (reap.lua).
			w.reapSoon(i)
		}
		switch {
		case err != nil || lerr != nil || ferr != nil || perr != nil:
			st.dirty.Store(true)
		case n > 0:
			st.dirty.Store(true)
		default:
			for _, z := range append(first, park...) {
				if d := st.due.Load(); d == 0 || int64(z.Score) < d {
					st.due.Store(max(int64(z.Score), 1))
				}
			}
		}
	}
}

// reclaimLost gives back, at the head of their queues and without counting
// the attempt, the jobs that a dequeue whose reply was lost leased to this
// worker: those in the active set whose token carries this worker's nonce
// but belong to none of its runs. It tries again at the next fetch while
// Redis does not answer.
func (w *Worker) reclaimLost(ctx context.Context) {
	for i, st := range w.qstate {
		if !st.reclaim {
			continue
		}
		q := w.queues[i]
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		ids, err := w.rdb.ZRange(c, q.k.active(), 0, -1).Result()
		toks := make([]*redis.StringCmd, len(ids))
		if err == nil && len(ids) > 0 {
			_, err = w.rdb.Pipelined(c, func(p redis.Pipeliner) error {
				for n, id := range ids {
					toks[n] = p.HGet(c, q.k.job(id), "token")
				}
				return nil
			})
			if errors.Is(err, redis.Nil) {
				err = nil // a job whose hash went
			}
		}
		cancel()
		if err != nil {
			return
		}
		st.reclaim = false
		mine := map[string]bool{}
		w.mu.Lock()
		for r := range w.running {
			mine[r.job.token] = true
		}
		w.mu.Unlock()
		var lost []*run
		for n, id := range ids {
			if tok := toks[n].Val(); strings.HasSuffix(tok, ":"+w.nonce) && !mine[tok] {
				lost = append(lost, &run{job: &Job{ID: id, token: tok}, q: q})
			}
		}
		if len(lost) > 0 {
			n := w.release(ctx, lost)
			w.log.Warn("gave back jobs leased by a fetch whose reply was lost", "queue", q.name, "jobs", len(lost), "returned", n)
		}
	}
}

// anyReady says whether a fetch would look at some queue now.
func (w *Worker) anyReady() bool {
	now := time.Now().UnixMilli()
	for _, st := range w.qstate {
		if st.ready(now) {
			return true
		}
	}
	return false
}

// nextDue returns the earliest time a scheduled job of the worker's queues
// comes due, or a queue refused by a damaged key is tried again; zero when
// none.
func (w *Worker) nextDue() time.Time {
	var next int64
	for _, st := range w.qstate {
		for _, t := range []int64{st.due.Load(), st.brokenUntil.Load(), st.heldUntil.Load()} {
			if t > 0 && (next == 0 || t < next) {
				next = t
			}
		}
	}
	if next == 0 {
		return time.Time{}
	}
	return time.UnixMilli(next)
}

// want returns how many jobs the fetch loop should take now, 0 to wait,
// and how many fetched jobs are held waiting for a slot. ahead is how many
// jobs to hold beyond the free slots.
//
// A slot frees when its handler returns. Outcomes waiting to be recorded
// hold back fetching only when as many wait as the worker can hold, not
// counting the batch being written: the next fetch goes out while the acks
// of the last one are on their way, and a worker whose acks fail (Redis
// unreachable) stops taking jobs. While held jobs remain, the loop waits
// until a quarter of its room is empty, so fetches stay large.
func (w *Worker) want(ahead int) (want, held int) {
	w.mu.Lock()
	held = len(w.held)
	w.mu.Unlock()
	room := w.opts.Concurrency + ahead
	if w.settling.Load()-w.acking.Load() >= int64(room) {
		return 0, held
	}
	want = room - int(w.inflight.Load()) - held
	if held > 0 && 4*want < room {
		return 0, held
	}
	return want, held
}

// holding says whether the worker holds fetched jobs waiting for a slot.
func (w *Worker) holding() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.held) > 0
}

// releaseHeld gives held jobs fetched at or before t (every held job when t is
// zero) back to the head of their queues with release.lua, which does not
// count the attempt. A job whose release fails runs again once its lease
// expires.
func (w *Worker) releaseHeld(ctx context.Context, t time.Time) {
	var runs []*run
	w.mu.Lock()
	n := 0
	for n < len(w.held) && (t.IsZero() || !w.held[n].fetched.After(t)) {
		r := w.held[n]
		delete(w.running, r)
		if !r.lost { // a run whose lease was lost while held has nothing to give back
			r.lost = true
			runs = append(runs, r)
		}
		n++
	}
	clear(w.held[:n])
	w.held = w.held[n:]
	w.mu.Unlock()
	if len(runs) == 0 {
		return
	}
	// release.lua pushes each job to the head of its queue: the last held
	// goes first, so the queue ends up in the order the jobs were fetched.
	slices.Reverse(runs)
	for _, r := range runs {
		r.cancel(errShutdown)
	}
	released := w.release(ctx, runs)
	if released < len(runs) {
		w.log.Warn("could not return some held jobs to their queues; they run again once their leases expire", "returned", released, "held", len(runs))
		return
	}
	w.log.Debug("returned held jobs to their queues", "jobs", released)
}

// retriesDue says whether every retry this worker scheduled was due before
// a fetch that started at t. A burst worker returns when such a fetch,
// started with nothing running (so no outcome could land after it looked),
// found nothing.
func (w *Worker) retriesDue(t time.Time) bool {
	return t.UnixMilli() > w.retryDue.Load()
}

// fetch runs dequeue.lua on the ready queues in priority order until it has
// up to n jobs, and starts a handler for each, or holds the job until a slot
// frees. asked reports that it asked Redis at all.
//
// Only the first queue's jobs are held: a later queue is asked for no more
// jobs than there are free slots left, so a held job never makes a job of
// a higher-priority queue wait. more reports that a later queue was not
// asked for that reason.
//
// A queue whose keys are damaged (dequeue.lua refuses it, naming the key)
// is logged and left alone for a while; the others are served meanwhile.
func (w *Worker) fetch(ctx context.Context, n int) (jobs []*Job, more, asked bool, err error) {
	w.mu.Lock()
	free := w.opts.Concurrency - int(w.inflight.Load()) - len(w.held)
	w.mu.Unlock()
	lease := w.opts.Lease.Milliseconds()
	nowMs := time.Now().UnixMilli()
	for i := range w.queues {
		q, st := &w.queues[i], w.qstate[i]
		if !st.ready(nowMs) {
			continue
		}
		if i == 0 && st.capped.Load() && w.firstSettling.Load() > 0 {
			// Under a Concurrency, the outcomes on their way hold slots: the
			// ack loop fetches from this queue with their acks (settle), and
			// the fetch loop waits for them (more), asking no later queue
			// before this one.
			return nil, true, false, nil
		}
		ask := n - len(jobs)
		if i > 0 {
			if ask = min(ask, free-len(jobs)); ask <= 0 {
				return jobs, len(jobs) < n, asked, nil
			}
		}
		// Cleared before the call: a wake-up during it marks the queue again.
		st.dirty.Store(false)
		asked = true
		goes := st.goes.Load()
		sent := time.Now()
		res, err := dequeueScript.Run(ctx, w.rdb, q.dequeueKeys, ask, lease, w.id, w.nonce, max(free-len(jobs), 0)).Slice()
		got, refused, err := w.taken(ctx, i, res, err, goes, sent)
		jobs = append(jobs, got...)
		if refused {
			continue
		}
		if err != nil {
			return jobs, false, asked, err
		}
		if len(jobs) >= n {
			break
		}
	}
	return jobs, false, asked, nil
}

// taken handles the reply of a dequeue.lua call for the worker's queue i
// (res, or the call's error err), sent at sent when the queue's goes count
// was goes: it records what the reply says of the queue and admits its jobs.
// refused says the queue's keys are damaged, so it is left alone for a
// while; err is an error the fetch reports.
func (w *Worker) taken(ctx context.Context, i int, res []any, err error, goes int64, sent time.Time) (jobs []*Job, refused bool, _ error) {
	q, st := &w.queues[i], w.qstate[i]
	if err != nil {
		st.dirty.Store(true)
		if isScriptRefusal(err) {
			st.broken++
			d := min(time.Second<<min(st.broken-1, 6), time.Minute)
			st.brokenUntil.Store(time.Now().Add(d).UnixMilli())
			w.log.Error("queue refused: a key of it is damaged; serving the other queues and trying it again later",
				"queue", q.name, "err", err, "in", d)
			return nil, true, nil
		}
		// The call may have run with its reply lost: its jobs are leased
		// to this worker, which never got them.
		st.reclaim = true
		return nil, false, fmt.Errorf("dequeue from %q: %w", q.name, err)
	}
	st.broken = 0
	st.brokenUntil.Store(0)
	if len(res) < dequeuedHead || (len(res)-dequeuedHead)%dequeuedLen != 0 {
		return nil, false, fmt.Errorf("dequeue from %q: unexpected reply of %d elements", q.name, len(res))
	}
	nextMs, _ := res[0].(int64)
	st.due.Store(nextMs)
	now, _ := res[1].(int64)
	hold, _ := res[4].(int64)
	w.holdBack(st, hold, res[5], goes)
	parked, _ := res[6].(int64) // -1: no flow hash
	st.noFlow.Store(parked < 0)
	st.parked.Store(max(parked, 0))
	if left, _ := res[2].(int64); left > 0 && hold == 0 {
		st.dirty.Store(true)
	}
	if active, _ := res[3].(int64); active > 0 {
		w.reapSoon(i)
	}
	if ctx.Err() != nil {
		// A fetch that ends after ctx does starts nothing: its jobs are
		// held, and the shutdown gives them back.
		w.stop()
	}
	ahead := int64(aheadIn(res)) // the last ones
	for r, n := res[dequeuedHead:], int64(len(res)-dequeuedHead)/dequeuedLen; len(r) > 0; r, n = r[dequeuedLen:], n-1 {
		j, derr := w.dequeued(q, now, r[:dequeuedLen])
		w.admit(*q, j, derr, sent, n <= ahead)
		jobs = append(jobs, j)
	}
	return jobs, false, nil
}

// isScriptRefusal says whether err is a script's refusal to run on a
// damaged key ("rqgo: key ... holds a ..."), which moved nothing.
func isScriptRefusal(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.HasPrefix(err.Error(), "rqgo: key ")
}

// aheadIn is how many of the jobs of dequeue.lua's reply res, the last
// ones, are handed out ahead of the queue's Concurrency.
func aheadIn(res []any) int {
	if len(res) < dequeuedHead {
		return 0
	}
	n, _ := res[7].(int64)
	return int(n)
}

// dequeuedHead is the number of elements before the jobs in dequeue.lua's
// reply: next_ms, now_ms, left, active, hold, hold_ms, parked, ahead.
const dequeuedHead = 8

// dequeuedLen is the number of elements per job in dequeue.lua's reply:
// id, token, attempt, the fetched fields but the queue's name, and the
// element with what a flagged job has more.
const dequeuedLen = 3 + fetchedFields - 1 + 1

// dequeued decodes one job of dequeue.lua's reply, started at now (Unix ms)
// on this worker.
func (w *Worker) dequeued(q *workerQueue, now int64, r []any) (*Job, error) {
	var jv jobValues
	for i, v := range r[3 : 3+fetchedFields-1] { // all but the queue's name
		if i >= xQueue {
			i++
		}
		jv.v[i], jv.ok[i] = v.(string)
	}
	jv.v[xQueue], jv.ok[xQueue] = q.name, true
	if more, ok := r[3+fetchedFields-1].([]any); ok && len(more) == 3 {
		for i, x := range []int{xParents, xLimitKey, xHeaders} {
			jv.v[x], jv.ok[x] = more[i].(string)
		}
	}
	jv.v[xStatus], jv.ok[xStatus] = string(StatusStarted), true
	j, err := jv.decode()
	// The id and queue the job was fetched by are the ones that count.
	j.ID, _ = r[0].(string)
	j.Queue = q.name
	tok, _ := r[1].(string)
	attempt, _ := r[2].(int64)
	j.token = tok
	j.Attempt = int(attempt)
	j.StartedAt = msTime(now)
	j.Worker = w.id
	j.src, j.leased = w.src, true
	return j, err
}
