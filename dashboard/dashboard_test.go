package dashboard_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo"
	"github.com/rqgo/rqgo/dashboard"
	"github.com/rqgo/rqgo/internal/redistest"
)

type env struct {
	rdb    redis.UniversalClient
	prefix string
	mr     *miniredis.Miniredis // nil on real Redis
}

// mini returns an env on a miniredis of its own, with the default prefix.
func mini(t *testing.T) *env {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	return &env{rdb: rdb, prefix: rqgo.DefaultPrefix, mr: mr}
}

// backends runs fn against miniredis, then against the shared real Redis.
func backends(t *testing.T, fn func(t *testing.T, e *env)) {
	t.Run("miniredis", func(t *testing.T) { fn(t, mini(t)) })
	t.Run("redis", func(t *testing.T) {
		rdb, prefix := redistest.Shared(t, "rqgodashtest")
		fn(t, &env{rdb: rdb, prefix: prefix})
	})
}

func (e *env) queue(name string) *rqgo.Queue {
	return rqgo.NewQueue(name, e.rdb, rqgo.WithPrefix(e.prefix))
}

// failJobs enqueues n jobs to q and has a burst worker fail each for good.
func (e *env) failJobs(t *testing.T, q *rqgo.Queue, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		j, err := q.EnqueueContext(t.Context(), "bad", map[string]int{"n": i})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	w := rqgo.NewWorker(e.rdb, rqgo.WorkerOptions{Queues: []string{q.Name()}, Burst: true, Prefix: e.prefix, Logger: quiet()})
	w.Register("bad", func(ctx context.Context, j *rqgo.Job) (any, error) {
		return nil, rqgo.SkipRetry(errors.New("bad input"))
	})
	if err := w.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	return ids
}

// get fetches path from h and returns the status and body.
func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	return rec.Code, rec.Body.String()
}

// post sends a same-origin form POST to h, as a browser would from the
// dashboard's own page.
func post(t *testing.T, h http.Handler, path string, form url.Values) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest("POST", path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func status(t *testing.T, q *rqgo.Queue, id string) rqgo.Status {
	t.Helper()
	j, err := q.FetchJob(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return j.Status
}

func TestOverview(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		h := dashboard.New(e.rdb, dashboard.Options{Prefix: e.prefix})
		if code, body := get(t, h, "/"); code != 200 || !strings.Contains(body, "No queues") {
			t.Errorf("GET / with no queues = %d\n%s\nwant 200 saying there are none", code, body)
		}

		high, low := e.queue("high"), e.queue("low")
		e.failJobs(t, low, 2)
		for range 3 {
			if _, err := high.EnqueueContext(ctx, "resize", nil); err != nil {
				t.Fatal(err)
			}
		}
		// A live worker, on a queue with nothing for it.
		w := rqgo.NewWorker(e.rdb, rqgo.WorkerOptions{Queues: []string{"idle"}, Prefix: e.prefix, Name: "w-dash", Logger: quiet()})
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- w.Run(runCtx) }()
		defer func() { stop(); <-done }()
		// Wait for this worker by name: the burst worker of failJobs may
		// still be listed if its unregister did not reach Redis in time.
		waitFor(t, "the worker to register", func() bool {
			select {
			case err := <-done:
				done <- err // for the deferred wait
				t.Fatalf("worker stopped before it was listed: %v", err)
			default:
			}
			ws, _ := rqgo.Workers(ctx, e.rdb, e.prefix)
			for _, wi := range ws {
				if wi.ID == "w-dash" {
					return true
				}
			}
			return false
		})

		sched := rqgo.NewScheduler(e.rdb, rqgo.SchedulerOptions{Prefix: e.prefix, Logger: quiet()})
		if err := sched.AddEntry(rqgo.ScheduleEntry{Name: "hourly-report", Cron: "@every 1h", Func: "report", Queue: "high"}); err != nil {
			t.Fatal(err)
		}
		if err := sched.Tick(ctx); err != nil {
			t.Fatal(err)
		}

		code, body := get(t, h, "/")
		if code != 200 {
			t.Fatalf("GET / = %d\n%s", code, body)
		}
		for _, want := range []string{
			`<a href="queues/high">high</a>`,
			`<a href="queues/high?status=queued">3</a>`,
			`<a href="queues/low?status=failed">2</a>`,
			`<td>w-dash</td>`,
			`<td>hourly-report</td><td><a href="queues/high">high</a></td><td>report</td><td><code>@every 1h</code></td>`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("GET / lacks %s:\n%s", want, body)
			}
		}
	})
}

