package rqgo

import (
	"context"
	"embed"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

//go:embed scripts/*.lua
var scriptFS embed.FS

// script is one embedded Lua script. Its source is the file's flags line
// (`#!lua flags=...`, when it has one), then prelude.lua, then the rest of
// the file.
type script struct {
	name       string
	full, bare source // with the flags line, and without it
	// retry lets go-redis send the script again when its reply was lost
	// (a timeout, a dropped connection). Only scripts whose second run
	// changes nothing get it: a second dequeue would lease a batch that
	// nobody received.
	retry bool
}

type source struct{ src, sha string }

func newSource(src string) source { return source{src: src, sha: redis.NewScript(src).Hash()} }

func loadScript(name string, retry bool) *script {
	prelude, err1 := scriptFS.ReadFile("scripts/prelude.lua")
	src, err2 := scriptFS.ReadFile("scripts/" + name + ".lua")
	if err1 != nil || err2 != nil {
		// The files are embedded at build time; a missing one is a build bug.
		panic("rqgo: missing embedded script " + name)
	}
	body, flags := string(src), ""
	if strings.HasPrefix(body, "#!") {
		line, rest, _ := strings.Cut(body, "\n")
		flags, body = line+"\n", rest
	}
	bare := helpers(string(prelude), body) + body
	return &script{name: name, full: newSource(flags + bare), bare: newSource(bare), retry: retry}
}

// lazyMark starts the block of prelude after which helpers are defined on
// demand (see there).
const lazyMark = "-- On demand:"

// helpers returns the blocks of prelude that body needs: its comments, and
// the functions body calls and those they call, in prelude's order. Each
// function a script defines costs it a closure on every call, which the hot
// scripts feel, so those after lazyMark are defined by a function lazy,
// which body calls before it calls any of them:
//
//	local extras, ended
//	local function lazy()
//	  if extras then return end
//	  function extras(k, fl) ... end
//	  function ended(...) ... end
//	end
func helpers(prelude, body string) string {
	blocks := strings.Split(prelude, "\n\n")
	need := body
	mark := slices.IndexFunc(blocks, func(b string) bool { return strings.HasPrefix(b, lazyMark) })
	if mark < 0 {
		mark = len(blocks)
	}
	var eager, lazy, names []string
	for i := len(blocks) - 1; i >= 0; i-- { // a helper calls only earlier ones
		b := blocks[i]
		_, rest, isFunc := strings.Cut(b, "local function ")
		name, _, _ := strings.Cut(rest, "(")
		switch {
		case i < mark && (!isFunc || strings.Contains(need, name+"(")):
			eager = append(eager, b)
			need += b
		case i > mark && isFunc && strings.Contains(need, name+"("):
			lazy = append(lazy, strings.Replace(b, "local function ", "function ", 1))
			names = append(names, name)
			need += b
		}
	}
	slices.Reverse(eager)
	out := strings.Join(eager, "\n\n") + "\n\n"
	if len(lazy) > 0 {
		slices.Reverse(lazy)
		slices.Reverse(names)
		out += "local " + strings.Join(names, ", ") + "\n\n" +
			"local function lazy()\n  if " + names[0] + " then\n    return\n  end\n\n" +
			strings.Join(lazy, "\n\n") + "\nend\n\n"
	}
	return out
}

// Every state change of a job is one of these scripts.
var (
	enqueueScript     = loadScript("enqueue", true) // a second run finds its own job
	enqueueManyScript = loadScript("enqueue_many", true)
	// With an id the caller chose, a second run would find the first's job
	// and answer that it exists.
	enqueueChosenScript     = loadScript("enqueue", false)
	enqueueManyChosenScript = loadScript("enqueue_many", false)
	dequeueScript           = loadScript("dequeue", false)
	ackManyScript           = loadScript("ack_many", false)
	failScript              = loadScript("fail", false)
	extendScript            = loadScript("extend", true) // renewing twice is renewing
	reapScript              = loadScript("reap", false)
	releaseScript           = loadScript("release", false)
	cancelScript            = loadScript("cancel", false)
	requeueScript           = loadScript("requeue", false)
	emptyScript             = loadScript("empty", false)
	limitsScript            = loadScript("limits", true)   // setting twice is setting
	progressScript          = loadScript("progress", true) // the same value twice is once
	// Workflows: linking and delivering twice is doing it once.
	deferScript       = loadScript("defer", true)
	deferChosenScript = loadScript("defer", false)
	linkScript        = loadScript("link", true)
	deliverScript     = loadScript("deliver", true)
	deliveredScript   = loadScript("delivered", true)
	waitScript        = loadScript("wait", true)
	// Unique keys: a second run finds its own job (made-up ids only).
	uniqueScript       = loadScript("unique", true)
	uniqueChosenScript = loadScript("unique", false)
)

// rejectsFlags records that a server answered a script's flags line with a
// compile error: miniredis, or a Redis older than 7. Such a server is sent
// the scripts without it. A server that takes flags never runs a script
// without them: the bare source goes out with EVAL only after the full
// source failed to compile, and by EVALSHA it runs only where such an EVAL
// loaded it.
var rejectsFlags atomic.Bool

// noRetry keeps go-redis from sending a command again after a failure that
// may have left it executed (go-redis honors Cmder.NoRetry).
type noRetry struct{ *redis.Cmd }

func (noRetry) NoRetry() bool { return true }

// processor is a client or a pipeline.
type processor interface {
	Process(ctx context.Context, cmd redis.Cmder) error
}

// cmd builds EVALSHA (sha) or EVAL of src.
func (s *script) cmd(ctx context.Context, src source, sha bool, keys []string, args []any) *redis.Cmd {
	argv := make([]any, 0, 3+len(keys)+len(args))
	if sha {
		argv = append(argv, "evalsha", src.sha)
	} else {
		argv = append(argv, "eval", src.src)
	}
	argv = append(argv, len(keys))
	for _, k := range keys {
		argv = append(argv, k)
	}
	return redis.NewCmd(ctx, append(argv, args...)...)
}

// send sends cmd through p, without go-redis's retries unless the script
// allows them.
func (s *script) send(ctx context.Context, p processor, cmd *redis.Cmd) {
	if s.retry {
		_ = p.Process(ctx, cmd)
		return
	}
	_ = p.Process(ctx, noRetry{cmd})
}

// evalSha is the EVALSHA a call starts with; it goes out through p.
func (s *script) evalSha(ctx context.Context, p processor, keys []string, args []any) *redis.Cmd {
	return s.sendTaken(ctx, p, true, keys, args)
}

// eval is the EVAL of the source the server takes, sent through p.
func (s *script) eval(ctx context.Context, p processor, keys []string, args []any) *redis.Cmd {
	return s.sendTaken(ctx, p, false, keys, args)
}

// sendTaken sends EVALSHA (sha) or EVAL of the source the server takes: the
// full one, unless a server refused its flags line.
func (s *script) sendTaken(ctx context.Context, p processor, sha bool, keys []string, args []any) *redis.Cmd {
	src := s.full
	if rejectsFlags.Load() {
		src = s.bare
	}
	c := s.cmd(ctx, src, sha, keys, args)
	s.send(ctx, p, c)
	return c
}

// Run runs the script on rdb: EVALSHA, then EVAL when Redis does not know
// the script yet (NOSCRIPT), then the source without its flags line when the
// server does not parse it.
func (s *script) Run(ctx context.Context, rdb redis.UniversalClient, keys []string, args ...any) *redis.Cmd {
	return s.fallback(ctx, rdb, s.evalSha(ctx, rdb, keys, args), keys, args)
}

// fallback follows up an EVALSHA answered NOSCRIPT, returning the command
// whose reply counts.
func (s *script) fallback(ctx context.Context, rdb redis.UniversalClient, c *redis.Cmd, keys []string, args []any) *redis.Cmd {
	if !redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
		return c
	}
	c = s.cmd(ctx, s.full, false, keys, args)
	s.send(ctx, rdb, c)
	if err := c.Err(); err != nil && s.full.sha != s.bare.sha && strings.Contains(err.Error(), "near '#'") {
		rejectsFlags.Store(true)
		c = s.cmd(ctx, s.bare, false, keys, args)
		s.send(ctx, rdb, c)
	}
	return c
}

