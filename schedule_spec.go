package rqgo

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// parseSpec parses a cron spec with robfig/cron's standard parser and
// returns it with the name of its time zone.
func parseSpec(spec, tz string, loc *time.Location) (tickSchedule, string, error) {
	s := strings.TrimSpace(spec)
	if s == "" {
		return nil, "", errors.New("cron spec is empty")
	}
	body, hasTZ := s, strings.HasPrefix(s, "TZ=") || strings.HasPrefix(s, "CRON_TZ=")
	if hasTZ {
		_, body, _ = strings.Cut(s, " ")
		body = strings.TrimSpace(body)
		if tz != "" {
			return nil, "", fmt.Errorf("cron spec %q has a time zone and so has the entry (%q): give one", spec, tz)
		}
	}
	if tz != "" {
		l, err := time.LoadLocation(tz)
		if err != nil {
			return nil, "", fmt.Errorf("unknown time zone %q", tz)
		}
		loc = l
	}
	if d, ok := strings.CutPrefix(body, "@every "); ok {
		every, err := time.ParseDuration(strings.TrimSpace(d))
		if err != nil || every < time.Second || every%time.Second != 0 {
			return nil, "", fmt.Errorf("cron spec %q: @every needs a whole number of seconds, at least 1s", spec)
		}
		return everySchedule(every), "", nil
	}
	parsed, err := cron.ParseStandard(s)
	if err != nil {
		return nil, "", fmt.Errorf("bad cron spec %q: %v", spec, err)
	}
	ss, ok := parsed.(*cron.SpecSchedule)
	if !ok {
		return nil, "", fmt.Errorf("bad cron spec %q: unsupported form", spec)
	}
	if !hasTZ {
		ss.Location = loc
	}
	if ss.Next(time.Now()).IsZero() {
		return nil, "", fmt.Errorf("cron spec %q never fires", spec)
	}
	return cronSchedule{ss}, ss.Location.String(), nil
}

// tickSchedule is an entry's sequence of ticks.
type tickSchedule interface {
	next(t time.Time) time.Time // the first tick after t; zero if none
	prev(t time.Time) time.Time // the last tick at or before t; zero if none
}

// everySchedule ticks at every multiple of its period since the Unix epoch,
// so schedulers started at different times agree on the ticks.
type everySchedule time.Duration

func (e everySchedule) prev(t time.Time) time.Time {
	p := time.Duration(e).Milliseconds()
	ms := t.UnixMilli()
	return time.UnixMilli(ms - ((ms%p)+p)%p)
}

func (e everySchedule) next(t time.Time) time.Time { return e.prev(t).Add(time.Duration(e)) }

// cronSchedule is a cron spec; its ticks follow robfig/cron exactly.
type cronSchedule struct{ s cron.Schedule }

func (c cronSchedule) next(t time.Time) time.Time { return c.s.Next(t) }

func (c cronSchedule) prev(t time.Time) time.Time {
	// Widen a window back from t until a tick falls in it, then walk forward
	// to the last tick at or before t.
	for w := time.Minute; w <= prevLookback; w *= 2 {
		n := c.s.Next(t.Add(-w))
		if n.IsZero() || n.After(t) {
			continue
		}
		for {
			m := c.s.Next(n)
			if m.IsZero() || m.After(t) {
				return n
			}
			n = m
		}
	}
	return time.Time{}
}
