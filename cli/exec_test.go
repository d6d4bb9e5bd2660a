package cli

import (
	"flag"
	"slices"
	"strings"
	"testing"
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
