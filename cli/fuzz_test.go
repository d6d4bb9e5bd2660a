package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo"
	"github.com/rqgo/rqgo/cli"
)

// FuzzEnqueueArgs feeds `rqgo enqueue f ARGS_JSON` arbitrary text: valid
// JSON is enqueued exactly as given, anything else is a usage error (exit 2)
// that enqueues nothing; the command never panics.
func FuzzEnqueueArgs(f *testing.F) {
	for _, s := range []string{`{"a":1}`, `[1,2]`, `"x"`, `null`, `42`, `{bad`, ``, `{"a":1} trailing`,
		`"\ud800"`, `-1`, `--`, "\x00", `{"a":` + strings.Repeat("[", 100)} {
		f.Add(s)
	}
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		f.Fatal(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	q := rqgo.NewQueue("default", rdb)

	f.Fuzz(func(t *testing.T, arg string) {
		mr.FlushAll() // the fuzzer's own miniredis
		var stdout, stderr bytes.Buffer
		code := cli.Main([]string{"--url", "redis://" + mr.Addr(), "enqueue", "--", "f", arg},
			cli.Stdio(strings.NewReader(""), &stdout, &stderr), cli.Context(context.Background()))
		valid := json.Valid([]byte(arg))
		switch {
		case valid && code == 0:
			j, err := q.FetchJob(context.Background(), strings.TrimSpace(stdout.String()))
			if err != nil || string(j.Args) != arg {
				t.Fatalf("enqueue %q: stored %v, %v; want the args as given", arg, j, err)
			}
		case valid:
			t.Fatalf("enqueue of valid JSON %q: exit %d: %s", arg, code, stderr.String())
		case code != 2:
			t.Fatalf("enqueue of invalid JSON %q: exit %d, want 2: %s", arg, code, stderr.String())
		default:
			if n := len(mr.Keys()); n != 0 {
				t.Fatalf("enqueue of invalid JSON %q left %d keys, want none", arg, n)
			}
		}
	})
}
