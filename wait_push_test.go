package rqgo

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// setRecheck sets how often a Wait reads its job unprompted, for one test.
func setRecheck(t *testing.T, d time.Duration) {
	old := waitRecheck
	waitRecheck = d
	t.Cleanup(func() { waitRecheck = old })
}

// waitsFor starts a Wait for job id and returns its outcome's channel once
// the job hash says someone waits (the Wait has subscribed and checked).
func waitsFor(t *testing.T, e *testEnv, q *Queue, id string) chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		j, err := q.Wait(ctx, id)
		if err == nil && j.Status != StatusFinished {
			err = fmt.Errorf("status %s", j.Status)
		}
		done <- err
	}()
	waitFor(t, 10*time.Second, "the Wait to check the job", func() bool {
		return strings.Contains(e.rdb.HGet(context.Background(), q.k.job(id), fFlags).Val(), "w")
	})
	return done
}

// A job that ends with its notification lost (here: written by hand, with
// nothing published) is found by the Wait's own check, waitRecheck later.
func TestWaitFindsAnEndItWasNotToldOf(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		setRecheck(t, 50*time.Millisecond)
		q := e.queue("a")
		j, _ := q.Enqueue("step", "x")
		done := waitsFor(t, e, q, j.ID)
		e.rdb.HSet(context.Background(), q.k.job(j.ID), fStatus, string(StatusFinished))
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// When the Waits' subscription is cut and comes back, every waiter reads
// its job at once: an end published while it was down is not waited out.
func TestWaitRechecksOnResubscribe(t *testing.T) {
	e := newRealEnv(t)
	setRecheck(t, time.Hour) // only the resubscription can end the Wait
	ctx := context.Background()
	// A client of its own, named, so that only its connections are cut.
	opts := *e.rdb.(*redis.Client).Options()
	opts.ClientName = "rqgo-test-" + newID()
	rdb := redis.NewClient(&opts)
	defer rdb.Close()
	q := NewQueue("a", rdb, WithPrefix(e.prefix))
	j, _ := q.Enqueue("step", "x")
	done := waitsFor(t, e, q, j.ID)
	// The end is written while the subscription is cut, with nothing
	// published, as a message lost with the connection would be.
	e.rdb.HSet(ctx, q.k.job(j.ID), fStatus, string(StatusFinished))
	if err := killPubSub(ctx, e, opts.ClientName); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the Wait did not read its job when its subscription came back")
	}
}

// killPubSub closes the subscribed connections of the client named name.
func killPubSub(ctx context.Context, e *testEnv, name string) error {
	list, err := e.rdb.ClientList(ctx).Result()
	if err != nil {
		return err
	}
	killed := 0
	for _, line := range strings.Split(list, "\n") {
		if !strings.Contains(line, " name="+name+" ") || !strings.Contains(line, " sub=1 ") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if id, ok := strings.CutPrefix(f, "id="); ok {
				if e.rdb.Do(ctx, "CLIENT", "KILL", "ID", id).Err() == nil {
					killed++
				}
			}
		}
	}
	if killed == 0 {
		return errors.New("no subscribed connection to kill")
	}
	return nil
}

// Thousands of Waits in one process share one subscription and the
// client's pool: they do not open a connection each.
func TestManyWaitsFewConnections(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		n := 10000
		if e.mr != nil {
			n = 200 // miniredis runs Lua slowly
		}
		ctx := context.Background()
		q := e.queue("a")
		reqs := make([]EnqueueRequest, n)
		for i := range reqs {
			reqs[i] = EnqueueRequest{Func: "step", Args: "x"}
		}
		var jobs []*Job
		for i := 0; i < n; i += 1000 {
			js, err := q.EnqueueMany(ctx, reqs[i:min(i+1000, n)])
			if err != nil {
				t.Fatal(err)
			}
			jobs = append(jobs, js...)
		}
		errs := make(chan error, n)
		for _, j := range jobs {
			go func() {
				c, cancel := context.WithTimeout(ctx, 2*time.Minute)
				defer cancel()
				got, err := q.Wait(c, j.ID)
				if err == nil && got.Status != StatusFinished {
					err = fmt.Errorf("job %s is %s", j.ID, got.Status)
				}
				errs <- err
			}()
		}
		var o order
		start(t, stepWorker(t, e, &o, "a"))
		for range n {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		pool := e.rdb.PoolStats()
		// The pool, the Waits' subscription and the worker's own.
		if limit := uint32(e.rdb.(*redis.Client).Options().PoolSize + 2); pool.TotalConns > limit {
			t.Fatalf("%d connections for %d Waits (and a worker), want at most %d", pool.TotalConns, n, limit)
		}
		t.Logf("%d Waits returned over %d connections", n, pool.TotalConns)
	})
}
