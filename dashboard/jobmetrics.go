package dashboard

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rqgo/rqgo"
)

// JobMetrics is a [prometheus.Collector] of the jobs this process's workers
// run, fed by its [JobMetrics.Middleware]. Where [Collector] reads what
// Redis holds, JobMetrics counts what happened here: attempts by outcome,
// how long they took, and how many are running. It is safe for concurrent
// use, and one JobMetrics may serve several workers.
type JobMetrics struct {
	attempts *prometheus.CounterVec
	duration *prometheus.HistogramVec
	running  *prometheus.GaugeVec
}

// Outcomes of an attempt, as JobMetrics labels them: what the handler did,
// before the worker applies the job's timeout and retry policy.
const (
	OutcomeOK    = "ok"    // the handler returned no error
	OutcomeError = "error" // the handler returned an error
	OutcomePanic = "panic" // the handler panicked
)

// NewJobMetrics returns a JobMetrics with no attempts counted.
func NewJobMetrics() *JobMetrics {
	labels := []string{"queue", "func"}
	return &JobMetrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rqgo_job_attempts_total",
			Help: "Attempts the handlers of this process ran, by outcome: ok, error or panic.",
		}, append(labels, "outcome")),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rqgo_job_duration_seconds",
			Help:    "How long the handlers of this process ran, per attempt.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10), // 1 ms to 262 s
		}, labels),
		running: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rqgo_job_attempts_running",
			Help: "Attempts the handlers of this process are running now.",
		}, labels),
	}
}

// Describe sends the descriptors of the metrics Collect sends.
func (m *JobMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.attempts.Describe(ch)
	m.duration.Describe(ch)
	m.running.Describe(ch)
}

// Collect sends the metrics.
func (m *JobMetrics) Collect(ch chan<- prometheus.Metric) {
	m.attempts.Collect(ch)
	m.duration.Collect(ch)
	m.running.Collect(ch)
}

// Middleware returns the middleware that counts and times every attempt;
// add it with [rqgo.Worker.Use]. A panic is counted, then goes on to the
// worker, which fails the attempt with it.
func (m *JobMetrics) Middleware() rqgo.Middleware {
	return func(next rqgo.Handler) rqgo.Handler {
		return rqgo.HandlerFunc(func(ctx context.Context, j *rqgo.Job) (result any, err error) {
			running := m.running.WithLabelValues(j.Queue, j.Func)
			running.Inc()
			start := time.Now()
			outcome := OutcomePanic
			defer func() {
				running.Dec()
				m.duration.WithLabelValues(j.Queue, j.Func).Observe(time.Since(start).Seconds())
				m.attempts.WithLabelValues(j.Queue, j.Func, outcome).Inc()
			}()
			result, err = next.ProcessJob(ctx, j)
			outcome = OutcomeOK
			if err != nil {
				outcome = OutcomeError
			}
			return result, err
		})
	}
}
