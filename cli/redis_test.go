package cli_test

import (
	"bytes"
	"net/url"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/rqgo/rqgo/cli"
)

// A password in --url never reaches stderr, whatever reserved characters it
// holds unencoded, and whichever form of URL carries it; the message still
// names the host.
func TestURLPasswordNeverPrinted(t *testing.T) {
	t.Parallel()
	// A server that refuses every password answers at once.
	mr := miniredis.RunT(t)
	mr.RequireAuth("another password")
	host := mr.Addr()
	passwords := []string{"Kq7/zW9j", "Kq7#zW9j", "Kq7?zW9j", "Kq7%zW9j", "Kq7@zW9j", "Kq7%40zW9j",
		"Kq7/zW9j@Rt5", "K/q#7?z%W@9j", "Kq7:zW9j"}
	forms := []struct {
		name string
		url  func(pw string) string
	}{
		{"server", func(pw string) string { return "redis://:" + pw + "@" + host + "/0" }},
		{"server with user", func(pw string) string { return "redis://ada:" + pw + "@" + host + "/0" }},
		{"tls with a bad port", func(pw string) string { return "rediss://:" + pw + "@" + host + "x" }},
		{"cluster", func(pw string) string { return "redis://:" + pw + "@" + host + "?addr=" + host }},
		{"sentinel", func(pw string) string {
			return "redis://:" + pw + "@" + host + "?master_name=mymaster&dial_timeout=100ms"
		}},
		{"bad port", func(pw string) string { return "redis://:" + pw + "@" + host + "x/0" }},
	}
	for _, f := range forms {
		for _, pw := range passwords {
			t.Run(f.name+"/"+pw, func(t *testing.T) {
				t.Parallel()
				u := f.url(pw)
				var stdout, stderr bytes.Buffer
				code := cli.Main([]string{"--url", u, "info"},
					cli.Stdio(strings.NewReader(""), &stdout, &stderr), cli.Context(t.Context()))
				if code == cli.ExitOK {
					t.Fatalf("rqgo --url %s info: exit 0, want an error", u)
				}
				if frag := passwordFragment(stderr.String(), pw); frag != "" {
					t.Errorf("rqgo --url %s info printed %q of the password:\n%s", u, frag, stderr.String())
				}
				if !strings.Contains(stderr.String(), host) {
					t.Errorf("rqgo --url %s info: stderr %q, want it to name the host %s", u, stderr.String(), host)
				}
			})
		}
	}
}

// passwordFragment returns the first piece of pw, or of pw percent-decoded,
// three characters or longer that text holds, or "" when there is none.
func passwordFragment(text, pw string) string {
	t := text
	pws := []string{pw}
	if d, err := url.PathUnescape(pw); err == nil {
		pws = append(pws, d)
	}
	for _, p := range pws {
		for i := range len(p) - 2 {
			for j := len(p); j >= i+3; j-- {
				if strings.Contains(t, p[i:j]) {
					return p[i:j]
				}
			}
		}
	}
	return ""
}
