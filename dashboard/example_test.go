package dashboard_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo"
	"github.com/rqgo/rqgo/dashboard"
)

// Mount the dashboard under /rqgo/ and read a queue's size from /metrics.
func ExampleNew() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	q := rqgo.NewQueue("emails", rdb)
	for range 3 {
		if _, err := q.Enqueue("send", map[string]string{"to": "a@example.com"}); err != nil {
			panic(err)
		}
	}

	mux := http.NewServeMux()
	mux.Handle("/rqgo/", http.StripPrefix("/rqgo", dashboard.New(rdb, dashboard.Options{})))
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/rqgo/metrics", nil))
	for line := range strings.Lines(rec.Body.String()) {
		if strings.HasPrefix(line, `rqgo_queue_jobs{queue="emails",status="queued"}`) {
			fmt.Print(line)
		}
	}
	// Output:
	// rqgo_queue_jobs{queue="emails",status="queued"} 3
}
