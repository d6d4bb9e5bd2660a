package dashboard

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestProgressOf(t *testing.T) {
	for _, tt := range []struct {
		raw            string
		bar            bool
		percent, label string
	}{
		{"40", true, "40", "40"},
		{"0", true, "0", "0"},
		{"100", true, "100", "100"},
		{" 12.345 ", true, "12.345", "12.3"},
		{"33.333333333333336", true, "33.333333333333336", "33.3"},
		{"1e1", true, "10", "10"},
		{"100.5", false, "", ""},
		{"-1", false, "", ""},
		{`"40"`, false, "", ""},
		{`{"done":1,"total":2}`, false, "", ""},
		{"null", false, "", ""},
		{"4O", false, "", ""},
	} {
		p := progressOf(json.RawMessage(tt.raw))
		if p.Bar != tt.bar || p.Percent != tt.percent || p.Label != tt.label {
			t.Errorf("progressOf(%s) = %+v, want bar %v, percent %q, label %q", tt.raw, p, tt.bar, tt.percent, tt.label)
		}
		if !p.Bar && string(p.Raw) != strings.TrimSpace(tt.raw) {
			t.Errorf("progressOf(%s).Raw = %s, want the value", tt.raw, p.Raw)
		}
	}
}

func TestShort(t *testing.T) {
	for _, tt := range []struct{ raw, want string }{
		{`{"a": 1,  "b": [1, 2]}`, `{"a":1,"b":[1,2]}`},
		{`"` + strings.Repeat("é", 70) + `"`, `"` + strings.Repeat("é", maxShort-2) + "…"},
		{"not json", "not json"},
	} {
		if got := short(json.RawMessage(tt.raw)); got != tt.want {
			t.Errorf("short(%s) = %q, want %q", tt.raw, got, tt.want)
		}
	}
}
