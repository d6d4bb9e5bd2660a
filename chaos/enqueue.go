package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/rqgo/rqgo"
)

// enqueueWave enqueues jobs [from, to), and the workflows and the capped,
// keyed and cancel queues' jobs placed among them, from a few goroutines, each job
// with its own id. A workflow's jobs are enqueued in order, by one
// goroutine, parents before their children.
func (h *harness) enqueueWave(from, to int) error {
	tasks := make(chan func() error)
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for t := range tasks {
				if err := t(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	send := func(t func() error) error {
		select {
		case tasks <- t:
			return nil
		case err := <-errs:
			return err
		}
	}
	var err error
	for i := from; i < to && err == nil; i++ {
		err = send(func() error { return h.enqueueOne(i) })
		for _, w := range h.flowsAt[i] {
			if err == nil {
				err = send(func() error { return h.enqueueFlow(w) })
			}
		}
		for _, j := range h.capAt[i] {
			if err == nil {
				err = send(func() error { return h.enqueueCap(j) })
			}
		}
		for _, j := range h.cancelAt[i] {
			if err == nil {
				err = send(func() error { return h.enqueueCancel(j) })
			}
		}
	}
	close(tasks)
	wg.Wait()
	close(errs)
	if err != nil {
		return err
	}
	return <-errs
}

// enqueueOne enqueues job i.
func (h *harness) enqueueOne(i int) error {
	_, err := h.enqueueAs(h.qs[i%len(h.qs)], jobID(i), args{N: i, MS: h.probes[i]})
	return err
}

// enqueueAs enqueues a job with its own id and arguments. An enqueue that
// fails (Redis down, stalled or out of memory) is tried again with the same
// id until it succeeds or the id turns out to exist: an enqueue whose reply
// was lost, or that go-redis sent twice. A job that exists counts as
// enqueued only when it is this job (same function and number). An enqueue
// of a unique job whose key another job holds wrote nothing: it returns at
// once with the holder and an error wrapping rqgo.ErrDuplicate.
func (h *harness) enqueueAs(q *rqgo.Queue, id string, a args, opts ...rqgo.EnqueueOption) (*rqgo.Job, error) {
	opts = append([]rqgo.EnqueueOption{rqgo.JobID(id), rqgo.Retry(25), rqgo.Backoff(50*time.Millisecond, time.Second)}, opts...)
	deadline := time.Now().Add(time.Minute)
	for {
		h.mu.Lock()
		full := h.fullAt
		h.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		j, err := q.EnqueueContext(ctx, funcName, a, opts...)
		if errors.Is(err, rqgo.ErrDuplicate) {
			cancel()
			return j, err
		}
		if errors.Is(err, rqgo.ErrJobExists) {
			err = h.ours(ctx, q.Name(), id, a.N, err)
		}
		cancel()
		switch {
		case err == nil:
			h.mu.Lock()
			if !full.IsZero() && h.fullAt.Equal(full) && time.Since(full) < fullSure {
				h.acceptedFull = append(h.acceptedFull, id)
			}
			h.mu.Unlock()
			return j, nil
		case errors.Is(err, rqgo.ErrInvalid), errors.Is(err, rqgo.ErrJobExists), time.Now().After(deadline):
			return nil, fmt.Errorf("enqueue %s: %w", id, err)
		}
		h.mu.Lock()
		h.enqErrors++
		if strings.Contains(err.Error(), "OOM") {
			h.enqOOM++
		}
		h.mu.Unlock()
		time.Sleep(100 * time.Millisecond)
	}
}

// ours returns nil when the existing job with this id in queue is the
// harness's job number n, and exists otherwise (or the error reading it,
// to try again).
func (h *harness) ours(ctx context.Context, queue, id string, n int, exists error) error {
	v, err := h.rdb.HMGet(ctx, jobKey(queue, id), "func", "args").Result()
	if err != nil {
		return err
	}
	fn, _ := v[0].(string)
	raw, _ := v[1].(string)
	var a args
	if fn != funcName || json.Unmarshal([]byte(raw), &a) != nil || a.N != n {
		return fmt.Errorf("%w: it holds %s(%s), not job %d", exists, fn, raw, n)
	}
	return nil
}
