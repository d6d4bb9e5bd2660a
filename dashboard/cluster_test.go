package dashboard_test

import (
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/rqgo/rqgo"
	"github.com/rqgo/rqgo/dashboard"
	"github.com/rqgo/rqgo/internal/redistest"
)

// On a Redis Cluster, with queues spread over three masters, every page,
// button and metric works.
func TestDashboardOnCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster")
	}
	c := redistest.StartCluster(t, 3, 0)
	rdb := c.Client()
	h := dashboard.New(rdb, dashboard.Options{Logger: quiet()})
	shards := map[string]bool{}
	ids := map[string]string{}
	for i := range 9 {
		name := fmt.Sprintf("q%d", i)
		j, err := rqgo.NewQueue(name, rdb).EnqueueContext(t.Context(), "f", nil)
		if err != nil {
			t.Fatal(err)
		}
		ids[name] = j.ID
		node, err := c.NodeFor(t.Context(), "rqgo:{"+name+"}:pending")
		if err != nil {
			t.Fatal(err)
		}
		shards[node.Addr] = true
	}
	if len(shards) < 2 {
		t.Fatalf("9 queues on %d masters, want them spread", len(shards))
	}

	code, body := get(t, h, "/metrics")
	for name := range ids {
		if want := `rqgo_queue_jobs{queue="` + name + `",status="queued"} 1`; code != 200 || !strings.Contains(body, want) {
			t.Errorf("GET /metrics = %d, lacks %s:\n%s", code, want, body)
		}
	}
	if code, body := get(t, h, "/"); code != 200 || !strings.Contains(body, `<a href="queues/q8">q8</a>`) {
		t.Errorf("GET / = %d:\n%s", code, body)
	}
	for name, id := range ids {
		if code, body := get(t, h, "/queues/"+name+"/jobs/"+id); code != 200 || !strings.Contains(body, "queued") {
			t.Errorf("job page of %s = %d:\n%s", name, code, body)
		}
		if rec := post(t, h, "/queues/"+name+"/cancel", url.Values{"id": {id}}); rec.Code != 303 {
			t.Errorf("cancel on %s = %d %s", name, rec.Code, rec.Body)
		}
	}
	if code, body := get(t, h, "/metrics"); code != 200 || strings.Count(body, `status="canceled"} 1`) != len(ids) {
		t.Errorf("after canceling one job per queue, GET /metrics = %d:\n%s", code, body)
	}

	// A parent and its dependent in queues on two masters: each page reads
	// the other's status.
	parentQ, childQ := "q0", ""
	first, err := c.NodeFor(t.Context(), "rqgo:{q0}:pending")
	if err != nil {
		t.Fatal(err)
	}
	for name := range ids {
		if node, err := c.NodeFor(t.Context(), "rqgo:{"+name+"}:pending"); err == nil && node.Addr != first.Addr {
			childQ = name
			break
		}
	}
	parent, err := rqgo.NewQueue(parentQ, rdb).EnqueueContext(t.Context(), "resize", nil)
	if err != nil {
		t.Fatal(err)
	}
	child, err := rqgo.NewQueue(childQ, rdb).EnqueueContext(t.Context(), "notify", nil, rqgo.DependsOn(parent))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ page, want string }{
		{"/queues/" + childQ + "/jobs/" + child.ID, `jobs/` + parent.ID + `">` + parent.ID + `</a></td><td>resize</td><td>queued</td>`},
		{"/queues/" + parentQ + "/jobs/" + parent.ID, `jobs/` + child.ID + `">` + child.ID + `</a></td><td>notify</td><td>deferred</td>`},
	} {
		if code, body := get(t, h, c.page); code != 200 || !strings.Contains(body, c.want) {
			t.Errorf("GET %s = %d, lacks %s:\n%s", c.page, code, c.want, body)
		}
	}
}
