package dashboard_test

import (
	"bytes"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/rqgo/rqgo"
	"github.com/rqgo/rqgo/dashboard"
)

// A page number that is not one the queue page can list is the client's
// mistake: 400 with a message, and nothing logged.
func TestBadPage(t *testing.T) {
	e := mini(t)
	var logs bytes.Buffer
	h := dashboard.New(e.rdb, dashboard.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if _, err := e.queue("default").EnqueueContext(t.Context(), "f", nil); err != nil {
		t.Fatal(err)
	}
	const want = "want a whole number from 1 to 10000000"
	tests := []struct {
		page string
		code int
		body string
	}{
		{"9223372036854775807", 400, `page "9223372036854775807": ` + want},
		{"9223372036854775808", 400, `page "9223372036854775808": ` + want},
		{"184467440737095517", 400, `page "184467440737095517": ` + want},
		{"10000001", 400, `page "10000001": ` + want},
		{"0", 400, `page "0": ` + want},
		{"-1", 400, `page "-1": ` + want},
		{"-9223372036854775808", 400, `page "-9223372036854775808": ` + want},
		{"two", 400, `page "two": ` + want},
		{"1.5", 400, `page "1.5": ` + want},
		{"1e3", 400, `page "1e3": ` + want},
		{"10000000", 200, "page 10000000"},
		{"1", 200, "page 1"},
	}
	for _, tt := range tests {
		code, body := get(t, h, "/queues/default?page="+url.QueryEscape(tt.page))
		if code != tt.code || !strings.Contains(html.UnescapeString(body), tt.body) {
			t.Errorf("GET /queues/default?page=%s = %d %q, want %d %q", tt.page, code, body, tt.code, tt.body)
		}
	}
	if logs.Len() > 0 {
		t.Errorf("bad pages logged, want nothing:\n%s", logs.String())
	}
}

// Ids and queue names holding characters that mean something in a URL
// (/ ? # % + and dot segments) are escaped in every link: a crawl from the
// overview reaches each job's own page, and so does the search box.
func TestLinksToOddNames(t *testing.T) {
	e := mini(t)
	ids := []string{"a/b", "../x", "q?x=1", "h#frag", "p%41", "p%zz", "+plus", "ü/..", "a/./b"}
	queues := []string{"re/po?r#t%s", "plain"}
	for _, q := range queues {
		for _, id := range ids {
			if _, err := e.queue(q).EnqueueContext(t.Context(), "f", nil, rqgo.JobID(id)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := e.queue("solo").EnqueueContext(t.Context(), "f", nil, rqgo.JobID("s/o?l#o%")); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(dashboard.New(e.rdb, dashboard.Options{}))
	defer srv.Close()
	client := srv.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	// fetch GETs ref, resolved against base, and returns its address, status,
	// body (unescaped) and the location it redirects to, resolved.
	fetch := func(base, ref string) (string, int, string, string) {
		t.Helper()
		b, _ := url.Parse(base)
		u, err := b.Parse(ref)
		if err != nil {
			t.Fatalf("%s: bad link %q", base, ref)
		}
		resp, err := client.Get(u.String())
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		loc := ""
		if l := resp.Header.Get("Location"); l != "" {
			lu, _ := u.Parse(l)
			loc = lu.String()
		}
		return u.String(), resp.StatusCode, html.UnescapeString(string(body)), loc
	}
	hrefs := func(body string) []string {
		var out []string
		for _, m := range linkRE.FindAllStringSubmatch(body, -1) {
			if m[1] == "href" {
				out = append(out, m[2])
			}
		}
		return out
	}
	// jobOf returns the queue and id of the job page body, "" if it is none.
	jobOf := func(body string) string {
		if m := jobPageRE.FindStringSubmatch(body); m != nil {
			return m[1] + " " + m[2]
		}
		return ""
	}

	// The crawl: overview, each queue's page, each job's page.
	found := map[string]bool{}
	root, code, body, _ := fetch(srv.URL, "/")
	if code != 200 {
		t.Fatalf("GET / = %d", code)
	}
	for _, qref := range hrefs(body) {
		qpage, code, body, _ := fetch(root, qref)
		if code != 200 || !strings.Contains(qpage, "/queues/") {
			continue
		}
		for _, jref := range hrefs(body) {
			jpage, code, body, _ := fetch(qpage, jref)
			if !strings.Contains(jpage, "/jobs/") {
				continue
			}
			if code != 200 {
				t.Errorf("GET %s (link %q) = %d %s", jpage, jref, code, body)
				continue
			}
			found[jobOf(body)] = true
		}
	}
	for _, q := range queues {
		for _, id := range ids {
			if !found[q+" "+id] {
				t.Errorf("no link from the page of queue %q leads to the page of its job %q", q, id)
			}
		}
	}

	// The search box: a job in two queues is listed with a link to each.
	for _, id := range ids {
		page, code, body, _ := fetch(srv.URL, "/find?id="+url.QueryEscape(id))
		if code != 200 {
			t.Errorf("find %q = %d %s, want the list of its queues", id, code, body)
			continue
		}
		got := map[string]bool{}
		for _, ref := range hrefs(body) {
			if jpage, code, body, _ := fetch(page, ref); strings.Contains(jpage, "/jobs/") && code == 200 {
				got[jobOf(body)] = true
			}
		}
		for _, q := range queues {
			if !got[q+" "+id] {
				t.Errorf("find %q does not link to the page of job %q in queue %q: found %v", id, id, q, got)
			}
		}
	}
	// A job in one queue: the search redirects to its page.
	_, code, body, loc := fetch(srv.URL, "/find?id="+url.QueryEscape("s/o?l#o%"))
	if code != http.StatusSeeOther {
		t.Fatalf("find s/o?l#o%% = %d %s, want 303 to its page", code, body)
	}
	if _, code, body, _ = fetch(srv.URL, loc); code != 200 || jobOf(body) != "solo s/o?l#o%" {
		t.Errorf("GET %s (found s/o?l#o%%) = %d, the page of job %q; want 200, the page of solo s/o?l#o%%", loc, code, jobOf(body))
	}
}

var jobPageRE = regexp.MustCompile(`HGETALL rqgo:\{([^}]*)\}:job:(.*?)</code>`)
