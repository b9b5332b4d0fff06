// Package benchproc starts, watches and stops the processes of the
// benchmark programs (lmbench, schedbench, reactbench): agents and backends
// on loopback, each logging to a file, each stopped by PID.
package benchproc

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Procs starts and tracks every process of a benchmark run. Each PID is
// also appended to a file, so that the calling script can kill leftovers
// by PID if this program itself is killed.
type Procs struct {
	// Dir receives each process's log, <label>.log.
	Dir string
	// PIDFile, when set, gets every started PID appended.
	PIDFile string

	mu   sync.Mutex
	list []*Proc
}

// Proc is one started process.
type Proc struct {
	// Name is the label it was started with.
	Name string
	// Err is its exit error, valid once Exited.
	Err  error
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func (p *Proc) PID() int { return p.cmd.Process.Pid }

func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Start runs name with args, logging to dir/<label>.log.
func (ps *Procs) Start(label, name string, args ...string) (*Proc, error) {
	logPath := filepath.Join(ps.Dir, label+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	// Pdeathsig: should this program die without cleaning up, the kernel
	// kills its children too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", label, err)
	}
	p := &Proc{Name: label, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.Err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	ps.mu.Lock()
	ps.list = append(ps.list, p)
	ps.mu.Unlock()
	if ps.PIDFile != "" {
		if pf, err := os.OpenFile(ps.PIDFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
			fmt.Fprintln(pf, cmd.Process.Pid)
			pf.Close()
		}
	}
	return p, nil
}

// Kill sends SIGKILL to the process (by its PID) and waits until it is
// reaped, at most 5s.
func (p *Proc) Kill() error {
	if p.Exited() {
		return fmt.Errorf("%s had exited already: %v", p.Name, p.Err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("%s (pid %d) still running 5s after SIGKILL", p.Name, p.PID())
	}
}

// Stop terminates every process in reverse start order: SIGTERM, then
// SIGKILL after a grace period.
func (ps *Procs) Stop() {
	ps.mu.Lock()
	list := ps.list
	ps.list = nil
	ps.mu.Unlock()
	for i := len(list) - 1; i >= 0; i-- {
		p := list[i]
		if p.Exited() {
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

// Dead returns an error naming the first started process that has exited.
func (ps *Procs) Dead() error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, p := range ps.list {
		if p.Exited() {
			return fmt.Errorf("%s exited: %v\n%s", p.Name, p.Err, p.Tail(20))
		}
	}
	return nil
}

// Tail returns the last n lines of a process's log.
func (p *Proc) Tail(n int) string {
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

// CPUSeconds is the user+system CPU time a process has used so far,
// all threads included.
func CPUSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("bad stat")
	}
	f := strings.Fields(s[i+1:])
	// After the command: state(0) ppid(1) ... utime(11) stime(12).
	if len(f) < 13 {
		return 0, errors.New("short stat")
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (u + st) / 100, nil // USER_HZ is 100 on Linux
}

// MemKiB returns VmRSS and VmHWM of a process in KiB.
func MemKiB(pid int) (rss, hwm int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		var dst *int64
		switch {
		case strings.HasPrefix(line, "VmRSS:"):
			dst = &rss
		case strings.HasPrefix(line, "VmHWM:"):
			dst = &hwm
		default:
			continue
		}
		fs := strings.Fields(line)
		if len(fs) >= 2 {
			*dst, _ = strconv.ParseInt(fs[1], 10, 64)
		}
	}
	return rss, hwm, sc.Err()
}

// ResetPeakRSS resets VmHWM to the current RSS (Linux clear_refs 5).
func ResetPeakRSS(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// FreePort returns a loopback port that is free for both TCP and UDP
// (memberlist gossips on both).
func FreePort() (int, error) {
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		uc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		ln.Close()
		if err != nil {
			continue
		}
		uc.Close()
		return port, nil
	}
	return 0, errors.New("no free port")
}

// Ports hands out distinct free ports.
type Ports map[int]bool

func (p Ports) Next() (int, error) {
	for range 50 {
		n, err := FreePort()
		if err != nil {
			return 0, err
		}
		if !p[n] {
			p[n] = true
			return n, nil
		}
	}
	return 0, errors.New("no free port")
}

// Addr is the loopback address of port.
func Addr(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }
