package rqgo

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// ScheduleInfo is the state of one periodic entry, as stored in its hash
// <prefix>:{<queue>}:schedule:<name>.
type ScheduleInfo struct {
	Name     string `json:"name"`
	Queue    string `json:"queue"`
	Func     string `json:"func"`
	Spec     string `json:"spec"`
	Timezone string `json:"timezone,omitempty"` // empty for @every
	// NextRun is the next tick, by the clock of the scheduler that last
	// wrote it.
	NextRun time.Time `json:"next_run,omitzero"`
	// LastTick is the tick whose job was enqueued last; LastRun is when, by
	// Redis's clock; LastJobID is that job's id.
	LastTick  time.Time `json:"last_tick,omitzero"`
	LastRun   time.Time `json:"last_run,omitzero"`
	LastJobID string    `json:"last_job_id,omitempty"`
	// LastHeldTick is the last tick that enqueued no job because job
	// LastHeldBy held the unique key of the entry's jobs (see [Unique]).
	// They stay as they are when a later tick enqueues a job; that tick's
	// LastTick is then after LastHeldTick.
	LastHeldTick time.Time `json:"last_held_tick,omitzero"`
	LastHeldBy   string    `json:"last_held_by,omitempty"`
	CreatedAt    time.Time `json:"created_at,omitzero"`
}

// Schedules lists the periodic entries known under prefix, sorted by queue
// and name. Entries no scheduler has run for 30 days (or three periods, if
// longer) have expired and are not listed.
func Schedules(ctx context.Context, rdb redis.UniversalClient, prefix string) ([]ScheduleInfo, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	members, err := rdb.SMembers(ctx, schedulesKey(prefix)).Result()
	if err != nil {
		return nil, fmt.Errorf("rqgo: list schedules: %w", err)
	}
	slices.Sort(members)
	cmds := make([]*redis.MapStringStringCmd, 0, len(members))
	_, err = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, m := range members {
			queue, name, _ := strings.Cut(m, ":")
			cmds = append(cmds, p.HGetAll(ctx, newKeys(prefix, queue).schedule(name)))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("rqgo: list schedules: %w", err)
	}
	infos := make([]ScheduleInfo, 0, len(cmds))
	for i, c := range cmds {
		h := c.Val()
		if len(h) == 0 {
			continue
		}
		queue, name, _ := strings.Cut(members[i], ":")
		ms := func(f string) time.Time {
			n, _ := strconv.ParseInt(h[f], 10, 64)
			return msTime(n)
		}
		infos = append(infos, ScheduleInfo{
			Name: name, Queue: queue, Func: h["func"], Spec: h["spec"], Timezone: h["timezone"],
			NextRun: ms("next_run"), LastTick: ms("last_tick"), LastRun: ms("last_run"),
			LastJobID: h["last_job_id"], LastHeldTick: ms("last_held_tick"), LastHeldBy: h["last_held_by"],
			CreatedAt: ms("created_at"),
		})
	}
	return infos, nil
}
