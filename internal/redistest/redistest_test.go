package redistest

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestStartServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server; skipped with -short")
	}
	s := StartServer(t, "--maxmemory-policy", "noeviction")
	ctx := t.Context()
	got, err := s.Client().ConfigGet(ctx, "maxmemory-policy").Result()
	if err != nil || got["maxmemory-policy"] != "noeviction" {
		t.Fatalf("CONFIG GET maxmemory-policy = %v, %v; want noeviction", got, err)
	}
	s.Kill()
	if !s.Exited() {
		t.Fatal("server still running after Kill")
	}
}

func TestStartCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster; skipped with -short")
	}
	c := StartCluster(t, 3, 0)
	ctx := t.Context()
	rdb := c.Client()
	masters := map[string]bool{}
	for _, q := range []string{"a", "b", "c", "d", "e", "f"} {
		key := "x:{" + q + "}:k"
		if err := rdb.Set(ctx, key, q, 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", key, err)
		}
		m, err := c.NodeFor(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		masters[m.Addr] = true
	}
	if len(masters) < 2 {
		t.Errorf("six hash tags landed on %d masters, want several", len(masters))
	}
}

func TestStartSentinel(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Sentinel; skipped with -short")
	}
	st := StartSentinel(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	rdb := st.Client()
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET through sentinel: %v", err)
	}
	if err := st.Failover(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := rdb.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("GET after failover = %q, %v; want v", got, err)
	}
}

func TestStartTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server; skipped with -short")
	}
	s := StartTLS(t)
	ctx := t.Context()
	if err := s.Client().Ping(ctx).Err(); err != nil {
		t.Fatalf("PING over TLS: %v", err)
	}
	plain := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer plain.Close()
	if err := plain.Ping(ctx).Err(); err == nil {
		t.Fatal("PING without TLS succeeded, want an error")
	}
}

// A server whose port was taken meanwhile is reported as such, so that the
// helpers start it again on other ports.
func TestPortTaken(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server; skipped with -short")
	}
	taken := StartServer(t)
	s := launch(t, FreePort(t), []string{"--port", strconv.Itoa(taken.Port)})
	if err := s.waitReady(func(ctx context.Context) error { return ping(ctx, s.Addr) }); err != errPortTaken {
		t.Fatalf("waitReady on a taken port = %v, want errPortTaken", err)
	}
}
