package cli_test

import (
	"encoding/json"
	"strings"
	"testing"
)

// uniqueOut is what job --json says of a job's unique key and
// --start-within.
type uniqueOut struct {
	Key         *string `json:"unique_key"`
	Until       *string `json:"unique_until"`
	ForMS       *int64  `json:"unique_for_ms"`
	StartWithin *int64  `json:"start_within_ms"`
	Holds       *bool   `json:"holds_unique_key"`
}

func (u uniqueOut) String() string {
	b, _ := json.Marshal(u)
	return string(b)
}

// unique returns the unique fields of job ID --json, failing the test
// unless holds_unique_key is a boolean.
func (e *testEnv) unique(t *testing.T, id string) uniqueOut {
	t.Helper()
	out := e.ok(t, "job", id, "--json")
	var u uniqueOut
	if err := json.Unmarshal([]byte(out), &u); err != nil {
		t.Fatalf("job %s --json printed %q: %v", id, out, err)
	}
	if u.Holds == nil {
		t.Fatalf("job %s --json printed %s, want a boolean holds_unique_key", id, out)
	}
	return u
}

func strp(s string) *string { return &s }
func intp(n int64) *int64   { return &n }
func boolp(b bool) *bool    { return &b }

// A job enqueued with --unique holds its key: another enqueue of the key
// prints nothing on stdout, names the holder on stderr in one line and
// exits 1; job shows the key, its until and for, and whether the job
// holds it, which ends when the key is released (at the end, or at the
// start with --unique-until started), but not before --unique-for passes.
func TestEnqueueUnique(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		held := e.enqueue(t, "--unique-key", "reindex:doc-42", "reindex", `{"doc":42}`)
		dupOf := func(t *testing.T, holder, status, key string, args ...string) {
			t.Helper()
			r := e.run(t, append([]string{"enqueue"}, args...)...)
			want := `rqgo enqueue: duplicate: job ` + holder + ` (` + status + `) holds unique key "` + key + `" of queue "default"` + "\n"
			if r.code != 1 || r.stdout != "" || r.stderr != want {
				t.Errorf("enqueue %q of a held key: exit %d, stdout %q, stderr %q; want 1, nothing on stdout, and stderr %q",
					args, r.code, r.stdout, r.stderr, want)
			}
		}
		dupOf(t, held, "queued", "reindex:doc-42", "--unique-key", "reindex:doc-42", "reindex", `{"doc":43}`)
		dupOf(t, held, "queued", "reindex:doc-42", "--unique", "--unique-key", "reindex:doc-42", "other")
		// Another queue is another scope.
		elsewhere := e.enqueue(t, "--queue", "other", "--unique-key", "reindex:doc-42", "reindex")

		// Without a key, FUNC and the canonical args are the key.
		derived := e.enqueue(t, "--unique", "step", `{"a":1,"b":[1,2]}`)
		u := e.unique(t, derived)
		if u.Key == nil || !strings.HasPrefix(*u.Key, "fn:step:") {
			t.Fatalf("job %s --json: %s, want a unique_key derived from the function step", derived, u)
		}
		dupOf(t, derived, "queued", *u.Key, "--unique", "step", `{ "b": [1, 2], "a": 1 }`)
		e.enqueue(t, "--unique", "step", `{"a":2,"b":[1,2]}`)
		e.enqueue(t, "--unique", "other", `{"a":1,"b":[1,2]}`)

		started := e.enqueue(t, "--unique-until", "started", "--start-within", "10m", "reindex", `{"doc":7}`)
		kept := e.enqueue(t, "--unique-key", "nightly", "--unique-for", "1h", "reindex")
		plain := e.enqueue(t, "--start-within", "90s", "reindex")
		for _, c := range []struct {
			id   string
			want uniqueOut
		}{
			{held, uniqueOut{Key: strp("reindex:doc-42"), Until: strp("ended"), Holds: boolp(true)}},
			{elsewhere, uniqueOut{Key: strp("reindex:doc-42"), Until: strp("ended"), Holds: boolp(true)}},
			{started, uniqueOut{Key: e.unique(t, started).Key, Until: strp("started"), StartWithin: intp(600_000), Holds: boolp(true)}},
			{kept, uniqueOut{Key: strp("nightly"), Until: strp("ended"), ForMS: intp(3_600_000), Holds: boolp(true)}},
			{plain, uniqueOut{StartWithin: intp(90_000), Holds: boolp(false)}},
		} {
			if got := e.unique(t, c.id); got.String() != c.want.String() {
				t.Errorf("job %s --json: %s, want %s", c.id, got, c.want)
			}
		}
		if u := e.unique(t, started); u.Key == nil || !strings.HasPrefix(*u.Key, "fn:reindex:") {
			t.Errorf("job %s --json: %s, want a unique_key derived from the function reindex", started, u)
		}
		text := e.ok(t, "job", started)
		for _, re := range []string{`unique_key:\s+fn:reindex:`, `unique_until:\s+started`,
			`holds_unique_key:\s+true`, `start_within:\s+10m0s \(by \d{4}-\d\d-\d\dT`} {
			if !regexpMatch(re, text) {
				t.Errorf("job %s printed\n%s\nwant it to match %s", started, text, re)
			}
		}
		if text := e.ok(t, "job", kept); !regexpMatch(`unique_key:\s+nightly\n`, text) || !regexpMatch(`unique_for:\s+1h0m0s\n`, text) {
			t.Errorf("job %s printed\n%s\nwant unique_key: nightly and unique_for: 1h0m0s", kept, text)
		}
		if strings.Contains(text, "unique_for") {
			t.Errorf("job %s printed\n%s\nwant no unique_for row for a key without --unique-for", started, text)
		}
		if text := e.ok(t, "job", plain); strings.Contains(text, "unique") || !regexpMatch(`start_within:\s+1m30s`, text) {
			t.Errorf("job %s printed\n%s\nwant start_within and no unique rows", plain, text)
		}

		// Once the jobs have run, the keys without --unique-for are free;
		// the one with it is still held by its finished job.
		e.ok(t, "worker", "--burst", "--exec", "reindex=echo done", "--exec", "step=echo done", "--exec", "other=echo done")
		for id, holds := range map[string]bool{held: false, started: false, kept: true} {
			if u := e.unique(t, id); *u.Holds != holds {
				t.Errorf("job %s --json after it finished: %s, want holds_unique_key %v", id, u, holds)
			}
		}
		if text := e.ok(t, "job", held); !regexpMatch(`holds_unique_key:\s+false`, text) {
			t.Errorf("job %s printed\n%s\nwant holds_unique_key: false once it finished", held, text)
		}
		dupOf(t, kept, "finished", "nightly", "--unique-key", "nightly", "reindex")
		again := e.enqueue(t, "--unique-key", "reindex:doc-42", "reindex", `{"doc":44}`)
		if u := e.unique(t, again); !*u.Holds || again == held {
			t.Errorf("job %s, enqueued once the key was free: %s, want a new job holding the key", again, u)
		}
		if u := e.unique(t, held); *u.Holds {
			t.Errorf("job %s --json once job %s took its key: %s, want holds_unique_key false", held, again, u)
		}
	})
}

