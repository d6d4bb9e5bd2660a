package cli_test

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// forEachBackend runs fn against miniredis, then against the real Redis
// (skipped when none answers, unless RQGO_REQUIRE_REDIS=1).
func forEachBackend(t *testing.T, fn func(t *testing.T, e *testEnv)) {
	t.Helper()
	t.Run("miniredis", func(t *testing.T) {
		t.Parallel()
		mr := miniredis.RunT(t)
		mr.ClockTTL(true) // keys expire with the wall clock, as in Redis
		rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
		t.Cleanup(func() { rdb.Close() })
		fn(t, &testEnv{url: "redis://" + mr.Addr(), prefix: "rqgoclitest", rdb: rdb})
	})
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		fn(t, newEnv(t))
	})
}

// started is a command running in the background.
type started struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	done           chan struct{} // closed once it has exited
}

// start starts the rqgo binary with args against e's Redis and prefix. It
// gets SIGTERM (and SIGKILL 10 seconds later) when the test ends, if it
// still runs then.
func (e *testEnv) start(t *testing.T, args ...string) *started {
	t.Helper()
	s := &started{cmd: exec.Command(rqgoBin, args...), done: make(chan struct{})}
	s.cmd.Env = append(cleanEnv(), "REDIS_URL="+e.url, "RQGO_PREFIX="+e.prefix)
	s.cmd.Stdout, s.cmd.Stderr = &s.stdout, &s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			s.cmd.Process.Kill()
			<-s.done
		}
	})
	return s
}

// wait waits, at most 20 seconds, for the command to exit, and returns
// what it printed and its exit code.
func (s *started) wait(t *testing.T) result {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
		t.Fatalf("rqgo %q still running after 20s; stderr:\n%s", s.cmd.Args[1:], s.stderr.String())
	}
	return result{stdout: s.stdout.String(), stderr: s.stderr.String(), code: s.cmd.ProcessState.ExitCode()}
}

// ref is one entry of the parents or dependents of job --json.
type ref struct {
	Queue  string  `json:"queue"`
	ID     string  `json:"id"`
	Status *string `json:"status"`
}

// links returns the parents and dependents of job ID --json, and its
// allow_failure.
func (e *testEnv) links(t *testing.T, id string, args ...string) (parents, dependents []ref, allowFailure bool) {
	t.Helper()
	out := e.ok(t, append([]string{"job", id, "--json"}, args...)...)
	var j struct {
		Parents      []ref `json:"parents"`
		Dependents   []ref `json:"dependents"`
		AllowFailure *bool `json:"allow_failure"`
	}
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		t.Fatalf("job %s --json printed %q: %v", id, out, err)
	}
	if j.Parents == nil || j.Dependents == nil || j.AllowFailure == nil {
		t.Fatalf("job %s --json printed %s, want arrays parents and dependents and a boolean allow_failure", id, out)
	}
	return j.Parents, j.Dependents, *j.AllowFailure
}

