package rqgo

import (
	"context"
	"encoding/json"
	"fmt"
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
// Each call is one round trip and one short script: a few calls a second
// per job are cheap (see the README's figures); report at most as often as
// someone would look.
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
	if !j.leased || j.from == nil || j.token == "" {
		return fmt.Errorf("rqgo: set %s of %s: %w: not a running attempt (only the Job a handler was given can report)", what, j.ID, ErrInvalid)
	}
	raw, err := progressJSON(v)
	if err != nil {
		return fmt.Errorf("rqgo: set %s of %s: %w", what, j.ID, err)
	}
	k := newKeys(j.pfx, j.Queue)
	n, err := progressScript.Run(ctx, j.from, []string{k.job(j.ID), k.active()}, j.ID, j.token, field, raw).Int()
	if err != nil {
		return fmt.Errorf("rqgo: set %s of %s: %w", what, j.ID, err)
	}
	if n == 0 {
		return fmt.Errorf("rqgo: set %s of %s: %w", what, j.ID, ErrLeaseLost)
	}
	return nil
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
