package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo"
)

// cancelAsk is what a job's hash says of a cancel requested while it ran:
// whether one was (Asked), and when (At), zero when the field does not
// hold a time (written by another tool), whose value Raw then is.
type cancelAsk struct {
	Asked bool
	At    time.Time
	Raw   string
}

// cancelRequests reads whether, and when, a cancel of each of jobs was
// requested while it ran, in one round trip.
func cancelRequests(ctx context.Context, rdb redis.UniversalClient, prefix string, jobs []*rqgo.Job) ([]cancelAsk, error) {
	asks := make([]cancelAsk, len(jobs))
	if len(jobs) == 0 {
		return asks, nil
	}
	cmds := make([]*redis.StringCmd, len(jobs))
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, j := range jobs {
			cmds[i] = p.HGet(ctx, jobKey(prefix, j.Queue, j.ID), cancelRequestedField)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("dashboard: read whether a cancel of the jobs was requested: %w", err)
	}
	for i, c := range cmds {
		v, err := c.Result()
		switch {
		case errors.Is(err, redis.Nil):
			continue
		case err != nil:
			return nil, fmt.Errorf("dashboard: read whether a cancel of job %s was requested: %w", jobs[i].ID, err)
		}
		asks[i] = cancelAsk{Asked: true, Raw: v}
		if ms, err := strconv.ParseInt(v, 10, 64); err == nil && ms > 0 {
			asks[i].At = time.UnixMilli(ms)
		}
	}
	return asks, nil
}

// progressView is how a page shows a job's progress: a bar when it is a
// JSON number from 0 to 100 (a percentage), else the JSON value.
type progressView struct {
	Bar     bool
	Percent string          // with Bar: the number as written, for the bar
	Label   string          // with Bar: the number rounded to 0.1, for reading
	Raw     json.RawMessage // without Bar: the value
}

func progressOf(raw json.RawMessage) progressView {
	raw = bytes.TrimSpace(raw)
	var v float64
	if len(raw) > 0 && (raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9') &&
		json.Unmarshal(raw, &v) == nil && v >= 0 && v <= 100 {
		return progressView{Bar: true, Percent: strconv.FormatFloat(v, 'f', -1, 64),
			Label: strconv.FormatFloat(math.Round(v*10)/10, 'f', -1, 64)}
	}
	return progressView{Raw: raw}
}

// maxShort is how many characters of a JSON value a list shows.
const maxShort = 60

// short is a JSON value on one line, cut to maxShort characters, for a
// list's cell; what does not parse is shown as it is, cut alike.
func short(raw json.RawMessage) string {
	var b bytes.Buffer
	s := string(raw)
	if json.Compact(&b, raw) == nil {
		s = b.String()
	}
	if utf8.RuneCountInString(s) <= maxShort {
		return s
	}
	r := []rune(s)
	return string(r[:maxShort-1]) + "…"
}