// refs formats refs as "queue:id=status" (status "null" for a job that no
// longer exists), for comparisons.
func refs(rs []ref) string {
	var parts []string
	for _, r := range rs {
		st := "null"
		if r.Status != nil {
			st = *r.Status
		}
		parts = append(parts, r.Queue+":"+r.ID+"="+st)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// infoRow returns the fields of queue's row of the text of rqgo info,
// keyed by the header's column names.
func infoRow(t *testing.T, text, queue string) map[string]string {
	t.Helper()
	lines := strings.Split(text, "\n")
	head := strings.Fields(lines[0])
	for _, l := range lines[1:] {
		if f := strings.Fields(l); len(f) == len(head) && f[0] == queue {
			row := map[string]string{}
			for i, h := range head {
				row[h] = f[i]
			}
			return row
		}
	}
	t.Fatalf("info printed\n%s\nwant a row for queue %s", text, queue)
	return nil
}

// A chain across queues: --depends-on makes jobs deferred, job shows their
// parents and dependents with statuses, info counts them, and once a worker
// runs the parents the chain runs to its end.
func TestEnqueueDependsOnChain(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		a := e.enqueue(t, "--queue", "fetch", "fetch", `"https://example.com/"`)
		b := e.enqueue(t, "--queue", "parse", "--depends-on", a, "parse")
		c := e.enqueue(t, "--depends-on", b, "--depends-on", "fetch:"+a, "report")

		for _, id := range []string{b, c} {
			if s := e.job(t, id)["status"]; s != "deferred" {
				t.Errorf("job %s with --depends-on is %v, want deferred", id, s)
			}
		}
		parents, deps, allow := e.links(t, b)
		if got, want := refs(parents), "[fetch:"+a+"=queued]"; got != want {
			t.Errorf("job %s --json parents = %s, want %s", b, got, want)
		}
		if got, want := refs(deps), "[default:"+c+"=deferred]"; got != want {
			t.Errorf("job %s --json dependents = %s, want %s", b, got, want)
		}
		if allow {
			t.Errorf("job %s --json allow_failure = true, want false", b)
		}
		_, deps, _ = e.links(t, a)
		if got, want := refs(deps), "[default:"+c+"=deferred parse:"+b+"=deferred]"; got != want {
			t.Errorf("job %s --json dependents = %s, want %s (sorted by queue)", a, got, want)
		}
		parents, _, _ = e.links(t, c)
		if got, want := refs(parents), "[parse:"+b+"=deferred fetch:"+a+"=queued]"; got != want {
			t.Errorf("job %s --json parents = %s, want %s (in the order given)", c, got, want)
		}
		text := e.ok(t, "job", b)
		for _, s := range []string{"status:", "deferred", "parents:", "fetch:" + a + " (queued)",
			"dependents:", "default:" + c + " (deferred)", "allow_failure:"} {
			if !strings.Contains(text, s) {
				t.Errorf("job %s printed\n%s\nwant it to contain %q", b, text, s)
			}
		}

		in := e.info(t)
		for q, want := range map[string]map[string]int64{
			"fetch":   {"queued": 1, "deferred": 0},
			"parse":   {"queued": 0, "deferred": 1},
			"default": {"queued": 0, "deferred": 1},
		} {
			for k, n := range want {
				if got, ok := in.Queues[q][k]; !ok || got != n {
					t.Errorf("info --json queues.%s.%s = %d (present: %v), want %d", q, k, got, ok, n)
				}
			}
		}
		text = e.ok(t, "info")
		if row := infoRow(t, text, "parse"); row["DEFERRED"] != "1" || row["QUEUED"] != "0" {
			t.Errorf("info row of parse = %v, want DEFERRED 1 and QUEUED 0", row)
		}

		e.start(t, "worker", "--queues", "fetch,parse,default",
			"--exec", `fetch=echo '"<html>"'`, "--exec", `parse=echo '{"words":3}'`, "--exec", "report=echo done")
		if out := e.ok(t, "wait", c, "--timeout", "15s"); out != `"done"`+"\n" {
			t.Errorf("wait %s printed %q, want the result \"done\"", c, out)
		}
		for _, id := range []string{a, b, c} {
			if s := e.job(t, id)["status"]; s != "finished" {
				t.Errorf("job %s after the chain ran is %v, want finished", id, s)
			}
		}
		if out := e.ok(t, "wait", b); out != "{\"words\":3}\n" {
			t.Errorf("wait %s of a finished job printed %q, want its result {\"words\":3}", b, out)
		}

		// A parent that no longer exists is listed with a null status.
		if err := e.rdb.Del(t.Context(), e.prefix+":{fetch}:job:"+a).Err(); err != nil {
			t.Fatal(err)
		}
		parents, _, _ = e.links(t, b)
		if got, want := refs(parents), "[fetch:"+a+"=null]"; got != want {
			t.Errorf("job %s --json parents after its parent was deleted = %s, want %s", b, got, want)
		}
		if text := e.ok(t, "job", b); !strings.Contains(text, "fetch:"+a+" (gone)") {
			t.Errorf("job %s printed\n%s\nwant its deleted parent shown as gone", b, text)
		}
	})
}

