package dashboard

import (
	"context"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo"
)

// queueInfo is one queue's row: its counts and how long its oldest ready
// job has waited.
type queueInfo struct {
	Name string
	rqgo.Counts
	Latency time.Duration
}

// stateCount is one state's count, for the pages and the metrics.
type stateCount struct {
	Status rqgo.Status
	N      int64
}

// States lists the counts in the order of [rqgo.Statuses]: the overview's
// columns, the queue page's tabs and the rqgo_queue_jobs gauge.
func (q queueInfo) States() []stateCount {
	return []stateCount{
		{rqgo.StatusDeferred, q.Deferred},
		{rqgo.StatusQueued, q.Queued},
		{rqgo.StatusScheduled, q.Scheduled},
		{rqgo.StatusStarted, q.Started},
		{rqgo.StatusFinished, q.Finished},
		{rqgo.StatusFailed, q.Failed},
		{rqgo.StatusCanceled, q.Canceled},
	}
}

// readQueues reads every known queue under prefix, sorted by name.
func readQueues(ctx context.Context, rdb redis.UniversalClient, prefix string) ([]queueInfo, error) {
	names, err := rqgo.Queues(ctx, rdb, prefix)
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	infos := make([]queueInfo, 0, len(names))
	for _, name := range names {
		info, err := readQueue(ctx, rqgo.NewQueue(name, rdb, rqgo.WithPrefix(prefix)))
		if err != nil {
			return nil, err
		}
		infos = append(infos, info)
	}
	return infos, nil
}

func readQueue(ctx context.Context, q *rqgo.Queue) (queueInfo, error) {
	c, err := q.Counts(ctx)
	if err != nil {
		return queueInfo{}, err
	}
	info := queueInfo{Name: q.Name(), Counts: c}
	if c.Queued > 0 {
		head, err := q.Jobs(ctx, rqgo.StatusQueued, 0, 1)
		if err != nil {
			return queueInfo{}, err
		}
		if len(head) == 1 && !head[0].EnqueuedAt.IsZero() {
			info.Latency = max(time.Since(head[0].EnqueuedAt), 0)
		}
	}
	return info, nil
}
