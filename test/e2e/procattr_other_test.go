//go:build unix && !linux

package e2e

import "syscall"

// sysProcAttr has no parent-death signal outside Linux; TestMain and every
// test's cleanup still stop the children.
func sysProcAttr() *syscall.SysProcAttr { return nil }
