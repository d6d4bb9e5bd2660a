package cli

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// pingTimeout bounds the check that Redis answers, which every command
// but --help makes before anything else.
const pingTimeout = 3 * time.Second

var errBadURL = errors.New("invalid --url")

// parseURL reads a Redis URL. Its errors never repeat the URL, which may
// hold a password.
func parseURL(s string) (*redis.Options, error) {
	opts, err := redis.ParseURL(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%w: %v (want redis://[:PASSWORD@]HOST:PORT[/DB] or rediss://...)", errBadURL, err)
	}
	return opts, nil
}

// connect opens the Redis client and checks that Redis answers. Errors name
// the server's address, never the password.
func (e *env) connect(ctx context.Context) (*redis.Client, error) {
	if e.rdb != nil {
		return e.rdb, nil
	}
	opts, err := parseURL(e.url)
	if err != nil {
		return nil, err
	}
	// Commands honour their context's deadline (the ping's, a shutdown's).
	opts.ContextTimeoutEnabled = true
	rdb := redis.NewClient(opts)
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		rdb.Close()
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within %s", pingTimeout)
		}
		return nil, fmt.Errorf("cannot reach Redis at %s: %v", opts.Addr, redact(err, opts.Password))
	}
	e.rdb = rdb
	return rdb, nil
}

// redact is err's text with the password, should a server or dialer ever
// echo it, replaced.
func redact(err error, password string) error {
	if password == "" {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), password, "xxxxx"))
}
