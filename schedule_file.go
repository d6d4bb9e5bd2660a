package rqgo

import (
	"bytes"
	"encoding/json"
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
}

// ParseScheduleFile reads a schedule file: a JSON array of entries
//
//	[{"name": "nightly-cleanup", "cron": "0 3 * * *", "func": "cleanup",
//	  "args": {"days": 30}, "queue": "default", "timezone": "Europe/Berlin",
//	  "retry": 3, "timeout": "10m"}]
//
// where cron and func are required and the rest optional (see
// [ScheduleEntry]; retry and timeout are [Retry] and [Timeout], timeout as
// a Go duration). It checks every entry as [Scheduler.AddEntry] does and
// returns an error wrapping [ErrInvalid] that names the entry for an unknown
// field, a bad spec, time zone, name or value, or two entries with one name.
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
