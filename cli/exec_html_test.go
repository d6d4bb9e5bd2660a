package cli_test

import (
	"strings"
	"testing"
)

// An --exec command's JSON stdout is stored and shown as written: <, > and
// & are not turned into \u003c, \u003e and \u0026.
func TestExecResultKeepsHTML(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.enqueue(t, "html")
	e.ok(t, "worker", "--burst", "--exec", `html=printf '{"html": "<script>x</script>", "q": "a & b > c"}\n'`)
	want := `{"html":"<script>x</script>","q":"a & b > c"}`
	if got := e.rdb.HGet(t.Context(), e.prefix+":{default}:job:"+id, "result").Val(); got != want {
		t.Errorf("stored result = %s, want %s", got, want)
	}
	if out := e.ok(t, "job", id, "--json"); !strings.Contains(out, `"html": "<script>x</script>"`) {
		t.Errorf("job --json printed\n%s\nwant the result as written", out)
	}
}
