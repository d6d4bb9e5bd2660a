// Package dashboard serves a small web UI over rqgo's queues and workers,
// and their metrics for Prometheus.
//
// It reads and writes Redis through the rqgo library, so what it shows is
// what `rqgo info` and `rqgo job` show, and what it does is what
// [rqgo.Queue.Requeue], [rqgo.Queue.RequeueFailed], [rqgo.Queue.Cancel],
// [rqgo.Queue.Pause] and [rqgo.Queue.Resume] do.
//
// Mount it under a path of your own:
//
//	http.Handle("/rqgo/", http.StripPrefix("/rqgo", dashboard.New(rdb, dashboard.Options{})))
//
// The dashboard has no authentication of its own: serve it on a private
// address, behind a proxy that authenticates, or with ReadOnly set.
package dashboard

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/rqgo/rqgo"
)

// PageSize is how many jobs a queue's page lists.
const PageSize = 50

// maxPage is the last page number a queue's page accepts, past the jobs of
// any queue one Redis can hold (and small enough that its offset fits an
// int on 32-bit platforms); a larger one, like one that is not a whole
// number from 1, is answered with 400.
const maxPage = 10_000_000

// Options configure a dashboard. The zero value works.
type Options struct {
	// Prefix is the key prefix of the queues shown. Default: "rqgo".
	Prefix string
	// ReadOnly hides the requeue, cancel, pause and resume buttons and
	// refuses those requests with 405. Default: false.
	ReadOnly bool
	// Logger receives the errors the dashboard answers with 500, scrapes
	// of /metrics included. Default: slog.Default().
	Logger *slog.Logger
}

type server struct {
	rdb  redis.UniversalClient
	opts Options
}

// New returns the dashboard's handler. It serves:
//
//	GET  /                              queues, with their counts, latency, pause and limits, live workers, periodic jobs
//	GET  /queues/{queue}?status=S&page=N a queue's jobs in one state, PageSize a page; status=parked
//	                                    lists the queued jobs parked over their limit key's limits,
//	                                    status=started the running ones with their progress
//	GET  /queues/{queue}/jobs/{id}      one job, every field, its progress, meta and headers, when a
//	                                    cancel was requested, its parents and dependents, its unique
//	                                    key, its limit key and whether it is parked
//	GET  /find?id=ID                    the job ID in whichever queue holds it
//	POST /queues/{queue}/requeue        id=ID... (failed or canceled jobs), or all=1 (every failed job);
//	                                    409 names the jobs left because another job holds their unique key
//	POST /queues/{queue}/cancel         id=ID (a queued, scheduled or deferred job; a running one is
//	                                    asked to stop, and the browser sent to its page, which says so)
//	POST /queues/{queue}/pause          pause the queue: no worker starts its jobs until resume
//	POST /queues/{queue}/resume         let workers start the queue's jobs again
//	GET  /metrics                       Prometheus metrics, from a [Collector]
//
// Its links are relative, so it can be mounted under a path with
// [http.StripPrefix]. POST requests from another origin are refused
// ([http.CrossOriginProtection]). It is safe for concurrent use.
func New(rdb redis.UniversalClient, opts Options) http.Handler {
	opts.Prefix = cmp.Or(opts.Prefix, rqgo.DefaultPrefix)
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &server{rdb: rdb, opts: opts}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(rdb, opts.Prefix))

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.overview)
	mux.HandleFunc("GET /queues/{queue}", s.queue)
	mux.HandleFunc("GET /queues/{queue}/jobs/{id}", s.job)
	mux.HandleFunc("GET /find", s.find)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(opts.Logger.Handler(), slog.LevelError),
	}))
	requeue, cancel, pause, resume := s.requeue, s.cancel, s.pause, s.resume
	if opts.ReadOnly {
		requeue, cancel, pause, resume = readOnly, readOnly, readOnly, readOnly
	}
	mux.HandleFunc("POST /queues/{queue}/requeue", requeue)
	mux.HandleFunc("POST /queues/{queue}/cancel", cancel)
	mux.HandleFunc("POST /queues/{queue}/pause", pause)
	mux.HandleFunc("POST /queues/{queue}/resume", resume)
	return http.NewCrossOriginProtection().Handler(mux)
}

func (s *server) overview(w http.ResponseWriter, r *http.Request) {
	queues, err := readQueues(r.Context(), s.rdb, s.opts.Prefix)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	workers, err := rqgo.Workers(r.Context(), s.rdb, s.opts.Prefix)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	schedules, err := rqgo.Schedules(r.Context(), s.rdb, s.opts.Prefix)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, r, "overview", map[string]any{"Title": "overview", "Root": "./",
		"Statuses": rqgo.Statuses, "Queues": queues, "Workers": workers, "Schedules": schedules, "Prefix": s.opts.Prefix})
}

