package rqgo

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// SchemaVersion is the version of the Redis key schema and job hash fields
// documented in the README. It changes only when a key or field changes
// meaning; additions keep it.
const SchemaVersion = 1

// DefaultPrefix is the key prefix used when none is configured.
const DefaultPrefix = "rqgo"

// keys builds every key name of one queue. Each key carries the queue's
// hash tag, so all keys one script touches live in one Cluster slot.
type keys struct {
	base string // "<prefix>:{<queue>}:"
}

func newKeys(prefix, queue string) keys {
	return keys{base: prefix + ":{" + queue + "}:"}
}

func (k keys) job(id string) string { return k.base + "job:" + id }
func (k keys) jobPrefix() string    { return k.base + "job:" }
func (k keys) pending() string      { return k.base + "pending" }
func (k keys) active() string       { return k.base + "active" }
func (k keys) scheduled() string    { return k.base + "scheduled" }
func (k keys) finished() string     { return k.base + "finished" }
func (k keys) failed() string       { return k.base + "failed" }
func (k keys) canceled() string     { return k.base + "canceled" }
func (k keys) seq() string          { return k.base + "seq" }
func (k keys) wake() string         { return k.base + "wake" }
func (k keys) reaper() string       { return k.base + "reaper" }
func (k keys) reaped() string       { return k.base + "reaped" }

// Workflows (see depend.go): the deferred registry (id -> when a reaper
// checks its links next), a job's open parents and its dependents (sets of
// "<queue>:<id>"), the outbox (parent id -> when a reaper delivers what it
// still owes) and what one parent owes (dependent -> how the parent ended),
// and the channel on which the end of a waited-for job is published.
func (k keys) deferred() string            { return k.base + "deferred" }
func (k keys) parents(id string) string    { return k.base + "parents:" + id }
func (k keys) dependents(id string) string { return k.base + "dependents:" + id }
func (k keys) outbox() string              { return k.base + "outbox" }
func (k keys) owed(id string) string       { return k.base + "owed:" + id }
func (k keys) ended() string               { return k.base + "ended" }

// Flow control (see limits.go and dequeue.lua): the flow hash (limits,
// pause, and the state of the queue's rate), the jobs parked for their
// limit keys (id -> when parked), one key's parked jobs (a list), the keys
// with parked jobs (key -> when to look at them again), one key's running
// jobs (id -> when started) and the state of one key's rate.
func (k keys) flow() string              { return k.base + "flow" }
func (k keys) slot() string              { return k.base + "slot" }
func (k keys) parked() string            { return k.base + "parked" }
func (k keys) park(key string) string    { return k.base + "park:" + key }
func (k keys) parkKeys() string          { return k.base + "parkkeys" }
func (k keys) ahead() string             { return k.base + "ahead" }
func (k keys) slots(key string) string   { return k.base + "slots:" + key }
func (k keys) keyRate(key string) string { return k.base + "rate:" + key }

// unique is a unique key: the id of the job that holds it (see unique.go).
func (k keys) unique(key string) string { return k.base + "unique:" + key }

// enqueueKeys is enqueue.lua's KEYS for the job id; chosen says the caller
// chose it, and only then does the script take the sets of KEYS[5..8].
func (k keys) enqueueKeys(id string, chosen bool) []string {
	if !chosen {
		return []string{k.job(id), k.pending(), k.scheduled(), k.wake()}
	}
	return []string{k.job(id), k.pending(), k.scheduled(), k.wake(), k.active(), k.finished(), k.failed(), k.canceled()}
}

// wakeWorker is one Worker's own wake key (id is its name and a random
// suffix): shutdown pushes to it to end the worker's BLPOP.
func (k keys) wakeWorker(id string) string { return k.base + "wake:" + id }

// queuesKey is the set of known queue names.
func queuesKey(prefix string) string { return prefix + ":queues" }

// workersKey is the set of worker ids; workerKey holds one worker's
// description and expires unless its heartbeat renews it.
func workersKey(prefix string) string      { return prefix + ":workers" }
func workerKey(prefix, id string) string   { return prefix + ":worker:" + id }
func validatePrefix(prefix string) error   { return validateName("prefix", prefix) }
func validateQueueName(name string) error  { return validateSegment("queue name", name, validateName) }
func validateFuncName(name string) error   { return validateToken("function name", name) }
func validateJobID(id string) error        { return validateSegment("job id", id, validateToken) }
func isSpaceOrControl(r rune) bool         { return unicode.IsSpace(r) || unicode.IsControl(r) }
func containsSpaceOrControl(s string) bool { return strings.IndexFunc(s, isSpaceOrControl) >= 0 }
func invalid(what, v, why string) error    { return fmt.Errorf("%w: %s %q %s", ErrInvalid, what, v, why) }
func tooLong(what, v string, max int) error {
	return invalid(what, v, fmt.Sprintf("is longer than %d bytes", max))
}

const maxNameLen = 200

// validateName checks a name that becomes part of key names: valid UTF-8
// (so that it prints as it is), no braces (they would break the hash tag),
// colons (the separator), whitespace or control characters.
func validateName(what, name string) error {
	if name == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalid, what)
	}
	if len(name) > maxNameLen {
		return tooLong(what, name, maxNameLen)
	}
	if !utf8.ValidString(name) {
		return invalid(what, name, "is not valid UTF-8")
	}
	if strings.ContainsAny(name, "{}:") || containsSpaceOrControl(name) {
		return invalid(what, name, "must not contain braces, colons, whitespace or control characters")
	}
	return nil
}

// validateToken checks a function name, job id or worker name: valid UTF-8,
// no whitespace or control characters.
func validateToken(what, v string) error {
	if v == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalid, what)
	}
	if len(v) > maxNameLen {
		return tooLong(what, v, maxNameLen)
	}
	if !utf8.ValidString(v) {
		return invalid(what, v, "is not valid UTF-8")
	}
	if containsSpaceOrControl(v) {
		return invalid(what, v, "must not contain whitespace or control characters")
	}
	return nil
}

// validateSegment checks, with check, a queue name or job id, which is also
// a path segment of the dashboard's links: "." or ".." would lead to
// another page.
func validateSegment(what, v string, check func(what, v string) error) error {
	if v == "." || v == ".." {
		return invalid(what, v, `must not be "." or ".."`)
	}
	return check(what, v)
}

// schedule is the state hash of one periodic entry: name, queue, func, spec,
// timezone, and created_at, next_run, last_tick, last_run (Unix ms), and
// last_job_id. schedule.lua writes it; Schedules reads it.
func (k keys) schedule(name string) string { return k.base + "schedule:" + name }

// schedulesKey is the set of known entries, as "<queue>:<name>".
func schedulesKey(prefix string) string { return prefix + ":schedules" }
