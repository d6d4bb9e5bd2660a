package cli

import (
	"encoding/json"
	"flag"
	"slices"
	"strings"
	"testing"

	"github.com/rqgo/rqgo"
)

func TestTailWriter(t *testing.T) {
	tests := []struct {
		writes []string
		max    int
		want   string
	}{
		{nil, 10, ""},
		{[]string{"boom\n"}, 10, ": boom"},
		{[]string{"line1\nli", "ne2\nline3\n"}, 12, ": …line3"},
		{[]string{strings.Repeat("x", 20)}, 8, ": …xxxxxxxx"},
	}
	for _, tt := range tests {
		w := &tailWriter{max: tt.max}
		for _, s := range tt.writes {
			w.Write([]byte(s))
		}
		if got := w.suffix(); got != tt.want {
			t.Errorf("tail of %q (max %d) = %q, want %q", tt.writes, tt.max, got, tt.want)
		}
	}
}

func TestCapWriter(t *testing.T) {
	w := &capWriter{max: 4}
	if n, err := w.Write([]byte("abcd")); n != 4 || err != nil || w.over {
		t.Fatalf("Write of 4 bytes under a 4-byte cap = %d, %v (over %v), want 4, nil", n, err, w.over)
	}
	if _, err := w.Write([]byte("e")); err == nil || !w.over {
		t.Errorf("Write past the cap: err %v, over %v; want an error and over", err, w.over)
	}
}

func TestParseExec(t *testing.T) {
	for _, tt := range []struct{ in, name, command, err string }{
		{"resize=./resize.sh --fast", "resize", "./resize.sh --fast", ""},
		{"f=a=b", "f", "a=b", ""},
		{"resize", "", "", "NAME=COMMAND"},
		{"=true", "", "", "NAME"},
		{"f=  ", "", "", "COMMAND"},
	} {
		h, err := parseExec(tt.in)
		switch {
		case tt.err != "":
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("parseExec(%q) error = %v, want one mentioning %s", tt.in, err, tt.err)
			}
		case err != nil || h.name != tt.name || h.command != tt.command:
			t.Errorf("parseExec(%q) = %+v, %v; want %s, %s", tt.in, h, err, tt.name, tt.command)
		}
	}
}

func TestParseInterspersed(t *testing.T) {
	for _, tt := range []struct {
		args []string
		pos  []string
		json bool
	}{
		{[]string{"id1", "--json"}, []string{"id1"}, true},
		{[]string{"--json", "id1"}, []string{"id1"}, true},
		{[]string{"f", "--", "-1"}, []string{"f", "-1"}, false},
		{[]string{"a", "b"}, []string{"a", "b"}, false},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		asJSON := fs.Bool("json", false, "")
		pos, err := parseInterspersed(fs, tt.args)
		if err != nil || !slices.Equal(pos, tt.pos) || *asJSON != tt.json {
			t.Errorf("parseInterspersed(%q) = %q, json %v, %v; want %q, json %v", tt.args, pos, *asJSON, err, tt.pos, tt.json)
		}
	}
}

// An --exec command's result is its stdout, run through the exec guard:
// JSON compacted but otherwise as written (no HTML escapes), anything else
// a string; a non-zero exit or a signal fails the attempt with its status.
func TestExecResultAndStatus(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		command string
		result  any
		err     string
	}{
		{`printf '{"html": "<script>x</script>",\n "q": "a & b > c"}\n'`, json.RawMessage(`{"html":"<script>x</script>","q":"a & b > c"}`), ""},
		{`echo '<b>&amp;</b>'`, "<b>&amp;</b>", ""},
		{`printf ''`, "", ""},
		{`echo "$RQGO_JOB_ID $RQGO_FUNC $RQGO_ATTEMPT ${RQGO_EXEC_GUARD-unset}"`, "j1 f 2 unset", ""},
		{`echo broke >&2; exit 7`, nil, "f: command exited with status 7: broke"},
		{`kill -TERM $$`, nil, "f: command exited with status 143"},
	} {
		h := &execHandler{name: "f", command: tt.command}
		res, err := h.ProcessJob(t.Context(), &rqgo.Job{ID: "j1", Func: "f", Attempt: 2})
		got, _ := res.(json.RawMessage)
		want, _ := tt.result.(json.RawMessage)
		switch {
		case tt.err != "":
			if err == nil || err.Error() != tt.err {
				t.Errorf("%s: error %v, want %s", tt.command, err, tt.err)
			}
		case err != nil:
			t.Errorf("%s: error %v, want result %v", tt.command, err, tt.result)
		case want != nil && string(got) != string(want):
			t.Errorf("%s: result %s, want %s", tt.command, got, want)
		case want == nil && res != tt.result:
			t.Errorf("%s: result %#v, want %#v", tt.command, res, tt.result)
		}
	}
}
