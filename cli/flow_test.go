package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo"
	"github.com/rqgo/rqgo/cli"
)

// limits returns "rqgo limits QUEUE --json", decoded, failing the test
// unless paused and parked are there.
func (e *testEnv) limits(t *testing.T, queue string) flowJSON {
	t.Helper()
	out := e.ok(t, "limits", queue, "--json")
	var f flowJSON
	if err := json.Unmarshal([]byte(out), &f); err != nil {
		t.Fatalf("limits %s --json printed %q: %v", queue, out, err)
	}
	if f.Paused == nil || f.Parked == nil || f.Limits == nil {
		t.Fatalf("limits %s --json printed %s, want paused, parked and limits", queue, out)
	}
	return f
}

// libLimits reads the queue's limits with the library.
func (e *testEnv) libLimits(t *testing.T, queue string) rqgo.Limits {
	t.Helper()
	l, err := rqgo.NewQueue(queue, e.rdb, rqgo.WithPrefix(e.prefix)).Limits(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// limitsString formats the limits of limits --json as name=value pairs,
// null ones included, for comparisons.
func limitsString(m map[string]*int64) string {
	var b strings.Builder
	for _, k := range []string{"concurrency", "rate", "per_ms", "key_concurrency", "key_rate", "key_per_ms"} {
		v, ok := m[k]
		switch {
		case !ok:
			fmt.Fprintf(&b, "%s=missing ", k)
		case v == nil:
			fmt.Fprintf(&b, "%s=null ", k)
		default:
			fmt.Fprintf(&b, "%s=%d ", k, *v)
		}
	}
	if len(m) != 6 {
		fmt.Fprintf(&b, "(%d fields)", len(m))
	}
	return strings.TrimSpace(b.String())
}

// pause and resume print one line each and change what info, limits and
// workers see: a burst worker leaves a paused queue's jobs alone. A queue
// no job or worker has used is paused with a warning.
func TestPauseAndResume(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		id := e.enqueue(t, "--queue", "mail", "send")
		for range 2 { // pausing a paused queue is fine
			if r := e.run(t, "pause", "mail"); r.code != 0 || r.stdout != "paused mail\n" || r.stderr != "" {
				t.Fatalf("pause mail: exit %d, stdout %q, stderr %q; want 0, \"paused mail\" and nothing", r.code, r.stdout, r.stderr)
			}
		}
		if f := e.info(t).Flow["mail"]; f.Paused == nil || !*f.Paused {
			t.Errorf("info --json after pause: %+v, want paused true", f)
		}
		if f := e.limits(t, "mail"); !*f.Paused {
			t.Errorf("limits --json after pause: paused false, want true")
		}
		if text := e.ok(t, "info"); !strings.Contains(text, "PAUSED") || !regexpRow(text, "mail", "yes") {
			t.Errorf("info after pause printed\n%s\nwant mail's PAUSED column yes", text)
		}
		// A burst worker counts a paused queue as empty.
		e.ok(t, "worker", "--burst", "--queues", "mail", "--exec", "send=true")
		if s := e.job(t, id)["status"]; s != "queued" {
			t.Errorf("job of a paused queue after a burst worker: %v, want queued", s)
		}

		if r := e.run(t, "resume", "mail"); r.code != 0 || r.stdout != "resumed mail\n" || r.stderr != "" {
			t.Fatalf("resume mail: exit %d, stdout %q, stderr %q; want 0, \"resumed mail\" and nothing", r.code, r.stdout, r.stderr)
		}
		if f := e.info(t).Flow["mail"]; *f.Paused {
			t.Errorf("info --json after resume: paused true, want false")
		}
		if text := e.ok(t, "info"); !regexpRow(text, "mail", "no") {
			t.Errorf("info after resume printed\n%s\nwant mail's PAUSED column no", text)
		}
		e.ok(t, "worker", "--burst", "--queues", "mail", "--exec", "send=true")
		if s := e.job(t, id)["status"]; s != "finished" {
			t.Errorf("job after resume and a burst worker: %v, want finished", s)
		}
		if r := e.run(t, "resume", "mail"); r.code != 0 || r.stdout != "resumed mail\n" {
			t.Errorf("resume of a queue not paused: exit %d, stdout %q; want 0 and \"resumed mail\"", r.code, r.stdout)
		}

		// A new queue starts paused, with a warning naming it.
		r := e.run(t, "pause", "mial")
		want := "rqgo pause: warning: queue mial was not known: no job or worker had used it (check the name); it is paused now\n"
		if r.code != 0 || r.stdout != "paused mial\n" || r.stderr != want {
			t.Errorf("pause of a new queue: exit %d, stdout %q, stderr %q; want 0, \"paused mial\" and %q", r.code, r.stdout, r.stderr, want)
		}
		later := e.enqueue(t, "--queue", "mial", "send")
		e.ok(t, "worker", "--burst", "--queues", "mial", "--exec", "send=true")
		if s := e.job(t, later)["status"]; s != "queued" {
			t.Errorf("job enqueued to a queue paused before its first job: %v after a burst worker, want queued", s)
		}
		if r := e.run(t, "resume", "mial"); r.code != 0 || r.stderr != "" {
			t.Errorf("resume of the queue, known now: exit %d, stderr %q; want 0 and no warning", r.code, r.stderr)
		}
	})
}

