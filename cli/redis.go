package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
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

// tlsFlags are the --tls-* flags.
type tlsFlags struct {
	ca, cert, key string
	insecure      bool
}

func (f tlsFlags) set() bool { return f.ca != "" || f.cert != "" || f.key != "" || f.insecure }

// apply adjusts cfg, the TLS configuration a rediss:// URL gave.
func (f tlsFlags) apply(cfg *tls.Config) error {
	if cfg == nil {
		return usagef("--tls-ca, --tls-cert, --tls-key and --tls-insecure need a rediss:// URL")
	}
	if f.ca != "" {
		pem, err := os.ReadFile(f.ca)
		if err != nil {
			return usagef("--tls-ca: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return usagef("--tls-ca %s: no PEM certificate in it", f.ca)
		}
		cfg.RootCAs = pool
	}
	if (f.cert == "") != (f.key == "") {
		return usagef("--tls-cert and --tls-key go together")
	}
	if f.cert != "" {
		pair, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return usagef("--tls-cert/--tls-key: %v", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	cfg.InsecureSkipVerify = f.insecure
	return nil
}

// newClient builds the client --url asks for:
//
//	redis://HOST:PORT/DB, rediss://...                      one server
//	redis://HOST:PORT?addr=HOST2:PORT2&addr=...             a Redis Cluster (seed nodes)
//	redis://SENTINEL:PORT?master_name=NAME&addr=SENTINEL2... a Sentinel-managed master
//
// It returns the client and the addresses to name in errors.
func (e *env) newClient() (redis.UniversalClient, string, error) {
	u, err := url.Parse(e.url)
	if err != nil {
		_, err = parseURL(e.url) // the same error, without the URL
		return nil, "", err
	}
	q := u.Query()
	switch {
	case q.Has("master_name"):
		opts, err := redis.ParseFailoverURL(e.url)
		if err != nil {
			return nil, "", badURL(err)
		}
		if err := e.tlsFor(&opts.TLSConfig); err != nil {
			return nil, "", err
		}
		opts.ContextTimeoutEnabled = true
		return redis.NewFailoverClient(opts), "sentinels " + strings.Join(opts.SentinelAddrs, ","), nil
	case q.Has("addr"):
		opts, err := redis.ParseClusterURL(e.url)
		if err != nil {
			return nil, "", badURL(err)
		}
		if err := e.tlsFor(&opts.TLSConfig); err != nil {
			return nil, "", err
		}
		opts.ContextTimeoutEnabled = true
		// Find a promoted replica soon after a master dies, not after
		// go-redis's default of a minute.
		if opts.ClusterStateReloadInterval == 0 {
			opts.ClusterStateReloadInterval = 2 * time.Second
		}
		return redis.NewClusterClient(opts), "cluster " + strings.Join(opts.Addrs, ","), nil
	}
	opts, err := parseURL(e.url)
	if err != nil {
		return nil, "", err
	}
	if err := e.tlsFor(&opts.TLSConfig); err != nil {
		return nil, "", err
	}
	// Commands honour their context's deadline (the ping's, a shutdown's).
	opts.ContextTimeoutEnabled = true
	return redis.NewClient(opts), opts.Addr, nil
}

func (e *env) tlsFor(cfg **tls.Config) error {
	if !e.tls.set() {
		return nil
	}
	return e.tls.apply(*cfg)
}

func badURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return fmt.Errorf("%w: %v", errBadURL, err)
}

// connect opens the Redis client and checks that Redis answers. Errors name
// the server's address, never the password.
func (e *env) connect(ctx context.Context) (redis.UniversalClient, error) {
	if e.rdb != nil {
		return e.rdb, nil
	}
	rdb, addr, err := e.newClient()
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		rdb.Close()
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within %s", pingTimeout)
		}
		return nil, fmt.Errorf("cannot reach Redis at %s: %v", addr, redact(err, e.password()))
	}
	e.rdb = rdb
	return rdb, nil
}

// password is the URL's password, to keep out of error messages.
func (e *env) password() string {
	if u, err := url.Parse(e.url); err == nil {
		p, _ := u.User.Password()
		return p
	}
	return ""
}

// redact is err's text with the password, should a server or dialer ever
// echo it, replaced.
func redact(err error, password string) error {
	if password == "" {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), password, "xxxxx"))
}
