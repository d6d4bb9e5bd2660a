package rqgo

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func init() { childModes["acker"] = childAcker }

// ackBlocker holds up the first batch of acks the worker sends in which
// count (ackJobs when nil) finds some: before it reaches Redis ("before"),
// or after Redis ran it but before the worker hears back ("after"). It
// prints "acking <n>" first, n what count found.
type ackBlocker struct {
	when  string
	count func(redis.Cmder) int
}

func (h ackBlocker) in(cmd redis.Cmder) int {
	if h.count == nil {
		return ackJobs(cmd)
	}
	return h.count(cmd)
}

func (h ackBlocker) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h ackBlocker) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if n := h.in(cmd); n > 0 {
			return h.hold(n, func() error { return next(ctx, cmd) })
		}
		return next(ctx, cmd)
	}
}

func (h ackBlocker) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		n := 0
		for _, c := range cmds {
			n += h.in(c)
		}
		if n > 0 {
			return h.hold(n, func() error { return next(ctx, cmds) })
		}
		return next(ctx, cmds)
	}
}

func (h ackBlocker) hold(n int, send func() error) error {
	if h.when == "after" {
		send()
	}
	fmt.Printf("acking %d\n", n)
	select {} // until the test kills this process
}

// ackJobs is the number of jobs an ack_many.lua call records, else 0.
func ackJobs(cmd redis.Cmder) int {
	args := cmd.Args()
	if len(args) < 3 || fmt.Sprint(args[0]) != "evalsha" || fmt.Sprint(args[1]) != ackManyScript.Hash() {
		return 0
	}
	keys, _ := strconv.Atoi(fmt.Sprint(args[2]))
	// evalsha sha numkeys, the keys, ttl, slots watched, triples, then ""
	// and the jobs handed a slot, if any
	n := 0
	for i := 3 + keys + 2; i < len(args) && fmt.Sprint(args[i]) != ""; i += 3 {
		n++
	}
	return n
}

// handOvers is the number of jobs started ahead that an ack_many.lua call
// hands a slot, else 0.
func handOvers(cmd redis.Cmder) int {
	if ackJobs(cmd) == 0 {
		return 0
	}
	args := cmd.Args()
	keys, _ := strconv.Atoi(fmt.Sprint(args[2]))
	return max(len(args)-(3+keys+2+3*ackJobs(cmd)+1), 0)
}

// childAcker runs a worker whose handler "quick" prints "ran <id> <attempt>"
// and returns, and whose acks are held up (ackBlocker).
func childAcker() int {
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv("RQGO_TEST_ADDR")})
	rdb.AddHook(ackBlocker{when: os.Getenv("RQGO_TEST_ACK_BLOCK")})
	lease, _ := time.ParseDuration(os.Getenv("RQGO_TEST_LEASE"))
	w := NewWorker(rdb, WorkerOptions{
		Prefix: os.Getenv("RQGO_TEST_PREFIX"),
		Lease:  lease,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	// The first ten handlers return together, so their outcomes make one
	// batch of acks.
	var (
		mu      sync.Mutex
		started int
		all     = make(chan struct{})
	)
	w.Register("quick", func(ctx context.Context, j *Job) (any, error) {
		mu.Lock()
		if started++; started == DefaultConcurrency {
			close(all)
		}
		mu.Unlock()
		<-all
		fmt.Printf("ran %s %d\n", j.ID, j.Attempt)
		return "child", nil
	})
	if err := w.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// A worker SIGKILLed while a batch of acks is on its way (not yet sent, or
// run by Redis but not answered), with the jobs of the fetch that overlaps
// it run and their outcomes waiting, loses nothing: every job ends
// finished, either by the dead worker's ack or by running again once its
// lease expires.
func TestKilledWhileAckingLosesNothing(t *testing.T) {
	for _, when := range []string{"before", "after"} {
		t.Run(when, func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, e *testEnv) {
				ctx := t.Context()
				q := e.queue("default")
				const n = 25
				reqs := make([]EnqueueRequest, n)
				for i := range reqs {
					reqs[i] = EnqueueRequest{Func: "quick", Args: i, Options: []EnqueueOption{Retry(3)}}
				}
				jobs, err := q.EnqueueMany(ctx, reqs)
				if err != nil {
					t.Fatal(err)
				}
				const lease = 300 * time.Millisecond
				cmd, lines := startChildMode(t, "acker",
					"RQGO_TEST_ADDR="+e.addr,
					"RQGO_TEST_PREFIX="+e.prefix,
					"RQGO_TEST_LEASE="+lease.String(),
					"RQGO_TEST_ACK_BLOCK="+when,
				)
				// The worst moment: the first batch's acks are on their way,
				// and the fetch that went out meanwhile has run more jobs,
				// whose outcomes wait behind them.
				ranInChild := map[string]bool{}
				acking := ""
				timeout := time.After(15 * time.Second)
				for acking == "" || len(ranInChild) <= DefaultConcurrency {
					select {
					case l, ok := <-lines:
						if !ok {
							t.Fatalf("child exited after printing %q and running %d jobs", acking, len(ranInChild))
						}
						if f := strings.Fields(l); len(f) == 3 && f[0] == "ran" {
							ranInChild[f[1]] = true
						}
						if strings.HasPrefix(l, "acking ") {
							acking = l
						}
					case <-timeout:
						t.Fatalf("after 15s the child printed %q and ran %d jobs; want its acks on their way and more than %d jobs run",
							acking, len(ranInChild), DefaultConcurrency)
					}
				}
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				cmd.Wait()
				t.Logf("child killed while %s (%s)", acking, when)

				w := e.worker(t, WorkerOptions{Lease: lease})
				ranAgain := make(chan string, 2*n)
				w.Register("quick", func(ctx context.Context, j *Job) (any, error) {
					ranAgain <- j.ID
					return "recovered", nil
				})
				start(t, w)
				for _, j := range jobs {
					got := waitJob(t, q, j.ID, StatusFinished)
					switch {
					case string(got.Result) == `"child"`:
						if when == "before" {
							t.Errorf("job %s finished with the child's result, but its ack never reached Redis", j.ID)
						}
					case string(got.Result) != `"recovered"`:
						t.Errorf("job %s finished with result %s", j.ID, got.Result)
					case ranInChild[j.ID] && got.Attempt != 2:
						t.Errorf("job %s ran in the killed child and again here, finished on attempt %d, want 2", j.ID, got.Attempt)
					}
				}
				if c, _ := q.Counts(ctx); c != (Counts{Finished: n}) {
					t.Errorf("Counts = %+v, want all %d finished", c, n)
				}
			})
		})
	}
}
