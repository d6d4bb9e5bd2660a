package cli_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A worker started with --with-scheduler enqueues the file's periodic jobs
// and runs them; `schedule` and `info` show the entry.
func TestWorkerWithScheduler(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	file := filepath.Join(t.TempDir(), "schedule.json")
	os.WriteFile(file, []byte(`[{"name": "beat", "cron": "@every 1s", "func": "beat", "args": {"n": 1}, "queue": "default"}]`), 0o644)

	var stderr bytes.Buffer
	cmd := exec.Command(rqgoBin, "worker", "--with-scheduler", "--schedule", file, "--exec", "beat=cat")
	cmd.Env = append(cleanEnv(), "REDIS_URL="+e.url, "RQGO_PREFIX="+e.prefix)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	type entry struct {
		Name      string  `json:"name"`
		Func      string  `json:"func"`
		Spec      string  `json:"spec"`
		NextRun   *string `json:"next_run"`
		LastJobID *string `json:"last_job_id"`
	}
	var last string
	waitFor(t, "a scheduled job to finish", 15*time.Second, func() bool {
		var entries []entry
		if err := json.Unmarshal([]byte(e.ok(t, "schedule", "--json")), &entries); err != nil || len(entries) != 1 {
			return false
		}
		en := entries[0]
		if en.Name != "beat" || en.Func != "beat" || en.Spec != "@every 1s" || en.NextRun == nil {
			t.Fatalf("schedule --json = %+v, want the beat entry with a next run", en)
		}
		if en.LastJobID == nil {
			return false
		}
		last = *en.LastJobID
		return e.job(t, last)["status"] == "finished"
	})
	if res := e.job(t, last)["result"]; !strings.Contains(jsonString(res), `"n":1`) {
		t.Errorf("scheduled job's result = %v, want its args echoed", res)
	}
	if text := e.ok(t, "schedule"); !strings.Contains(text, "beat") || !strings.Contains(text, "@every 1s") {
		t.Errorf("schedule printed\n%s\nwant the beat entry", text)
	}
	if text := e.ok(t, "info"); !strings.Contains(text, "@every 1s") {
		t.Errorf("info printed\n%s\nwant the schedule listed", text)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("worker after SIGTERM: %v, want exit 0; stderr:\n%s", err, stderr.String())
	}
}

func TestBadScheduleFile(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := t.TempDir()
	for _, tc := range []struct{ name, content, want string }{
		{"bad spec", `[{"name": "x", "cron": "0 3 * *", "func": "f"}]`, `entry 1 ("x")`},
		{"unknown field", `[{"name": "y", "cron": "@daily", "func": "f", "tz": "UTC"}]`, `unknown field "tz"`},
		{"not json", `{`, "schedule"},
	} {
		file := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".json")
		os.WriteFile(file, []byte(tc.content), 0o644)
		r := e.run(t, "worker", "--burst", "--exec", "f=true", "--with-scheduler", "--schedule", file)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: exit %d stderr %q; want exit 2 naming %q", tc.name, r.code, r.stderr, tc.want)
		}
	}
	if r := e.run(t, "worker", "--burst", "--exec", "f=true", "--with-scheduler"); r.code != 2 {
		t.Errorf("--with-scheduler without --schedule: exit %d, want 2", r.code)
	}
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
