//go:build unix

package provision

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// child is a process this run started.
type child struct {
	pid  int
	done chan struct{} // closed once it has exited and been reaped
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// startDetached starts bin args... in a session of its own, with stdin
// from /dev/null and stdout and stderr appended to logPath, so that it
// outlives this process and is not killed with its process group (the
// hook runner kills that group when the provisioner times out). The
// LOADMESH_* variables of this environment are not passed on: they are
// the configuration of the agent that ran the hook, and a new agent would
// read them as its own.
func startDetached(bin, logPath string, args ...string) (*child, error) {
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the child has its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LOADMESH_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{pid: cmd.Process.Pid, done: make(chan struct{})}
	// Reap it if it exits while this process lives; afterwards init does.
	go func() {
		cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// isAlive reports whether pid runs and, where /proc tells, is not a
// zombie and has marker in its command line: a pid in an old node.json
// may since have been reused by an unrelated process.
func isAlive(pid int, marker string) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	proc := "/proc/" + strconv.Itoa(pid)
	stat, err := os.ReadFile(proc + "/stat")
	if err != nil {
		if _, err := os.Stat("/proc/self/stat"); err == nil {
			return false // procfs works, so the process is gone
		}
		return true // no procfs: trust kill(0)
	}
	// pid (comm) state ...; comm may contain spaces and parentheses.
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
		return false
	}
	cmdline, err := os.ReadFile(proc + "/cmdline")
	if err != nil {
		return true
	}
	return marker == "" || bytes.Contains(cmdline, []byte(marker))
}

func signalTerm(pid int) { syscall.Kill(pid, syscall.SIGTERM) }
func signalKill(pid int) { syscall.Kill(pid, syscall.SIGKILL) }

// lockDir takes an exclusive lock on the file path, creating it.
func lockDir(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}