// regexpRow says whether text has a line whose first field is first and
// which holds field as a field of its own.
func regexpRow(text, first, field string) bool {
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == first {
			for _, v := range f[1:] {
				if v == field {
					return true
				}
			}
		}
	}
	return false
}

// limits shows a queue's limits and changes only those given; 0 removes
// one, --clear all; info shows them too, and the library reads what the
// command wrote.
func TestLimits(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		e.enqueue(t, "--queue", "mail", "send")
		if out := e.ok(t, "limits", "mail"); out != "queue:   mail\npaused:  false\nlimits:  none\nparked:  0\n" {
			t.Errorf("limits of a queue without any printed\n%s", out)
		}
		f := e.limits(t, "mail")
		if want := "concurrency=null rate=null per_ms=null key_concurrency=null key_rate=null key_per_ms=null"; f.Queue != "mail" ||
			*f.Paused || *f.Parked != 0 || limitsString(f.Limits) != want {
			t.Errorf("limits --json of a queue without any: %+v %s, want queue mail, not paused, 0 parked, %s", f, limitsString(f.Limits), want)
		}

		out := e.ok(t, "limits", "mail", "--concurrency", "5", "--rate", "100/s")
		want := "queue:        mail\npaused:       false\nconcurrency:  5\nrate:         100/1s\nparked:       0\n"
		if out != want {
			t.Errorf("limits --concurrency 5 --rate 100/s printed\n%s\nwant\n%s", out, want)
		}
		if l := e.libLimits(t, "mail"); l != (rqgo.Limits{Concurrency: 5, Rate: 100, Per: time.Second}) {
			t.Errorf("Limits after limits --concurrency 5 --rate 100/s = %+v", l)
		}
		// Only the limits given change.
		out = e.ok(t, "limits", "mail", "--key-concurrency", "2", "--key-rate", "3/1m")
		want = "queue:            mail\npaused:           false\nconcurrency:      5\nrate:             100/1s\nkey-concurrency:  2\nkey-rate:         3/1m0s\nparked:           0\n"
		if out != want {
			t.Errorf("limits --key-concurrency 2 --key-rate 3/1m printed\n%s\nwant\n%s", out, want)
		}
		all := rqgo.Limits{Concurrency: 5, Rate: 100, Per: time.Second, KeyConcurrency: 2, KeyRate: 3, KeyPer: time.Minute}
		if l := e.libLimits(t, "mail"); l != all {
			t.Errorf("Limits after two changes = %+v, want %+v", l, all)
		}
		if out := e.ok(t, "limits", "mail"); out != want {
			t.Errorf("limits without flags printed\n%s\nwant\n%s", out, want)
		}
		wantJSON := "concurrency=5 rate=100 per_ms=1000 key_concurrency=2 key_rate=3 key_per_ms=60000"
		if f := e.limits(t, "mail"); limitsString(f.Limits) != wantJSON {
			t.Errorf("limits --json: %s, want %s", limitsString(f.Limits), wantJSON)
		}
		in := e.info(t)
		if got := limitsString(in.Flow["mail"].Limits); got != wantJSON || *in.Flow["mail"].Paused {
			t.Errorf("info --json limits of mail: %s, paused %v; want %s, not paused", got, *in.Flow["mail"].Paused, wantJSON)
		}
		if c := in.Queues["mail"]; c["queued"] != 1 || c["parked"] != 0 {
			t.Errorf("info --json counts of mail: %v, want 1 queued and 0 parked", c)
		}
		if text := e.ok(t, "info"); !strings.Contains(text, "  no      "+all.String()+"\n") {
			t.Errorf("info printed\n%s\nwant mail's limits %q, last on its row", text, all.String())
		}

		// 0 removes a limit; --json after a change prints the result.
		out = e.ok(t, "limits", "mail", "--rate", "0", "--concurrency", "0", "--json")
		var f2 flowJSON
		if err := json.Unmarshal([]byte(out), &f2); err != nil {
			t.Fatalf("limits --rate 0 --concurrency 0 --json printed %q: %v", out, err)
		}
		if got, want := limitsString(f2.Limits), "concurrency=null rate=null per_ms=null key_concurrency=2 key_rate=3 key_per_ms=60000"; got != want {
			t.Errorf("limits after --rate 0 --concurrency 0: %s, want %s", got, want)
		}
		e.ok(t, "limits", "mail", "--key-rate", "0/1s")
		if l := e.libLimits(t, "mail"); l != (rqgo.Limits{KeyConcurrency: 2}) {
			t.Errorf("Limits after --key-rate 0/1s = %+v, want only KeyConcurrency 2", l)
		}
		// Limits the library set show as it reads them.
		if err := rqgo.NewQueue("mail", e.rdb, rqgo.WithPrefix(e.prefix)).SetLimits(t.Context(),
			rqgo.Limits{Rate: 10, Per: 1500 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		if out := e.ok(t, "limits", "mail"); !strings.Contains(out, "rate:    10/1.5s\n") || strings.Contains(out, "key-") {
			t.Errorf("limits after SetLimits(Rate 10, Per 1.5s) printed\n%s", out)
		}

		if out := e.ok(t, "limits", "mail", "--clear"); out != "queue:   mail\npaused:  false\nlimits:  none\nparked:  0\n" {
			t.Errorf("limits --clear printed\n%s", out)
		}
		if l := e.libLimits(t, "mail"); !l.IsZero() {
			t.Errorf("Limits after --clear = %+v, want none", l)
		}
		// --clear leaves the pause alone.
		e.ok(t, "pause", "mail")
		if out := e.ok(t, "limits", "mail", "--clear"); !strings.Contains(out, "paused:  true\n") {
			t.Errorf("limits --clear of a paused queue printed\n%s\nwant it still paused", out)
		}

		// A queue no job or worker has used: a warning, exit 0.
		r := e.run(t, "limits", "nosuch")
		if want := "rqgo limits: warning: queue nosuch is not known: no job or worker has used it (check the name)\n"; r.code != 0 || r.stderr != want ||
			!strings.Contains(r.stdout, "limits:  none") {
			t.Errorf("limits of an unknown queue: exit %d, stdout %q, stderr %q; want 0, no limits, and %q", r.code, r.stdout, r.stderr, want)
		}
		r = e.run(t, "limits", "typo", "--concurrency", "3")
		if r.code != 0 || !strings.Contains(r.stderr, "queue typo was not known") || !strings.Contains(r.stdout, "concurrency:  3") {
			t.Errorf("limits of a new queue set: exit %d, stdout %q, stderr %q; want 0, the limit, and a warning", r.code, r.stdout, r.stderr)
		}
		if l := e.libLimits(t, "typo"); l != (rqgo.Limits{Concurrency: 3}) {
			t.Errorf("Limits of the new queue = %+v, want Concurrency 3", l)
		}
	})
}

