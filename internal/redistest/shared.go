package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SharedURL is where tests find the shared real Redis: $REDIS_URL, else
// redis://127.0.0.1:6379.
func SharedURL() string {
	if u := os.Getenv("REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379"
}

var sharedUp struct {
	once sync.Once
	err  error
}

// SharedReachable pings the shared Redis once per test binary, so that a
// missing server costs one dial, not one per test, and returns why it did
// not answer.
func SharedReachable() error {
	sharedUp.once.Do(func() {
		opts, err := redis.ParseURL(SharedURL())
		if err != nil {
			sharedUp.err = fmt.Errorf("REDIS_URL %q: %w", SharedURL(), err)
			return
		}
		rdb := redis.NewClient(opts)
		defer rdb.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		sharedUp.err = rdb.Ping(ctx).Err()
	})
	return sharedUp.err
}

// Shared connects to the shared real Redis at [SharedURL] and returns a
// client with a fresh key prefix, name plus random hex; every key under the
// prefix is deleted when the test ends, and nothing else. With no Redis
// there the test is skipped, or failed when RQGO_REQUIRE_REDIS=1.
func Shared(t testing.TB, name string) (*redis.Client, string) {
	t.Helper()
	if err := SharedReachable(); err != nil {
		if os.Getenv("RQGO_REQUIRE_REDIS") == "1" {
			t.Fatalf("no Redis at %s and RQGO_REQUIRE_REDIS=1: %v", SharedURL(), err)
		}
		t.Skipf("no Redis at %s (%v); set REDIS_URL to run this against real Redis", SharedURL(), err)
	}
	opts, _ := redis.ParseURL(SharedURL()) // parsed by SharedReachable
	rdb := redis.NewClient(opts)
	var b [6]byte
	rand.Read(b[:])
	prefix := name + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		DeletePrefix(t, rdb, prefix)
		rdb.Close()
	})
	return rdb, prefix
}

// DeletePrefix removes every key under prefix, and nothing else, from one
// server (a SCAN sees one node's keys).
func DeletePrefix(t testing.TB, rdb redis.UniversalClient, prefix string) {
	ctx := context.Background()
	iter := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 500 {
			rdb.Del(ctx, batch...)
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		rdb.Del(ctx, batch...)
	}
	if err := iter.Err(); err != nil {
		t.Errorf("cleaning up %s: %v", prefix, err)
	}
}
