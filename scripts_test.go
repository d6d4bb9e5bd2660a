package rqgo

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// Each script defines the prelude's functions it calls, and only those.
func TestScriptHelpers(t *testing.T) {
	for _, c := range []struct {
		s        *script
		has, not []string
	}{
		{dequeueScript, []string{"clock", "bad", "failed", "wake"}, []string{"check", "now_ms"}},
		{ackManyScript, []string{"clock", "bad", "check", "failed", "ended", "deliver", "wake"}, nil},
		{enqueueManyScript, []string{"clock", "bad", "check", "wake"}, []string{"ended", "deliver"}},
		{enqueueScript, []string{"clock", "bad", "failed", "wake"}, []string{"check"}},
		{reapScript, []string{"now_ms", "bad", "failed", "check", "wake"}, nil},
	} {
		for _, f := range c.has {
			if !strings.Contains(c.s.full.src, "function "+f+"(") {
				t.Errorf("%s.lua does not define %s, which it calls", c.s.name, f)
			}
		}
		for _, f := range c.not {
			if strings.Contains(c.s.full.src, "function "+f+"(") {
				t.Errorf("%s.lua defines %s, which it does not call", c.s.name, f)
			}
		}
		if !strings.HasPrefix(c.s.full.src, "#!lua") {
			t.Errorf("%s.lua does not start with its flags line", c.s.name)
		}
	}
}

// Hash returns, for tests that watch commands, the SHA1 digest that calls of the script send now.
func (s *script) Hash() string {
	if rejectsFlags.Load() {
		return s.bare.sha
	}
	return s.full.sha
}

// Load puts the script in the server's script cache, in the form it takes,
// for tests that must see EVALSHA succeed.
func (s *script) Load(ctx context.Context, rdb redis.UniversalClient) error {
	if rejectsFlags.Load() {
		return rdb.ScriptLoad(ctx, s.bare.src).Err()
	}
	err := rdb.ScriptLoad(ctx, s.full.src).Err()
	if err != nil && s.full.sha != s.bare.sha && strings.Contains(err.Error(), "near '#'") {
		rejectsFlags.Store(true)
		err = rdb.ScriptLoad(ctx, s.bare.src).Err()
	}
	return err
}

// A script given helpers on demand calls lazy, which defines them, and the
// scripts every plain job runs define few functions: each costs every call.
func TestScriptLazyHelpers(t *testing.T) {
	files, err := scriptFS.ReadDir("scripts")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(f.Name(), ".lua")
		if name == "prelude" {
			continue
		}
		s := loadScript(name, false)
		if strings.Contains(s.full.src, "local function lazy()") && strings.Count(s.full.src, "lazy()") < 2 {
			t.Errorf("%s.lua is given helpers on demand but never calls lazy()", name)
		}
	}
	for _, s := range []*script{enqueueScript, enqueueManyScript, dequeueScript, ackManyScript} {
		if n := strings.Count(s.full.src, "local function "); n > 7 {
			t.Errorf("%s.lua defines %d functions on every call; plain jobs pay for each", s.name, n)
		}
	}
}
