package e2e

import "syscall"

// sysProcAttr makes the kernel SIGKILL a child when the test binary dies,
// so a test that panics or times out cannot leave agents running.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
