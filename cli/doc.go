// Package cli is the rqgo command as a library: the worker, enqueue, wait,
// job, info, schedule, requeue, cancel, empty, pause, resume, limits and
// dashboard subcommands, behind one function, [Main].
//
// The stock rqgo binary (cmd/rqgo) is Main with no handlers: its workers run
// operator-chosen shell commands given with --exec NAME=COMMAND. An
// application that registers its own Go functions builds its own binary
// around the same command, so its operators get the same subcommands and
// its workers run both the Go functions and any --exec commands:
//
//	func main() {
//		os.Exit(cli.Main(os.Args[1:],
//			cli.HandleFunc("email", sendEmail),
//			cli.Setup(func(w *rqgo.Worker) {
//				rqgo.RegisterFunc(w, "resize", resize)
//			}),
//		))
//	}
//
// # Exit codes and errors
//
// Main returns 0 on success, 1 on a runtime error (Redis unreachable, job
// not found, a job that cannot be canceled, a worker that failed) and 2 on a
// usage error: an unknown command or flag, a missing or extra argument, a
// flag value that does not parse, a bad --url, an --exec without '=', and
// any argument the library rejects as invalid (malformed ARGS_JSON, an empty
// function name, an invalid queue name or job id). Errors are one line on
// stderr; usage errors add the command's synopsis. Every command but --help
// first checks that Redis answers, within 3 seconds, and names the server's
// host:port (never its password) when it does not.
//
// # Output
//
// enqueue prints only the new job's id (with --debounce, the id of the job
// it joined); an enqueue --unique whose key another job holds prints
// nothing on stdout and exits 1, naming that job on stderr. enqueue --wait and wait print the
// result of a job that finished, as one JSON value, and exit 1 with its
// status and error on stderr when it failed or was canceled, or when the
// wait timed out. job --json prints one object with the fields id, queue,
// func, args, status, attempt, max_retries, result, error, created_at,
// enqueued_at, started_at, ended_at, allow_failure, parents, dependents,
// unique_key, unique_until, unique_for_ms, start_within_ms,
// holds_unique_key, limit_key, parked, progress, meta, headers and
// cancel_requested; args, result and progress are embedded JSON values,
// meta an object of JSON values and headers an object of strings (each
// null when the job has none), parents and dependents arrays of {"queue",
// "id", "status"} (status null for a job that no longer exists). cancel
// prints "canceled ID", or, for a running job, "cancel requested for ID:
// ..." (the job ends canceled once its handler returns). info --json prints
// {"queues": {NAME: {"queued", "started", "scheduled", "finished",
// "failed", "canceled", "deferred", "parked", "paused", "limits"}},
// "workers": [{"id", "host", "pid", "queues", "concurrency", "running",
// "started_at"}]}, where "limits" is {"concurrency", "rate", "per_ms",
// "key_concurrency", "key_rate", "key_per_ms"}, each a number or null when
// not set; limits --json prints {"queue", "paused", "parked", "limits"}
// alike. pause and resume print "paused QUEUE" and "resumed QUEUE". Times
// are RFC 3339 in UTC with milliseconds ("2026-11-25T09:30:00.000Z"); a
// time, result or error not set is null.
package cli
