// Package rqgo is a job queue for Go whose only moving part is Redis.
//
// Applications enqueue work by function name; workers pull it from named
// queues and run the functions registered under those names. Jobs are Redis
// hashes, queues are lists and sorted sets, and every state change is one
// Lua script, so a crash never leaves a job half-moved. The key schema is
// public (see the README): any tool can read a job with HGETALL.
//
// # Enqueueing
//
// A [Queue] adds jobs to one named queue. Arguments are any JSON-encodable
// value:
//
//	q := rqgo.NewQueue("default", rdb)
//	job, err := q.Enqueue("resize", ResizeArgs{Image: "cat.jpg", Width: 640},
//		rqgo.Retry(5), rqgo.Timeout(time.Minute))
//
// Options set the id ([JobID]), retries ([Retry], [Backoff],
// [RetryIntervals]), the timeout of one attempt ([Timeout]), a start time
// ([In], [At]) and how long results are kept ([ResultTTL], [FailureTTL]).
//
// # Working
//
// A [Worker] runs registered handlers for jobs from its queues, in strict
// priority order, at most Concurrency at a time:
//
//	w := rqgo.NewWorker(rdb, rqgo.WorkerOptions{Queues: []string{"high", "default"}})
//	rqgo.RegisterFunc(w, "resize", func(ctx context.Context, a ResizeArgs) (string, error) {
//		return resize(ctx, a)
//	})
//	err := w.Run(ctx) // until ctx is done, then a graceful shutdown
//
// A handler's error fails the attempt; the job is retried with backoff until
// its retries run out, then it is failed and kept in the failed registry,
// from which [Queue.Requeue] takes it back. Wrap an error with [SkipRetry]
// to fail at once, or with [RetryAfter] to choose the next delay.
//
// # Guarantees
//
// Delivery is at least once: a job leaves its queue only in the same script
// that records it as running under a lease, which the worker renews. When a
// worker dies, another worker puts its jobs back in line about one lease
// later. Each attempt carries a token, so a worker that comes back late
// cannot overwrite a newer attempt. All times are taken from Redis's clock.
//
// # Reading jobs
//
// [Queue.FetchJob] reads one job; [Queue.Counts], [Queue.JobIDs] and
// [Queue.Jobs] list a queue's jobs by status; [Queues] and [Workers] list
// what exists under a prefix.
package rqgo
