package dashboard_test

import (
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rqgo/rqgo"
	"github.com/rqgo/rqgo/dashboard"
)

// A job's page shows its unique key (escaped), when the key is released,
// and whether the job holds it now: yes, free, or held by another job with
// a link to it; and, when set, its start-within window. A requeue refused
// because another job holds the key is a 409 naming it.
func TestJobPageUniqueKey(t *testing.T) {
	backends(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		h := dashboard.New(e.rdb, dashboard.Options{Prefix: e.prefix})
		q := e.queue("a")
		page := func(id string) string {
			t.Helper()
			code, body := get(t, h, "/queues/a/jobs/"+url.PathEscape(id))
			if code != 200 {
				t.Fatalf("page of job %s = %d:\n%s", id, code, body)
			}
			return body
		}
		enqueue := func(fn string, opts ...rqgo.EnqueueOption) *rqgo.Job {
			t.Helper()
			j, err := q.EnqueueContext(ctx, fn, nil, opts...)
			if err != nil {
				t.Fatal(err)
			}
			return j
		}

		held := enqueue("reindex", rqgo.Unique(rqgo.UniqueOpts{Key: "doc/<42>", For: time.Hour}), rqgo.StartWithin(10*time.Minute))
		body := page(held.ID)
		for _, want := range []string{
			`<tr><th>unique key</th><td><code>doc/&lt;42&gt;</code> (<code>GET ` + e.prefix + `:{a}:unique:doc/&lt;42&gt;</code>), held until the job ends and at least 1h0m0s after its enqueue</td></tr>`,
			`<tr><th>holds its key</th><td>yes</td></tr>`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("page of the holder lacks %s:\n%s", want, body)
			}
		}
		if re := regexp.MustCompile(`<tr><th>start within</th><td>10m0s after its enqueue: by \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC \(in [0-9m]+s\), else it is canceled as expired</td></tr>`); !re.MatchString(body) {
			t.Errorf("page of the holder lacks its start-within row (%s):\n%s", re, body)
		}
		if strings.Contains(body, "<i>") || strings.Contains(body, "<42>") {
			t.Errorf("page of the holder has the key unescaped:\n%s", body)
		}

		started := enqueue("step", rqgo.Unique(rqgo.UniqueOpts{Key: "s", Until: rqgo.UntilStarted}))
		if body := page(started.ID); !strings.Contains(body, "held until an attempt starts</td></tr>") || strings.Contains(body, "at least") ||
			strings.Contains(body, "start within") {
			t.Errorf("page of a job held until started lacks that, or shows a For or start-within:\n%s", body)
		}

		// Canceled, the job no longer holds its key; once another job
		// takes it, the page names that job.
		gone := enqueue("sync", rqgo.Unique(rqgo.UniqueOpts{Key: "sync"}))
		if err := q.Cancel(ctx, gone.ID); err != nil {
			t.Fatal(err)
		}
		if body := page(gone.ID); !strings.Contains(body, `<tr><th>holds its key</th><td>no: the key is free</td></tr>`) {
			t.Errorf("page of a canceled job whose key is free lacks that:\n%s", body)
		}
		taker := enqueue("sync", rqgo.Unique(rqgo.UniqueOpts{Key: "sync"}))
		want := `<tr><th>holds its key</th><td>no: job <a href="../../a/jobs/` + taker.ID + `">` + taker.ID + `</a> holds it</td></tr>`
		if body := page(gone.ID); !strings.Contains(body, want) {
			t.Errorf("page of a job whose key another holds lacks %s:\n%s", want, body)
		}
		rec := post(t, h, "/queues/a/requeue", url.Values{"id": {gone.ID}})
		if rec.Code != 409 || !strings.Contains(rec.Body.String(), gone.ID+" (held by "+taker.ID+")") || status(t, q, gone.ID) != rqgo.StatusCanceled {
			t.Errorf("requeue of a job whose key another holds = %d %q, job %s; want 409 naming the holder, and the job left canceled",
				rec.Code, rec.Body, status(t, q, gone.ID))
		}

		plain := enqueue("plain")
		if body := page(plain.ID); strings.Contains(body, "unique key") || strings.Contains(body, "holds its key") || strings.Contains(body, "start within") {
			t.Errorf("page of a job without a unique key or start-within shows them:\n%s", body)
		}
	})
}