func TestQueueAndJobPages(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		h := dashboard.New(e.rdb, dashboard.Options{Prefix: e.prefix})
		q := e.queue("default")
		failed := e.failJobs(t, q, 2)
		queued, err := q.EnqueueContext(ctx, "resize", map[string]any{"w": 640})
		if err != nil {
			t.Fatal(err)
		}

		code, body := get(t, h, "/queues/default?status=failed")
		if code != 200 {
			t.Fatalf("failed jobs page = %d\n%s", code, body)
		}
		for _, id := range failed {
			if !strings.Contains(body, `href="default/jobs/`+id+`"`) {
				t.Errorf("failed jobs page lacks a link to %s:\n%s", id, body)
			}
		}
		for _, want := range []string{"bad input", `action="default/requeue"`, `name="all" value="1"`} {
			if !strings.Contains(body, want) {
				t.Errorf("failed jobs page lacks %s:\n%s", want, body)
			}
		}
		if code, body = get(t, h, "/queues/default"); code != 200 || !strings.Contains(body, queued.ID) || !strings.Contains(body, `action="default/cancel"`) {
			t.Errorf("queued jobs page = %d, want %s with a cancel button:\n%s", code, queued.ID, body)
		}

		code, body = get(t, h, "/queues/default/jobs/"+queued.ID)
		for _, want := range []string{"HGETALL " + e.prefix + ":{default}:job:" + queued.ID, `&#34;w&#34;: 640`, "resize", "queued"} {
			if code != 200 || !strings.Contains(body, want) {
				t.Errorf("job page = %d, lacks %s:\n%s", code, want, body)
			}
		}

		for _, c := range []struct {
			path string
			code int
			body string
		}{
			{"/queues/default/jobs/nope", 404, `job not found: "nope"`},
			{"/queues/nosuch", 404, `no queue "nosuch"`},
			{"/queues/default?status=lost", 400, `unknown status "lost"`},
			{"/queues/default?page=0", 400, `page "0": want a whole number from 1 to 10000000`},
			{"/nowhere", 404, ""},
		} {
			if code, body := get(t, h, c.path); code != c.code || !strings.Contains(body, c.body) {
				t.Errorf("GET %s = %d %q, want %d %q", c.path, code, body, c.code, c.body)
			}
		}
	})
}

func TestPaging(t *testing.T) {
	rdb := mini(t).rdb
	h := dashboard.New(rdb, dashboard.Options{})
	q := rqgo.NewQueue("default", rdb)
	reqs := make([]rqgo.EnqueueRequest, dashboard.PageSize+1)
	for i := range reqs {
		reqs[i] = rqgo.EnqueueRequest{Func: "f"}
	}
	jobs, err := q.EnqueueMany(t.Context(), reqs)
	if err != nil {
		t.Fatal(err)
	}
	_, first := get(t, h, "/queues/default")
	_, second := get(t, h, "/queues/default?status=queued&page=2")
	last := jobs[dashboard.PageSize].ID
	if strings.Contains(first, last) || !strings.Contains(first, "page=2") {
		t.Errorf("page 1 should hold the first %d jobs and link to page 2:\n%s", dashboard.PageSize, first)
	}
	if !strings.Contains(second, last) || strings.Contains(second, jobs[0].ID) || strings.Contains(second, "page=3") {
		t.Errorf("page 2 should hold only the last job, and be the last page:\n%s", second)
	}
}

