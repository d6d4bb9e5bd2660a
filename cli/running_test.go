package cli_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rqgo/rqgo"
)

// runningJob is a job held running by an in-process worker: its handler
// reported progress and meta, then waits for its context to end and, after
// that, for release, so that the job stays started after a cancel until the
// test lets it go.
type runningJob struct {
	id      string
	q       *rqgo.Queue
	cause   chan error    // the cause of the handler's context, once it ends
	release chan struct{} // closing it lets the handler return
}

// startRunningJob enqueues an export job to queue, with headers, and runs
// it on a worker of this process until the test ends.
func startRunningJob(t *testing.T, e *testEnv, queue string, headers map[string]string) *runningJob {
	t.Helper()
	ctx := t.Context()
	q := rqgo.NewQueue(queue, e.rdb, rqgo.WithPrefix(e.prefix))
	j, err := q.EnqueueContext(ctx, "export", map[string]int{"rows": 50000}, rqgo.Headers(headers), rqgo.Retry(3))
	if err != nil {
		t.Fatal(err)
	}
	r := &runningJob{id: j.ID, q: q, cause: make(chan error, 1), release: make(chan struct{})}
	reported := make(chan error, 1)
	w := rqgo.NewWorker(e.rdb, rqgo.WorkerOptions{Queues: []string{queue}, Prefix: e.prefix,
		ShutdownTimeout: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	w.Register("export", func(ctx context.Context, j *rqgo.Job) (any, error) {
		err := j.SetProgress(ctx, 40)
		if err == nil {
			err = j.SetMeta(ctx, "phase", "upload")
		}
		if err == nil {
			err = j.SetMeta(ctx, "file", "export-42.csv")
		}
		reported <- err
		<-ctx.Done()
		r.cause <- context.Cause(ctx)
		<-r.release
		return nil, context.Cause(ctx)
	})
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	t.Cleanup(func() {
		select {
		case <-r.release:
		default:
			close(r.release)
		}
		stop()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	select {
	case err := <-reported:
		if err != nil {
			t.Fatalf("the handler's SetProgress or SetMeta: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the job did not start within 10s")
	}
	return r
}

// waitStatus polls job id until its status is want.
func (e *testEnv) waitStatus(t *testing.T, id, want string) map[string]any {
	t.Helper()
	var m map[string]any
	waitFor(t, "job "+id+" to be "+want, 10*time.Second, func() bool {
		m = e.job(t, id)
		return m["status"] == want
	})
	return m
}

// rqgo job shows what a running job's handler reported, its headers and,
// once a cancel is requested, when; rqgo cancel of the running job says the
// cancel is requested, and the job ends canceled once its handler returns.
func TestJobProgressAndCancelOfARunningJob(t *testing.T) {
	forEachBackend(t, testJobProgressAndCancelOfARunningJob)
}

func testJobProgressAndCancelOfARunningJob(t *testing.T, e *testEnv) {
	tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	r := startRunningJob(t, e, "reports", map[string]string{"traceparent": tp, "request-id": "r-42"})
	id := r.id

	m := e.job(t, id)
	if m["status"] != "started" || m["progress"] != 40.0 || m["cancel_requested"] != nil {
		t.Errorf("running job: status %v, progress %#v, cancel_requested %#v; want started, 40, null",
			m["status"], m["progress"], m["cancel_requested"])
	}
	if meta, ok := m["meta"].(map[string]any); !ok || len(meta) != 2 || meta["phase"] != "upload" || meta["file"] != "export-42.csv" {
		t.Errorf("job --json meta = %#v, want {\"file\": \"export-42.csv\", \"phase\": \"upload\"}", m["meta"])
	}
	if h, ok := m["headers"].(map[string]any); !ok || len(h) != 2 || h["traceparent"] != tp || h["request-id"] != "r-42" {
		t.Errorf("job --json headers = %#v, want traceparent and request-id", m["headers"])
	}
	text := e.ok(t, "job", id)
	// Meta and headers are sorted by name, one a line.
	for _, re := range []string{
		`(?m)^progress:\s+40$`,
		`(?m)^meta:\s+file: "export-42.csv"\n\s+phase: "upload"$`,
		`(?m)^headers:\s+request-id: r-42\n\s+traceparent: ` + tp + `$`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("job %s printed\n%s\nwant it to match %s", id, text, re)
		}
	}
	if strings.Contains(text, "cancel_requested") {
		t.Errorf("job %s printed\n%s\nwant no cancel_requested before a cancel", id, text)
	}

	want := "cancel requested for " + id + ": the running job's worker was told; it ends canceled once its handler returns\n"
	if out := e.ok(t, "cancel", id); out != want {
		t.Errorf("cancel of a running job printed %q, want %q", out, want)
	}
	select {
	case c := <-r.cause:
		if !errors.Is(c, rqgo.ErrCanceled) {
			t.Errorf("the handler's context ended with %v, want ErrCanceled", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler's context did not end within 10s of the cancel")
	}
	m = e.job(t, id)
	asked, _ := m["cancel_requested"].(string)
	if m["status"] != "started" || !timeRE.MatchString(asked) {
		t.Errorf("job with a cancel requested: status %v, cancel_requested %#v; want started and a time", m["status"], m["cancel_requested"])
	}
	text = e.ok(t, "job", id)
	wantRow := "cancel_requested:  " + asked + " (its worker was told; the job ends canceled once its handler returns)"
	if !strings.Contains(text, wantRow) {
		t.Errorf("job %s printed\n%s\nwant the row %q", id, text, wantRow)
	}
	// Asked again while it still runs: the same answer.
	if out := e.ok(t, "cancel", id, "--queue", "reports"); out != want {
		t.Errorf("second cancel of the running job printed %q, want %q", out, want)
	}

	close(r.release)
	m = e.waitStatus(t, id, "canceled")
	if errText, _ := m["error"].(string); m["attempt"] != 1.0 || !strings.Contains(errText, "canceled while running") ||
		m["progress"] != 40.0 || m["cancel_requested"] != asked {
		t.Errorf("canceled job: attempt %v, error %q, progress %v, cancel_requested %v; want 1 attempt, canceled while running, 40, %s",
			m["attempt"], errText, m["progress"], m["cancel_requested"], asked)
	}
	text = e.ok(t, "job", id)
	if !strings.Contains(text, "cancel_requested:  "+asked+"\n") {
		t.Errorf("job %s, ended, printed\n%s\nwant the cancel_requested row without the note for a running job", id, text)
	}

	// Ended: exit 1, as for any job that cannot be canceled.
	r2 := e.run(t, "cancel", id)
	if r2.code != 1 || r2.stdout != "" || !strings.Contains(r2.stderr, "job "+id+" cannot be canceled: it has ended, canceled") {
		t.Errorf("cancel of the canceled job: exit %d, stdout %q, stderr %q; want 1 and 'cannot be canceled: it has ended, canceled'",
			r2.code, r2.stdout, r2.stderr)
	}
}

// stopped stops the command, with SIGKILL, and returns what it printed.
func stopped(t *testing.T, s *started) result {
	t.Helper()
	s.cmd.Process.Kill()
	return s.wait(t)
}

// A job that was never running has no progress, meta, headers or
// cancel_requested: each is null, and job prints no row for them.
func TestJobWithoutProgress(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.enqueue(t, "send")
	m := e.job(t, id)
	for _, k := range []string{"progress", "meta", "headers", "cancel_requested"} {
		if v, ok := m[k]; !ok || v != nil {
			t.Errorf("job --json %s = %#v (present %v), want null", k, v, ok)
		}
	}
	text := e.ok(t, "job", id)
	for _, k := range []string{"progress:", "meta:", "headers:", "cancel_requested:"} {
		if strings.Contains(text, k) {
			t.Errorf("job %s printed\n%s\nwant no %s row", id, text, k)
		}
	}
}

// A cancel_requested field that does not hold a time is reported, after
// the job is shown as far as it reads.
func TestJobBadCancelRequested(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.enqueue(t, "send")
	if err := e.rdb.HSet(t.Context(), e.prefix+":{default}:job:"+id, "cancel_requested", "soon").Err(); err != nil {
		t.Fatal(err)
	}
	r := e.run(t, "job", id, "--json")
	if r.code != 1 || !strings.Contains(r.stdout, `"cancel_requested": null`) || !strings.Contains(r.stderr, `field cancel_requested is "soon"`) {
		t.Errorf("job with a bad cancel_requested: exit %d, stdout\n%s\nstderr %q; want exit 1, the job, and the field named", r.code, r.stdout, r.stderr)
	}
}

// A running --exec job canceled with Queue.Cancel has its command's whole
// process group killed, the children the command started included, and
// ends canceled.
func TestCancelKillsExecProcessGroup(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pids := filepath.Join(t.TempDir(), "pids")
	id := e.enqueue(t, "--retry", "3", "hang")

	w := e.start(t, "worker", "--exec", "hang=sleep 60 & echo $$ $! > "+pids+".tmp; mv "+pids+".tmp "+pids+"; sleep 60; wait")
	waitFor(t, "the command to start its child", 10*time.Second, func() bool {
		_, err := os.Stat(pids)
		return err == nil
	})
	sh, child := readPIDs(t, pids)
	pgid, err := syscall.Getpgid(sh)
	if err != nil || !alive(child) {
		t.Fatalf("the command (pid %d, group %d, %v) or its child (pid %d, alive %v) is not running; worker stderr:\n%s",
			sh, pgid, err, child, alive(child), stopped(t, w).stderr)
	}
	t.Cleanup(func() { syscall.Kill(-pgid, syscall.SIGKILL) }) // when the test fails

	q := rqgo.NewQueue("default", e.rdb, rqgo.WithPrefix(e.prefix))
	if err := q.Cancel(t.Context(), id); err != nil {
		t.Fatalf("Cancel of the running --exec job: %v", err)
	}
	waitGroupGone(t, pgid, 10*time.Second)
	for _, pid := range []int{sh, child} {
		if err := syscall.Kill(pid, 0); alive(pid) {
			t.Errorf("pid %d still runs (kill 0: %v), want it killed with its group", pid, err)
		}
	}
	m := e.waitStatus(t, id, "canceled")
	errText, _ := m["error"].(string)
	if m["attempt"] != 1.0 || !strings.Contains(errText, "canceled while running") || !strings.Contains(errText, "process group killed (job canceled)") {
		t.Errorf("canceled --exec job: attempt %v, error %q; want 1 attempt, canceled while running, process group killed (job canceled)",
			m["attempt"], errText)
	}
	if s, _ := m["cancel_requested"].(string); !timeRE.MatchString(s) {
		t.Errorf("canceled --exec job: cancel_requested %#v, want a time", m["cancel_requested"])
	}
}
