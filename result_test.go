package rqgo

import (
	"context"
	"encoding/json"
	"testing"
)

// A handler's result is stored as written: "<", ">" and "&" stay as they
// are, not \u003c, \u003e and \u0026. Args given as JSON are stored exactly
// as given.
func TestResultStoredAsWritten(t *testing.T) {
	cases := []struct {
		name   string
		result any
		want   string // the job hash's result field
	}{
		{"string", "<b>&</b>", `"<b>&</b>"`},
		{"url_in_a_map", map[string]string{"thumb": "https://x/?img=dog.jpg&w=64"}, `{"thumb":"https://x/?img=dog.jpg&w=64"}`},
		{"struct", struct {
			HTML string `json:"html"`
		}{"<p>a > b</p>"}, `{"html":"<p>a > b</p>"}`},
		{"raw_message", json.RawMessage(`{"a": "<i>&"}`), `{"a":"<i>&"}`},
		{"nil", nil, `null`},
	}
	const args = `{"q": "<b> & <i>"}`
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		ctx := t.Context()
		q := e.queue("default")
		ids := map[string]string{} // job id → case name
		for _, c := range cases {
			j, err := q.EnqueueContext(ctx, c.name, json.RawMessage(args))
			if err != nil {
				t.Fatal(err)
			}
			ids[j.ID] = c.name
		}
		w := e.worker(t, WorkerOptions{})
		for _, c := range cases {
			w.Register(c.name, HandlerFunc(func(context.Context, *Job) (any, error) { return c.result, nil }))
		}
		runBurst(t, w)
		for id, name := range ids {
			var want string
			for _, c := range cases {
				if c.name == name {
					want = c.want
				}
			}
			h, err := e.rdb.HMGet(ctx, q.k.job(id), fResult, fArgs, fStatus).Result()
			if err != nil {
				t.Fatal(err)
			}
			if h[2] != string(StatusFinished) {
				t.Errorf("%s: job status %v, want finished", name, h[2])
			}
			if h[0] != want {
				t.Errorf("%s: HGET result = %v, want %s", name, h[0], want)
			}
			if h[1] != args {
				t.Errorf("%s: HGET args = %v, want %s", name, h[1], args)
			}
		}
	})
}

// Args given as Go values are stored as encoded, without HTML escapes.
func TestGoArgsStoredAsWritten(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		q := e.queue("default")
		j, err := q.EnqueueContext(t.Context(), "f", map[string]string{"url": "/?a=1&b=<2>"})
		if err != nil {
			t.Fatal(err)
		}
		want := `{"url":"/?a=1&b=<2>"}`
		if got := e.rdb.HGet(t.Context(), q.k.job(j.ID), fArgs).Val(); got != want {
			t.Errorf("stored args = %s, want %s", got, want)
		}
	})
}