func TestRequeueAndCancel(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		h := dashboard.New(e.rdb, dashboard.Options{Prefix: e.prefix})
		q := e.queue("default")
		failed := e.failJobs(t, q, 3)

		rec := post(t, h, "/queues/default/requeue", url.Values{"id": {failed[0]}})
		if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "default?status=queued" {
			t.Fatalf("requeue one = %d to %q, want 303 to default?status=queued: %s", rec.Code, rec.Header().Get("Location"), rec.Body)
		}
		if s := status(t, q, failed[0]); s != rqgo.StatusQueued {
			t.Errorf("requeued job is %s, want queued", s)
		}
		if rec := post(t, h, "/queues/default/requeue", url.Values{"all": {"1"}}); rec.Code != http.StatusSeeOther {
			t.Fatalf("requeue all = %d: %s", rec.Code, rec.Body)
		}
		if c, err := q.Counts(ctx); err != nil || c != (rqgo.Counts{Queued: 3}) {
			t.Errorf("after requeue all: Counts = %+v, %v; want 3 queued", c, err)
		}
		if rec := post(t, h, "/queues/default/requeue", url.Values{"all": {"1"}, "id": {failed[0]}}); rec.Code != http.StatusBadRequest {
			t.Errorf("requeue with all and ids = %d, want 400", rec.Code)
		}

		rec = post(t, h, "/queues/default/cancel", url.Values{"id": {failed[1]}})
		if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "default?status=canceled" {
			t.Fatalf("cancel = %d to %q, want 303 to default?status=canceled: %s", rec.Code, rec.Header().Get("Location"), rec.Body)
		}
		if s := status(t, q, failed[1]); s != rqgo.StatusCanceled {
			t.Errorf("canceled job is %s, want canceled", s)
		}
		later, err := q.EnqueueContext(ctx, "f", nil, rqgo.In(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		// Each row's button: requeue for a canceled job, cancel for a
		// scheduled one.
		for _, c := range []struct{ status, id, action string }{
			{"canceled", failed[1], "requeue"},
			{"scheduled", later.ID, "cancel"},
		} {
			want := `action="default/` + c.action + `"><input type="hidden" name="id" value="` + c.id + `">`
			if code, body := get(t, h, "/queues/default?status="+c.status); code != 200 || !strings.Contains(body, want) {
				t.Errorf("%s jobs page = %d, lacks %s:\n%s", c.status, code, want, body)
			}
		}
		for _, c := range []struct {
			id   string
			code int
		}{{failed[1], http.StatusConflict}, {"nope", http.StatusNotFound}, {"", http.StatusBadRequest}} {
			if rec := post(t, h, "/queues/default/cancel", url.Values{"id": {c.id}}); rec.Code != c.code {
				t.Errorf("cancel %q = %d %s, want %d", c.id, rec.Code, rec.Body, c.code)
			}
		}

		// A form posted from another site is refused, and changes nothing.
		req := httptest.NewRequest("POST", "/queues/default/cancel", strings.NewReader("id="+failed[2]))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		cross := httptest.NewRecorder()
		h.ServeHTTP(cross, req)
		if cross.Code != http.StatusForbidden || status(t, q, failed[2]) != rqgo.StatusQueued {
			t.Errorf("cross-site cancel = %d, job %s; want 403 and the job still queued", cross.Code, status(t, q, failed[2]))
		}
	})
}

func TestReadOnly(t *testing.T) {
	e := mini(t)
	rdb := e.rdb
	q := e.queue("default")
	failed := e.failJobs(t, q, 1)
	parent, err := q.EnqueueContext(t.Context(), "f", nil)
	if err != nil {
		t.Fatal(err)
	}
	child, err := q.EnqueueContext(t.Context(), "f", nil, rqgo.DependsOn(parent))
	if err != nil {
		t.Fatal(err)
	}
	h := dashboard.New(rdb, dashboard.Options{ReadOnly: true})

	for _, path := range []string{"/queues/default?status=failed", "/queues/default/jobs/" + failed[0],
		"/queues/default?status=deferred", "/queues/default/jobs/" + child.ID, "/queues/default/jobs/" + parent.ID} {
		code, body := get(t, h, path)
		if code != 200 || strings.Contains(body, `method="post"`) || !strings.Contains(body, "read-only") {
			t.Errorf("read-only GET %s = %d, want 200 with no buttons that post:\n%s", path, code, body)
		}
	}
	for _, path := range []string{"/queues/default/requeue", "/queues/default/cancel"} {
		if rec := post(t, h, path, url.Values{"id": {failed[0]}}); rec.Code != http.StatusMethodNotAllowed {
			t.Errorf("read-only POST %s = %d, want 405", path, rec.Code)
		}
	}
	if _, body := get(t, h, "/queues/default?status=deferred"); !strings.Contains(body, child.ID) {
		t.Errorf("read-only deferred jobs page lacks %s:\n%s", child.ID, body)
	}
	if rec := post(t, h, "/queues/default/cancel", url.Values{"id": {child.ID}}); rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("read-only POST cancel of a deferred job = %d, want 405", rec.Code)
	}
	if s := status(t, q, failed[0]); s != rqgo.StatusFailed {
		t.Errorf("job after read-only POSTs is %s, want failed", s)
	}
	if s := status(t, q, child.ID); s != rqgo.StatusDeferred {
		t.Errorf("deferred job after read-only POSTs is %s, want deferred", s)
	}
}

var linkRE = regexp.MustCompile(`(href|method="post" action|method="get" action)="([^"]*)"`)

