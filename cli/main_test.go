package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/rqgo/rqgo"
	"github.com/rqgo/rqgo/cli"
)

// TestMainGoHandlers is the application case: cli.Main with functions
// registered in Go, run in-process.
func TestMainGoHandlers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	main := func(args ...string) (string, int) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		type greetArgs struct {
			Name string `json:"name"`
		}
		code := cli.Main(append([]string{"--url", e.url, "--prefix", e.prefix}, args...),
			cli.Program("myapp"),
			cli.Stdio(strings.NewReader(""), &stdout, &stderr),
			cli.Context(t.Context()),
			cli.HandleFunc("upper", func(ctx context.Context, j *rqgo.Job) (any, error) {
				var s string
				if err := j.Decode(&s); err != nil {
					return nil, err
				}
				return strings.ToUpper(s), nil
			}),
			cli.Setup(func(w *rqgo.Worker) {
				rqgo.RegisterFunc(w, "greet", func(ctx context.Context, a greetArgs) (map[string]string, error) {
					return map[string]string{"greeting": "hello, " + a.Name}, nil
				})
			}),
		)
		if code != 0 && stderr.Len() == 0 {
			t.Errorf("myapp %q: exit %d with nothing on stderr", args, code)
		}
		return stdout.String() + stderr.String(), code
	}

	out, code := main("enqueue", "greet", `{"name":"ada"}`)
	if code != 0 {
		t.Fatalf("myapp enqueue: exit %d: %s", code, out)
	}
	greetID := strings.TrimSpace(out)
	out, code = main("enqueue", "upper", `"shout"`)
	if code != 0 {
		t.Fatalf("myapp enqueue: exit %d: %s", code, out)
	}
	upperID := strings.TrimSpace(out)

	if out, code := main("worker", "--burst"); code != 0 {
		t.Fatalf("myapp worker --burst: exit %d: %s", code, out)
	}
	for id, want := range map[string]string{greetID: `{"greeting":"hello, ada"}`, upperID: `"SHOUT"`} {
		out, code := main("job", id, "--json")
		var j struct {
			Status string          `json:"status"`
			Result json.RawMessage `json:"result"`
		}
		if err := json.Unmarshal([]byte(out), &j); code != 0 || err != nil {
			t.Fatalf("myapp job %s --json: exit %d, %v: %s", id, code, err, out)
		}
		var compact bytes.Buffer
		json.Compact(&compact, j.Result)
		if j.Status != "finished" || compact.String() != want {
			t.Errorf("job %s: status %s, result %s; want finished, %s", id, j.Status, compact.String(), want)
		}
	}

	if out, code := main("frobnicate"); code != 2 || !strings.HasPrefix(out, "myapp: unknown command") {
		t.Errorf("myapp frobnicate: exit %d, output %q; want 2 and 'myapp: unknown command'", code, out)
	}
}