func (s *server) queue(w http.ResponseWriter, r *http.Request) {
	q, ok := s.openQueue(w, r)
	if !ok {
		return
	}
	status := rqgo.Status(cmp.Or(r.FormValue("status"), string(rqgo.StatusQueued)))
	if !slices.Contains(rqgo.Statuses, status) && status != statusParked {
		http.Error(w, fmt.Sprintf("unknown status %q: want one of %v or %s", status, rqgo.Statuses, statusParked), http.StatusBadRequest)
		return
	}
	page, err := strconv.Atoi(cmp.Or(r.FormValue("page"), "1"))
	if err != nil || page < 1 || page > maxPage {
		http.Error(w, fmt.Sprintf("page %q: want a whole number from 1 to %d", r.FormValue("page"), maxPage), http.StatusBadRequest)
		return
	}
	info, err := readQueue(r.Context(), q)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var jobs []*rqgo.Job
	if status == statusParked {
		jobs, err = q.ParkedJobs(r.Context(), (page-1)*PageSize, PageSize)
	} else {
		jobs, err = q.Jobs(r.Context(), status, (page-1)*PageSize, PageSize)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var asked map[string]bool // the running jobs a cancel was requested of
	if status == rqgo.StatusStarted {
		asks, err := cancelRequests(r.Context(), s.rdb, s.opts.Prefix, jobs)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		asked = map[string]bool{}
		for i, a := range asks {
			asked[jobs[i].ID] = a.Asked
		}
	}
	total := info.Parked
	for _, st := range info.States() {
		if st.Status == status {
			total = st.N
		}
	}
	s.render(w, r, "queue", map[string]any{
		"Title": "queue " + q.Name(), "Root": "../",
		"Queue": info, "Status": status, "Jobs": jobs, "Page": page,
		"Prev": page - 1, "Next": nextPage(page, total), "Asked": asked,
	})
}

// nextPage is the page after page, or 0 when page is the last.
func nextPage(page int, total int64) int {
	if int64(page)*PageSize < total {
		return page + 1
	}
	return 0
}

func (s *server) job(w http.ResponseWriter, r *http.Request) {
	q, ok := s.openQueue(w, r)
	if !ok {
		return
	}
	j, err := q.FetchJob(r.Context(), r.PathValue("id"))
	if errors.Is(err, rqgo.ErrJobNotFound) {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	links, err := readLinks(r.Context(), s.rdb, s.opts.Prefix, q, j)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var holder string // the id of the job that holds j's unique key now
	if j.UniqueKey != "" {
		if holder, err = q.UniqueHolder(r.Context(), j.UniqueKey); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	var parked time.Time      // when j was parked, zero when it is not
	var keyLimits rqgo.Limits // the queue's limits of each limit key
	if j.LimitKey != "" {
		if parked, err = parkedSince(r.Context(), s.rdb, s.opts.Prefix, j); err != nil {
			s.fail(w, r, err)
			return
		}
		l, err := q.Limits(r.Context())
		if err != nil {
			s.fail(w, r, err)
			return
		}
		keyLimits = rqgo.Limits{KeyConcurrency: l.KeyConcurrency, KeyRate: l.KeyRate, KeyPer: l.KeyPer}
	}
	asks, err := cancelRequests(r.Context(), s.rdb, s.opts.Prefix, []*rqgo.Job{j})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, r, "job", map[string]any{"Title": "job " + j.ID, "Root": "../../../",
		"Job": j, "Key": jobKey(s.opts.Prefix, j.Queue, j.ID), "Links": links,
		"Holder": holder, "UniqueKey": uniqueKey(s.opts.Prefix, j.Queue, j.UniqueKey),
		"UntilStarted": j.UniqueUntil == rqgo.UntilStarted,
		"Parked":       parked, "KeyLimits": keyLimits,
		"Cancel": asks[0], "CancelNotice": r.FormValue("cancel") == "requested"})
}

func (s *server) find(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimSpace(r.FormValue("id"))
	if id == "" {
		http.Error(w, "give the id of the job to find", http.StatusBadRequest)
		return
	}
	jobs, err := rqgo.FindJob(r.Context(), s.rdb, s.opts.Prefix, id)
	if err != nil && !errors.Is(err, rqgo.ErrMalformedJob) {
		s.fail(w, r, err)
		return
	}
	switch len(jobs) {
	case 0:
		http.Error(w, fmt.Sprintf("no job %q in any queue under prefix %q", id, s.opts.Prefix), http.StatusNotFound)
	case 1:
		w.Header().Set("Location", "queues/"+url.PathEscape(jobs[0].Queue)+"/jobs/"+url.PathEscape(id))
		w.WriteHeader(http.StatusSeeOther)
	default: // one JobID enqueued to several queues
		s.render(w, r, "found", map[string]any{"Title": "job " + id, "Root": "./", "Jobs": jobs})
	}
}

func (s *server) requeue(w http.ResponseWriter, r *http.Request) {
	q, ok := s.openQueue(w, r)
	if !ok {
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ids := r.PostForm["id"]
	var err error
	switch {
	case r.PostFormValue("all") == "1" && len(ids) == 0:
		_, err = q.RequeueFailed(r.Context())
	case len(ids) > 0 && r.PostFormValue("all") == "":
		_, err = q.Requeue(r.Context(), ids...)
	default:
		http.Error(w, "give all=1 or the id of each job to requeue, not both", http.StatusBadRequest)
		return
	}
	if errors.Is(err, rqgo.ErrDuplicate) {
		// The others were requeued; these stay where they are.
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	seeOther(w, q, rqgo.StatusQueued)
}

func (s *server) cancel(w http.ResponseWriter, r *http.Request) {
	q, ok := s.openQueue(w, r)
	if !ok {
		return
	}
	id := r.PostFormValue("id")
	if id == "" {
		http.Error(w, "give the id of the job to cancel", http.StatusBadRequest)
		return
	}
	err := q.Cancel(r.Context(), id)
	switch {
	case errors.Is(err, rqgo.ErrJobNotFound):
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	case errors.Is(err, rqgo.ErrNotCancelable):
		http.Error(w, err.Error(), http.StatusConflict)
		return
	case err != nil:
		s.fail(w, r, err)
		return
	}
	// Cancel answers the same when it canceled the job and when it asked
	// a running one to stop: the job's status now tells which. The page
	// of a job still running (or that ended another way meanwhile) says
	// that the cancel is requested.
	if j, _ := q.FetchJob(r.Context(), id); j != nil && j.Status != rqgo.StatusCanceled && j.Status != "" {
		w.Header().Set("Location", url.PathEscape(q.Name())+"/jobs/"+url.PathEscape(id)+"?cancel=requested")
		w.WriteHeader(http.StatusSeeOther)
		return
	}
	seeOther(w, q, rqgo.StatusCanceled)
}

func (s *server) pause(w http.ResponseWriter, r *http.Request) {
	s.flow(w, r, (*rqgo.Queue).Pause)
}

func (s *server) resume(w http.ResponseWriter, r *http.Request) {
	s.flow(w, r, (*rqgo.Queue).Resume)
}

// flow pauses or resumes the queue in the path with op, then sends the
// browser to the queue's page.
func (s *server) flow(w http.ResponseWriter, r *http.Request, op func(*rqgo.Queue, context.Context) error) {
	q, ok := s.openQueue(w, r)
	if !ok {
		return
	}
	if err := op(q, r.Context()); err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", url.PathEscape(q.Name()))
	w.WriteHeader(http.StatusSeeOther)
}

func readOnly(w http.ResponseWriter, r *http.Request) {
	http.Error(w, "this rqgo dashboard is read-only", http.StatusMethodNotAllowed)
}

// openQueue returns the queue named in the path, or answers 404 when no
// such queue is known.
func (s *server) openQueue(w http.ResponseWriter, r *http.Request) (*rqgo.Queue, bool) {
	name := r.PathValue("queue")
	known, err := rqgo.Queues(r.Context(), s.rdb, s.opts.Prefix)
	if err != nil {
		s.fail(w, r, err)
		return nil, false
	}
	for _, k := range known {
		if k == name {
			return rqgo.NewQueue(name, s.rdb, rqgo.WithPrefix(s.opts.Prefix)), true
		}
	}
	http.Error(w, fmt.Sprintf("no queue %q under prefix %q", name, s.opts.Prefix), http.StatusNotFound)
	return nil, false
}

// seeOther sends the browser, after a POST to /queues/{queue}/..., to the
// queue's page for status. The location is relative so that it holds under
// a mount path.
func seeOther(w http.ResponseWriter, q *rqgo.Queue, status rqgo.Status) {
	w.Header().Set("Location", url.PathEscape(q.Name())+"?status="+string(status))
	w.WriteHeader(http.StatusSeeOther)
}

// fail answers a request that failed with err: 400 for an argument rqgo
// rejects, which is the request's fault and not logged, else 500, logged.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client went away
	}
	if errors.Is(err, rqgo.ErrInvalid) {
		http.Error(w, "rqgo dashboard: "+err.Error(), http.StatusBadRequest)
		return
	}
	s.opts.Logger.Error("dashboard: reading or writing Redis", "path", r.URL.Path, "err", err)
	http.Error(w, "rqgo dashboard: "+err.Error(), http.StatusInternalServerError)
}

// age formats how long ago t was, for the pages.
func age(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := time.Since(t)
	if d < 0 {
		return "in " + (-d).Round(time.Second).String()
	}
	return d.Round(time.Second).String() + " ago"
}
