package rqgo

import (
	"errors"
	"testing"
	"time"

	"github.com/rqgo/rqgo/internal/redistest"
)

// WithWait: an enqueue waits for a replica on a cluster and on a Sentinel
// setup; without a replica it returns the job and ErrNotReplicated.
func TestWithWait(t *testing.T) {
	skipShort(t)
	ctx := t.Context()
	c := redistest.StartCluster(t, 3, 1)
	q := NewQueue("w", c.Client(), WithWait(1, time.Second))
	for range 3 {
		if _, err := q.EnqueueContext(ctx, "f", nil); err != nil {
			t.Fatalf("cluster: %v", err)
		}
	}
	st := redistest.StartSentinel(t)
	q = NewQueue("w", st.Client(), WithWait(1, time.Second))
	if _, err := q.EnqueueContext(ctx, "f", nil); err != nil {
		t.Fatalf("sentinel: %v", err)
	}
	s := redistest.StartServer(t)
	q = NewQueue("w", s.Client(), WithWait(1, 100*time.Millisecond))
	j, err := q.EnqueueContext(ctx, "f", nil)
	if !errors.Is(err, ErrNotReplicated) || j == nil {
		t.Fatalf("no replica: %v, %v", j, err)
	}
	t.Log(err)
	if _, err := q.FetchJob(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
}
