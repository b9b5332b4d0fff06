package main

// Process handling, trimmed from schedbench (test/bench/cmd/schedbench/procs.go).

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// procs starts and tracks every process of one cluster. Each PID is also
// appended to a file, so that the calling script can kill leftovers by PID
// should this program itself be killed.
type procs struct {
	dir     string
	pidFile string

	mu   sync.Mutex
	list []*proc
}

// proc is one started process.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// start runs name with args, logging to dir/<label>.log.
func (ps *procs) start(label, name string, args ...string) (*proc, error) {
	logPath := filepath.Join(ps.dir, label+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	// Should this program die without cleaning up, the kernel kills its
	// children too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", label, err)
	}
	p := &proc{name: label, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	ps.mu.Lock()
	ps.list = append(ps.list, p)
	ps.mu.Unlock()
	if ps.pidFile != "" {
		if pf, err := os.OpenFile(ps.pidFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
			fmt.Fprintln(pf, cmd.Process.Pid)
			pf.Close()
		}
	}
	return p, nil
}

// stop terminates every process it started, in reverse start order and by
// PID: SIGTERM, then SIGKILL after a grace period.
func (ps *procs) stop() {
	ps.mu.Lock()
	list := ps.list
	ps.list = nil
	ps.mu.Unlock()
	for i := len(list) - 1; i >= 0; i-- {
		p := list[i]
		if p.exited() {
			continue
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(3 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
}

// dead returns an error naming the first started process that has exited.
func (ps *procs) dead() error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, p := range ps.list {
		if p.exited() {
			return fmt.Errorf("%s exited: %v\n%s", p.name, p.err, p.tail(15))
		}
	}
	return nil
}

// tail returns the last n lines of a process's log.
func (p *proc) tail(n int) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ports hands out distinct loopback ports that are free for both TCP and
// UDP (memberlist gossips on both, the peer channel is QUIC over UDP).
type ports map[int]bool

func (p ports) next() (int, error) {
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		uc, err := net.ListenPacket("udp", addr(port))
		ln.Close()
		if err != nil || p[port] {
			if uc != nil {
				uc.Close()
			}
			continue
		}
		uc.Close()
		p[port] = true
		return port, nil
	}
	return 0, errors.New("no free port")
}

func addr(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }
