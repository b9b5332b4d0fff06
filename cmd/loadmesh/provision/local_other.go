//go:build !unix

package provision

import "errors"

var errNotUnix = errors.New("the local provisioner needs a Unix system")

type child struct{ pid int }

func (c *child) exited() bool { return true }

func startDetached(bin, logPath string, args ...string) (*child, error) { return nil, errNotUnix }

func isAlive(pid int, marker string) bool { return false }

func signalTerm(pid int) {}
func signalKill(pid int) {}

func lockDir(path string) (func(), error) { return nil, errNotUnix }
