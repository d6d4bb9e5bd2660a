package rqgo

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/rqgo/rqgo/internal/redistest"
)

// rqgo enqueues and works over TLS, with options built by hand or parsed
// from a rediss:// URL, against a redis-server that accepts only TLS and
// requires a client certificate. A client that does not trust the server's
// CA fails with the certificate error, not a silent retry.
func TestTLS(t *testing.T) {
	skipShort(t)
	s := redistest.StartTLS(t)
	ctx := t.Context()

	opts, err := redis.ParseURL(fmt.Sprintf("rediss://%s/0", s.Addr))
	if err != nil {
		t.Fatal(err)
	}
	opts.TLSConfig.RootCAs = s.CAPool
	opts.TLSConfig.Certificates = []tls.Certificate{s.ClientCert}
	for name, o := range map[string]*redis.Options{
		"options": {Addr: s.Addr, TLSConfig: s.ClientTLS()},
		"url":     opts,
	} {
		t.Run(name, func(t *testing.T) {
			rdb := redis.NewClient(o)
			t.Cleanup(func() { rdb.Close() })
			e := &testEnv{rdb: rdb, prefix: testPrefix(t), addr: s.Addr}
			t.Cleanup(func() { redistest.DeletePrefix(t, rdb, e.prefix) })
			q := e.queue("default")
			var ids []string
			for i := range 10 {
				j, err := q.EnqueueContext(ctx, "double", i)
				if err != nil {
					t.Fatalf("enqueue over TLS: %v", err)
				}
				ids = append(ids, j.ID)
			}
			w := e.worker(t, WorkerOptions{})
			RegisterFunc(w, "double", func(ctx context.Context, n int) (int, error) { return 2 * n, nil })
			runBurst(t, w)
			for i, id := range ids {
				j, err := q.FetchJob(ctx, id)
				if err != nil || j.Status != StatusFinished || string(j.Result) != fmt.Sprint(2*i) {
					t.Fatalf("job %d over TLS: %+v, %v; want finished with result %d", i, j, err, 2*i)
				}
			}
		})
	}

	// Without the CA: the certificate error comes back from Enqueue and
	// from Worker.Run.
	untrusting := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{s.ClientCert}, MinVersion: tls.VersionTLS12}})
	t.Cleanup(func() { untrusting.Close() })
	_, err = NewQueue("default", untrusting, WithPrefix(testPrefix(t))).EnqueueContext(ctx, "double", 1)
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Errorf("enqueue without the CA: %v; want x509: certificate signed by unknown authority", err)
	} else {
		t.Logf("enqueue without the CA: %v", err)
	}
	w := NewWorker(untrusting, WorkerOptions{Prefix: testPrefix(t), Logger: testLogger(t)})
	if err := w.Run(ctx); !errors.As(err, &unknown) {
		t.Errorf("Worker.Run without the CA = %v; want x509: certificate signed by unknown authority", err)
	}
}
