package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// pingTimeout bounds the check that Redis answers, which every command
// but --help makes before anything else.
const pingTimeout = 3 * time.Second

var errBadURL = errors.New("invalid --url")

// urlForms ends the message of a --url that does not parse.
const urlForms = "want redis://HOST:PORT/DB or rediss://..., with [USER]:PASSWORD@ before HOST when Redis wants a password"

// parseURL reads the Redis URL s with parse (redis.ParseURL,
// redis.ParseClusterURL or redis.ParseFailoverURL). Its errors show s only
// with its user info redacted, and never the text of an error about the
// user info, which can quote pieces of the password (for the password
// s3cr/et, url.Parse says: invalid port ":s3cr" after host). The message
// comes from parsing the redacted copy; when only the original fails, it
// says that the user or password does not parse.
func parseURL[T any](s string, parse func(string) (T, error)) (T, error) {
	var zero T
	shown := redactURL(s)
	if _, err := parse(shown); err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return zero, fmt.Errorf("%w %s: %s (%s)", errBadURL, shown, redactURLs(err.Error()), urlForms)
	}
	if _, _, misread := userinfo(s); !misread {
		if v, err := parse(s); err == nil {
			return v, nil
		}
	}
	return zero, fmt.Errorf("%w %s: the user or password does not parse: "+
		"percent-encode the reserved characters in it (%% as %%25, / as %%2F, ? as %%3F, # as %%23, @ as %%40)", errBadURL, shown)
}

// redacted stands in messages for the user info of a URL and for a
// password given in its query.
const redacted = "xxxxx"

// redactURL is the URL s with its user info (user and password) and the
// value of any password query parameter (Sentinel's master password)
// replaced by xxxxx.
func redactURL(s string) string {
	start, end, _ := userinfo(s)
	if end >= 0 {
		s = s[:start] + redacted + s[end:]
		start += len(redacted) + 1
	}
	q := strings.IndexAny(s[start:], "?#")
	if q < 0 || s[start+q] == '#' {
		return s
	}
	q += start + 1
	query, frag, hasFrag := strings.Cut(s[q:], "#")
	params := strings.Split(query, "&")
	for i, kv := range params {
		if k, _, ok := strings.Cut(kv, "="); ok && unescapedKey(k) == "password" {
			params[i] = k + "=" + redacted
		}
	}
	s = s[:q] + strings.Join(params, "&")
	if hasFrag {
		s += "#" + frag
	}
	return s
}

// urlRE matches a URL in a message, up to the next space or quote.
var urlRE = regexp.MustCompile("[A-Za-z][A-Za-z0-9+.-]*://[^\\s\"'`<>]*")

// redactURLs is text with [redactURL] applied to every URL in it.
func redactURLs(text string) string {
	return urlRE.ReplaceAllStringFunc(text, redactURL)
}

// userinfo finds the user info of the URL s: s[start:end], followed by the
// '@' at s[end]; end is -1 when s has none. A password may hold '/', '?',
// '#' and '@' its owner did not percent-encode, so the user info ends at the
// last '@' of s, not where url.Parse ends it (at the last '@' before the
// first '/', '?' or '#'), unless every '@' past that one is in the value of
// a query parameter go-redis reads as text (client_name=me@host) and
// url.Parse reads the URL: such a URL is read as url.Parse reads it.
// misread reports that the two readings differ: url.Parse would take part
// of the password for the host, path, query or fragment, or fail on it.
func userinfo(s string) (start, end int, misread bool) {
	if i := strings.IndexByte(s, ':'); i > 0 && isScheme(s[:i]) {
		start = i + 1
	}
	if strings.HasPrefix(s[start:], "//") {
		start += 2
	}
	rest := s[start:]
	last := strings.LastIndexByte(rest, '@')
	if last < 0 {
		return start, -1, false
	}
	authority := len(rest)
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority = i
	}
	parsed := strings.LastIndexByte(rest[:authority], '@')
	if parsed == last {
		return start, start + last, false
	}
	if _, err := url.Parse(s); err != nil || !atsInTextParams(rest[authority:]) {
		return start, start + last, true
	}
	if parsed < 0 {
		return start, -1, false
	}
	return start, start + parsed, false
}

