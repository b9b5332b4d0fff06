//go:build !unix

package provision

import (
	"os"
	"syscall"
)

// hookProcAttr has no process group to set outside Unix.
func hookProcAttr() *syscall.SysProcAttr { return nil }

// killGroup kills p only: there is no process group to kill.
func killGroup(p *os.Process) error { return p.Kill() }
