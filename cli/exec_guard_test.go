package cli_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A test binary started as an exec guard gets here only if package cli's
// init did not run the guard: it exits rather than run the tests again, and
// again in each copy.
func init() {
	if os.Getenv("RQGO_EXEC_GUARD") == "1" {
		fmt.Fprintln(os.Stderr, "RQGO_EXEC_GUARD=1, but package cli did not run the exec guard")
		os.Exit(3)
	}
}

// A worker killed with SIGKILL leaves none of its --exec commands running:
// the command's whole process group dies with it, so the job's next attempt,
// on another worker, cannot run beside the old one.
func TestKilledWorkerKillsItsCommands(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pids := filepath.Join(t.TempDir(), "pids")
	e.enqueue(t, "hang")

	var stderr bytes.Buffer
	cmd := exec.Command(rqgoBin, "worker", "--lease", "1s",
		"--exec", "hang=sleep 60 & echo $$ $! > "+pids+".tmp; mv "+pids+".tmp "+pids+"; wait")
	cmd.Env = append(cleanEnv(), "REDIS_URL="+e.url, "RQGO_PREFIX="+e.prefix)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitFor(t, "the command to start its child", 10*time.Second, func() bool {
		_, err := os.Stat(pids)
		return err == nil
	})
	sh, child := readPIDs(t, pids)
	pgid, err := syscall.Getpgid(sh)
	if err != nil || !alive(child) {
		t.Fatalf("the command (pid %d, group %d, %v) or its child (pid %d, alive %v) is not running; worker stderr:\n%s",
			sh, pgid, err, child, alive(child), stderr.String())
	}
	t.Cleanup(func() { syscall.Kill(-pgid, syscall.SIGKILL) }) // when the test fails

	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	waitGroupGone(t, pgid, 5*time.Second)
}

// The exec guard, run by hand as a worker runs it: when the pipe from the
// worker closes, the guard kills the command's whole group, itself included.
func TestExecGuardKillsGroupAtEOF(t *testing.T) {
	t.Parallel()
	pids := filepath.Join(t.TempDir(), "pids")
	g, pipe := startGuard(t, "sleep 60 & echo $$ $! > "+pids+".tmp; mv "+pids+".tmp "+pids+"; wait")
	waitFor(t, "the command to start its child", 10*time.Second, func() bool {
		_, err := os.Stat(pids)
		return err == nil
	})
	sh, child := readPIDs(t, pids)
	if pgid, err := syscall.Getpgid(sh); err != nil || pgid != g.Process.Pid || !alive(child) {
		t.Fatalf("command in group %d (%v), child alive %v; want the guard's group %d and a live child",
			pgid, err, alive(child), g.Process.Pid)
	}

	pipe.Close()
	err := g.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("guard after EOF on its pipe: %v, want killed by SIGKILL", err)
	}
	waitGroupGone(t, g.Process.Pid, 5*time.Second)
}

// When the command exits, the guard exits with its status, and kills what
// the command left running in its group first, though its pipe is still
// open and nobody else kills the group.
func TestExecGuardExitStatusAndLeftovers(t *testing.T) {
	t.Parallel()
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	g, _ := startGuard(t, "sleep 60 & echo $! > "+pidFile+"; exit 5")
	err := g.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 5 {
		t.Fatalf("guard of a command that exits 5: %v, want exit status 5", err)
	}
	child := readPID(t, pidFile)
	t.Cleanup(func() { syscall.Kill(child, syscall.SIGKILL) }) // when the test fails
	waitFor(t, "the command's leftover child to die", 5*time.Second, func() bool { return !alive(child) })
}

// startGuard runs command under the exec guard as a worker does: this test
// binary, which imports package cli, run again with RQGO_EXEC_GUARD=1 in a
// process group of its own, with a pipe's read end as fd 3. It returns the
// guard and the pipe's write end.
func startGuard(t *testing.T, command string) (*exec.Cmd, *os.File) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	g := exec.Command(exe, "/bin/sh", "-c", command)
	g.Env = append(os.Environ(), "RQGO_EXEC_GUARD=1")
	g.ExtraFiles = []*os.File{pr}
	g.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	g.Stderr = os.Stderr
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	pr.Close()
	t.Cleanup(func() {
		if g.ProcessState == nil {
			syscall.Kill(-g.Process.Pid, syscall.SIGKILL)
			g.Wait()
		}
		pw.Close()
	})
	return g, pw
}

// readPIDs reads "SHELL_PID CHILD_PID" from file.
func readPIDs(t *testing.T, file string) (sh, child int) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	if len(f) == 2 {
		sh, err = strconv.Atoi(f[0])
		if err == nil {
			child, err = strconv.Atoi(f[1])
		}
	}
	if len(f) != 2 || err != nil {
		t.Fatalf("pid file holds %q, want two pids", b)
	}
	return sh, child
}

// waitGroupGone polls until no live process is left in process group pgid.
func waitGroupGone(t *testing.T, pgid int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		left := groupMembers(pgid)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s on, process group %d still runs pids %v, want none", d, pgid, left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// groupMembers returns the pids of the processes of group pgid, zombies
// aside (they are dead, waiting to be reaped). Without /proc it returns
// -pgid while kill(-pgid, 0) finds the group.
func groupMembers(pgid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		if syscall.Kill(-pgid, 0) == nil {
			return []int{-pgid}
		}
		return nil
	}
	var pids []int
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue // gone meanwhile
		}
		// "pid (comm) state ppid pgrp ...": the name may hold spaces.
		s := string(stat)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 2 && f[0] != "Z" && f[2] == strconv.Itoa(pgid) {
			pids = append(pids, pid)
		}
	}
	return pids
}
