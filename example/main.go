// Command example shows rqgo end to end: it enqueues jobs, runs a worker in
// burst mode until the work is done, and prints each job's final state.
//
// It uses the Redis at $REDIS_URL when set, else an embedded in-process
// miniredis, so it runs on a machine with no Redis at all:
//
//	go run ./example
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./example
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo"
)

// ResizeArgs are the arguments of the "resize" function.
type ResizeArgs struct {
	Image string `json:"image"`
	Width int    `json:"width"`
}

func main() {
	keep := flag.Bool("keep", false, "with $REDIS_URL: keep the jobs in Redis (for redis-cli or `rqgo job`) instead of deleting them")
	flag.Parse()
	if err := run(os.Stdout, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "example:", err)
		os.Exit(1)
	}
}

func run(out io.Writer, keep bool) error {
	ctx := context.Background()
	rdb, where, cleanup, err := connect()
	if err != nil {
		return err
	}
	defer cleanup()
	fmt.Fprintln(out, "redis:", where)

	// Each run uses a fresh prefix so it never mixes with other data.
	prefix := fmt.Sprintf("rqgo-example-%d", time.Now().UnixNano())
	if !keep {
		defer deleteKeys(ctx, rdb, prefix)
	}

	q := rqgo.NewQueue("default", rdb, rqgo.WithPrefix(prefix))
	var ids []string
	for _, a := range []ResizeArgs{{"cat.jpg", 640}, {"dog.jpg", 320}} {
		j, err := q.EnqueueContext(ctx, "resize", a)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "enqueued %s resize(%s, %d)\n", j.ID, a.Image, a.Width)
		ids = append(ids, j.ID)
	}
	// "upload" fails on its first attempt and succeeds on the retry.
	j, err := q.EnqueueContext(ctx, "upload", "cat_640.jpg", rqgo.Retry(2), rqgo.RetryIntervals(200*time.Millisecond))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "enqueued %s upload(cat_640.jpg), fails once then succeeds\n", j.ID)
	ids = append(ids, j.ID)
	// "notify" waits (status deferred) until the upload has finished.
	n, err := q.EnqueueContext(ctx, "notify", nil, rqgo.DependsOn(j))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "enqueued %s notify, %s until the upload has finished\n", n.ID, n.Status)
	ids = append(ids, n.ID)

	w := rqgo.NewWorker(rdb, rqgo.WorkerOptions{
		Prefix: prefix,
		Burst:  true, // return once the queue is empty and nothing runs
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	})
	rqgo.RegisterFunc(w, "resize", func(ctx context.Context, a ResizeArgs) (string, error) {
		return fmt.Sprintf("%s@%dpx", a.Image, a.Width), nil
	})
	var uploads atomic.Int32
	w.Register("upload", func(ctx context.Context, j *rqgo.Job) (any, error) {
		if uploads.Add(1) == 1 {
			return nil, errors.New("storage not reachable")
		}
		return map[string]string{"url": "https://cdn.example.com/cat_640.jpg"}, nil
	})
	w.Register("notify", func(ctx context.Context, j *rqgo.Job) (any, error) {
		parents, err := j.FetchParents(ctx) // the upload, with its result
		if err != nil {
			return nil, err
		}
		var up struct{ URL string }
		if err := parents[0].DecodeResult(&up); err != nil {
			return nil, err
		}
		return "sent " + up.URL, nil
	})
	fmt.Fprintln(out, "running a burst worker...")
	if err := w.Run(ctx); err != nil {
		return err
	}

	for _, id := range ids {
		j, err := q.FetchJob(ctx, id)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "job %s %s: status=%s attempts=%d result=%s", j.ID, j.Func, j.Status, j.Attempt, j.Result)
		if j.Error != "" {
			fmt.Fprintf(out, " last_error=%q", j.Error)
		}
		fmt.Fprintln(out)
	}
	if keep && os.Getenv("REDIS_URL") != "" {
		fmt.Fprintf(out, "kept under prefix %s; for example:\n  redis-cli HGETALL '%s:{default}:job:%s'\n  rqgo --prefix %s job %s\n",
			prefix, prefix, ids[0], prefix, ids[0])
	}
	return nil
}

// connect returns a client for $REDIS_URL, or for an embedded miniredis.
func connect() (rdb *redis.Client, where string, cleanup func(), err error) {
	if url := os.Getenv("REDIS_URL"); url != "" {
		opts, err := redis.ParseURL(url)
		if err != nil {
			return nil, "", nil, fmt.Errorf("REDIS_URL: %w", err)
		}
		rdb = redis.NewClient(opts)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := rdb.Ping(ctx).Err(); err != nil {
			rdb.Close()
			return nil, "", nil, fmt.Errorf("redis at %s: %w", opts.Addr, err)
		}
		return rdb, opts.Addr + " (from $REDIS_URL)", func() { rdb.Close() }, nil
	}
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		return nil, "", nil, err
	}
	mr.ClockTTL(true)
	rdb = redis.NewClient(&redis.Options{Addr: mr.Addr()})
	return rdb, "embedded miniredis at " + mr.Addr() + " (set REDIS_URL to use your own)", func() { rdb.Close(); mr.Close() }, nil
}

func deleteKeys(ctx context.Context, rdb *redis.Client, prefix string) {
	iter := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
	for iter.Next(ctx) {
		rdb.Del(ctx, iter.Val())
	}
}
