package dashboard_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rqgo/rqgo"
	"github.com/rqgo/rqgo/dashboard"
)

func paused(t *testing.T, q *rqgo.Queue) bool {
	t.Helper()
	p, err := q.Paused(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The overview and the queue page show whether a queue is paused, with a
// button that pauses or resumes it; rqgo_queue_paused follows.
func TestPauseAndResume(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		h := dashboard.New(e.rdb, dashboard.Options{Prefix: e.prefix})
		q := e.queue("mail")
		if _, err := q.EnqueueContext(t.Context(), "send", nil); err != nil {
			t.Fatal(err)
		}
		c := dashboard.NewCollector(e.rdb, e.prefix)
		gauge := func(v string) string {
			return "# HELP rqgo_queue_paused 1 while the queue is paused (no worker starts its jobs), else 0.\n" +
				"# TYPE rqgo_queue_paused gauge\nrqgo_queue_paused{queue=\"mail\"} " + v + "\n"
		}
		pages := func(t *testing.T, wants map[string][]string) {
			t.Helper()
			for path, want := range wants {
				code, body := get(t, h, path)
				for _, w := range want {
					if code != 200 || !strings.Contains(body, w) {
						t.Errorf("GET %s = %d, lacks %s:\n%s", path, code, w, body)
					}
				}
			}
		}

		pages(t, map[string][]string{
			"/":            {`running <form class="inline" method="post" action="queues/mail/pause"><button>Pause</button></form>`},
			"/queues/mail": {"Running.", `<form class="inline" method="post" action="mail/pause"><button>Pause</button></form>`},
		})
		if err := testutil.CollectAndCompare(c, strings.NewReader(gauge("0")), "rqgo_queue_paused"); err != nil {
			t.Error(err)
		}

		rec := post(t, h, "/queues/mail/pause", nil)
		if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "mail" || !paused(t, q) {
			t.Fatalf("pause = %d to %q, paused %v; want 303 to mail and the queue paused: %s", rec.Code, rec.Header().Get("Location"), paused(t, q), rec.Body)
		}
		pages(t, map[string][]string{
			"/": {`<span class="paused">paused</span> <form class="inline" method="post" action="queues/mail/resume"><button>Resume</button></form>`},
			"/queues/mail": {`<h2>mail <span class="paused">paused</span></h2>`, "Paused: no worker starts its jobs",
				`<form class="inline" method="post" action="mail/resume"><button>Resume</button></form>`},
		})
		if err := testutil.CollectAndCompare(c, strings.NewReader(gauge("1")), "rqgo_queue_paused"); err != nil {
			t.Error(err)
		}
		if rec := post(t, h, "/queues/mail/pause", nil); rec.Code != http.StatusSeeOther || !paused(t, q) {
			t.Errorf("pause of a paused queue = %d, paused %v; want 303, still paused", rec.Code, paused(t, q))
		}

		// A form posted from another site changes nothing.
		req := httptest.NewRequest("POST", "/queues/mail/resume", nil)
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		cross := httptest.NewRecorder()
		h.ServeHTTP(cross, req)
		if cross.Code != http.StatusForbidden || !paused(t, q) {
			t.Errorf("cross-site resume = %d, paused %v; want 403 and the queue still paused", cross.Code, paused(t, q))
		}

		if rec := post(t, h, "/queues/mail/resume", nil); rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "mail" || paused(t, q) {
			t.Errorf("resume = %d to %q, paused %v; want 303 to mail and the queue running", rec.Code, rec.Header().Get("Location"), paused(t, q))
		}
		if err := testutil.CollectAndCompare(c, strings.NewReader(gauge("0")), "rqgo_queue_paused"); err != nil {
			t.Error(err)
		}

		// No queue is made up by a POST: an unknown one is a 404.
		for _, op := range []string{"pause", "resume"} {
			if rec := post(t, h, "/queues/nosuch/"+op, nil); rec.Code != http.StatusNotFound {
				t.Errorf("%s of an unknown queue = %d %s, want 404", op, rec.Code, rec.Body)
			}
		}
		if names, err := rqgo.Queues(t.Context(), e.rdb, e.prefix); err != nil || slices.Contains(names, "nosuch") {
			t.Errorf("queues after POSTs to an unknown one: %v, %v; want no nosuch", names, err)
		}
	})
}

