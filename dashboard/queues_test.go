package dashboard

import (
	"testing"

	"github.com/rqgo/rqgo"
)

// States gives every status's own count, in the order of rqgo.Statuses:
// a status added to rqgo without a count here fails this test.
func TestStatesFollowStatuses(t *testing.T) {
	q := queueInfo{Counts: rqgo.Counts{Deferred: 1, Queued: 2, Scheduled: 3, Started: 4, Finished: 5, Failed: 6, Canceled: 7}}
	got := q.States()
	if len(got) != len(rqgo.Statuses) {
		t.Fatalf("States() = %v, want one count for each of %v", got, rqgo.Statuses)
	}
	for i, s := range rqgo.Statuses {
		if got[i].Status != s || got[i].N != int64(i+1) {
			t.Errorf("States()[%d] = %v, want {%s %d}", i, got[i], s, i+1)
		}
	}
}
