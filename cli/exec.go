package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rqgo/rqgo"
)

// Limits of an --exec command's output.
const (
	maxStdout = 1 << 20 // stdout beyond this fails the attempt
	maxStderr = 4 << 10 // the tail of stderr kept for the job's error
)

// execWaitDelay is how long, after COMMAND exits or is killed, the handler
// waits for processes that escaped its process group and still hold its
// stdout or stderr open, before it closes them and returns.
const execWaitDelay = time.Second

// execHandler runs a job as an operator-configured shell command; see
// [parseExec] and the README's --exec contract.
type execHandler struct {
	name    string
	command string
	groups  *processGroups // nil: not tracked
}

// parseExec reads an --exec value, NAME=COMMAND.
func parseExec(v string) (*execHandler, error) {
	name, command, ok := strings.Cut(v, "=")
	name = strings.TrimSpace(name)
	switch {
	case !ok:
		return nil, usagef("want NAME=COMMAND")
	case name == "":
		return nil, usagef("the function NAME before '=' is empty")
	case strings.TrimSpace(command) == "":
		return nil, usagef("the COMMAND after '=' is empty")
	}
	return &execHandler{name: name, command: command}, nil
}

// ProcessJob runs the command under /bin/sh -c in a process group of its
// own, with the job's args on stdin. When ctx ends (the job's timeout, a
// lost lease, a shutdown past its grace period) the whole group is killed,
// so the command's children die with it; the group is also killed when the
// command exits, so nothing it left running in the background outlives the
// job.
func (h *execHandler) ProcessJob(ctx context.Context, j *rqgo.Job) (any, error) {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", h.command)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return killGroup(cmd.Process) }
	cmd.WaitDelay = execWaitDelay
	args := []byte(j.Args)
	if len(args) == 0 {
		args = []byte("null")
	}
	cmd.Stdin = bytes.NewReader(args)
	stdout := &capWriter{max: maxStdout}
	stderr := &tailWriter{max: maxStderr}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.Env = append(os.Environ(),
		"RQGO_JOB_ID="+j.ID,
		"RQGO_FUNC="+j.Func,
		"RQGO_ATTEMPT="+strconv.Itoa(j.Attempt),
		"RQGO_QUEUE="+j.Queue,
	)
	err := cmd.Start()
	if err == nil {
		if !h.groups.add(cmd.Process) {
			_ = killGroup(cmd.Process) // the worker has exited
		}
		err = cmd.Wait()
		_ = killGroup(cmd.Process) // whatever COMMAND left behind
		h.groups.remove(cmd.Process)
	}
	switch {
	case stdout.over:
		return nil, fmt.Errorf("%s: stdout exceeded the %d-byte (1 MiB) limit", h.name, maxStdout)
	case ctx.Err() != nil:
		cause := strings.TrimPrefix(context.Cause(ctx).Error(), "rqgo: ")
		return nil, fmt.Errorf("%s: process group killed (%s)%s", h.name, cause, stderr.suffix())
	case err != nil:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ee.Exited() {
				return nil, fmt.Errorf("%s: command exited with status %d%s", h.name, ee.ExitCode(), stderr.suffix())
			}
			return nil, fmt.Errorf("%s: command ended by %v%s", h.name, ee, stderr.suffix())
		}
		if errors.Is(err, exec.ErrWaitDelay) {
			break // exited 0, but a process it started held stdout open
		}
		return nil, fmt.Errorf("%s: %v", h.name, err)
	}
	out := stdout.buf.Bytes()
	out = bytes.TrimSuffix(out, []byte("\n"))
	out = bytes.TrimSuffix(out, []byte("\r"))
	if json.Valid(out) {
		return json.RawMessage(out), nil
	}
	return string(out), nil
}

// processGroups holds the process groups of the --exec commands running, so
// that the worker kills what is left of them before it exits. Run returns
// once it has given unfinished jobs back; a handler whose context it ended
// may not yet have killed its command, and the command must not outlive the
// worker and run next to the job's next attempt.
type processGroups struct {
	mu     sync.Mutex
	procs  map[*os.Process]bool
	closed bool
}

// add records p's group; false means the worker has exited and p must be
// killed.
func (g *processGroups) add(p *os.Process) bool {
	if g == nil {
		return true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	if g.procs == nil {
		g.procs = map[*os.Process]bool{}
	}
	g.procs[p] = true
	return true
}

func (g *processGroups) remove(p *os.Process) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.procs, p)
}

// killAll kills every group still running, and every group started later.
func (g *processGroups) killAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	for p := range g.procs {
		_ = killGroup(p)
	}
}

// killGroup sends SIGKILL to p's process group (p leads it: Setpgid).
func killGroup(p *os.Process) error {
	if p == nil {
		return nil
	}
	err := syscall.Kill(-p.Pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}

// capWriter keeps up to max bytes; past that it fails the write, which
// closes the pipe so a runaway command gets SIGPIPE.
type capWriter struct {
	buf  bytes.Buffer
	max  int
	over bool
}

func (w *capWriter) Write(p []byte) (int, error) {
	if w.buf.Len()+len(p) > w.max {
		w.over = true
		return 0, errors.New("stdout limit exceeded")
	}
	return w.buf.Write(p)
}

// tailWriter keeps the last max bytes written to it.
type tailWriter struct {
	buf       []byte
	max       int
	truncated bool
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	if over := len(w.buf) - w.max; over > 0 {
		w.buf = append(w.buf[:0], w.buf[over:]...)
		w.truncated = true
	}
	return len(p), nil
}

// suffix is ": <tail of stderr>" for an error message, or "" when stderr
// was empty. A tail that was cut starts at a line boundary after "…".
func (w *tailWriter) suffix() string {
	s := string(bytes.TrimRight(w.buf, "\r\n\t "))
	if w.truncated {
		if i := strings.IndexByte(s, '\n'); i >= 0 && i < len(s)-1 {
			s = s[i+1:]
		}
		s = "…" + s
	}
	if s == "" {
		return ""
	}
	return ": " + s
}