// A queue's limits show on the overview and its page; a job parked over
// its limit key's limits is counted there and in rqgo_queue_jobs, listed
// on the parked tab with its key, and its page says since when it waits.
func TestLimitsAndParkedJobs(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		h := dashboard.New(e.rdb, dashboard.Options{Prefix: e.prefix})
		q := e.queue("mail")
		if err := q.SetLimits(ctx, rqgo.Limits{Concurrency: 5, KeyConcurrency: 1}); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, key := range []string{"tenant-1", "tenant-1", ""} {
			var opts []rqgo.EnqueueOption
			if key != "" {
				opts = append(opts, rqgo.LimitKey(key))
			}
			j, err := q.EnqueueContext(ctx, "send", nil, opts...)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, j.ID)
		}
		running, parkedID, plain := ids[0], ids[1], ids[2]

		release := make(chan struct{})
		w := rqgo.NewWorker(e.rdb, rqgo.WorkerOptions{Queues: []string{"mail"}, Prefix: e.prefix, Concurrency: 3, Logger: quiet()})
		w.Register("send", func(ctx context.Context, j *rqgo.Job) (any, error) {
			<-release
			return nil, nil
		})
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- w.Run(runCtx) }()
		defer func() { stop(); <-done }()
		defer func() {
			select {
			case <-release:
			default:
				close(release)
			}
		}()
		waitFor(t, "one job of tenant-1 to start and the other to be parked", func() bool {
			c, err := q.Counts(ctx)
			return err == nil && c.Parked == 1 && c.Started == 2
		})

		for path, want := range map[string][]string{
			"/": {`<a href="queues/mail?status=parked">1</a>`, `<code>concurrency=5 key-concurrency=1</code>`},
			"/queues/mail": {`Limits, over every worker: <code>concurrency=5 key-concurrency=1</code>`,
				"1 queued job is parked over its limit key's limits", `<a href="?status=parked" >parked 1</a>`},
			"/queues/mail?status=parked": {`<a href="?status=parked" class="on">parked 1</a>`, `<th>limit key</th>`,
				`<a href="mail/jobs/` + parkedID + `">` + parkedID + `</a></td><td>send</td><td><code>tenant-1</code></td>`,
				`action="mail/cancel"><input type="hidden" name="id" value="` + parkedID + `">`},
			"/queues/mail/jobs/" + parkedID: {`<tr><th>limit key</th><td><code>tenant-1</code>: parked since `,
				"until the key has room under the queue's limits of each key, <code>key-concurrency=1</code>"},
			"/queues/mail/jobs/" + running: {`<td><code>tenant-1</code>: under the queue's limits of each key, <code>key-concurrency=1</code>`},
		} {
			code, body := get(t, h, path)
			for _, w := range want {
				if code != 200 || !strings.Contains(body, w) {
					t.Errorf("GET %s = %d, lacks %s:\n%s", path, code, w, body)
				}
			}
		}
		if _, body := get(t, h, "/queues/mail?status=parked"); strings.Contains(body, running) || strings.Contains(body, plain) {
			t.Errorf("the parked tab lists jobs that are not parked:\n%s", body)
		}
		if _, body := get(t, h, "/queues/mail?status=queued"); strings.Contains(body, parkedID) {
			t.Errorf("the queued tab lists the parked job %s:\n%s", parkedID, body)
		}
		if _, body := get(t, h, "/queues/mail/jobs/"+plain); strings.Contains(body, "limit key") {
			t.Errorf("the page of a job without a limit key shows one:\n%s", body)
		}
		c := dashboard.NewCollector(e.rdb, e.prefix)
		want := `
# HELP rqgo_queue_jobs Jobs of the queue in each state, as its Redis list and registries hold them.
# TYPE rqgo_queue_jobs gauge
rqgo_queue_jobs{queue="mail",status="canceled"} 0
rqgo_queue_jobs{queue="mail",status="deferred"} 0
rqgo_queue_jobs{queue="mail",status="failed"} 0
rqgo_queue_jobs{queue="mail",status="finished"} 0
rqgo_queue_jobs{queue="mail",status="parked"} 1
rqgo_queue_jobs{queue="mail",status="queued"} 0
rqgo_queue_jobs{queue="mail",status="scheduled"} 0
rqgo_queue_jobs{queue="mail",status="started"} 2
`
		if err := testutil.CollectAndCompare(c, strings.NewReader(want), "rqgo_queue_jobs"); err != nil {
			t.Error(err)
		}

		close(release)
		waitFor(t, "every job to finish", func() bool {
			c, err := q.Counts(ctx)
			return err == nil && c.Finished == 3
		})
		if code, body := get(t, h, "/queues/mail?status=parked"); code != 200 || !strings.Contains(body, "No parked jobs.") {
			t.Errorf("the parked tab once every job ran = %d:\n%s", code, body)
		}
		if _, body := get(t, h, "/queues/mail/jobs/"+parkedID); strings.Contains(body, "parked since") {
			t.Errorf("the page of the job once it ran says it is parked:\n%s", body)
		}
	})
}

// A read-only dashboard shows a queue's pause and limits without the
// buttons, and refuses to pause or resume.
func TestReadOnlyPause(t *testing.T) {
	e := mini(t)
	h := dashboard.New(e.rdb, dashboard.Options{ReadOnly: true})
	running, held := e.queue("running"), e.queue("held")
	for _, q := range []*rqgo.Queue{running, held} {
		if _, err := q.EnqueueContext(t.Context(), "f", nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := held.Pause(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := held.SetLimits(t.Context(), rqgo.Limits{Concurrency: 2}); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"/":               `<span class="paused">paused</span></td>`,
		"/queues/held":    "Paused: no worker starts its jobs",
		"/queues/running": "Running.",
	} {
		code, body := get(t, h, path)
		if code != 200 || !strings.Contains(body, want) || strings.Contains(body, `method="post"`) || !strings.Contains(body, "read-only") {
			t.Errorf("read-only GET %s = %d, want 200 with %s and no buttons that post:\n%s", path, code, want, body)
		}
	}
	for _, c := range []struct {
		path string
		q    *rqgo.Queue
		want bool
	}{{"/queues/running/pause", running, false}, {"/queues/held/resume", held, true}} {
		if rec := post(t, h, c.path, url.Values{}); rec.Code != http.StatusMethodNotAllowed || paused(t, c.q) != c.want {
			t.Errorf("read-only POST %s = %d, paused %v; want 405 and paused %v", c.path, rec.Code, paused(t, c.q), c.want)
		}
	}
}
