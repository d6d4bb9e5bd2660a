package rqgo

import (
	"strings"
	"testing"
)

// Each script defines the prelude's functions it calls, and only those.
func TestScriptHelpers(t *testing.T) {
	for _, c := range []struct {
		s        *script
		has, not []string
	}{
		{dequeueScript, []string{"now_ms", "bad", "failed", "wake"}, []string{"check"}},
		{ackManyScript, []string{"now_ms", "bad", "check", "failed"}, []string{"wake"}},
		{enqueueScript, []string{"now_ms", "bad", "failed", "wake"}, []string{"check"}},
		{reapScript, []string{"now_ms", "bad", "failed", "check", "wake"}, nil},
	} {
		for _, f := range c.has {
			if !strings.Contains(c.s.full.src, "local function "+f+"(") {
				t.Errorf("%s.lua does not define %s, which it calls", c.s.name, f)
			}
		}
		for _, f := range c.not {
			if strings.Contains(c.s.full.src, "local function "+f+"(") {
				t.Errorf("%s.lua defines %s, which it does not call", c.s.name, f)
			}
		}
		if !strings.HasPrefix(c.s.full.src, "#!lua") {
			t.Errorf("%s.lua does not start with its flags line", c.s.name)
		}
	}
}