// enqueue --limit-key gives a job its key; over its key's limit it is
// parked, and info, limits and job say so until it runs.
func TestLimitKeyParked(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		e.ok(t, "limits", "mail", "--key-concurrency", "1")
		first := e.enqueue(t, "--queue", "mail", "--limit-key", "tenant-1", "send")
		second := e.enqueue(t, "--queue", "mail", "--limit-key", "tenant-1", "send")
		other := e.enqueue(t, "--queue", "mail", "--limit-key", "tenant-2", "send")
		plain := e.enqueue(t, "--queue", "mail", "send")
		if m := e.job(t, second); m["limit_key"] != "tenant-1" || m["parked"] != false {
			t.Errorf("job --json of a job not fetched yet: limit_key %v, parked %v; want tenant-1, false", m["limit_key"], m["parked"])
		}
		if m := e.job(t, plain); m["limit_key"] != nil || m["parked"] != false {
			t.Errorf("job --json of a job without a limit key: limit_key %v, parked %v; want null, false", m["limit_key"], m["parked"])
		}

		gate := filepath.Join(t.TempDir(), "open")
		w := e.start(t, "worker", "--burst", "--queues", "mail", "--concurrency", "4",
			"--exec", "send=while [ ! -e "+gate+" ]; do sleep 0.02; done")
		waitFor(t, "two jobs of tenant-1 and one of tenant-2 to start, with one parked", 10*time.Second, func() bool {
			c := e.info(t).Queues["mail"]
			return c["started"] == 3 && c["parked"] == 1
		})
		if c := e.info(t).Queues["mail"]; c["queued"] != 0 {
			t.Errorf("info with a job parked: %v, want it counted as parked, not queued", c)
		}
		if f := e.limits(t, "mail"); *f.Parked != 1 {
			t.Errorf("limits --json with a job parked: parked %d, want 1", *f.Parked)
		}
		if text := e.ok(t, "info"); !regexpRow(text, "mail", "1") || !strings.Contains(text, "key-concurrency=1") {
			t.Errorf("info with a job parked printed\n%s\nwant mail with 1 parked and its limits", text)
		}
		for id, want := range map[string]any{first: false, other: false, second: true} {
			m := e.job(t, id)
			wantStatus := "started"
			if want == true {
				wantStatus = "queued"
			}
			if m["parked"] != want || m["status"] != wantStatus {
				t.Errorf("job %s --json while tenant-1's first job runs: status %v, parked %v; want %s, %v", id, m["status"], m["parked"], wantStatus, want)
			}
		}
		text := e.ok(t, "job", second)
		if !regexpRow(text, "limit_key:", "tenant-1") || !strings.Contains(text, "parked:") || !strings.Contains(text, "true (since 20") {
			t.Errorf("job %s of a parked job printed\n%s\nwant its limit key and since when it is parked", second, text)
		}
		if text := e.ok(t, "job", plain); strings.Contains(text, "limit_key") || strings.Contains(text, "parked") {
			t.Errorf("job %s without a limit key printed\n%s\nwant no limit_key or parked rows", plain, text)
		}

		if err := os.WriteFile(gate, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if r := w.wait(t); r.code != 0 {
			t.Fatalf("worker --burst: exit %d; stderr:\n%s", r.code, r.stderr)
		}
		for _, id := range []string{first, second, other, plain} {
			if m := e.job(t, id); m["status"] != "finished" || m["parked"] != false {
				t.Errorf("job %s after the worker: status %v, parked %v; want finished, false", id, m["status"], m["parked"])
			}
		}
		if text := e.ok(t, "job", second); !strings.Contains(text, "parked:") || !regexpRow(text, "parked:", "false") {
			t.Errorf("job %s once it ran printed\n%s\nwant parked false", second, text)
		}
	})
}