// isScheme says whether s is a URL scheme (RFC 3986).
func isScheme(s string) bool {
	for i, r := range s {
		letter := 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z'
		if !letter && (i == 0 || !('0' <= r && r <= '9' || r == '+' || r == '-' || r == '.')) {
			return false
		}
	}
	return s != ""
}

// textParams are the query parameters of go-redis's URLs whose values are
// free text, which may hold an '@'.
var textParams = []string{"client_name", "username", "password", "master_name", "identitySuffix"}

// atsInTextParams says whether every '@' of tail, the part of a URL after
// its authority, is in the value of one of textParams.
func atsInTextParams(tail string) bool {
	tail, frag, _ := strings.Cut(tail, "#")
	path, query, _ := strings.Cut(tail, "?")
	if strings.Contains(frag, "@") || strings.Contains(path, "@") {
		return false
	}
	for kv := range strings.SplitSeq(query, "&") {
		k, v, _ := strings.Cut(kv, "=")
		if strings.Contains(k, "@") || strings.Contains(v, "@") && !slices.Contains(textParams, unescapedKey(k)) {
			return false
		}
	}
	return true
}

func unescapedKey(k string) string {
	if u, err := url.QueryUnescape(k); err == nil {
		return u
	}
	return k
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
	// The form is read from the redacted URL, whose query is the one the
	// URL is read with (a password may hold a '?').
	u, err := url.Parse(redactURL(e.url))
	if err != nil {
		_, err = parseURL(e.url, redis.ParseURL) // the same error, redacted
		return nil, "", err
	}
	q := u.Query()
	switch {
	case q.Has("master_name"):
		opts, err := parseURL(e.url, redis.ParseFailoverURL)
		if err != nil {
			return nil, "", err
		}
		if err := e.tlsFor(&opts.TLSConfig); err != nil {
			return nil, "", err
		}
		opts.ContextTimeoutEnabled = true
		return redis.NewFailoverClient(opts), "sentinels " + strings.Join(opts.SentinelAddrs, ","), nil
	case q.Has("addr"):
		opts, err := parseURL(e.url, redis.ParseClusterURL)
		if err != nil {
			return nil, "", err
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
	opts, err := parseURL(e.url, redis.ParseURL)
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
		return nil, fmt.Errorf("cannot reach Redis at %s: %s", addr, e.redact(err.Error()))
	}
	e.rdb = rdb
	return rdb, nil
}

// redact is text with the user info of every URL in it redacted, and any
// password of --url, should a server or dialer ever echo it, replaced.
func (e *env) redact(text string) string {
	text = redactURLs(text)
	for _, p := range e.passwords() {
		text = strings.ReplaceAll(text, p, redacted)
	}
	return text
}

// passwords are the passwords --url may hold, as url.Parse reads its user
// info and as [userinfo] does, and the password query parameter, longest
// first.
func (e *env) passwords() []string {
	var ps []string
	add := func(p string) {
		if p != "" && !slices.Contains(ps, p) {
			ps = append(ps, p)
		}
	}
	if u, err := url.Parse(e.url); err == nil {
		p, _ := u.User.Password()
		add(p)
		for _, p := range u.Query()["password"] {
			add(p)
		}
	}
	if start, end, _ := userinfo(e.url); end >= 0 {
		if _, p, ok := strings.Cut(e.url[start:end], ":"); ok {
			add(p)
			if u, err := url.PathUnescape(p); err == nil {
				add(u)
			}
		}
	}
	slices.SortFunc(ps, func(a, b string) int { return len(b) - len(a) })
	return ps
}

// redactingWriter is the command's stderr for its own logger: what it
// writes goes through [env.redact].
type redactingWriter struct{ e *env }

func (w redactingWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(w.e.stderr, w.e.redact(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}