// Mounted under a path, every link and form of every page leads to a page
// of the dashboard: a crawl from the overview gets 200 from each link, 303
// from each form that posts, and the search form's own answer.
func TestLinksHoldUnderAMountPath(t *testing.T) {
	e := mini(t)
	rdb := e.rdb
	e.failJobs(t, e.queue("reports"), 2)
	parent, err := e.queue("reports").EnqueueContext(t.Context(), "f", nil)
	if err != nil {
		t.Fatal(err)
	}
	// A deferred job in another queue: its page links to its parent's, and
	// back.
	if _, err := e.queue("digests").EnqueueContext(t.Context(), "f", nil, rqgo.DependsOn(parent)); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ops/rqgo/", http.StripPrefix("/ops/rqgo", dashboard.New(rdb, dashboard.Options{})))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	client := srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	seen := map[string]bool{}
	todo := []string{srv.URL + "/ops/rqgo/"}
	var forms, searches []string
	for len(todo) > 0 {
		page := todo[0]
		todo = todo[1:]
		resp, err := client.Get(page)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET %s = %d", page, resp.StatusCode)
			continue
		}
		if !strings.Contains(resp.Header.Get("Content-Type"), "text/html") {
			continue
		}
		base, _ := url.Parse(page)
		for _, m := range linkRE.FindAllStringSubmatch(string(body), -1) {
			ref, err := base.Parse(strings.ReplaceAll(m[2], "&amp;", "&"))
			if err != nil {
				t.Errorf("%s: bad link %q", page, m[2])
				continue
			}
			if !strings.HasPrefix(ref.Path, "/ops/rqgo/") {
				t.Errorf("%s links outside the mount path: %q → %s", page, m[2], ref)
				continue
			}
			switch u := ref.String(); {
			case m[1] == `method="post" action`:
				if !slices.Contains(forms, u) {
					forms = append(forms, u)
				}
			case m[1] == `method="get" action`:
				if !slices.Contains(searches, u) {
					searches = append(searches, u)
				}
			case !seen[u]:
				seen[u] = true
				todo = append(todo, u)
			}
		}
	}
	for _, u := range searches {
		resp, err := client.Get(u + "?id=nosuchjob")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 404 || !strings.Contains(string(body), `no job "nosuchjob"`) {
			t.Errorf("GET %s?id=nosuchjob = %d %s, want the search's 404", u, resp.StatusCode, body)
		}
	}
	if len(seen) < 10 || len(forms) < 2 || len(searches) != 1 {
		t.Fatalf("crawled %d pages, %d forms and %d searches, want more:\n%v\n%v\n%v", len(seen), len(forms), len(searches), seen, forms, searches)
	}
	for _, f := range forms {
		req, _ := http.NewRequest("POST", f, strings.NewReader("all=1"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, _ := resp.Request.URL.Parse(resp.Header.Get("Location"))
		// The cancel form needs an id; every form must reach its handler.
		if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed ||
			(resp.StatusCode == http.StatusSeeOther && !strings.HasPrefix(loc.Path, "/ops/rqgo/queues/")) {
			t.Errorf("POST %s = %d to %v", f, resp.StatusCode, loc)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The search box finds a job by id in whichever queue holds it.
func TestFind(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		h := dashboard.New(e.rdb, dashboard.Options{Prefix: e.prefix})
		j, err := e.queue("reports").EnqueueContext(ctx, "f", nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{"a", "b"} {
			if _, err := e.queue(q).EnqueueContext(ctx, "f", nil, rqgo.JobID("twice")); err != nil {
				t.Fatal(err)
			}
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/find?id="+j.ID, nil))
		if want := "queues/reports/jobs/" + j.ID; rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != want {
			t.Errorf("find %s = %d to %q, want 303 to %s", j.ID, rec.Code, rec.Header().Get("Location"), want)
		}
		code, body := get(t, h, "/find?id=twice")
		for _, want := range []string{`href="queues/a/jobs/twice"`, `href="queues/b/jobs/twice"`} {
			if code != 200 || !strings.Contains(body, want) {
				t.Errorf("find twice = %d, lacks %s:\n%s", code, want, body)
			}
		}
		for _, c := range []struct {
			path string
			code int
		}{{"/find?id=nope", 404}, {"/find?id=", 400}} {
			if code, body := get(t, h, c.path); code != c.code {
				t.Errorf("GET %s = %d %s, want %d", c.path, code, body, c.code)
			}
		}
	})
}
