package rqgo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// MaxProgressSize is the largest JSON value, in bytes, that
// [Job.SetProgress] and [Job.SetMeta] store.
const MaxProgressSize = 64 << 10

// SetProgress stores the job's progress, any JSON value: a number such as
// 40, or an object such as {"done":12000,"total":50000}. It replaces the
// last one. It is for a handler, on the Job it was given: the write checks
// the attempt's token, so once the attempt has lost its lease it writes
// nothing and returns an error wrapping [ErrLeaseLost]. Readers see it as
// [Job.Progress], in the job hash's progress field, `rqgo job` and the
// dashboard, for as long as the job is kept.
//
// It returns once the value is stored. Calls of the handlers of one worker
// that are waiting at the same time share one round trip, so even 100
// calls a second from each of 50 jobs cost little (see the README's
// figures); still, report about as often as someone would look. A Redis
// out of memory refuses the write (its OOM error); the job is not affected.
func (j *Job) SetProgress(ctx context.Context, v any) error {
	return j.report(ctx, "progress", fProgress, v)
}

// SetMeta stores one named JSON value on the job, next to the others: names
// are merged, never overwritten as one blob, so writers of different names
// lose nothing. The name must be 1 to 200 bytes of valid UTF-8 without
// whitespace or control characters. Like [Job.SetProgress], it is for a
// handler on the Job it was given. Readers see the values as [Job.Meta],
// and in the job hash's meta:<name> fields.
func (j *Job) SetMeta(ctx context.Context, name string, v any) error {
	if err := validateToken("meta name", name); err != nil {
		return fmt.Errorf("rqgo: set meta of %s: %w", j.ID, err)
	}
	return j.report(ctx, "meta "+name, fMetaPrefix+name, v)
}

func (j *Job) report(ctx context.Context, what, field string, v any) error {
	if !j.leased || j.src == nil || j.src.rep == nil || j.token == "" {
		return fmt.Errorf("rqgo: set %s of %s: %w: not a running attempt (only the Job a handler was given can report)", what, j.ID, ErrInvalid)
	}
	raw, err := progressJSON(v)
	if err != nil {
		return fmt.Errorf("rqgo: set %s of %s: %w", what, j.ID, err)
	}
	r := &report{j: j, field: field, raw: raw, done: make(chan error, 1)}
	select {
	case j.src.rep <- r:
	case <-j.src.repDone:
		return fmt.Errorf("rqgo: set %s of %s: %w", what, j.ID, errWorkerStopped)
	case <-ctx.Done():
		return fmt.Errorf("rqgo: set %s of %s: %w", what, j.ID, context.Cause(ctx))
	}
	select {
	case err = <-r.done:
	case <-j.src.repDone:
		// The worker stopped: it may or may not have written this one.
		select {
		case err = <-r.done:
		default:
			err = errWorkerStopped
		}
	case <-ctx.Done():
		err = context.Cause(ctx)
	}
	if err != nil {
		return fmt.Errorf("rqgo: set %s of %s: %w", what, j.ID, err)
	}
	return nil
}

// errWorkerStopped is the error of a report made after the worker stopped
// (a handler that outlived its grace period).
var errWorkerStopped = errors.New("the worker has stopped")

// report is one SetProgress or SetMeta on its way to Redis; done gets its
// outcome.
type report struct {
	j     *Job
	field string
	raw   []byte
	done  chan error
}

// reportLoop writes the reports of the worker's handlers, as many as are
// waiting in one round trip (one progress.lua call per queue), until stop
// is closed: under load, reports share round trips instead of each taking
// one of its own.
func (w *Worker) reportLoop(stop <-chan struct{}) {
	for {
		var batch []*report
		select {
		case r := <-w.reports:
			batch = append(batch, r)
		case <-stop:
			return
		}
		for len(batch) < 1000 {
			select {
			case r := <-w.reports:
				batch = append(batch, r)
				continue
			default:
			}
			break
		}
		c, cancel := context.WithTimeout(context.Background(), w.opts.Lease/3)
		writeReports(c, w.rdb, w.opts.Prefix, batch)
		cancel()
	}
}

// writeReports writes reports in one round trip and tells each its
// outcome.
func writeReports(ctx context.Context, rdb redis.UniversalClient, prefix string, reports []*report) {
	byQueue := map[string][]*report{}
	var order []string
	for _, r := range reports {
		if _, ok := byQueue[r.j.Queue]; !ok {
			order = append(order, r.j.Queue)
		}
		byQueue[r.j.Queue] = append(byQueue[r.j.Queue], r)
	}
	calls := make([]*scriptCall, len(order))
	for i, name := range order {
		k := newKeys(prefix, name)
		rs := byQueue[name]
		args := make([]any, 0, 4*len(rs))
		for _, r := range rs {
			args = append(args, r.j.ID, r.j.token, r.field, r.raw)
		}
		calls[i] = &scriptCall{s: progressScript, keys: []string{k.active(), k.jobPrefix()}, args: args}
	}
	runScripts(ctx, rdb, calls)
	for i, name := range order {
		rs := byQueue[name]
		codes, err := calls[i].cmd.Int64Slice()
		if err == nil && len(codes) != len(rs) {
			err = fmt.Errorf("unexpected reply of %d codes for %d reports", len(codes), len(rs))
		}
		for n, r := range rs {
			switch {
			case err != nil:
				r.done <- err
			case codes[n] == 0:
				r.done <- ErrLeaseLost
			default:
				r.done <- nil
			}
		}
	}
}

func progressJSON(v any) ([]byte, error) {
	var raw []byte
	switch r := v.(type) {
	case json.RawMessage:
		raw = r
	default:
		b, err := marshalJSON(v)
		if err != nil {
			return nil, fmt.Errorf("%w: value does not encode to JSON: %v", ErrInvalid, err)
		}
		raw = b
	}
	if !json.Valid(raw) {
		return nil, fmt.Errorf("%w: value is not valid JSON", ErrInvalid)
	}
	if len(raw) > MaxProgressSize {
		return nil, fmt.Errorf("%w: value is %d bytes, over the %d-byte limit", ErrInvalid, len(raw), MaxProgressSize)
	}
	return raw, nil
}
