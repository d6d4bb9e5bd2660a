package dashboard

import (
	"bytes"
	"embed"
	"encoding/json"
	"html/template"
	"net/http"
	"net/url"

	"github.com/rqgo/rqgo"
)

//go:embed pages/*.html
var pageFiles embed.FS

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"age": age,
	"at": func(at string, j *rqgo.Job, asked bool) map[string]any {
		return map[string]any{"At": at, "Job": j, "Asked": asked}
	},
	"pauseAt":  func(at string, paused bool) map[string]any { return map[string]any{"At": at, "Paused": paused} },
	"path":     url.PathEscape,
	"pretty":   pretty,
	"progress": progressOf,
	"short":    short,
}).ParseFS(pageFiles, "pages/*.html"))

// render writes the page name with data, plus the fields every page uses.
// The page is rendered whole before anything is written, so a template
// error is a 500, not half a page.
func (s *server) render(w http.ResponseWriter, r *http.Request, name string, data map[string]any) {
	data["ReadOnly"] = s.opts.ReadOnly
	var b bytes.Buffer
	if err := pages.ExecuteTemplate(&b, name, data); err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	b.WriteTo(w)
}

// pretty indents a JSON value for reading; what does not parse is shown as
// it is.
func pretty(raw json.RawMessage) string {
	var b bytes.Buffer
	if json.Indent(&b, raw, "", "  ") != nil {
		return string(raw)
	}
	return b.String()
}
