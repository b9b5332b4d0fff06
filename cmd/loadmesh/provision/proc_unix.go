//go:build unix

package provision

import (
	"errors"
	"os"
	"syscall"
)

// hookProcAttr puts a hook command in a process group of its own, so that
// killGroup reaches the children of a shell script too.
func hookProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// killGroup SIGKILLs p's whole process group.
func killGroup(p *os.Process) error {
	err := syscall.Kill(-p.Pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}
