package dashboard_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rqgo/rqgo"
	"github.com/rqgo/rqgo/dashboard"
)

// JobMetrics counts each attempt by what its handler did, times it, and
// shows the attempts running; the worker still fails a panicking attempt.
func TestJobMetrics(t *testing.T) {
	rdb := mini(t).rdb
	ctx := t.Context()
	q := rqgo.NewQueue("mail", rdb)
	m := dashboard.NewJobMetrics()

	w := rqgo.NewWorker(rdb, rqgo.WorkerOptions{Queues: []string{"mail"}, Logger: quiet()})
	w.Use(m.Middleware())
	started, release := make(chan struct{}), make(chan struct{})
	w.Register("send", func(ctx context.Context, j *rqgo.Job) (any, error) { return "sent", nil })
	w.Register("bounce", func(ctx context.Context, j *rqgo.Job) (any, error) { return nil, errors.New("bounced") })
	w.Register("crash", func(ctx context.Context, j *rqgo.Job) (any, error) { panic("crashed") })
	// Returns no error, but only once its timeout has passed: the worker
	// fails the attempt, and the metrics count what the handler did.
	w.Register("late", func(ctx context.Context, j *rqgo.Job) (any, error) { <-ctx.Done(); return nil, nil })
	w.Register("hold", func(ctx context.Context, j *rqgo.Job) (any, error) {
		close(started)
		<-release
		return nil, nil
	})
	var ids []string
	for _, fn := range []string{"send", "send", "bounce", "crash", "late", "hold"} {
		opts := []rqgo.EnqueueOption{rqgo.Retry(0)}
		if fn == "late" {
			opts = append(opts, rqgo.Timeout(50*time.Millisecond))
		}
		j, err := q.EnqueueContext(ctx, fn, nil, opts...)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	defer func() { stop(); <-done }()
	<-started
	for _, id := range ids[:5] {
		waitFor(t, "the first five jobs to end", func() bool {
			j, err := q.FetchJob(ctx, id)
			return err == nil && (j.Status == rqgo.StatusFinished || j.Status == rqgo.StatusFailed)
		})
	}

	want := `
# HELP rqgo_job_attempts_running Attempts the handlers of this process are running now.
# TYPE rqgo_job_attempts_running gauge
rqgo_job_attempts_running{func="bounce",queue="mail"} 0
rqgo_job_attempts_running{func="crash",queue="mail"} 0
rqgo_job_attempts_running{func="hold",queue="mail"} 1
rqgo_job_attempts_running{func="late",queue="mail"} 0
rqgo_job_attempts_running{func="send",queue="mail"} 0
# HELP rqgo_job_attempts_total Attempts the handlers of this process ran, by outcome: ok, error or panic.
# TYPE rqgo_job_attempts_total counter
rqgo_job_attempts_total{func="bounce",outcome="error",queue="mail"} 1
rqgo_job_attempts_total{func="crash",outcome="panic",queue="mail"} 1
rqgo_job_attempts_total{func="late",outcome="ok",queue="mail"} 1
rqgo_job_attempts_total{func="send",outcome="ok",queue="mail"} 2
`
	if err := testutil.CollectAndCompare(m, strings.NewReader(want), "rqgo_job_attempts_total", "rqgo_job_attempts_running"); err != nil {
		t.Error(err)
	}
	if j, _ := q.FetchJob(ctx, ids[3]); j.Status != rqgo.StatusFailed || !strings.Contains(j.Error, "panic: crashed") {
		t.Errorf("crashing job: %s %q, want failed with the panic", j.Status, j.Error)
	}
	if j, _ := q.FetchJob(ctx, ids[4]); j.Status != rqgo.StatusFailed || !strings.Contains(j.Error, "timeout") {
		t.Errorf("late job: %s %q, want failed by its timeout", j.Status, j.Error)
	}

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	timed := uint64(0)
	for _, mf := range mfs {
		if mf.GetName() == "rqgo_job_duration_seconds" {
			for _, s := range mf.GetMetric() {
				timed += s.GetHistogram().GetSampleCount()
			}
		}
	}
	if timed != 5 {
		t.Errorf("rqgo_job_duration_seconds counts %d attempts, want the 5 that ended", timed)
	}
	close(release)
}
