package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo"
	"github.com/rqgo/rqgo/cli"
	"github.com/rqgo/rqgo/internal/redistest"
)

// rqgoBin is the rqgo binary under test, built once by TestMain.
var rqgoBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "rqgo-cli-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	rqgoBin = filepath.Join(dir, "rqgo")
	out, err := exec.Command("go", "build", "-o", rqgoBin, "github.com/rqgo/rqgo/cmd/rqgo").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building rqgo: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// testEnv is one test's Redis and key prefix; its keys are deleted when the
// test ends.
type testEnv struct {
	url    string
	prefix string
	rdb    *redis.Client
}

// newEnv returns an env on the real Redis at $REDIS_URL, skipping the test
// when none answers, unless RQGO_REQUIRE_REDIS=1.
func newEnv(t *testing.T) *testEnv {
	t.Helper()
	rdb, prefix := redistest.Shared(t, "rqgoclitest")
	return &testEnv{url: redistest.SharedURL(), prefix: prefix, rdb: rdb}
}

type result struct {
	stdout, stderr string
	code           int
}

// run runs the rqgo binary with args against e's Redis and prefix.
func (e *testEnv) run(t *testing.T, args ...string) result {
	t.Helper()
	return runEnv(t, []string{"REDIS_URL=" + e.url, "RQGO_PREFIX=" + e.prefix}, args...)
}

func runEnv(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, rqgoBin, args...)
	cmd.Env = append(cleanEnv(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("rqgo %q: %v", args, err)
	}
	return r
}

// cleanEnv is the test's environment without the variables the command
// reads, so each test sets its own.
func cleanEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(s string) bool {
		return strings.HasPrefix(s, "REDIS_URL=") || strings.HasPrefix(s, "RQGO_PREFIX=")
	})
}

// ok runs the command and fails the test unless it exits 0.
func (e *testEnv) ok(t *testing.T, args ...string) string {
	t.Helper()
	r := e.run(t, args...)
	if r.code != 0 {
		t.Fatalf("rqgo %q: exit %d, want 0; stderr:\n%s", args, r.code, r.stderr)
	}
	return r.stdout
}

var idRE = regexp.MustCompile(`^[0-9a-f]{20}\n$`)

// enqueue runs "rqgo enqueue args..." and returns the printed id.
func (e *testEnv) enqueue(t *testing.T, args ...string) string {
	t.Helper()
	out := e.ok(t, append([]string{"enqueue"}, args...)...)
	if !idRE.MatchString(out) && !strings.Contains(strings.Join(args, " "), "--id") {
		t.Fatalf("enqueue %q printed %q, want only a job id and a newline", args, out)
	}
	return strings.TrimSpace(out)
}

// job returns "rqgo job ID --json", decoded.
func (e *testEnv) job(t *testing.T, id string) map[string]any {
	t.Helper()
	var m map[string]any
	out := e.ok(t, "job", id, "--json")
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("job %s --json printed %q: %v", id, out, err)
	}
	return m
}

func (e *testEnv) info(t *testing.T) infoJSON {
	t.Helper()
	var in infoJSON
	out := e.ok(t, "info", "--json")
	if err := json.Unmarshal([]byte(out), &in); err != nil {
		t.Fatalf("info --json printed %q: %v", out, err)
	}
	return in
}

// infoJSON is info --json: Queues holds each queue's counts (the numbers
// among its fields), Flow its pause and limits.
type infoJSON struct {
	Queues  map[string]map[string]int64
	Flow    map[string]flowJSON
	Workers []map[string]any
}

// flowJSON is what info --json says of a queue's flow control, and limits
// --json of the queue it shows.
type flowJSON struct {
	Queue  string            `json:"queue"`
	Paused *bool             `json:"paused"`
	Parked *int64            `json:"parked"`
	Limits map[string]*int64 `json:"limits"`
}

