package dashboard_test

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/rqgo/rqgo"
	"github.com/rqgo/rqgo/dashboard"
)

// A job waiting for its parents is counted on the overview, listed under
// its queue's deferred tab with a cancel button, and not among the queued.
func TestDeferredJobs(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		h := dashboard.New(e.rdb, dashboard.Options{Prefix: e.prefix})
		parent, err := e.queue("a").EnqueueContext(ctx, "resize", nil)
		if err != nil {
			t.Fatal(err)
		}
		child, err := e.queue("b").EnqueueContext(ctx, "notify", nil, rqgo.DependsOn(parent))
		if err != nil || child.Status != rqgo.StatusDeferred {
			t.Fatalf("child: %+v, %v; want it deferred", child, err)
		}

		code, body := get(t, h, "/")
		for _, want := range []string{
			`<th class="n">deferred</th>`,
			`<a href="queues/b?status=deferred">1</a>`,
			`<a href="queues/a?status=deferred">0</a>`,
			`<a href="queues/a?status=queued">1</a>`,
		} {
			if code != 200 || !strings.Contains(body, want) {
				t.Errorf("GET / = %d, lacks %s:\n%s", code, want, body)
			}
		}

		code, body = get(t, h, "/queues/b?status=deferred")
		for _, want := range []string{
			`<a href="?status=deferred" class="on">deferred 1</a>`,
			`<a href="?status=queued" >queued 0</a>`,
			`<a href="b/jobs/` + child.ID + `">` + child.ID + `</a></td><td>notify</td>`,
			`action="b/cancel"><input type="hidden" name="id" value="` + child.ID + `">`,
		} {
			if code != 200 || !strings.Contains(body, want) {
				t.Errorf("deferred jobs page = %d, lacks %s:\n%s", code, want, body)
			}
		}
		if code, body := get(t, h, "/queues/b?status=queued"); code != 200 || strings.Contains(body, child.ID) {
			t.Errorf("queued jobs page = %d, lists the deferred job %s:\n%s", code, child.ID, body)
		}

		rec := post(t, h, "/queues/b/cancel", url.Values{"id": {child.ID}})
		if rec.Code != 303 || status(t, e.queue("b"), child.ID) != rqgo.StatusCanceled {
			t.Errorf("cancel of the deferred job = %d %s, job %s; want 303 and the job canceled", rec.Code, rec.Body, status(t, e.queue("b"), child.ID))
		}
		if code, body := get(t, h, "/queues/b?status=deferred"); code != 200 || strings.Contains(body, child.ID) || !strings.Contains(body, "No deferred jobs") {
			t.Errorf("deferred jobs page after the cancel = %d, want it empty:\n%s", code, body)
		}
	})
}

// A job's page lists its parents and its dependents, each with its func
// and status and a link to its page (ids and queue names escaped), and
// says whether the job allows failure.
func TestJobPageLinks(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		h := dashboard.New(e.rdb, dashboard.Options{Prefix: e.prefix})
		odd := e.queue("re/po")
		parent, err := odd.EnqueueContext(ctx, "resize", nil, rqgo.JobID("p/<i>?#1"))
		if err != nil {
			t.Fatal(err)
		}
		child, err := e.queue("b").EnqueueContext(ctx, "notify", nil, rqgo.DependsOn(parent))
		if err != nil {
			t.Fatal(err)
		}
		after, err := odd.EnqueueContext(ctx, "cleanup", nil, rqgo.DependsOn(parent), rqgo.AllowFailure())
		if err != nil {
			t.Fatal(err)
		}
		const parentLink = `<a href="../../re%2Fpo/jobs/p%2F%3Ci%3E%3F%231">p/&lt;i&gt;?#1</a>`

		childPage := "/queues/b/jobs/" + child.ID
		code, body := get(t, h, childPage)
		for _, want := range []string{
			"<h3>Parents</h3>",
			`<tr><td><a href="../../re%2Fpo">re/po</a></td><td>` + parentLink + `</td><td>resize</td><td>queued</td></tr>`,
			`<tr><th>allows failure</th><td>no:`,
		} {
			if code != 200 || !strings.Contains(body, want) {
				t.Errorf("child's page = %d, lacks %s:\n%s", code, want, body)
			}
		}
		if strings.Contains(body, "<i>") || strings.Contains(body, "<h3>Dependents</h3>") {
			t.Errorf("child's page has the parent's id unescaped, or dependents:\n%s", body)
		}
		// The link leads to the parent's page.
		base, _ := url.Parse(childPage)
		ref, _ := base.Parse("../../re%2Fpo/jobs/p%2F%3Ci%3E%3F%231")
		if code, body := get(t, h, ref.String()); code != 200 || !strings.Contains(body, "HGETALL "+e.prefix+":{re/po}:job:p/&lt;i&gt;?#1") {
			t.Errorf("GET %s (the parent's link) = %d, want the parent's page:\n%s", ref, code, body)
		}

		code, body = get(t, h, "/queues/re%2Fpo/jobs/"+url.PathEscape(parent.ID))
		for _, want := range []string{
			"<h3>Dependents</h3>",
			// By queue: b before re/po.
			`<tr><td><a href="../../b">b</a></td><td><a href="../../b/jobs/` + child.ID + `">` + child.ID + `</a></td><td>notify</td><td>deferred</td></tr>
<tr><td><a href="../../re%2Fpo">re/po</a></td><td><a href="../../re%2Fpo/jobs/` + after.ID + `">` + after.ID + `</a></td><td>cleanup</td><td>deferred</td></tr>`,
		} {
			if code != 200 || !strings.Contains(body, want) {
				t.Errorf("parent's page = %d, lacks %s:\n%s", code, want, body)
			}
		}
		if strings.Contains(body, "<h3>Parents</h3>") || strings.Contains(body, "allows failure") {
			t.Errorf("parent's page shows parents of its own:\n%s", body)
		}

		if code, body := get(t, h, "/queues/re%2Fpo/jobs/"+after.ID); code != 200 || !strings.Contains(body, `<tr><th>allows failure</th><td>yes:`) {
			t.Errorf("page of the job that allows failure = %d:\n%s", code, body)
		}
	})
}

