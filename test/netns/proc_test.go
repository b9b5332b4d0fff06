//go:build linux

package netns

// Child processes and one-shot commands. A small copy of test/chaos's
// proc_test.go (itself adapted from test/e2e), whose helpers are
// unexported: keep the three in step when one changes how agents are
// started. Here every process runs under `ip netns exec NS`.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/test/retry"
)

// bedToken is the test clusters' first operator API token, given to the
// agents as --bootstrap-token (through LOADMESH_BOOTSTRAP_TOKEN).
const bedToken = "lm_4057be0d4057be0d_4057be0d4057be0d4057be0d4057be0d4057be0d4057be0d4057be0d4057be0d"

// childEnv is the test's environment without its LOADMESH_* variables,
// plus the bootstrap token.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LOADMESH_") {
			env = append(env, kv)
		}
	}
	return append(env, "LOADMESH_BOOTSTRAP_TOKEN="+bedToken, "LOADMESH_TOKEN="+bedToken)
}

// process is one run of a child. Its output is appended to logPath.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed once the process is reaped
}

// running holds every child not yet reaped.
var running = struct {
	sync.Mutex
	m map[*process]bool
}{m: map[*process]bool{}}

// startProcess runs `ip netns exec ns loadmesh args...`, appending its
// output to logPath. It is stopped by PID when t ends (SIGTERM, then
// SIGKILL after 10 s), or killed by the signal handler.
func startProcess(t *testing.T, name, ns, logPath string, args ...string) *process {
	t.Helper()
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() // the child has its own descriptor
	fmt.Fprintf(f, "==== %s: started at %s in %s: loadmesh %s\n", name, time.Now().Format("15:04:05.000"), ns, strings.Join(args, " "))
	argv := append([]string{"netns", "exec", ns, loadmeshBin(t)}, args...)
	cmd := exec.Command("ip", argv...)
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = f, f
	// The kernel SIGKILLs the child if the test binary dies. `ip netns
	// exec` execs loadmesh in place: same PID, and the setting survives.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	running.Lock()
	running.m[p] = true
	running.Unlock()
	go func() {
		cmd.Wait()
		running.Lock()
		delete(running.m, p)
		running.Unlock()
		close(p.done)
	}()
	onCleanup(t, "stop "+name, func() {
		if !p.exited() && !p.stop(stopGrace()) {
			t.Logf("%s did not exit within %s of SIGTERM; killed it", name, stopGrace())
		}
	})
	return p
}

func stopGrace() time.Duration { return retry.Scale(10 * time.Second) }

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits up to grace, then SIGKILLs. It reports
// whether the process exited on its own.
func (p *process) stop(grace time.Duration) bool {
	if !p.exited() {
		p.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-p.done:
		return true
	case <-time.After(grace):
		p.kill()
		return false
	}
}

func (p *process) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

func (p *process) exitDesc() string {
	if !p.exited() {
		return "running"
	}
	return p.cmd.ProcessState.String()
}

// killLeftovers SIGKILLs every child still running and names them.
func killLeftovers() []string {
	running.Lock()
	var left []*process
	for p := range running.m {
		left = append(left, p)
	}
	running.Unlock()
	var names []string
	for _, p := range left {
		names = append(names, fmt.Sprintf("%s (pid %d)", p.name, p.pid()))
		p.kill()
	}
	return names
}

func readLog(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "[...]" + s[len(s)-n:]
	}
	return s
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// mustRun runs `loadmesh args...` in the test's namespace and returns its
// stdout; it fails t unless the command exits 0 within 20 s (scaled).
func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), retry.Scale(20*time.Second))
	defer cancel()
	cmd := exec.CommandContext(ctx, loadmeshBin(t), args...)
	cmd.Env = childEnv()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.WaitDelay = time.Second
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("loadmesh %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// tlsFiles are one node's --tls-ca, --tls-cert and --tls-key.
type tlsFiles struct{ ca, cert, key string }

// makePKI makes a cluster CA and a certificate for each node name with
// `loadmesh tls ca create` and `tls cert create`, as an operator does.
func makePKI(t *testing.T, names []string) map[string]tlsFiles {
	t.Helper()
	dir := filepath.Join(runDir, "pki")
	mustRun(t, "tls", "ca", "create", "--dir", dir, "--common-name", "test-hosts CA")
	ca, caKey := filepath.Join(dir, "loadmesh-ca.pem"), filepath.Join(dir, "loadmesh-ca-key.pem")
	out := map[string]tlsFiles{}
	for _, n := range names {
		mustRun(t, "tls", "cert", "create", "--node", n, "--dir", dir, "--ca", ca, "--ca-key", caKey)
		out[n] = tlsFiles{ca: ca, cert: filepath.Join(dir, n+".pem"), key: filepath.Join(dir, n+"-key.pem")}
	}
	return out
}

// sh runs a command for the test's plumbing (ip) and returns an error
// with its output when it fails.
func sh(name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
