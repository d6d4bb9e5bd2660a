package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// dial connects to the benchmark database and checks that it is empty, so
// that cleanup can delete only what this run created.
func dial(ctx context.Context, url string, db, pool int) (*redis.Options, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("-redis %q: %w", url, err)
	}
	if db <= 0 {
		return nil, fmt.Errorf("-db %d: the benchmark needs a database of its own, not 0 (asynq's keys cannot be prefixed)", db)
	}
	opt.DB = db
	opt.PoolSize = pool
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	n, err := rdb.DBSize(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("redis %s db %d: %w", opt.Addr, db, err)
	}
	if n != 0 {
		return nil, fmt.Errorf("redis %s db %d is not empty (%d keys): the benchmark deletes every key it writes there, so it needs an empty database; pick one with -db", opt.Addr, db, n)
	}
	return opt, nil
}

// counter is a go-redis hook that counts what one client sends: round
// trips (a command, or a whole pipeline) and commands.
type counter struct {
	trips, cmds atomic.Int64
}

func (c *counter) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return next(ctx, network, addr)
	}
}

func (c *counter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.trips.Add(1)
		c.cmds.Add(1)
		return next(ctx, cmd)
	}
}

func (c *counter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.trips.Add(1)
		c.cmds.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// info reads one INFO section as key → value.
func info(ctx context.Context, rdb redis.UniversalClient, section string) (map[string]string, error) {
	s, err := rdb.Info(ctx, section).Result()
	if err != nil {
		return nil, fmt.Errorf("INFO %s: %w", section, err)
	}
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if ok && !strings.HasPrefix(k, "#") {
			m[k] = v
		}
	}
	return m, nil
}

func usedMemory(ctx context.Context, rdb redis.UniversalClient) (int64, error) {
	m, err := info(ctx, rdb, "memory")
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(m["used_memory"], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("INFO memory: used_memory %q: %w", m["used_memory"], err)
	}
	return n, nil
}

// redisCPU returns the CPU time the Redis server has used (user + system),
// all its threads, in seconds.
func redisCPU(ctx context.Context, rdb redis.UniversalClient) (float64, error) {
	m, err := info(ctx, rdb, "cpu")
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, k := range []string{"used_cpu_user", "used_cpu_sys"} {
		v, err := strconv.ParseFloat(m[k], 64)
		if err != nil {
			return 0, fmt.Errorf("INFO cpu: %s %q: %w", k, m[k], err)
		}
		sum += v
	}
	return sum, nil
}

// cmdStat is one command's line of INFO commandstats.
type cmdStat struct{ calls, usec int64 }

// commandStats reads INFO commandstats. The figures are server-wide: they
// include other clients' commands, and commands run inside scripts.
func commandStats(ctx context.Context, rdb redis.UniversalClient) (map[string]cmdStat, error) {
	m, err := info(ctx, rdb, "commandstats")
	if err != nil {
		return nil, err
	}
	out := map[string]cmdStat{}
	for k, v := range m {
		name, ok := strings.CutPrefix(k, "cmdstat_")
		if !ok {
			continue
		}
		var s cmdStat
		for f := range strings.SplitSeq(v, ",") {
			fk, fv, _ := strings.Cut(f, "=")
			n, _ := strconv.ParseInt(fv, 10, 64)
			switch fk {
			case "calls":
				s.calls = n
			case "usec":
				s.usec = n
			}
		}
		out[name] = s
	}
	return out, nil
}

// diffStats returns after − before, per command, leaving out commands with
// no calls in between.
func diffStats(before, after map[string]cmdStat) map[string]cmdStat {
	out := map[string]cmdStat{}
	for k, a := range after {
		b := before[k]
		if d := (cmdStat{a.calls - b.calls, a.usec - b.usec}); d.calls > 0 {
			out[k] = d
		}
	}
	return out
}

// cleanup deletes every key matching pattern in the benchmark database.
func cleanup(ctx context.Context, rdb redis.UniversalClient, pattern string) error {
	var cursor uint64
	for {
		keys, next, err := rdb.Scan(ctx, cursor, pattern, 1000).Result()
		if err != nil {
			return fmt.Errorf("cleanup %s: %w", pattern, err)
		}
		if len(keys) > 0 {
			if err := rdb.Unlink(ctx, keys...).Err(); err != nil {
				return fmt.Errorf("cleanup %s: %w", pattern, err)
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// redisVersion returns the server's version, for the report.
func redisVersion(ctx context.Context, rdb redis.UniversalClient) string {
	m, err := info(ctx, rdb, "server")
	if err != nil {
		return "unknown"
	}
	return m["redis_version"]
}

var errTimeout = errors.New("timed out")