// --debounce makes the first job scheduled and prints its id for each
// enqueue of its key while it waits, with exit status 0, giving it the
// newest args; alone it implies --unique with the derived key.
func TestEnqueueDebounce(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		first := e.enqueue(t, "--debounce", "1h,2h", "--unique-key", "index:shop-7", "index", `{"v":1}`)
		if s := e.job(t, first)["status"]; s != "scheduled" {
			t.Errorf("debounced job %s is %v, want scheduled", first, s)
		}
		for _, v := range []string{`{"v":2}`, `{"v":3}`} {
			if id := e.enqueue(t, "--debounce", "1h,2h", "--unique-key", "index:shop-7", "index", v); id != first {
				t.Errorf("debounced enqueue of %s printed %s, want the waiting job %s", v, id, first)
			}
		}
		m := e.job(t, first)
		if b, _ := json.Marshal(m["args"]); string(b) != `{"v":3}` {
			t.Errorf("debounced job's args = %s, want the newest, {\"v\":3}", b)
		}
		if m["unique_key"] != "index:shop-7" || m["holds_unique_key"] != true {
			t.Errorf("debounced job: unique_key %v, holds_unique_key %v; want index:shop-7, true", m["unique_key"], m["holds_unique_key"])
		}
		if in := e.info(t); in.Queues["default"]["scheduled"] != 1 {
			t.Errorf("info after three debounced enqueues: %v, want 1 scheduled", in.Queues["default"])
		}

		a := e.enqueue(t, "--debounce", "1h", "notify", `"x"`)
		if b := e.enqueue(t, "--debounce", "1h", "notify", `"x"`); b != a {
			t.Errorf("two enqueues --debounce of the same args printed %s and %s, want one job", a, b)
		}
		if k, _ := e.job(t, a)["unique_key"].(string); !strings.HasPrefix(k, "fn:notify:") {
			t.Errorf("job enqueued with --debounce alone: unique_key %q, want one derived from notify and its args", k)
		}
		if c := e.enqueue(t, "--debounce", "1h", "notify", `"y"`); c == a {
			t.Errorf("--debounce alone with other args joined job %s, want a job of its own", a)
		}
	})
}

