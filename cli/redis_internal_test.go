package cli

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestRedactURL(t *testing.T) {
	tests := []struct {
		url, want string
		misread   bool // url.Parse would read part of the password as something else
	}{
		{"redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0", false},
		{"redis://:pw@h:6379/0", "redis://xxxxx@h:6379/0", false},
		{"redis://ada:pw@h:6379/0", "redis://xxxxx@h:6379/0", false},
		{"redis://ada@h", "redis://xxxxx@h", false},
		{"rediss://:p@w@h:6380", "rediss://xxxxx@h:6380", false},
		{"redis://:p%zzw@h/0", "redis://xxxxx@h/0", false},
		{"redis://:p/w@h:6379/0", "redis://xxxxx@h:6379/0", true},
		{"redis://:p?w@h:6379/0", "redis://xxxxx@h:6379/0", true},
		{"redis://:p#w@h:6379/0", "redis://xxxxx@h:6379/0", true},
		{"redis://u:1234#@h:6379", "redis://xxxxx@h:6379", true},
		{"redis://u:1234/ab@h/0", "redis://xxxxx@h/0", true},
		{"redis://:a/b?c#d%e@f@h:1/2?addr=h2:3", "redis://xxxxx@h:1/2?addr=h2:3", true},
		// An '@' in a text parameter's value belongs to the query.
		{"redis://:pw@h:6379/0?client_name=me@work", "redis://xxxxx@h:6379/0?client_name=me@work", false},
		{"redis://h:6379/0?client_name=me@work", "redis://h:6379/0?client_name=me@work", false},
		// An '@' anywhere else ends the user info, so that no password shows.
		{"redis://:pw@h:6379/0?addr=u@h2:1", "redis://xxxxx@h2:1", true},
		{"redis://:p?client_name=x@h", "redis://xxxxx@h", true},
		// Sentinel's master password, in the query.
		{"redis://:spw@s1:26379?master_name=m&password=mpw&addr=s2:26379", "redis://xxxxx@s1:26379?master_name=m&password=xxxxx&addr=s2:26379", false},
		{"redis://s1:26379?master_name=m&password=m@pw#frag", "redis://s1:26379?master_name=m&password=xxxxx#frag", false},
		{"redis://s1:26379#?password=x", "redis://s1:26379#?password=x", false},
		// No "//": what precedes the last '@' is still hidden.
		{":pw@h:6379", "xxxxx@h:6379", false},
		{"redis::pw@h", "redis:xxxxx@h", false},
	}
	for _, tt := range tests {
		if got := redactURL(tt.url); got != tt.want {
			t.Errorf("redactURL(%q) = %q, want %q", tt.url, got, tt.want)
		}
		if _, _, misread := userinfo(tt.url); misread != tt.misread {
			t.Errorf("userinfo(%q) misread = %v, want %v", tt.url, misread, tt.misread)
		}
	}
}

func TestRedactURLs(t *testing.T) {
	tests := []struct{ text, want string }{
		{`dial "redis://u:s3cret@h:1/0": refused`, `dial "redis://xxxxx@h:1/0": refused`},
		{"a redis://:x/y@h:1 and rediss://:z@h2 b", "a redis://xxxxx@h:1 and rediss://xxxxx@h2 b"},
		{"see http://example.com/path?q=1", "see http://example.com/path?q=1"},
		{"no url here: user@host", "no url here: user@host"},
	}
	for _, tt := range tests {
		if got := redactURLs(tt.text); got != tt.want {
			t.Errorf("redactURLs(%q) = %q, want %q", tt.text, got, tt.want)
		}
	}
}

// The last safety net: an error or a log line that quotes a URL, or the
// password of --url on its own, prints neither the user info nor the
// password.
func TestErrorsAndLogsAreRedacted(t *testing.T) {
	const pw = "Kq7/zW9j"
	tests := []struct {
		name, url, line string
	}{
		{"url in the line", "redis://127.0.0.1:6379", "cannot use redis://ada:" + pw + "@h:1/0"},
		{"password of --url echoed", "redis://:" + pw + "@h:1/0", "server said: wrong password " + pw},
		{"decoded password echoed", "redis://:Kq7%2FzW9j@h:1/0", "server said: wrong password " + pw},
		{"query password echoed", "redis://h:1?master_name=m&password=" + pw, "server said: wrong password " + pw},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			e := &env{config: &config{prog: "rqgo", stderr: &stderr}, url: tt.url}
			if code := e.fail(errors.New(tt.line)); code != ExitError {
				t.Errorf("fail = %d, want %d", code, ExitError)
			}
			slog.New(slog.NewTextHandler(redactingWriter{e}, nil)).Error("dashboard: reading or writing Redis", "err", tt.line)
			if strings.Contains(stderr.String(), pw) || strings.Contains(stderr.String(), "zW9") {
				t.Errorf("stderr holds the password:\n%s", stderr.String())
			}
			if got := strings.Count(stderr.String(), redacted); got != 2 {
				t.Errorf("stderr has %d %s, want 2 (the error and the log line):\n%s", got, redacted, stderr.String())
			}
		})
	}
}
