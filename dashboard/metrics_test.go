package dashboard_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo"
	"github.com/rqgo/rqgo/dashboard"
)

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestMetrics(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		q := e.queue("default")
		e.failJobs(t, q, 2)
		// On miniredis the queued jobs are enqueued 90s ago, by Redis's clock.
		if e.mr != nil {
			e.mr.SetTime(time.Now().Add(-90 * time.Second))
		}
		var parent *rqgo.Job
		for range 3 {
			j, err := q.EnqueueContext(ctx, "f", nil)
			if err != nil {
				t.Fatal(err)
			}
			parent = j
		}
		if _, err := q.EnqueueContext(ctx, "f", nil, rqgo.In(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, err := q.EnqueueContext(ctx, "f", nil, rqgo.DependsOn(parent)); err != nil {
			t.Fatal(err)
		}
		want := `
# HELP rqgo_queue_jobs Jobs of the queue in each state, as its Redis list and registries hold them.
# TYPE rqgo_queue_jobs gauge
rqgo_queue_jobs{queue="default",status="canceled"} 0
rqgo_queue_jobs{queue="default",status="deferred"} 1
rqgo_queue_jobs{queue="default",status="failed"} 2
rqgo_queue_jobs{queue="default",status="finished"} 0
rqgo_queue_jobs{queue="default",status="parked"} 0
rqgo_queue_jobs{queue="default",status="queued"} 3
rqgo_queue_jobs{queue="default",status="scheduled"} 1
rqgo_queue_jobs{queue="default",status="started"} 0
# HELP rqgo_workers Live workers (those whose heartbeat has not expired).
# TYPE rqgo_workers gauge
rqgo_workers 0
`
		c := dashboard.NewCollector(e.rdb, e.prefix)
		if err := testutil.CollectAndCompare(c, strings.NewReader(want), "rqgo_queue_jobs", "rqgo_workers"); err != nil {
			t.Error(err)
		}
		if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
			t.Errorf("lint: %v %v", problems, err)
		}

		// The oldest ready job's wait is the queue's latency.
		minLatency, maxLatency := 0.0, 60.0
		if e.mr != nil {
			minLatency, maxLatency = 89, 150
		}
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(c)
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var latency float64 = -1
		for _, mf := range mfs {
			if mf.GetName() == "rqgo_queue_latency_seconds" {
				latency = mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		if latency <= minLatency || latency > maxLatency {
			t.Errorf("rqgo_queue_latency_seconds = %v, want in (%v, %v]", latency, minLatency, maxLatency)
		}

		// /metrics serves the same.
		code, body := get(t, dashboard.New(e.rdb, dashboard.Options{Prefix: e.prefix}), "/metrics")
		if code != 200 || !strings.Contains(body, `rqgo_queue_jobs{queue="default",status="failed"} 2`) ||
			!strings.Contains(body, `rqgo_queue_jobs{queue="default",status="deferred"} 1`) {
			t.Errorf("GET /metrics = %d:\n%s", code, body)
		}
	})
}

// A live worker shows in rqgo_workers and its running jobs in
// rqgo_worker_running_jobs.
func TestMetricsWorkers(t *testing.T) {
	rdb := mini(t).rdb
	q := rqgo.NewQueue("default", rdb)
	if _, err := q.EnqueueContext(t.Context(), "hold", nil); err != nil {
		t.Fatal(err)
	}
	running, release := make(chan struct{}), make(chan struct{})
	w := rqgo.NewWorker(rdb, rqgo.WorkerOptions{Name: "w1", Lease: 300 * time.Millisecond, Logger: quiet()})
	w.Register("hold", func(ctx context.Context, j *rqgo.Job) (any, error) {
		close(running)
		<-release
		return nil, nil
	})
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { stop(); <-done }()
	defer close(release)
	<-running

	c := dashboard.NewCollector(rdb, "")
	want := `
# HELP rqgo_worker_running_jobs Jobs each live worker was running at its last heartbeat.
# TYPE rqgo_worker_running_jobs gauge
rqgo_worker_running_jobs{worker="w1"} 1
# HELP rqgo_workers Live workers (those whose heartbeat has not expired).
# TYPE rqgo_workers gauge
rqgo_workers 1
`
	// The running count is written by the heartbeat, every Lease/3.
	waitFor(t, "the heartbeat to report the running job", func() bool {
		return testutil.CollectAndCompare(c, strings.NewReader(want), "rqgo_workers", "rqgo_worker_running_jobs") == nil
	})
}

// A scrape that cannot read Redis fails, rather than reporting empty queues.
func TestMetricsRedisDown(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	defer rdb.Close()
	mr.Close()
	var logged bytes.Buffer
	code, body := get(t, dashboard.New(rdb, dashboard.Options{Logger: slog.New(slog.NewTextHandler(&logged, nil))}), "/metrics")
	if code != 500 || !strings.Contains(body, "connect") {
		t.Errorf("GET /metrics with Redis down = %d:\n%s", code, body)
	}
	if !strings.Contains(logged.String(), "level=ERROR") || !strings.Contains(logged.String(), "connect") {
		t.Errorf("the failed scrape logged %q, want an error naming the cause", logged.String())
	}
	if code, body := get(t, dashboard.New(rdb, dashboard.Options{Logger: quiet()}), "/"); code != 500 || !strings.Contains(body, "rqgo dashboard:") {
		t.Errorf("GET / with Redis down = %d:\n%s", code, body)
	}
}
