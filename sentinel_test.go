package rqgo

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rqgo/rqgo/internal/redistest"
)

// A worker on a Sentinel-managed master (go-redis's failover client) goes
// on through two failovers during processing: one asked of Sentinel
// (SENTINEL FAILOVER), then the new master killed with SIGKILL so that the
// sentinels elect the old one again. Jobs enqueued after each failover
// finish, and every acknowledged job that survived finishes; what
// asynchronous replication lost is reported, not forbidden.
func TestSentinelFailoverWorkerGoesOn(t *testing.T) {
	skipShort(t)
	st := redistest.StartSentinel(t)
	rdb := st.Client()
	e := &testEnv{rdb: rdb, prefix: testPrefix(t), addr: st.Master.Addr}
	t.Cleanup(func() { redistest.DeletePrefix(t, rdb, e.prefix) })
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()

	q := e.queue("busy")
	log, rec := recordingLogger(t)
	w := e.worker(t, WorkerOptions{Queues: []string{"busy"}, Concurrency: 10, Lease: 3 * time.Second, Logger: log})
	r := startFailoverRun(t, q, w)
	r.waitRuns(300)

	began, m0 := time.Now(), r.mark()
	if err := st.Failover(ctx); err != nil {
		t.Fatal(err)
	}
	switched, m1 := time.Since(began), r.mark()
	enq1, fin1 := r.after(20)
	t.Logf("SENTINEL FAILOVER: %s master after %v; then an enqueue succeeded after %v more and its job finished after %v",
		st.Replica.Addr, switched.Round(time.Millisecond), enq1.Round(time.Millisecond), fin1.Round(time.Millisecond))

	// The sentinels turn the old master into a replica of the new one when
	// they next look at it (every 10s); do it now. Once it is in sync, kill
	// the new master while the producer and the worker go on.
	old := st.Master.Client()
	if err := old.ReplicaOf(ctx, "127.0.0.1", strconv.Itoa(st.Replica.Port)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := st.WaitReplicaOnline(ctx, st.Replica); err != nil {
		t.Fatal(err)
	}
	t.Logf("old master %s in sync as a replica after %v", st.Master.Addr, time.Since(began).Round(time.Millisecond))
	r.waitRuns(r.runCount() + 100)
	m2 := r.mark()
	st.Replica.Kill()
	killed := time.Now()
	if err := st.WaitMaster(ctx, st.Master); err != nil {
		t.Fatal(err)
	}
	promoted, m3 := time.Since(killed), r.mark()
	enq2, fin2 := r.after(20)
	rep := r.settle()
	t.Logf("master %s killed: %s master again after %v; then an enqueue succeeded after %v more and its job finished after %v",
		st.Replica.Addr, st.Master.Addr, promoted.Round(time.Millisecond), enq2.Round(time.Millisecond), fin2.Round(time.Millisecond))
	t.Logf("sentinel failovers: %d enqueues acknowledged, %d refused, %d jobs ran more than once; the worker logged %d warnings",
		rep.acked, rep.refused, rep.again, len(rec.all()))
	t.Logf("acknowledged jobs lost: %d of %d enqueued during SENTINEL FAILOVER, %d of %d enqueued during the kill and election, %d of the other %d",
		rep.lostIn(m0, m1), m1-m0, rep.lostIn(m2, m3), m3-m2, len(rep.lost)-rep.lostIn(m0, m1)-rep.lostIn(m2, m3), rep.acked-(m1-m0)-(m3-m2))
	if lines := rec.matching("NOPERM", "READONLY"); len(lines) > 0 {
		t.Logf("writes refused by a demoted master while the client switched:\n%s", strings.Join(lines, "\n"))
	}
}