// Bad values of the unique, debounce and start-within flags are usage
// errors naming the problem, and nothing is enqueued.
func TestEnqueueUniqueBadFlags(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		parent := e.enqueue(t, "--queue", "parent", "f")
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{"--unique-for", "-1s"}, "--unique-for -1s is negative"},
			{[]string{"--unique", "--unique-for", "-5m"}, "--unique-for -5m0s is negative"},
			{[]string{"--debounce", "-1s"}, `invalid value "-1s" for flag -debounce: delay -1s is not positive`},
			{[]string{"--debounce", "0s"}, "delay 0s is not positive"},
			{[]string{"--debounce", "10s,5s"}, "MAXWAIT 5s is shorter than the delay 10s"},
			{[]string{"--debounce", "10s,-1s"}, "MAXWAIT -1s is shorter than the delay 10s"},
			{[]string{"--debounce", "soon"}, `invalid value "soon" for flag -debounce: want a duration`},
			{[]string{"--debounce", "1s,later"}, `MAXWAIT "later"`},
			{[]string{"--start-within", "0s"}, "--start-within 0s is not positive"},
			{[]string{"--start-within", "-1m"}, "--start-within -1m0s is not positive"},
			{[]string{"--unique-key", "a b"}, `--unique-key "a b" has whitespace`},
			{[]string{"--unique-key", "a\tb"}, `--unique-key "a\tb" has whitespace`},
			{[]string{"--unique-key", ""}, "--unique-key is empty"},
			{[]string{"--unique-key", strings.Repeat("k", 201)}, "longer than 200 bytes"},
			{[]string{"--unique-until", "forever"}, `invalid value "forever" for flag -unique-until: want started or ended`},
			{[]string{"--debounce", "1s", "--depends-on", parent}, "--debounce and --depends-on exclude each other"},
			{[]string{"--unique=false", "--unique-key", "k"}, "--unique=false contradicts --unique-key"},
			{[]string{"--unique=false", "--debounce", "1s"}, "--unique=false contradicts --debounce"},
		} {
			args := append(append([]string{"enqueue", "--queue", "q"}, c.args...), "f", "1")
			r := e.run(t, args...)
			if r.code != 2 || r.stdout != "" || !strings.HasPrefix(r.stderr, "rqgo enqueue: ") ||
				!strings.Contains(strings.SplitN(r.stderr, "\n", 2)[0], c.want) {
				t.Errorf("rqgo %q: exit %d, stdout %q, stderr %q; want exit 2, nothing on stdout, and a first line with %q",
					args, r.code, r.stdout, r.stderr, c.want)
			}
		}
		in := e.info(t)
		if _, ok := in.Queues["q"]; ok || len(in.Queues) != 1 {
			t.Errorf("queues after refused enqueues = %v, want only parent", in.Queues)
		}
	})
}