// scriptCall is one script invocation in a pipelined batch.
type scriptCall struct {
	s    *script
	keys []string
	args []any
	cmd  *redis.Cmd
}

// runScripts sends the calls in one round trip. A call Redis answers with
// NOSCRIPT (its script cache is empty, e.g. after a restart) is sent again
// with the script's source.
func runScripts(ctx context.Context, rdb redis.UniversalClient, calls []*scriptCall) {
	defer func() {
		for _, c := range calls {
			if c.cmd.Err() != nil {
				reloadTopology(rdb)
				return
			}
		}
	}()
	if len(calls) == 1 {
		c := calls[0]
		c.cmd = c.s.Run(ctx, rdb, c.keys, c.args...)
		return
	}
	_, _ = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, c := range calls {
			c.cmd = c.s.evalSha(ctx, p, c.keys, c.args)
		}
		return nil
	})
	for _, c := range calls {
		c.cmd = c.s.fallback(ctx, rdb, c.cmd, c.keys, c.args)
	}
}

// reloadTopology asks a Cluster client to reload its slot map after a
// command failed. go-redis reloads it on MOVED and ASK replies, but not when
// a node refuses connections: after a master dies and its replica takes
// over, it would go on dialing the dead master until its
// ClusterStateReloadInterval (60s by default) passes. go-redis coalesces
// reloads, so calling this after every failure is cheap.
func reloadTopology(rdb redis.UniversalClient) {
	if c, ok := rdb.(*redis.ClusterClient); ok {
		c.ReloadState(context.Background())
	}
}
