package rqgo_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo"
)

// A chain: each step waits for the one before, even across queues, and
// reads its result.
func ExampleDependsOn_chain() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()

	images, uploads := rqgo.NewQueue("images", rdb), rqgo.NewQueue("uploads", rdb)
	resize, _ := images.Enqueue("resize", "cat.jpg")
	upload, _ := uploads.Enqueue("upload", nil, rqgo.DependsOn(resize))
	notify, _ := images.Enqueue("notify", nil, rqgo.DependsOn(upload))
	fmt.Println(resize.Status, upload.Status, notify.Status)

	w := rqgo.NewWorker(rdb, rqgo.WorkerOptions{Queues: []string{"images", "uploads"}, Logger: slog.New(slog.DiscardHandler)})
	rqgo.RegisterFunc(w, "resize", func(ctx context.Context, name string) (string, error) {
		return "small-" + name, nil
	})
	// A step reads what the step before it returned.
	previous := func(ctx context.Context, j *rqgo.Job) (string, error) {
		parents, err := j.FetchParents(ctx)
		if err != nil {
			return "", err
		}
		var s string
		err = parents[0].DecodeResult(&s)
		return s, err
	}
	w.Register("upload", func(ctx context.Context, j *rqgo.Job) (any, error) {
		file, err := previous(ctx, j)
		return "https://cdn.example/" + file, err
	})
	w.Register("notify", func(ctx context.Context, j *rqgo.Job) (any, error) {
		url, err := previous(ctx, j)
		return "sent " + url, err
	})
	go w.Run(ctx)

	done, _ := images.Wait(ctx, notify.ID)
	fmt.Println(done.Status, string(done.Result))
	// Output:
	// queued deferred deferred
	// finished "sent https://cdn.example/small-cat.jpg"
}

// A fan-out and fan-in: N parts with EnqueueMany, then one callback that
// depends on all of them and reads their results. With AllowFailure the
// callback runs even when some parts fail.
func ExampleDependsOn_fanIn() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()

	q := rqgo.NewQueue("default", rdb)
	var reqs []rqgo.EnqueueRequest
	for page := 1; page <= 4; page++ {
		reqs = append(reqs, rqgo.EnqueueRequest{Func: "render", Args: page})
	}
	pages, err := q.EnqueueMany(ctx, reqs)
	if err != nil {
		panic(err)
	}
	merge, _ := q.Enqueue("merge", nil, rqgo.DependsOn(pages...), rqgo.AllowFailure())

	w := rqgo.NewWorker(rdb, rqgo.WorkerOptions{Logger: slog.New(slog.DiscardHandler)})
	rqgo.RegisterFunc(w, "render", func(ctx context.Context, page int) (string, error) {
		if page == 3 {
			return "", rqgo.SkipRetry(fmt.Errorf("page %d: bad image", page))
		}
		return fmt.Sprintf("p%d.pdf", page), nil
	})
	w.Register("merge", func(ctx context.Context, j *rqgo.Job) (any, error) {
		parts, err := j.FetchParents(ctx) // one round trip
		if err != nil {
			return nil, err
		}
		var files []string
		for _, p := range parts {
			var f string
			if p.Status == rqgo.StatusFinished && p.DecodeResult(&f) == nil {
				files = append(files, f)
			} else {
				files = append(files, "("+p.Error+")")
			}
		}
		return strings.Join(files, " + "), nil
	})
	go w.Run(ctx)

	done, _ := q.Wait(ctx, merge.ID)
	fmt.Println(done.Status, string(done.Result))
	// Output:
	// finished "p1.pdf + p2.pdf + (page 3: bad image) + p4.pdf"
}