func (in *infoJSON) UnmarshalJSON(b []byte) error {
	var raw struct {
		Queues  map[string]map[string]json.RawMessage `json:"queues"`
		Workers []map[string]any                      `json:"workers"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	in.Queues, in.Flow, in.Workers = map[string]map[string]int64{}, map[string]flowJSON{}, raw.Workers
	for name, fields := range raw.Queues {
		counts := map[string]int64{}
		var f flowJSON
		for k, v := range fields {
			var err error
			switch k {
			case "paused":
				err = json.Unmarshal(v, &f.Paused)
			case "limits":
				err = json.Unmarshal(v, &f.Limits)
			case "shard":
			default:
				var n int64
				err = json.Unmarshal(v, &n)
				counts[k] = n
				if k == "parked" {
					f.Parked = &n
				}
			}
			if err != nil {
				return fmt.Errorf("queue %s: field %s: %w", name, k, err)
			}
		}
		in.Queues[name], in.Flow[name] = counts, f
	}
	return nil
}

var jobFields = []string{"id", "queue", "func", "args", "status", "attempt", "max_retries",
	"result", "error", "created_at", "enqueued_at", "started_at", "ended_at",
	"allow_failure", "parents", "dependents",
	"unique_key", "unique_until", "unique_for_ms", "start_within_ms", "holds_unique_key",
	"limit_key", "parked", "progress", "meta", "headers", "cancel_requested"}

var timeRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)

func TestEnqueueAndJob(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.enqueue(t, "--queue", "mail", "--retry", "5", "send", `{"to":"a@example.com","n":[1,2]}`)

	m := e.job(t, id)
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := slices.Sorted(slices.Values(jobFields))
	if !slices.Equal(keys, want) {
		t.Errorf("job --json fields = %v, want %v", keys, want)
	}
	for k, v := range map[string]any{"id": id, "queue": "mail", "func": "send", "status": "queued",
		"attempt": 0.0, "max_retries": 5.0, "result": nil, "error": nil, "started_at": nil, "ended_at": nil,
		"allow_failure": false, "unique_key": nil, "unique_until": nil, "unique_for_ms": nil,
		"start_within_ms": nil, "holds_unique_key": false, "limit_key": nil, "parked": false,
		"progress": nil, "meta": nil, "headers": nil, "cancel_requested": nil} {
		if m[k] != v {
			t.Errorf("job --json %s = %#v, want %#v", k, m[k], v)
		}
	}
	if args, ok := m["args"].(map[string]any); !ok || args["to"] != "a@example.com" {
		t.Errorf("job --json args = %#v, want the JSON object enqueued", m["args"])
	}
	for _, k := range []string{"parents", "dependents"} {
		if v, ok := m[k].([]any); !ok || len(v) != 0 {
			t.Errorf("job --json %s = %#v, want an empty array", k, m[k])
		}
	}
	for _, k := range []string{"created_at", "enqueued_at"} {
		if s, _ := m[k].(string); !timeRE.MatchString(s) {
			t.Errorf("job --json %s = %#v, want RFC 3339 UTC with milliseconds", k, m[k])
		}
	}

	// Flags may come before or after the id; --queue narrows the search.
	if got := e.ok(t, "job", "--queue", "mail", id); !strings.Contains(got, "status:") || !strings.Contains(got, "queued") {
		t.Errorf("job --queue mail ID printed %q, want its status", got)
	}
	text := e.ok(t, "job", id)
	for _, s := range []string{id, "mail", "send", "queued", `{"to":"a@example.com","n":[1,2]}`} {
		if !strings.Contains(text, s) {
			t.Errorf("job %s printed\n%s\nwant it to contain %q", id, text, s)
		}
	}

	// Args from stdin, none, and an id of one's own.
	cmd := exec.Command(rqgoBin, "enqueue", "--id", "my-job", "bulk", "-")
	cmd.Env = append(cleanEnv(), "REDIS_URL="+e.url, "RQGO_PREFIX="+e.prefix)
	cmd.Stdin = strings.NewReader(`[1, 2, 3]` + "\n")
	out, err := cmd.Output()
	if err != nil || string(out) != "my-job\n" {
		t.Fatalf("enqueue --id my-job bulk - = %q, %v; want my-job", out, err)
	}
	if got := e.job(t, "my-job")["args"]; fmt.Sprint(got) != "[1 2 3]" {
		t.Errorf("args read from stdin = %v, want [1 2 3]", got)
	}
	if r := e.run(t, "enqueue", "--id", "my-job", "bulk"); r.code != 1 || !strings.Contains(r.stderr, "already exists") {
		t.Errorf("enqueue of a taken id: exit %d, stderr %q; want 1 and 'already exists'", r.code, r.stderr)
	}
	noArgs := e.enqueue(t, "--in", "1h", "later")
	if m := e.job(t, noArgs); m["args"] != nil || m["status"] != "scheduled" {
		t.Errorf("enqueue --in 1h later: args %v, status %v; want null and scheduled", m["args"], m["status"])
	}
}

// alive reports whether pid is a running process (a zombie is not).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	// The state follows the command name in parentheses: "pid (comm) S ...".
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readPID(t *testing.T, file string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("reading the child's pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid file holds %q: %v", b, err)
	}
	return pid
}

func TestWorkerExec(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pidFile := filepath.Join(t.TempDir(), "child.pid")

	okID := e.enqueue(t, "echo", `{"greeting":"hi"}`)
	textID := e.enqueue(t, "text")
	failID := e.enqueue(t, "--retry", "1", "--retry-in", "50ms", "fail", `[1]`)
	slowID := e.enqueue(t, "--retry", "0", "--timeout", "300ms", "slow")
	bigID := e.enqueue(t, "--retry", "0", "big")

	r := e.run(t, "worker", "--queues", "default", "--burst", "--concurrency", "4",
		"--exec", `echo=printf '{"args":%s,"id":"%s","func":"%s","attempt":%s,"queue":"%s"}\n' "$(cat)" "$RQGO_JOB_ID" "$RQGO_FUNC" "$RQGO_ATTEMPT" "$RQGO_QUEUE"`,
		"--exec", "text=echo hello",
		"--exec", `fail=echo "attempt $RQGO_ATTEMPT went wrong" >&2; exit 3`,
		"--exec", "slow=sleep 60 & echo $! > "+pidFile+"; wait",
		"--exec", "big=head -c 2000000 /dev/zero | tr '\\0' x",
	)
	if r.code != 0 {
		t.Fatalf("worker --burst: exit %d, want 0; stderr:\n%s", r.code, r.stderr)
	}

	m := e.job(t, okID)
	res, _ := json.Marshal(m["result"])
	want := fmt.Sprintf(`{"args":{"greeting":"hi"},"attempt":1,"func":"echo","id":"%s","queue":"default"}`, okID)
	if m["status"] != "finished" || string(res) != want {
		t.Errorf("echo job: status %v, result %s; want finished, %s", m["status"], res, want)
	}
	if m := e.job(t, textID); m["status"] != "finished" || m["result"] != "hello" {
		t.Errorf("text job: status %v, result %#v; want finished, \"hello\" (non-JSON stdout kept as a string)", m["status"], m["result"])
	}

	m = e.job(t, failID)
	errText, _ := m["error"].(string)
	if m["status"] != "failed" || m["attempt"] != 2.0 || !strings.Contains(errText, "status 3") ||
		!strings.Contains(errText, "attempt 2 went wrong") {
		t.Errorf("fail job: status %v, attempt %v, error %q; want failed after 2 attempts with the exit status and stderr",
			m["status"], m["attempt"], errText)
	}

	m = e.job(t, slowID)
	errText, _ = m["error"].(string)
	if m["status"] != "failed" || !strings.Contains(errText, "timeout") {
		t.Errorf("slow job: status %v, error %q; want failed by timeout", m["status"], errText)
	}
	pid := readPID(t, pidFile)
	waitFor(t, "the timed-out command's child to die", 5*time.Second, func() bool { return !alive(pid) })

	m = e.job(t, bigID)
	errText, _ = m["error"].(string)
	if m["status"] != "failed" || !strings.Contains(errText, "1 MiB") {
		t.Errorf("big job: status %v, error %q; want failed for stdout over 1 MiB", m["status"], errText)
	}

	in := e.info(t)
	if c := in.Queues["default"]; c["finished"] != 2 || c["failed"] != 3 || c["queued"] != 0 {
		t.Errorf("info after the burst: %v, want 2 finished, 3 failed, 0 queued", c)
	}
}

// --prefetch reaches the worker: its start line shows the value in force
// (as many as --concurrency by default, 0 when turned off).
func TestWorkerPrefetchFlag(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--prefetch", "3"}, "prefetch=3"},
		{nil, "prefetch=2"},
		{[]string{"--prefetch", "-1"}, "prefetch=0"},
	} {
		args := append([]string{"worker", "--burst", "--concurrency", "2", "--exec", "f=true"}, c.args...)
		r := e.run(t, args...)
		if r.code != 0 || !strings.Contains(r.stderr, c.want+" ") {
			t.Errorf("rqgo %s: exit %d, stderr:\n%s\nwant exit 0 and a start line with %s", strings.Join(args, " "), r.code, r.stderr, c.want)
		}
	}
}

func TestRequeue(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.enqueue(t, "--retry", "0", "fail")
	b := e.enqueue(t, "--retry", "0", "fail")
	queued := e.enqueue(t, "--queue", "other", "fail")
	e.ok(t, "worker", "--burst", "--exec", "fail=exit 1")
	for _, id := range []string{a, b} {
		if s := e.job(t, id)["status"]; s != "failed" {
			t.Fatalf("job %s is %v before requeue, want failed", id, s)
		}
	}

	if out := e.ok(t, "requeue", "--queue", "default", a); out != "requeued 1 job\n" {
		t.Errorf("requeue ID printed %q, want \"requeued 1 job\"", out)
	}
	if m := e.job(t, a); m["status"] != "queued" || m["attempt"] != 0.0 {
		t.Errorf("requeued job: status %v, attempt %v; want queued, 0", m["status"], m["attempt"])
	}
	if out := e.ok(t, "requeue", "--queue", "default", "--all"); out != "requeued 1 job\n" {
		t.Errorf("requeue --all printed %q, want \"requeued 1 job\"", out)
	}
	if s := e.job(t, b)["status"]; s != "queued" {
		t.Errorf("job requeued by --all is %v, want queued", s)
	}
	r := e.run(t, "requeue", "--queue", "other", queued)
	if r.code != 1 || !strings.Contains(r.stderr, "not failed or canceled") {
		t.Errorf("requeue of a queued job: exit %d, stderr %q; want 1 and 'not failed or canceled'", r.code, r.stderr)
	}
}

func TestCancelAndEmpty(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.enqueue(t, "--queue", "low", "report")
	if out := e.ok(t, "cancel", id); out != "canceled "+id+"\n" {
		t.Errorf("cancel printed %q, want \"canceled %s\"", out, id)
	}
	if s := e.job(t, id)["status"]; s != "canceled" {
		t.Errorf("canceled job is %v, want canceled", s)
	}
	if r := e.run(t, "cancel", id, "--queue", "low"); r.code != 1 || !strings.Contains(r.stderr, "cannot be canceled") {
		t.Errorf("second cancel: exit %d, stderr %q; want 1 and 'cannot be canceled'", r.code, r.stderr)
	}
	if r := e.run(t, "cancel", "nope"); r.code != 1 || !strings.Contains(r.stderr, "job nope not found") {
		t.Errorf("cancel of an unknown id: exit %d, stderr %q; want 1 and 'job nope not found'", r.code, r.stderr)
	}

	for range 3 {
		e.enqueue(t, "--queue", "bulk", "x")
	}
	if out := e.ok(t, "empty", "bulk"); out != "deleted 3 queued jobs from bulk\n" {
		t.Errorf("empty printed %q, want \"deleted 3 queued jobs from bulk\"", out)
	}
	in := e.info(t)
	if c := in.Queues["bulk"]; c["queued"] != 0 {
		t.Errorf("bulk after empty: %v, want 0 queued", c)
	}
	if c := in.Queues["low"]; c["canceled"] != 1 {
		t.Errorf("low after cancel: %v, want 1 canceled", c)
	}
}

func TestInfoAndShutdown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	id := e.enqueue(t, "--queue", "high", "hang")
	e.enqueue(t, "--queue", "low", "--in", "1h", "later")

	var stderr bytes.Buffer
	cmd := exec.Command(rqgoBin, "worker", "--queues", "high,low", "--name", "w1", "--grace", "200ms",
		"--exec", "hang=sleep 60 & echo $! > "+pidFile+"; wait")
	cmd.Env = append(cleanEnv(), "REDIS_URL="+e.url, "RQGO_PREFIX="+e.prefix)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitFor(t, "the job's command to start", 10*time.Second, func() bool {
		_, err := os.Stat(pidFile)
		return err == nil
	})

	in := e.info(t)
	wantQueues := map[string]map[string]int64{
		"high": {"queued": 0, "started": 1, "scheduled": 0, "finished": 0, "failed": 0, "canceled": 0, "deferred": 0, "parked": 0},
		"low":  {"queued": 0, "started": 0, "scheduled": 1, "finished": 0, "failed": 0, "canceled": 0, "deferred": 0, "parked": 0},
	}
	if fmt.Sprint(in.Queues) != fmt.Sprint(wantQueues) {
		t.Errorf("info --json queues = %v, want %v", in.Queues, wantQueues)
	}
	if len(in.Workers) != 1 || in.Workers[0]["id"] != "w1" || fmt.Sprint(in.Workers[0]["queues"]) != "[high low]" {
		t.Errorf("info --json workers = %v, want w1 on [high low]", in.Workers)
	}
	text := e.ok(t, "info")
	for _, s := range []string{"QUEUE", "QUEUED", "CANCELED", "DEFERRED", "PARKED", "PAUSED", "LIMITS", "high", "low", "w1"} {
		if !strings.Contains(text, s) {
			t.Errorf("info printed\n%s\nwant it to contain %q", text, s)
		}
	}
	if m := e.job(t, id); m["status"] != "started" || m["started_at"] == nil {
		t.Errorf("running job: status %v, started_at %v; want started with a time", m["status"], m["started_at"])
	}

	// SIGTERM: the job outlives the grace period, so its process group is
	// killed and the job goes back in line.
	child := readPID(t, pidFile)
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	if err != nil {
		t.Fatalf("worker after SIGTERM: %v, want exit 0; stderr:\n%s", err, stderr.String())
	}
	waitFor(t, "the job's child to die", 5*time.Second, func() bool { return !alive(child) })
	if s := e.job(t, id)["status"]; s != "queued" {
		t.Errorf("job running at shutdown is %v afterwards, want queued", s)
	}
	if in := e.info(t); len(in.Workers) != 0 {
		t.Errorf("workers after shutdown = %v, want none", in.Workers)
	}
}

// takenAddr returns a local address something listens on until the test
// ends.
func takenAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().String()
}

// freeAddr returns a local address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	down := freeAddr(t)
	tests := []struct {
		name   string
		env    []string // replaces REDIS_URL when set
		args   []string
		code   int
		stderr string
	}{
		{"no command", nil, nil, 2, "Usage:"},
		{"unknown command", nil, []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"unknown flag", nil, []string{"enqueue", "--frob", "f"}, 2, "flag provided but not defined: -frob"},
		{"unknown global flag", nil, []string{"--frob", "info"}, 2, "flag provided but not defined: -frob"},
		{"malformed args", nil, []string{"enqueue", "f", `{"a":`}, 2, "ARGS_JSON is not valid JSON"},
		{"trailing args", nil, []string{"enqueue", "f", `{} x`}, 2, "ARGS_JSON is not valid JSON"},
		{"missing func", nil, []string{"enqueue"}, 2, "missing FUNC"},
		{"empty func", nil, []string{"enqueue", "", "{}"}, 2, "function name is empty"},
		{"invalid queue", nil, []string{"enqueue", "--queue", "a b", "f"}, 2, `queue name "a b"`},
		{"queue with braces", nil, []string{"enqueue", "--queue", "{x}", "f"}, 2, `queue name "{x}"`},
		{"bad duration", nil, []string{"enqueue", "--timeout", "soon", "f"}, 2, "invalid value"},
		{"bad time", nil, []string{"enqueue", "--at", "tomorrow", "f"}, 2, "RFC 3339"},
		{"in and at", nil, []string{"enqueue", "--in", "1m", "--at", "2030-01-01T00:00:00Z", "f"}, 2, "exclude each other"},
		{"negative retry", nil, []string{"enqueue", "--retry", "-1", "f"}, 2, "negative"},
		{"empty depends-on", nil, []string{"enqueue", "--depends-on", "", "f"}, 2, `invalid value "" for flag -depends-on: empty job ID`},
		{"allow-failure alone", nil, []string{"enqueue", "--allow-failure", "f"}, 2, "--allow-failure needs --depends-on"},
		{"wait-timeout alone", nil, []string{"enqueue", "--wait-timeout", "1s", "f"}, 2, "--wait-timeout needs --wait"},
		{"negative wait-timeout", nil, []string{"enqueue", "--wait", "--wait-timeout", "-1s", "f"}, 2, "--wait-timeout -1s is negative"},
		{"bad wait-timeout", nil, []string{"enqueue", "--wait", "--wait-timeout", "soon", "f"}, 2, `invalid value "soon" for flag -wait-timeout`},
		{"unknown parent", nil, []string{"enqueue", "--depends-on", "nope", "f"}, 1, "--depends-on nope: job nope not found"},
		{"wait without id", nil, []string{"wait"}, 2, "missing job ID"},
		{"wait two ids", nil, []string{"wait", "a", "b"}, 2, `unexpected argument "b"`},
		{"wait negative timeout", nil, []string{"wait", "x", "--timeout", "-1s"}, 2, "--timeout -1s is negative"},
		{"wait bad timeout", nil, []string{"wait", "x", "--timeout", "soon"}, 2, `invalid value "soon" for flag -timeout`},
		{"wait unknown job", nil, []string{"wait", "nope"}, 1, "job nope not found"},
		{"unknown job", nil, []string{"job", "nope"}, 1, "job nope not found"},
		{"unknown job in queue", nil, []string{"job", "nope", "--queue", "default"}, 1, "job nope not found"},
		{"cancel unknown in queue", nil, []string{"cancel", "nope", "--queue", "default"}, 1, "job nope not found"},
		{"empty id", nil, []string{"enqueue", "--id", "", "f"}, 2, "--id is empty"},
		{"job without id", nil, []string{"job"}, 2, "missing job ID"},
		{"exec without =", nil, []string{"worker", "--burst", "--exec", "resize"}, 2, "want NAME=COMMAND"},
		{"exec with empty name", nil, []string{"worker", "--burst", "--exec", "=true"}, 2, "NAME"},
		{"worker without functions", nil, []string{"worker", "--burst"}, 2, "--exec"},
		{"worker bad queue", nil, []string{"worker", "--burst", "--queues", "a:b", "--exec", "f=true"}, 2, `queue name "a:b"`},
		{"worker bad concurrency", nil, []string{"worker", "--concurrency", "0", "--exec", "f=true"}, 2, "--concurrency"},
		{"worker bad prefetch", nil, []string{"worker", "--prefetch", "-2", "--exec", "f=true"}, 2, "--prefetch -2"},
		{"worker prefetch not a number", nil, []string{"worker", "--prefetch", "many", "--exec", "f=true"}, 2, "--prefetch"},
		{"requeue without queue", nil, []string{"requeue", "--all"}, 2, "--queue is required"},
		{"requeue without ids", nil, []string{"requeue", "--queue", "default"}, 2, "--all or"},
		{"requeue all and ids", nil, []string{"requeue", "--queue", "default", "--all", "x"}, 2, "not both"},
		{"worker bad metrics", nil, []string{"worker", "--metrics", "9090", "--exec", "f=true"}, 2, `--metrics "9090": want host:port`},
		{"dashboard bad listen", nil, []string{"dashboard", "--listen", "8080"}, 2, `--listen "8080": want host:port`},
		{"dashboard arguments", nil, []string{"dashboard", "now"}, 2, `unexpected arguments ["now"]`},
		{"dashboard port taken", nil, []string{"dashboard", "--listen", takenAddr(t)}, 1, "address already in use"},
		{"empty without queue", nil, []string{"empty"}, 2, "missing QUEUE"},
		{"pause without queue", nil, []string{"pause"}, 2, "missing QUEUE"},
		{"resume without queue", nil, []string{"resume"}, 2, "missing QUEUE"},
		{"pause two queues", nil, []string{"pause", "mail", "sms"}, 2, `unexpected argument "sms": one queue at a time`},
		{"pause bad queue", nil, []string{"pause", "a b"}, 2, `queue name "a b"`},
		{"resume bad queue", nil, []string{"resume", "{x}"}, 2, `queue name "{x}"`},
		{"limits without queue", nil, []string{"limits", "--concurrency", "1"}, 2, "missing QUEUE"},
		{"limits two queues", nil, []string{"limits", "a", "b"}, 2, `unexpected argument "b"`},
		{"limits bad queue", nil, []string{"limits", "a:b"}, 2, `queue name "a:b"`},
		{"limits bad queue set", nil, []string{"limits", "a:b", "--concurrency", "2"}, 2, `queue name "a:b"`},
		{"rate without duration", nil, []string{"limits", "mail", "--rate", "10"}, 2, `invalid value "10" for flag -rate: want N/DURATION, such as 10/1s`},
		{"key-rate without duration", nil, []string{"limits", "mail", "--key-rate", "3"}, 2, `invalid value "3" for flag -key-rate: want N/DURATION`},
		{"rate not a number", nil, []string{"limits", "mail", "--rate", "many/1s"}, 2, "want N/DURATION, such as 100/1s, or 0 to remove the limit"},
		{"negative rate", nil, []string{"limits", "mail", "--rate", "-5/1s"}, 2, "N -5 is negative"},
		{"rate bad duration", nil, []string{"limits", "mail", "--rate", "10/soon"}, 2, `DURATION "soon": want a duration such as 1s`},
		{"rate empty duration", nil, []string{"limits", "mail", "--rate", "10/"}, 2, `DURATION "": want a duration`},
		{"rate zero duration", nil, []string{"limits", "mail", "--rate", "10/0s"}, 2, "DURATION 0s is not positive"},
		{"rate negative duration", nil, []string{"limits", "mail", "--rate", "10/-1s"}, 2, "DURATION -1s is not positive"},
		{"rate under 1ms", nil, []string{"limits", "mail", "--rate", "10/500us"}, 2, "DURATION 500µs is under 1ms"},
		{"rate fraction of a ms", nil, []string{"limits", "mail", "--key-rate", "10/1500us"}, 2, "DURATION 1.5ms is not a whole number of milliseconds"},
		{"negative concurrency", nil, []string{"limits", "mail", "--concurrency", "-1"}, 2, `invalid value "-1" for flag -concurrency: -1 is negative`},
		{"negative key-concurrency", nil, []string{"limits", "mail", "--key-concurrency", "-3"}, 2, "-3 is negative"},
		{"concurrency not a number", nil, []string{"limits", "mail", "--concurrency", "lots"}, 2, "want a whole number N"},
		{"concurrency too big", nil, []string{"limits", "mail", "--concurrency", "99999999999999999999"}, 2, "want a whole number N"},
		{"clear with a limit", nil, []string{"limits", "mail", "--clear", "--concurrency", "1", "--key-rate", "0"}, 2, "--clear removes every limit: it cannot be combined with --concurrency, --key-rate"},
		{"empty limit key", nil, []string{"enqueue", "--limit-key", "", "f"}, 2, "--limit-key is empty"},
		{"limit key with a space", nil, []string{"enqueue", "--limit-key", "tenant 1", "f"}, 2, `--limit-key "tenant 1" has whitespace`},
		{"limit key too long", nil, []string{"enqueue", "--limit-key", strings.Repeat("k", 201), "f"}, 2, "limit key"},
		{"bad url scheme", []string{"REDIS_URL=http://example.com"}, []string{"info"}, 2, "invalid --url"},
		{"bad url port", nil, []string{"--url", "redis://:hunter2@localhost:port/0", "info"}, 2, "invalid --url"},
		{"unreachable", []string{"REDIS_URL=redis://:hunter2@" + down + "/0"}, []string{"info"}, 1, "cannot reach Redis at " + down},
		{"unreachable enqueue", nil, []string{"--url", "redis://user:hunter2@" + down, "enqueue", "f"}, 1, "cannot reach Redis at " + down},
	}
	t.Run("each", func(t *testing.T) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				env := []string{"REDIS_URL=" + e.url, "RQGO_PREFIX=" + e.prefix}
				if tt.env != nil {
					env = append([]string{"RQGO_PREFIX=" + e.prefix}, tt.env...)
				}
				start := time.Now()
				r := runEnv(t, env, tt.args...)
				if took := time.Since(start); took > 5*time.Second {
					t.Errorf("rqgo %q took %s, want an answer within about 5s", tt.args, took)
				}
				if r.code != tt.code || !strings.Contains(r.stderr, tt.stderr) {
					t.Errorf("rqgo %q: exit %d, stderr %q; want exit %d and %q", tt.args, r.code, r.stderr, tt.code, tt.stderr)
				}
				if strings.Contains(r.stderr, "hunter2") {
					t.Errorf("rqgo %q printed the password: %q", tt.args, r.stderr)
				}
				if r.stdout != "" {
					t.Errorf("rqgo %q printed %q on stdout, want nothing", tt.args, r.stdout)
				}
				if tt.code == 1 && strings.Count(r.stderr, "\n") != 1 {
					t.Errorf("rqgo %q: stderr %q, want one line", tt.args, r.stderr)
				}
			})
		}
	})
	// Nothing of the above was enqueued.
	if in := e.info(t); len(in.Queues) != 0 {
		t.Errorf("queues after bad input = %v, want none", in.Queues)
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"help", "job"},
		{"worker", "--help"}, {"enqueue", "--help"}, {"wait", "--help"}, {"job", "--help"}, {"info", "--help"},
		{"requeue", "--help"}, {"cancel", "--help"}, {"empty", "--help"},
		{"pause", "--help"}, {"resume", "--help"}, {"limits", "--help"}, {"help", "limits"}} {
		r := runEnv(t, []string{"REDIS_URL=redis://:hunter2@127.0.0.1:1/0"}, args...)
		if r.code != 0 || r.stderr != "" {
			t.Errorf("rqgo %q: exit %d, stderr %q; want 0 and nothing", args, r.code, r.stderr)
		}
		if !strings.Contains(r.stdout, "Usage") || !strings.Contains(r.stdout, "Example") {
			t.Errorf("rqgo %q printed\n%s\nwant usage with an example", args, r.stdout)
		}
		if strings.Contains(r.stdout, "hunter2") {
			t.Errorf("rqgo %q printed the password from $REDIS_URL", args)
		}
	}
}

// When the worker exits, the --exec commands still running are killed with
// their children, even if their jobs' contexts never ended; a command that
// starts after that is killed at once.
func TestExitingWorkerKillsItsCommands(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	groups := &cli.ProcessGroups{}
	h := cli.ExecHandler("hang", "sleep 60 & echo $! > "+pidFile+".tmp; mv "+pidFile+".tmp "+pidFile+"; wait", groups)
	done := make(chan error, 1)
	go func() {
		_, err := h.ProcessJob(context.Background(), &rqgo.Job{ID: "j1", Func: "hang"})
		done <- err
	}()
	waitFor(t, "the command to start its child", 10*time.Second, func() bool {
		_, err := os.Stat(pidFile)
		return err == nil
	})
	child := readPID(t, pidFile)

	groups.KillAll()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "killed") {
			t.Errorf("ProcessJob = %v, want the command killed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ProcessJob still running 10s after KillAll")
	}
	waitFor(t, "the command's child to die", 5*time.Second, func() bool { return !alive(child) })

	late := cli.ExecHandler("late", "sleep 60", groups)
	if _, err := late.ProcessJob(context.Background(), &rqgo.Job{ID: "j2", Func: "late"}); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("a command started after KillAll: %v, want it killed", err)
	}
}

// rqgo dashboard prints where it listens, serves the pages and the metrics
// of the prefix's queues, refuses changes with --read-only, and exits 0 on
// SIGTERM. By default it listens on 127.0.0.1 only.
func TestDashboardCommand(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.enqueue(t, "--queue", "reports", "build")
	if help := e.ok(t, "dashboard", "--help"); !strings.Contains(help, "(default 127.0.0.1:8080)") {
		t.Errorf("dashboard --help does not give the default address 127.0.0.1:8080:\n%s", help)
	}

	cmd := exec.Command(rqgoBin, "dashboard", "--listen", "127.0.0.1:0", "--read-only")
	cmd.Env = append(cleanEnv(), "REDIS_URL="+e.url, "RQGO_PREFIX="+e.prefix)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the dashboard's first line: %v; stderr:\n%s", err, stderr.String())
	}
	m := regexp.MustCompile(`^rqgo dashboard on (http://127\.0\.0\.1:\d+/) \(prefix (\S+), read-only\)\n$`).FindStringSubmatch(line)
	if m == nil || m[2] != e.prefix {
		t.Fatalf("first line %q, want the address and prefix %s", line, e.prefix)
	}
	for path, want := range map[string]string{
		"":         `<a href="queues/reports">reports</a>`,
		"metrics":  `rqgo_queue_jobs{queue="reports",status="queued"} 1`,
		"metrics#": `rqgo_queue_paused{queue="reports"} 0`,
	} {
		resp, err := http.Get(m[1] + strings.TrimSuffix(path, "#"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET /%s = %d, want it to contain %s:\n%s", path, resp.StatusCode, want, body)
		}
	}
	resp, err := http.PostForm(m[1]+"queues/reports/cancel", url.Values{"id": {id}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || e.job(t, id)["status"] != "queued" {
		t.Errorf("read-only cancel = %d, job %v; want 405 and the job still queued", resp.StatusCode, e.job(t, id)["status"])
	}
	resp, err = http.PostForm(m[1]+"queues/reports/pause", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if f := e.info(t).Flow["reports"]; resp.StatusCode != http.StatusMethodNotAllowed || *f.Paused {
		t.Errorf("read-only pause = %d, paused %v; want 405 and the queue not paused", resp.StatusCode, *f.Paused)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("dashboard after SIGTERM: %v, want exit 0; stderr:\n%s", err, stderr.String())
	}
}

// rqgo worker --metrics serves the counts and times of the jobs it ran, at
// the address it logs, until it stops.
func TestWorkerMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.enqueue(t, "ping", `{"n":1}`)
	e.enqueue(t, "fail", "--retry", "0")

	cmd := exec.Command(rqgoBin, "worker", "--metrics", "127.0.0.1:0", "--exec", "ping=cat", "--exec", "fail=exit 1")
	cmd.Env = append(cleanEnv(), "REDIS_URL="+e.url, "RQGO_PREFIX="+e.prefix)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	logs := bufio.NewScanner(stderr)
	urlRE := regexp.MustCompile(`msg="serving the worker's metrics" url=(http://127\.0\.0\.1:\d+/metrics)`)
	var metricsURL string
	for metricsURL == "" && logs.Scan() {
		if m := urlRE.FindStringSubmatch(logs.Text()); m != nil {
			metricsURL = m[1]
		}
	}
	if metricsURL == "" {
		t.Fatalf("the worker did not log its metrics address (%v)", logs.Err())
	}
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for logs.Scan() {
		}
	}()
	waitFor(t, "the job to finish", 10*time.Second, func() bool { return e.job(t, id)["status"] == "finished" })

	want := []string{
		`rqgo_job_attempts_total{func="ping",outcome="ok",queue="default"} 1`,
		`rqgo_job_attempts_total{func="fail",outcome="error",queue="default"} 1`,
		`rqgo_job_duration_seconds_count{func="ping",queue="default"} 1`,
		`go_goroutines`,
	}
	var body []byte
	waitFor(t, "both attempts counted", 10*time.Second, func() bool {
		resp, err := http.Get(metricsURL)
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		return strings.Contains(string(body), want[1])
	})
	for _, w := range want {
		if !strings.Contains(string(body), w) {
			t.Errorf("metrics lack %s:\n%s", w, body)
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	<-drained // the worker has closed its stderr
	if err := cmd.Wait(); err != nil {
		t.Errorf("worker after SIGTERM: %v, want exit 0", err)
	}
}
