package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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

// sharedUp is whether the shared Redis answered, asked once per test
// binary so that a missing server costs one dial, not one per test.
var sharedUp struct {
	once sync.Once
	err  error
}

// Shared connects to the shared real Redis at [SharedURL] and returns a
// client with a fresh key prefix, name plus random hex; every key under the
// prefix is deleted when the test ends, and nothing else. With no Redis
// there the test is skipped, or failed when RQGO_REQUIRE_REDIS=1.
func Shared(t testing.TB, name string) (*redis.Client, string) {
	t.Helper()
	url := SharedURL()
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("REDIS_URL %q: %v", url, err)
	}
	sharedUp.once.Do(func() {
		rdb := redis.NewClient(opts)
		defer rdb.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		sharedUp.err = rdb.Ping(ctx).Err()
	})
	rdb := redis.NewClient(opts)
	if err := sharedUp.err; err != nil {
		rdb.Close()
		if os.Getenv("RQGO_REQUIRE_REDIS") == "1" {
			t.Fatalf("no Redis at %s and RQGO_REQUIRE_REDIS=1: %v", url, err)
		}
		t.Skipf("no Redis at %s (%v); set REDIS_URL to run this against real Redis", url, err)
	}
	var b [6]byte
	rand.Read(b[:])
	prefix := name + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
		if err := iter.Err(); err != nil {
			t.Errorf("cleaning up %s: %v", prefix, err)
		}
		rdb.Close()
	})
	return rdb, prefix
}
