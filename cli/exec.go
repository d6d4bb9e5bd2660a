package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
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
// own, led by an exec guard (see [runGuard]), with the job's args on stdin.
// When ctx ends (the job's timeout, a lost lease, a shutdown past its grace
// period) the whole group is killed, so the command's children die with it;
// the group is also killed when the command exits, so nothing it left
// running in the background outlives the job, and when the worker dies,
// however it dies.
func (h *execHandler) ProcessJob(ctx context.Context, j *rqgo.Job) (any, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("%s: %v", h.name, err)
	}
	defer pw.Close() // the guard is gone by then; this only frees the pipe
	cmd, err := guardCommand(ctx, h.command, pr)
	if err != nil {
		pr.Close()
		return nil, fmt.Errorf("%s: %v", h.name, err)
	}
	args := []byte(j.Args)
	if len(args) == 0 {
		args = []byte("null")
	}
	cmd.Stdin = bytes.NewReader(args)
	stdout := &capWriter{max: maxStdout}
	stderr := &tailWriter{max: maxStderr}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.Env = append(cmd.Env,
		"RQGO_JOB_ID="+j.ID,
		"RQGO_FUNC="+j.Func,
		"RQGO_ATTEMPT="+strconv.Itoa(j.Attempt),
		"RQGO_QUEUE="+j.Queue,
	)
	err = cmd.Start()
	pr.Close() // the guard's end; the worker keeps pw open while it lives
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
	// Compact, unlike Marshal, leaves <, > and & as the command wrote them.
	var compact bytes.Buffer
	if json.Compact(&compact, out) == nil {
		return json.RawMessage(compact.Bytes()), nil
	}
	return string(out), nil
}

// guardEnv, set to 1 in a process's environment, makes package cli's init
// run that process as an exec guard ([runGuard]) instead of the program.
// Because the check is in package cli, every program built with [Main] is
// its own guard, and so is a test binary of a package that imports cli.
const guardEnv = "RQGO_EXEC_GUARD"

// guardFD is the guard's file descriptor for the read end of a pipe whose
// write end only its worker holds.
const guardFD = 3

func init() {
	if os.Getenv(guardEnv) != "1" {
		return
	}
	// The guard hands on the command's exit status as its own, so it exits
	// here, before the program's main runs. It has nothing to flush, and
	// syscall.Exit spares a -race build the second os.Exit(0) waits there.
	syscall.Exit(runGuard(os.Args[1:]))
}

// guardCommand returns the command that runs shell command under an exec
// guard: this program run again, leading a new process group, with pipe,
// the read end of a pipe the caller keeps the write end of, as its fd 3.
// The command's environment is the worker's; the caller may append to
// cmd.Env.
//
// The guard does not get Pdeathsig: a SIGKILL sent when the worker dies
// would kill the guard before it read EOF and killed the group, leaving
// the command running, and the kernel sends it when the OS thread that
// started the guard exits, which need not be when the worker does. The pipe needs
// no such help: the kernel closes the worker's end when the worker dies,
// whatever the signal.
func guardCommand(ctx context.Context, command string, pipe *os.File) (*exec.Cmd, error) {
	exe, err := guardPath()
	if err != nil {
		return nil, fmt.Errorf("finding this program to run the exec guard: %w", err)
	}
	cmd := exec.CommandContext(ctx, exe, "/bin/sh", "-c", command)
	cmd.Args[0] = os.Args[0] // what ps shows
	cmd.ExtraFiles = []*os.File{pipe}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return killGroup(cmd.Process) }
	cmd.WaitDelay = execWaitDelay
	cmd.Env = append(os.Environ(), guardEnv+"=1")
	return cmd, nil
}

// guardPath is the program to run as the guard: on Linux /proc/self/exe,
// which names the running binary even after a deploy replaced or removed
// its file; elsewhere os.Executable.
var guardPath = sync.OnceValues(func() (string, error) {
	if runtime.GOOS == "linux" {
		if _, err := os.Lstat("/proc/self/exe"); err == nil {
			return "/proc/self/exe", nil
		}
	}
	return os.Executable()
})

// runGuard is the exec guard, the leader of an --exec command's process
// group. It runs args (/bin/sh -c COMMAND) in its group, with its stdin,
// stdout, stderr and environment (less guardEnv), and returns the
// command's exit status, or 128+N when signal N ended it. When the pipe on
// guardFD reaches EOF, because the worker died (SIGKILL included: the
// kernel closes a dead process's files) or closed its end, the guard kills
// its whole group with SIGKILL, itself included. When the command exits,
// the guard kills what the command left in the group before it exits.
//
// The guard catches SIGHUP, SIGINT, SIGQUIT and SIGTERM, so it outlives
// none of the command's processes; signals sent to the group reach the
// command all the same.
func runGuard(args []string) int {
	os.Unsetenv(guardEnv)
	pgid := syscall.Getpid()
	worker := os.NewFile(guardFD, "worker pipe")
	fi, err := worker.Stat()
	switch {
	case len(args) == 0:
		return guardFail("no command to run")
	case syscall.Getpgrp() != pgid:
		return guardFail("not the leader of a process group of its own")
	case err != nil || fi.Mode()&os.ModeNamedPipe == 0:
		return guardFail(fmt.Sprintf("no pipe from the worker on fd %d", guardFD))
	}
	syscall.CloseOnExec(guardFD) // the command must not hold the pipe
	signal.Notify(make(chan os.Signal, 1), syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM)
	go func() {
		io.Copy(io.Discard, worker) // the worker never writes: this waits for EOF
		syscall.Kill(-pgid, syscall.SIGKILL)
		syscall.Exit(128 + int(syscall.SIGKILL)) // reached only after leaving the group below
	}()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err = cmd.Run()
	// To kill the rest of its group and still exit with the command's
	// status, the guard first moves to its parent's process group, which
	// is in the same session while the worker lives. (The pipe's goroutine
	// kills the group by its id, never the guard's group of the moment.)
	// Should the move fail, the worker is gone and the guard dies with
	// its group.
	if ppgid, perr := syscall.Getpgid(os.Getppid()); perr == nil {
		_ = syscall.Setpgid(0, ppgid)
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	default:
		fmt.Fprintf(os.Stderr, "rqgo: exec guard: %v\n", err)
		return 127
	}
}

func guardFail(why string) int {
	fmt.Fprintf(os.Stderr, "rqgo: %s=1 is set, but this process cannot guard a command: %s\n", guardEnv, why)
	return 2
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
