package dashboard

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo"
)

// scrapeTimeout bounds the Redis reads of one scrape.
const scrapeTimeout = 10 * time.Second

var (
	jobsDesc = prometheus.NewDesc("rqgo_queue_jobs",
		"Jobs of the queue in each state, as its Redis list and registries hold them.",
		[]string{"queue", "status"}, nil)
	pausedDesc = prometheus.NewDesc("rqgo_queue_paused",
		"1 while the queue is paused (no worker starts its jobs), else 0.",
		[]string{"queue"}, nil)
	latencyDesc = prometheus.NewDesc("rqgo_queue_latency_seconds",
		"How long the oldest ready job of the queue has waited; 0 when none waits.",
		[]string{"queue"}, nil)
	workersDesc = prometheus.NewDesc("rqgo_workers",
		"Live workers (those whose heartbeat has not expired).", nil, nil)
	runningDesc = prometheus.NewDesc("rqgo_worker_running_jobs",
		"Jobs each live worker was running at its last heartbeat.",
		[]string{"worker"}, nil)
)

// Collector is a [prometheus.Collector] that reads the queues and workers
// under one key prefix from Redis at each scrape. It keeps no state of its
// own, so any number of processes can export it; it is safe for concurrent
// use. A scrape that cannot read Redis fails with the error.
type Collector struct {
	rdb    redis.UniversalClient
	prefix string
}

// NewCollector returns a Collector for the queues under prefix ("" means
// [rqgo.DefaultPrefix]). Register it with a registry of your own, or use
// the dashboard's /metrics.
func NewCollector(rdb redis.UniversalClient, prefix string) *Collector {
	if prefix == "" {
		prefix = rqgo.DefaultPrefix
	}
	return &Collector{rdb: rdb, prefix: prefix}
}

// Describe sends the descriptors of the metrics Collect sends.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- jobsDesc
	ch <- pausedDesc
	ch <- latencyDesc
	ch <- workersDesc
	ch <- runningDesc
}

// Collect reads Redis and sends the metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	queues, err := readQueues(ctx, c.rdb, c.prefix)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(jobsDesc, err)
		return
	}
	for _, q := range queues {
		for _, s := range q.States() {
			ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(s.N), q.Name, string(s.Status))
		}
		// Parked jobs are queued ones held back over their limit key's
		// limits, in a registry of their own: the queued count leaves them
		// out, so the sum over the statuses is every job of the queue.
		ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(q.Parked), q.Name, string(statusParked))
		paused := 0.0
		if q.Paused {
			paused = 1
		}
		ch <- prometheus.MustNewConstMetric(pausedDesc, prometheus.GaugeValue, paused, q.Name)
		ch <- prometheus.MustNewConstMetric(latencyDesc, prometheus.GaugeValue, q.Latency.Seconds(), q.Name)
	}
	workers, err := rqgo.Workers(ctx, c.rdb, c.prefix)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(workersDesc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(workersDesc, prometheus.GaugeValue, float64(len(workers)))
	for _, w := range workers {
		ch <- prometheus.MustNewConstMetric(runningDesc, prometheus.GaugeValue, float64(w.Running), w.ID)
	}
}