// requeue leaves a job whose unique key another job holds, says so with
// the holder and exits 1, with --all and with ids, after requeueing the
// others; once the key is free, the job is requeued and holds it again.
func TestRequeueUniqueHeld(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		e.enqueue(t, "--id", "first", "--retry", "0", "--unique-key", "k", "bad")
		e.enqueue(t, "--id", "plain", "--retry", "0", "bad")
		e.ok(t, "worker", "--burst", "--exec", "bad=exit 1")
		if s := e.job(t, "first")["status"]; s != "failed" {
			t.Fatalf("job first is %v, want failed", s)
		}
		e.enqueue(t, "--id", "second", "--unique-key", "k", "bad")

		heldMsg := `not requeued in "default", their unique keys are held: first (held by second)`
		r := e.run(t, "requeue", "--queue", "default", "--all")
		if r.code != 1 || r.stdout != "requeued 1 job\n" || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, heldMsg) {
			t.Errorf("requeue --all with a key held: exit %d, stdout %q, stderr %q; want 1, \"requeued 1 job\" and one line with %q",
				r.code, r.stdout, r.stderr, heldMsg)
		}
		r = e.run(t, "requeue", "--queue", "default", "first")
		if r.code != 1 || r.stdout != "requeued 0 jobs\n" || strings.Count(r.stderr, "\n") != 1 ||
			!strings.Contains(r.stderr, heldMsg) || strings.Contains(r.stderr, "not failed or canceled") {
			t.Errorf("requeue of a job whose key is held: exit %d, stdout %q, stderr %q; want 1, \"requeued 0 jobs\" and one line with only %q",
				r.code, r.stdout, r.stderr, heldMsg)
		}
		r = e.run(t, "requeue", "--queue", "default", "first", "plain", "nope")
		notMsg := "2 of the 3 jobs were not failed or canceled in queue default"
		if r.code != 1 || r.stdout != "requeued 0 jobs\n" || strings.Count(r.stderr, "\n") != 1 ||
			!strings.Contains(r.stderr, heldMsg) || !strings.Contains(r.stderr, notMsg) {
			t.Errorf("requeue of a held job and two that are not failed: exit %d, stdout %q, stderr %q; want 1, \"requeued 0 jobs\", %q and %q",
				r.code, r.stdout, r.stderr, heldMsg, notMsg)
		}
		if m := e.job(t, "first"); m["status"] != "failed" || m["holds_unique_key"] != false {
			t.Errorf("job first after the refused requeues: status %v, holds_unique_key %v; want failed, false", m["status"], m["holds_unique_key"])
		}

		e.ok(t, "cancel", "second")
		if out := e.ok(t, "requeue", "--queue", "default", "first"); out != "requeued 1 job\n" {
			t.Errorf("requeue once the key is free printed %q, want \"requeued 1 job\"", out)
		}
		if m := e.job(t, "first"); m["status"] != "queued" || m["holds_unique_key"] != true {
			t.Errorf("job first requeued: status %v, holds_unique_key %v; want queued, true", m["status"], m["holds_unique_key"])
		}
	})
}

// job --help lists every field of job --json.
func TestJobHelpListsFields(t *testing.T) {
	t.Parallel()
	r := runEnv(t, nil, "job", "--help")
	help := strings.Join(strings.Fields(r.stdout), " ")
	for _, f := range jobFields {
		if !strings.Contains(help, " "+f+",") && !strings.Contains(help, " "+f+" and") && !strings.Contains(help, "and "+f+";") {
			t.Errorf("job --help does not list the field %s:\n%s", f, r.stdout)
		}
	}
}
