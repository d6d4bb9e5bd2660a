package rqgo

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/alicebob/miniredis/v2/server"
)

// A Redis that may evict keys can drop jobs: the worker says so at start.
func TestWarnsWhenRedisMayEvict(t *testing.T) {
	for _, tc := range []struct {
		policy string
		warn   bool
	}{
		{"allkeys-lru", true},
		{"volatile-ttl", true},
		{"noeviction", false},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			e := newMiniEnv(t)
			e.mr.Server().Register("CONFIG", func(c *server.Peer, cmd string, args []string) {
				c.WriteMapLen(1)
				c.WriteBulk("maxmemory-policy")
				c.WriteBulk(tc.policy)
			})
			var buf syncBuffer
			w := e.worker(t, WorkerOptions{Burst: true, Logger: slog.New(slog.NewTextHandler(&buf, nil))})
			if err := w.Run(t.Context()); err != nil {
				t.Fatal(err)
			}
			warned := strings.Contains(buf.String(), "maxmemory-policy="+tc.policy)
			if warned != tc.warn {
				t.Errorf("maxmemory-policy %s: warned = %v, want %v; log:\n%s", tc.policy, warned, tc.warn, buf.String())
			}
		})
	}
}

func TestWorkersRegistry(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		w := e.worker(t, WorkerOptions{Queues: []string{"high", "low"}, Concurrency: 3, Name: "w-1"})
		running := make(chan struct{})
		release := make(chan struct{})
		w.Register("f", func(_ context.Context, j *Job) (any, error) {
			close(running)
			<-release
			return nil, nil
		})
		e.queue("high").EnqueueContext(ctx, "f", nil)
		stop := start(t, w)
		<-running
		ws, err := Workers(ctx, e.rdb, e.prefix)
		if err != nil {
			t.Fatal(err)
		}
		if len(ws) != 1 || ws[0].ID != "w-1" || strings.Join(ws[0].Queues, ",") != "high,low" || ws[0].Concurrency != 3 {
			t.Errorf("Workers = %+v, want w-1 on high,low with concurrency 3", ws)
		}
		qs, _ := Queues(ctx, e.rdb, e.prefix)
		if len(qs) != 2 {
			t.Errorf("Queues = %v, want high and low", qs)
		}
		close(release)
		stop()
		if ws, _ := Workers(ctx, e.rdb, e.prefix); len(ws) != 0 {
			t.Errorf("Workers after stop = %+v, want none", ws)
		}
	})
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