// A parent that no longer exists (kept for no time once it finished) is
// listed as such, with no link to a page it no longer has.
func TestVanishedParent(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		h := dashboard.New(e.rdb, dashboard.Options{Prefix: e.prefix})
		parent, err := e.queue("a").EnqueueContext(ctx, "f", nil, rqgo.ResultTTL(0))
		if err != nil {
			t.Fatal(err)
		}
		child, err := e.queue("b").EnqueueContext(ctx, "f", nil, rqgo.DependsOn(parent))
		if err != nil {
			t.Fatal(err)
		}
		w := rqgo.NewWorker(e.rdb, rqgo.WorkerOptions{Queues: []string{"a"}, Burst: true, Prefix: e.prefix, Logger: quiet()})
		w.Register("f", func(ctx context.Context, j *rqgo.Job) (any, error) { return nil, nil })
		if err := w.Run(ctx); err != nil {
			t.Fatal(err)
		}
		if code, _ := get(t, h, "/queues/a/jobs/"+parent.ID); code != 404 {
			t.Fatalf("the parent's page = %d, want 404: it should be gone", code)
		}

		code, body := get(t, h, "/queues/b/jobs/"+child.ID)
		if want := `<tr><td>a</td><td>` + parent.ID + `</td><td></td><td>no longer exists</td></tr>`; code != 200 || !strings.Contains(body, want) {
			t.Errorf("child's page = %d, lacks %s:\n%s", code, want, body)
		}
		if strings.Contains(body, "jobs/"+parent.ID) {
			t.Errorf("child's page links to the parent that is gone:\n%s", body)
		}
	})
}

// A job's page lists its first 100 parents, and counts the others.
func TestJobPageListsFirstParents(t *testing.T) {
	e := mini(t)
	h := dashboard.New(e.rdb, dashboard.Options{})
	reqs := make([]rqgo.EnqueueRequest, 101)
	for i := range reqs {
		reqs[i] = rqgo.EnqueueRequest{Func: "part"}
	}
	parts, err := e.queue("a").EnqueueMany(t.Context(), reqs)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := e.queue("a").EnqueueContext(t.Context(), "sum", nil, rqgo.DependsOn(parts...))
	if err != nil {
		t.Fatal(err)
	}
	code, body := get(t, h, "/queues/a/jobs/"+sum.ID)
	if n := strings.Count(body, "<td>part</td><td>queued</td>"); code != 200 || n != 100 || !strings.Contains(body, "and 1 more.") ||
		!strings.Contains(body, parts[99].ID) || strings.Contains(body, parts[100].ID) {
		t.Errorf("page of a job with 101 parents = %d, lists %d, want the first 100 and 1 more:\n%s", code, n, body)
	}
	code, body = get(t, h, "/queues/a/jobs/"+parts[100].ID)
	if code != 200 || !strings.Contains(body, `<a href="../../a/jobs/`+sum.ID+`">`) {
		t.Errorf("page of the last parent = %d, lacks its dependent %s:\n%s", code, sum.ID, body)
	}
}
