//go:build !unix

package test

import (
	"os/exec"
	"syscall"
)

func browserProcAttr() *syscall.SysProcAttr { return nil }

func killBrowser(cmd *exec.Cmd) error {
	if cmd.Process == nil {
		return nil
	}
	return cmd.Process.Kill()
}
