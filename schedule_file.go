package rqgo

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// fileEntry is one element of a schedule file.
type fileEntry struct {
	Name     string          `json:"name"`
	Cron     string          `json:"cron"`
	Func     string          `json:"func"`
	Args     json.RawMessage `json:"args"`
	Queue    string          `json:"queue"`
	Timezone string          `json:"timezone"`
	Retry    *int            `json:"retry"`
	Timeout  string          `json:"timeout"`
	Unique   json.RawMessage `json:"unique"`
}

// fileUnique is the object form of a schedule file entry's "unique".
type fileUnique struct {
	Key   *string `json:"key"`
	Until *string `json:"until"`
	For   *string `json:"for"`
}

// parseUnique reads the "unique" value of a schedule file entry: true (the
// key derived from func and args, held until the job ends), false or null
// (not unique), or an object {"key", "until", "for"} whose fields are all
// optional. It returns nil for false and null.
func parseUnique(raw json.RawMessage) (*UniqueOpts, error) {
	const forms = `want true, false or an object {"key": "...", "until": "started" or "ended", "for": "10m"}`
	switch v := strings.TrimSpace(string(raw)); {
	case v == "" || v == "null" || v == "false":
		return nil, nil
	case v == "true":
		return &UniqueOpts{}, nil
	case !strings.HasPrefix(v, "{"):
		return nil, fmt.Errorf("unique is %s: %s", v, forms)
	}
	var fu fileUnique
	d := json.NewDecoder(bytes.NewReader(raw))
	d.DisallowUnknownFields()
	if err := d.Decode(&fu); err != nil {
		return nil, fmt.Errorf("unique: %s (%s)", strings.TrimPrefix(err.Error(), "json: "), forms)
	}
	var u UniqueOpts
	if fu.Key != nil {
		if *fu.Key == "" {
			return nil, errors.New(`unique key is empty: leave "key" out to derive it from func and args`)
		}
		u.Key = *fu.Key
	}
	if fu.Until != nil {
		switch *fu.Until {
		case "ended":
			u.Until = UntilEnded
		case "started":
			u.Until = UntilStarted
		default:
			return nil, fmt.Errorf(`unique until %q is not "started" or "ended"`, *fu.Until)
		}
	}
	if fu.For != nil {
		d, err := time.ParseDuration(*fu.For)
		if err != nil {
			return nil, fmt.Errorf("unique for %q is not a duration such as 90s or 10m", *fu.For)
		}
		if d <= 0 {
			return nil, fmt.Errorf(`unique for %s is not positive: leave "for" out for no window`, *fu.For)
		}
		u.For = d
	}
	return &u, nil
}

// ParseScheduleFile reads a schedule file: a JSON array of entries
//
//	[{"name": "nightly-cleanup", "cron": "0 3 * * *", "func": "cleanup",
//	  "args": {"days": 30}, "queue": "default", "timezone": "Europe/Berlin",
//	  "retry": 3, "timeout": "10m",
//	  "unique": {"key": "cleanup", "until": "ended", "for": "1h"}}]
//
// where cron and func are required and the rest optional (see
// [ScheduleEntry]; retry and timeout are [Retry] and [Timeout], timeout as
// a Go duration). unique is [Unique]: true for the key derived from func and
// args, held until the job ends, or an object whose fields are optional:
// key (default: derived), until ("ended", the default, or "started") and
// for (a Go duration; default none); false or null is not unique. It checks
// every entry as [Scheduler.AddEntry] does and returns an error wrapping
// [ErrInvalid] that names the entry for an unknown field, a bad spec, time
// zone, name or value (a unique of another form among them), or two entries
// with one name.
func ParseScheduleFile(r io.Reader) ([]ScheduleEntry, error) {
	dec := json.NewDecoder(r)
	var raws []json.RawMessage
	if err := dec.Decode(&raws); err != nil {
		return nil, fmt.Errorf("%w: schedule file: want a JSON array of entries: %v", ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: schedule file: data after the array of entries", ErrInvalid)
	}
	entries := make([]ScheduleEntry, 0, len(raws))
	seen := map[string]int{}
	for i, raw := range raws {
		label := fmt.Sprintf("entry %d", i+1)
		var probe struct {
			Name any `json:"name"`
		}
		if json.Unmarshal(raw, &probe) == nil && probe.Name != nil {
			label += fmt.Sprintf(" (%q)", fmt.Sprint(probe.Name))
		}
		bad := func(format string, a ...any) error {
			return fmt.Errorf("%w: schedule file: %s: %s", ErrInvalid, label, fmt.Sprintf(format, a...))
		}
		var fe fileEntry
		d := json.NewDecoder(bytes.NewReader(raw))
		d.DisallowUnknownFields()
		if err := d.Decode(&fe); err != nil {
			return nil, bad("%v", strings.TrimPrefix(err.Error(), "json: "))
		}
		if fe.Cron == "" || fe.Func == "" {
			return nil, bad(`"cron" and "func" are required`)
		}
		e := ScheduleEntry{Name: fe.Name, Cron: fe.Cron, Func: fe.Func, Queue: fe.Queue, Timezone: fe.Timezone}
		if len(fe.Args) > 0 {
			e.Args = fe.Args
		}
		if fe.Retry != nil {
			e.Options = append(e.Options, Retry(*fe.Retry))
		}
		if fe.Timeout != "" {
			d, err := time.ParseDuration(fe.Timeout)
			if err != nil {
				return nil, bad("timeout %q is not a duration such as 90s or 10m", fe.Timeout)
			}
			e.Options = append(e.Options, Timeout(d))
		}
		u, err := parseUnique(fe.Unique)
		if err != nil {
			return nil, bad("%v", err)
		}
		if u != nil {
			e.Options = append(e.Options, Unique(*u))
		}
		ce, err := compileEntry(e, time.UTC)
		if err != nil {
			return nil, bad("%s", reason(err))
		}
		id := ce.Queue + ":" + ce.Name
		if j, dup := seen[id]; dup {
			return nil, bad("entry %d has the same name %q in queue %q", j, ce.Name, ce.Queue)
		}
		seen[id] = i + 1
		entries = append(entries, e)
	}
	return entries, nil
}
