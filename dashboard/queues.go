package dashboard

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo"
)

// queueInfo is one queue's row: its counts, how long its oldest ready job
// has waited, whether it is paused and its limits.
type queueInfo struct {
	Name string
	rqgo.Counts
	Latency time.Duration
	Paused  bool
	Limits  rqgo.Limits
}

// statusParked is the queue page's tab of the queued jobs parked over
// their limit key's limits (rqgo.Counts.Parked): not a status of its own
// (a parked job is queued), but a registry of its own, which the queued
// tab does not list.
const statusParked rqgo.Status = "parked"

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
	if info.Limits, err = q.Limits(ctx); err != nil {
		return queueInfo{}, err
	}
	if info.Paused, err = q.Paused(ctx); err != nil {
		return queueInfo{}, err
	}
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

// parkedSince says when job j was parked over its limit key's limits, the
// zero time when it is not parked.
func parkedSince(ctx context.Context, rdb redis.UniversalClient, prefix string, j *rqgo.Job) (time.Time, error) {
	if j.LimitKey == "" || j.Status != rqgo.StatusQueued {
		return time.Time{}, nil
	}
	ms, err := rdb.ZScore(ctx, parkedKey(prefix, j.Queue), j.ID).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return time.Time{}, nil
	case err != nil:
		return time.Time{}, fmt.Errorf("dashboard: read whether job %s is parked: %w", j.ID, err)
	}
	return time.UnixMilli(int64(ms)), nil
}
