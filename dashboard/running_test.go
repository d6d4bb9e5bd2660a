package dashboard_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rqgo/rqgo"
	"github.com/rqgo/rqgo/dashboard"
)

// runningJob is a job held running by a worker of this process: its
// handler reported progress and meta, then waits for its context to end
// and, after that, for release, so that the job stays started after a
// cancel until the test lets it go.
type runningJob struct {
	id      string
	cause   chan error    // the cause of the handler's context, once it ends
	release chan struct{} // closing it lets the handler return
}

// startRunning enqueues an export job to q with headers, and runs it on a
// worker of this process, whose handler reports progress, until the test
// ends.
func (e *env) startRunning(t *testing.T, q *rqgo.Queue, progress any, headers map[string]string) *runningJob {
	t.Helper()
	j, err := q.EnqueueContext(t.Context(), "export", nil, rqgo.Headers(headers))
	if err != nil {
		t.Fatal(err)
	}
	r := &runningJob{id: j.ID, cause: make(chan error, 1), release: make(chan struct{})}
	reported := make(chan error, 1)
	w := rqgo.NewWorker(e.rdb, rqgo.WorkerOptions{Queues: []string{q.Name()}, Prefix: e.prefix,
		ShutdownTimeout: 100 * time.Millisecond, Logger: quiet()})
	w.Register("export", func(ctx context.Context, j *rqgo.Job) (any, error) {
		err := j.SetProgress(ctx, progress)
		if err == nil {
			err = j.SetMeta(ctx, "phase", "upload")
		}
		if err == nil {
			err = j.SetMeta(ctx, "rows", 12000)
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

// contains fails the test for each of wants that body lacks.
func contains(t *testing.T, what, body string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(body, want) {
			t.Errorf("%s lacks %s:\n%s", what, want, body)
		}
	}
}

// lacks fails the test for each of unwanted that body holds.
func lacks(t *testing.T, what, body string, unwanted ...string) {
	t.Helper()
	for _, u := range unwanted {
		if strings.Contains(body, u) {
			t.Errorf("%s holds %s, want it left out:\n%s", what, u, body)
		}
	}
}

// A running job's page shows its progress as a bar, its meta and headers,
// with a Cancel button; the button asks its worker to stop it, and the
// page then says the cancel is requested, and when, until the job ends
// canceled. The running tab shows the progress too.
func TestCancelRunningJob(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		h := dashboard.New(e.rdb, dashboard.Options{Prefix: e.prefix})
		q := e.queue("exports")
		tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		r := e.startRunning(t, q, 40, map[string]string{"traceparent": tp, "request-id": "<r&42>"})
		page := "/queues/exports/jobs/" + r.id
		button := `<form class="inline" method="post" action="../cancel"><input type="hidden" name="id" value="` + r.id + `"><button>Cancel</button></form>`

		code, body := get(t, h, page)
		if code != 200 {
			t.Fatalf("GET %s = %d\n%s", page, code, body)
		}
		contains(t, "running job's page", body, button,
			`<tr><th>progress</th><td><progress max="100" value="40">40%</progress> 40%</td></tr>`,
			// Meta and headers sorted by name.
			`<tr><th>meta</th><td><table class="inner"><tr><th><code>phase</code></th><td><pre>&#34;upload&#34;</pre></td></tr><tr><th><code>rows</code></th><td><pre>12000</pre></td></tr></table></td></tr>`,
			`<tr><th>headers</th><td><table class="inner"><tr><th><code>request-id</code></th><td><code>&lt;r&amp;42&gt;</code></td></tr><tr><th><code>traceparent</code></th><td><code>`+tp+`</code></td></tr></table></td></tr>`)
		lacks(t, "running job's page", body, "cancel requested", `class="notice"`)
		code, body = get(t, h, "/queues/exports?status=started")
		if code != 200 {
			t.Fatalf("running tab = %d\n%s", code, body)
		}
		contains(t, "running tab", body, "<th>progress</th>", `<td><progress max="100" value="40">40%</progress> 40%</td>`,
			`action="exports/cancel"><input type="hidden" name="id" value="`+r.id+`">`)

		rec := post(t, h, "/queues/exports/cancel", url.Values{"id": {r.id}})
		if loc := rec.Header().Get("Location"); rec.Code != http.StatusSeeOther || loc != "exports/jobs/"+r.id+"?cancel=requested" {
			t.Fatalf("cancel of the running job = %d to %q, want 303 to its page, exports/jobs/%s?cancel=requested: %s", rec.Code, loc, r.id, rec.Body)
		}
		select {
		case c := <-r.cause:
			if !errors.Is(c, rqgo.ErrCanceled) {
				t.Errorf("the handler's context ended with %v, want ErrCanceled", c)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the handler's context did not end within 10s of the cancel")
		}
		if s := status(t, q, r.id); s != rqgo.StatusStarted {
			t.Fatalf("job with a cancel requested is %s while its handler runs, want started", s)
		}
		code, body = get(t, h, page+"?cancel=requested")
		if code != 200 {
			t.Fatalf("GET %s?cancel=requested = %d\n%s", page, code, body)
		}
		contains(t, "page after the cancel", body,
			`<p class="notice">Cancel requested: the worker running the job was told; the job ends canceled once its handler returns.</p>`,
			`: the worker running the job was told; it ends canceled once its handler returns</td></tr>`)
		if !regexp.MustCompile(`<tr><th>cancel requested</th><td>at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC \(\d+s ago\):`).MatchString(body) {
			t.Errorf("page after the cancel lacks the time of the cancel:\n%s", body)
		}
		// Asked once, the cancel stands: no button to ask again.
		lacks(t, "page after the cancel", body, button)
		_, body = get(t, h, "/queues/exports?status=started")
		contains(t, "running tab after the cancel", body, `40% <span class="note">cancel requested</span></td>`)
		lacks(t, "running tab after the cancel", body, `action="exports/cancel"`)

		close(r.release)
		waitFor(t, "the job to end canceled", func() bool { return status(t, q, r.id) == rqgo.StatusCanceled })
		_, body = get(t, h, page+"?cancel=requested")
		contains(t, "canceled job's page", body, "<tr><th>status</th><td>canceled</td></tr>",
			`<p class="notice">Cancel requested; the job has since ended canceled.</p>`,
			`<tr><th>progress</th><td><progress max="100" value="40">`, `action="../requeue"`)
		if !regexp.MustCompile(`<tr><th>cancel requested</th><td>at [^<]* ago\)</td></tr>`).MatchString(body) {
			t.Errorf("canceled job's page lacks the time of the cancel, without the note for a running job:\n%s", body)
		}
		if rec := post(t, h, "/queues/exports/cancel", url.Values{"id": {r.id}}); rec.Code != http.StatusConflict {
			t.Errorf("cancel of the canceled job = %d %s, want 409", rec.Code, rec.Body)
		}
	})
}

// A cancel_requested field that does not hold a time (written by another
// tool) is shown as it is.
func TestBadCancelRequested(t *testing.T) {
	e := mini(t)
	h := dashboard.New(e.rdb, dashboard.Options{})
	j, err := e.queue("default").EnqueueContext(t.Context(), "f", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.rdb.HSet(t.Context(), "rqgo:{default}:job:"+j.ID, "cancel_requested", "soon").Err(); err != nil {
		t.Fatal(err)
	}
	code, body := get(t, h, "/queues/default/jobs/"+j.ID)
	if code != 200 || !strings.Contains(body, `<tr><th>cancel requested</th><td>the field holds <code>&#34;soon&#34;</code>, not a time</td></tr>`) {
		t.Errorf("job page with a bad cancel_requested = %d, want 200 showing the field:\n%s", code, body)
	}
}

// Progress that is not a percentage is shown as its JSON value, on the
// job's page indented, on the running tab on one line, cut short.
func TestProgressNotAPercentage(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		h := dashboard.New(e.rdb, dashboard.Options{Prefix: e.prefix})
		q := e.queue("exports")
		long := strings.Repeat("x", 100)
		r := e.startRunning(t, q, map[string]any{"done": 12000, "total": 50000, "file": long}, nil)
		_, body := get(t, h, "/queues/exports/jobs/"+r.id)
		contains(t, "job page", body, "<tr><th>progress</th><td><pre>{\n  &#34;done&#34;: 12000,\n  &#34;file&#34;: &#34;"+long+"&#34;,\n  &#34;total&#34;: 50000\n}</pre></td></tr>")
		lacks(t, "job page", body, "<progress")
		_, body = get(t, h, "/queues/exports?status=started")
		contains(t, "running tab", body, "<td><code>{&#34;done&#34;:12000,&#34;file&#34;:&#34;"+long[:59-len(`{"done":12000,"file":"`)]+"…</code></td>")
	})
}

// Read-only, a running job's page and the running tab have no Cancel
// button, and a cancel posted anyway is refused: the job runs on, with no
// cancel requested.
func TestReadOnlyRunningJob(t *testing.T) {
	e := mini(t)
	q := e.queue("exports")
	r := e.startRunning(t, q, 40, nil)
	h := dashboard.New(e.rdb, dashboard.Options{ReadOnly: true})
	for _, path := range []string{"/queues/exports/jobs/" + r.id, "/queues/exports?status=started"} {
		code, body := get(t, h, path)
		if code != 200 || strings.Contains(body, `method="post"`) || !strings.Contains(body, `<progress max="100" value="40">`) {
			t.Errorf("read-only GET %s = %d, want 200 with the progress and no buttons that post:\n%s", path, code, body)
		}
	}
	if rec := post(t, h, "/queues/exports/cancel", url.Values{"id": {r.id}}); rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("read-only POST cancel of a running job = %d, want 405", rec.Code)
	}
	if s := status(t, q, r.id); s != rqgo.StatusStarted {
		t.Errorf("running job after a read-only cancel is %s, want started", s)
	}
	if _, body := get(t, h, "/queues/exports/jobs/"+r.id); strings.Contains(body, "cancel requested") {
		t.Errorf("running job after a read-only cancel shows a cancel requested:\n%s", body)
	}
	select {
	case c := <-r.cause:
		t.Errorf("the handler's context ended (%v) after a read-only cancel", c)
	default:
	}
}