// FuzzRateFlag feeds `rqgo limits q --rate ARG` arbitrary text: it is a
// usage error (exit 2) that writes nothing, or it sets a rate the library
// accepts, which the command prints in a form that sets the same rate
// again; the command never panics.
func FuzzRateFlag(f *testing.F) {
	for _, s := range []string{"100/1s", "100/s", "0", "0/1s", "10", "-1/1s", "10/0s", "10/500us", "10/1500us",
		"3/1m", "1/1h30m", "9223372036854775807/1ms", "10/", "/1s", "", "1/1s/1s", "5/ms", "5/µs", "1e3/1s", " 1/1s"} {
		f.Add(s)
	}
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		f.Fatal(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	q := rqgo.NewQueue("q", rdb)
	run := func(args ...string) (string, string, int) {
		var stdout, stderr bytes.Buffer
		code := cli.Main(append([]string{"--url", "redis://" + mr.Addr(), "limits", "q"}, args...),
			cli.Stdio(strings.NewReader(""), &stdout, &stderr), cli.Context(context.Background()))
		return stdout.String(), stderr.String(), code
	}

	f.Fuzz(func(t *testing.T, arg string) {
		mr.FlushAll() // the fuzzer's own miniredis
		out, errOut, code := run("--rate", arg)
		switch code {
		case 2:
			if n := len(mr.Keys()); n != 0 {
				t.Fatalf("limits --rate %q: exit 2, left %d keys, want none", arg, n)
			}
			return
		case 0:
		default:
			t.Fatalf("limits --rate %q: exit %d, want 0 or 2: %s", arg, code, errOut)
		}
		l, err := q.Limits(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if (l.Rate == 0) != (l.Per == 0) || l.Rate < 0 || (l.Per != 0 && (l.Per < time.Millisecond || l.Per%time.Millisecond != 0)) {
			t.Fatalf("limits --rate %q: exit 0 and Limits %+v, want a rate with a whole number of ms, or none", arg, l)
		}
		if l.Rate == 0 {
			return
		}
		printed := ""
		for _, line := range strings.Split(out, "\n") {
			if v, ok := strings.CutPrefix(line, "rate:"); ok {
				printed = strings.TrimSpace(v)
			}
		}
		mr.FlushAll()
		if _, errOut, code := run("--rate", printed); code != 0 {
			t.Fatalf("limits --rate %q printed rate %q, which exits %d: %s", arg, printed, code, errOut)
		}
		if again, err := q.Limits(context.Background()); err != nil || again != l {
			t.Fatalf("limits --rate %q set %+v; its printed form %q sets %+v, %v", arg, l, printed, again, err)
		}
	})
}
