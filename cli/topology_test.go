package cli_test

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"github.com/rqgo/rqgo/internal/redistest"
)

// The command on a Redis Cluster: --url with addr= seed nodes. Queues land
// on different masters; info names each queue's shard.
func TestCommandOnCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster")
	}
	c := redistest.StartCluster(t, 3, 0)
	addrs := c.Addrs()
	url := "redis://" + addrs[0] + "?addr=" + addrs[1] + "&addr=" + addrs[2]
	env := []string{"REDIS_URL=" + url, "RQGO_PREFIX=rqgo"}
	queues := []string{"a", "b", "c", "d", "e", "f"}
	var ids []string
	for _, q := range queues {
		r := runEnv(t, env, "enqueue", "--queue", q, "echo", `{"q":"`+q+`"}`)
		if r.code != 0 {
			t.Fatalf("enqueue on the cluster: exit %d: %s", r.code, r.stderr)
		}
		ids = append(ids, strings.TrimSpace(r.stdout))
	}
	if r := runEnv(t, env, "worker", "--burst", "--queues", strings.Join(queues, ","), "--exec", "echo=cat"); r.code != 0 {
		t.Fatalf("worker --burst on the cluster: exit %d: %s", r.code, r.stderr)
	}
	for i, id := range ids {
		r := runEnv(t, env, "job", id, "--json")
		var j map[string]any
		json.Unmarshal([]byte(r.stdout), &j)
		if j["status"] != "finished" || j["queue"] != queues[i] {
			t.Errorf("job %s on the cluster: %v (exit %d %s), want finished in queue %s", id, j, r.code, r.stderr, queues[i])
		}
	}
	r := runEnv(t, env, "info", "--json")
	var in struct {
		Queues map[string]struct {
			Finished int64  `json:"finished"`
			Shard    string `json:"shard"`
		} `json:"queues"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &in); err != nil {
		t.Fatalf("info --json: %v: %s %s", err, r.stdout, r.stderr)
	}
	shards := map[string]bool{}
	for _, q := range queues {
		node, err := c.NodeFor(context.Background(), "rqgo:{"+q+"}:pending")
		if err != nil {
			t.Fatal(err)
		}
		got := in.Queues[q]
		if got.Finished != 1 || got.Shard != node.Addr {
			t.Errorf("info for queue %s = %+v, want 1 finished on shard %s", q, got, node.Addr)
		}
		shards[got.Shard] = true
	}
	if len(shards) < 2 {
		t.Errorf("queues %v all on one shard: the test wants them spread", queues)
	}
	if text := runEnv(t, env, "info").stdout; !strings.Contains(text, "SHARD") {
		t.Errorf("info on a cluster printed\n%s\nwant a SHARD column", text)
	}
}

// The command over TLS: rediss:// with --tls-ca, --tls-cert and --tls-key.
func TestCommandOverTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a TLS Redis")
	}
	s := redistest.StartTLS(t)
	env := []string{"REDIS_URL=rediss://" + s.Addr, "RQGO_PREFIX=rqgo"}
	tlsArgs := []string{"--tls-ca", s.CAFile, "--tls-cert", s.ClientCertFile, "--tls-key", s.ClientKeyFile}
	r := runEnv(t, env, append(tlsArgs, "enqueue", "echo", `"hi"`)...)
	if r.code != 0 {
		t.Fatalf("enqueue over TLS: exit %d: %s", r.code, r.stderr)
	}
	id := strings.TrimSpace(r.stdout)
	if r := runEnv(t, env, append(tlsArgs, "worker", "--burst", "--exec", "echo=cat")...); r.code != 0 {
		t.Fatalf("worker over TLS: exit %d: %s", r.code, r.stderr)
	}
	if r := runEnv(t, env, append(tlsArgs, "job", id)...); !strings.Contains(r.stdout, "finished") {
		t.Errorf("job over TLS: %s %s, want finished", r.stdout, r.stderr)
	}
	// Without the CA the server's certificate is not trusted: exit 1, naming the server.
	if r := runEnv(t, env, "info"); r.code != 1 || !strings.Contains(r.stderr, s.Addr) || !strings.Contains(r.stderr, "certificate") {
		t.Errorf("info without --tls-ca: exit %d stderr %q, want exit 1 naming the server and the certificate problem", r.code, r.stderr)
	}
	// TLS flags need a rediss:// URL.
	if r := runEnv(t, []string{"REDIS_URL=redis://" + s.Addr}, append(tlsArgs, "info")...); r.code != 2 || !strings.Contains(r.stderr, "rediss://") {
		t.Errorf("--tls-ca with redis://: exit %d stderr %q, want a usage error", r.code, r.stderr)
	}
}

// The command through Sentinel: --url with master_name= and the sentinels.
func TestCommandThroughSentinel(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Sentinel setup")
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("no redis-server")
	}
	st := redistest.StartSentinel(t)
	addrs := st.Addrs()
	url := "redis://" + addrs[0] + "?master_name=" + redistest.MasterName + "&addr=" + addrs[1] + "&addr=" + addrs[2]
	env := []string{"REDIS_URL=" + url, "RQGO_PREFIX=rqgo"}
	r := runEnv(t, env, "enqueue", "echo", "1")
	if r.code != 0 {
		t.Fatalf("enqueue through Sentinel: exit %d: %s", r.code, r.stderr)
	}
	id := strings.TrimSpace(r.stdout)
	if r := runEnv(t, env, "worker", "--burst", "--exec", "echo=cat"); r.code != 0 {
		t.Fatalf("worker through Sentinel: exit %d: %s", r.code, r.stderr)
	}
	if r := runEnv(t, env, "job", id); !strings.Contains(r.stdout, "finished") {
		t.Errorf("job through Sentinel: %s %s, want finished", r.stdout, r.stderr)
	}
}
