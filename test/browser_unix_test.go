//go:build unix

package test

import (
	"os/exec"
	"syscall"
)

// browserProcAttr starts the browser in a process group of its own, so
// killBrowser can end its helper processes (renderer, GPU, crashpad) too.
func browserProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// killBrowser kills the browser's whole process group.
func killBrowser(cmd *exec.Cmd) error {
	if cmd.Process == nil {
		return nil
	}
	return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}