// --depends-on looks a parent up in every queue; QUEUE:ID names the job of
// one queue; an id held by several queues must be written so; an id with
// a colon that exists as written wins over the QUEUE:ID reading.
func TestEnqueueDependsOnQueueID(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		e.enqueue(t, "--queue", "alpha", "--id", "job1", "f")
		e.enqueue(t, "--queue", "beta", "--id", "job1", "f")
		e.enqueue(t, "--queue", "alpha", "--id", "a:b", "f")
		e.enqueue(t, "--queue", "alpha", "--id", "beta:job1", "f")

		r := e.run(t, "enqueue", "--queue", "child", "--depends-on", "job1", "g")
		if r.code != 2 || !strings.Contains(r.stderr, "job1 exists in queues alpha, beta") ||
			!strings.Contains(r.stderr, "QUEUE:ID") || r.stdout != "" {
			t.Errorf("enqueue --depends-on of an id in two queues: exit %d, stdout %q, stderr %q; "+
				"want 2, nothing printed, the queues named and QUEUE:ID suggested", r.code, r.stdout, r.stderr)
		}
		if _, ok := e.info(t).Queues["child"]; ok {
			t.Errorf("queue child exists after a refused enqueue, want nothing enqueued")
		}

		for _, c := range []struct{ value, want string }{
			{"alpha:job1", "alpha:job1"},
			{"beta:job1", "alpha:beta:job1"}, // the id as written, in alpha
			{"a:b", "alpha:a:b"},             // an id with a colon
			{"alpha:a:b", "alpha:a:b"},       // split at the first colon
		} {
			id := e.enqueue(t, "--queue", "child", "--depends-on", c.value, "g")
			parents, _, _ := e.links(t, id)
			if got, want := refs(parents), "["+c.want+"=queued]"; got != want {
				t.Errorf("enqueue --depends-on %s: parents %s, want %s", c.value, got, want)
			}
		}
		// The same parent named twice is one parent.
		id := e.enqueue(t, "--queue", "child", "--depends-on", "a:b", "--depends-on", "alpha:a:b", "g")
		if parents, _, _ := e.links(t, id); refs(parents) != "[alpha:a:b=queued]" {
			t.Errorf("a parent named twice: parents %s, want [alpha:a:b=queued]", refs(parents))
		}
	})
}

// A parent that does not exist exits 1 with a message naming it, and
// nothing is enqueued.
func TestEnqueueDependsOnUnknown(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		known := e.enqueue(t, "--queue", "other", "f")
		for _, args := range [][]string{
			{"--depends-on", "nope"},
			{"--depends-on", known, "--depends-on", "nope"},
			{"--depends-on", "other:nope"},
			{"--depends-on", "nosuchqueue:" + known},
		} {
			r := e.run(t, append(append([]string{"enqueue", "--queue", "child"}, args...), "g")...)
			value := args[len(args)-1]
			if r.code != 1 || !strings.Contains(r.stderr, "job "+value+" not found") || r.stdout != "" ||
				strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("enqueue %q: exit %d, stdout %q, stderr %q; want 1, nothing printed, and one line with 'job %s not found'",
					args, r.code, r.stdout, r.stderr, value)
			}
		}
		in := e.info(t)
		if _, ok := in.Queues["child"]; ok || len(in.Queues) != 1 {
			t.Errorf("queues after enqueues with unknown parents = %v, want only other", in.Queues)
		}
	})
}

// enqueue --wait prints the result of a job that finished and exits 0;
// one that failed or was canceled exits 1 with its status and error; a
// timeout exits 1 and leaves the job.
func TestEnqueueWait(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		e.start(t, "worker", "--exec", `ok=echo '{"n":1}'`, "--exec", `fail=echo "it broke" >&2; exit 3`)

		r := e.run(t, "enqueue", "--wait", "ok")
		if r.code != 0 || r.stdout != `{"n":1}`+"\n" {
			t.Errorf("enqueue --wait ok: exit %d, stdout %q, stderr %q; want 0 and the result {\"n\":1}", r.code, r.stdout, r.stderr)
		}
		r = e.run(t, "enqueue", "--wait", "--wait-timeout", "15s", "--retry", "0", "--id", "bad", "fail")
		if r.code != 1 || r.stdout != "" || strings.Count(r.stderr, "\n") != 1 ||
			!strings.Contains(r.stderr, "job bad failed") || !strings.Contains(r.stderr, "it broke") {
			t.Errorf("enqueue --wait of a failing job: exit %d, stdout %q, stderr %q; want 1 and one line with 'job bad failed' and its error",
				r.code, r.stdout, r.stderr)
		}
		// A dependent of a failed job is canceled, at once.
		r = e.run(t, "enqueue", "--wait", "--id", "after-bad", "--depends-on", "bad", "ok")
		if r.code != 1 || !strings.Contains(r.stderr, "job after-bad canceled") || !strings.Contains(r.stderr, "default:bad") {
			t.Errorf("enqueue --wait --depends-on a failed job: exit %d, stderr %q; want 1, 'job after-bad canceled' and the parent named",
				r.code, r.stderr)
		}
		// Unless it allows failure.
		r = e.run(t, "enqueue", "--wait", "--id", "anyway", "--depends-on", "bad", "--allow-failure", "ok")
		if r.code != 0 || r.stdout != `{"n":1}`+"\n" {
			t.Errorf("enqueue --wait --allow-failure --depends-on a failed job: exit %d, stdout %q, stderr %q; want 0 and the result",
				r.code, r.stdout, r.stderr)
		}
		parents, _, allow := e.links(t, "anyway")
		if !allow || refs(parents) != "[default:bad=failed]" {
			t.Errorf("job anyway --json: allow_failure %v, parents %s; want true and [default:bad=failed]", allow, refs(parents))
		}
		if _, _, allow := e.links(t, "after-bad"); allow {
			t.Errorf("job after-bad --json allow_failure = true, want false")
		}
		if text := e.ok(t, "job", "anyway"); !regexpMatch(`allow_failure:\s+true`, text) {
			t.Errorf("job anyway printed\n%s\nwant allow_failure: true", text)
		}

		r = e.run(t, "enqueue", "--wait", "--wait-timeout", "200ms", "--queue", "unserved", "--id", "slow", "ok")
		if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, "job slow is still queued after 200ms (--wait-timeout)") {
			t.Errorf("enqueue --wait --wait-timeout 200ms with no worker: exit %d, stdout %q, stderr %q; want 1 and 'job slow is still queued after 200ms (--wait-timeout)'",
				r.code, r.stdout, r.stderr)
		}
		if s := e.job(t, "slow")["status"]; s != "queued" {
			t.Errorf("job slow after the wait timed out is %v, want queued", s)
		}
	})
}

// rqgo wait prints the result of a job once it finishes, answers at once
// for a job that has ended, and exits 1 on a timeout or an unknown id.
func TestWaitCommand(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, e *testEnv) {
		id := e.enqueue(t, "--queue", "mail", "send", `{"to":"ada"}`)
		failed := e.enqueue(t, "--queue", "mail", "--retry", "0", "bounce")

		r := e.run(t, "wait", id, "--timeout", "200ms")
		if r.code != 1 || r.stdout != "" || strings.Count(r.stderr, "\n") != 1 ||
			!strings.Contains(r.stderr, "job "+id+" is still queued after 200ms (--timeout)") {
			t.Errorf("wait --timeout 200ms of a queued job: exit %d, stdout %q, stderr %q; want 1 and one line with 'is still queued after 200ms'",
				r.code, r.stdout, r.stderr)
		}
		for _, args := range [][]string{{"wait", "nope"}, {"wait", "nope", "--timeout", "10s"}} {
			if r := e.run(t, args...); r.code != 1 || !strings.Contains(r.stderr, "job nope not found") {
				t.Errorf("rqgo %q: exit %d, stderr %q; want 1 and 'job nope not found'", args, r.code, r.stderr)
			}
		}
		if r := e.run(t, "wait", id, "--queue", "other"); r.code != 1 || !strings.Contains(r.stderr, "job "+id+" not found in queue other") {
			t.Errorf("wait ID --queue other: exit %d, stderr %q; want 1 and 'not found in queue other'", r.code, r.stderr)
		}

		// The wait runs while the job is queued and ends when a worker has
		// run it; it may start before or after that.
		w := e.start(t, "wait", id, "--queue", "mail")
		e.ok(t, "worker", "--queues", "mail", "--burst", "--exec", "send=cat", "--exec", "bounce=echo no such mailbox >&2; exit 1")
		if r := w.wait(t); r.code != 0 || r.stdout != `{"to":"ada"}`+"\n" {
			t.Errorf("wait of a job a worker then ran: exit %d, stdout %q, stderr %q; want 0 and its result", r.code, r.stdout, r.stderr)
		}
		r = e.run(t, "wait", failed)
		if r.code != 1 || !strings.Contains(r.stderr, "job "+failed+" failed") || !strings.Contains(r.stderr, "no such mailbox") {
			t.Errorf("wait of a failed job: exit %d, stderr %q; want 1, 'failed' and its error", r.code, r.stderr)
		}

		// An id in two queues needs --queue.
		e.enqueue(t, "--queue", "a", "--id", "twin", "f")
		e.enqueue(t, "--queue", "b", "--id", "twin", "f")
		if r := e.run(t, "wait", "twin"); r.code != 2 || !strings.Contains(r.stderr, "exists in queues a, b") {
			t.Errorf("wait of an id in two queues: exit %d, stderr %q; want 2 and the queues named", r.code, r.stderr)
		}
	})
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }
