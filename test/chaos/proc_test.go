//go:build linux

package chaos

// Process handling: building the binary, starting and signalling children,
// ports, the cluster PKI. ADAPTED FROM test/e2e/process_test.go (its helpers
// are unexported and test/e2e is being edited by others); keep the two in
// step when one changes how agents are started. Differences: a process can
// run under a command prefix (`ip netns exec NS`), can be restarted with the
// same command line and log file, and can be sent any signal.

import (
	"context"
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
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/test/retry"
)

var (
	// binDir holds the binary built for this run and the PKI; TestMain
	// removes it.
	binDir  string
	binOnce sync.Once
	binPath string
	binErr  error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "loadmesh-chaos-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	printReports()
	if left := killLeftovers(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "chaos: processes still running after the tests (killed now): %s\n", strings.Join(left, ", "))
		code = 1
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// loadmeshBin returns the loadmesh binary, building it on first use (set
// LOADMESH_E2E_BINARY to test one built elsewhere).
func loadmeshBin(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		if p := os.Getenv("LOADMESH_E2E_BINARY"); p != "" {
			binPath, binErr = filepath.Abs(p)
			return
		}
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			binErr = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		gomod := strings.TrimSpace(string(out))
		if gomod == "" || gomod == os.DevNull {
			binErr = errors.New("go env GOMOD: not inside a Go module")
			return
		}
		bin := filepath.Join(binDir, "loadmesh")
		cmd := exec.Command("go", "build", "-o", bin, "./cmd/loadmesh")
		cmd.Dir = filepath.Dir(gomod)
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build ./cmd/loadmesh: %v\n%s", err, out)
			return
		}
		binPath = bin
	})
	if binErr != nil {
		t.Fatalf("loadmesh binary: %v", binErr)
	}
	return binPath
}

// chaosToken is every chaos cluster's first operator API token
// (--bootstrap-token through LOADMESH_BOOTSTRAP_TOKEN).
const chaosToken = "lm_c4a05c4a05c4a05c_c4a05c4a05c4a05c4a05c4a05c4a05c4a05c4a05c4a05c4a05c4a05c4a05c4a0"

// childEnv is the test's environment without its LOADMESH_* variables plus
// the chaos token, plus extra.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LOADMESH_") {
			env = append(env, kv)
		}
	}
	env = append(env, "LOADMESH_BOOTSTRAP_TOKEN="+chaosToken, "LOADMESH_TOKEN="+chaosToken)
	return append(env, extra...)
}

// process is one run of a loadmesh child. Its stdout and stderr are
// appended to logPath, which outlives restarts.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	// done is closed once the process has exited and been reaped.
	done chan struct{}
}

// running holds every child not yet reaped, for TestMain's last check.
var running = struct {
	sync.Mutex
	m map[*process]bool
}{m: map[*process]bool{}}

// startProcess runs `prefix... loadmesh args...`, appending its output to
// logPath. The process is stopped (SIGCONT, SIGTERM, then SIGKILL after
// 10s) when the test ends.
func startProcess(t *testing.T, name, logPath string, prefix, args []string) *process {
	t.Helper()
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() // the child has its own descriptor
	fmt.Fprintf(f, "==== %s: started by the test at %s: loadmesh %s\n", name, time.Now().Format("15:04:05.000"), strings.Join(args, " "))
	argv := append(append(append([]string{}, prefix...), loadmeshBin(t)), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = f, f
	// The kernel SIGKILLs the child if the test binary dies. `ip netns
	// exec` execs the agent in place, so it keeps the PID and this setting.
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
	t.Cleanup(func() {
		if !p.exited() {
			p.signal(syscall.SIGCONT) // a stopped process cannot act on SIGTERM
			if !p.stop(stopGrace()) {
				t.Logf("%s did not exit within %s of SIGTERM; killed it", p.name, stopGrace())
			}
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

func (p *process) signal(sig syscall.Signal) {
	if !p.exited() {
		p.cmd.Process.Signal(sig)
	}
}

// stop sends SIGTERM and waits up to grace for the process to exit, then
// SIGKILLs it. It reports whether the process exited on its own.
func (p *process) stop(grace time.Duration) bool {
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return true
	case <-time.After(grace):
		p.kill()
		return false
	}
}

// kill sends SIGKILL and waits until the process has been reaped.
func (p *process) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// exitDesc describes how the process ended ("exit status 0", "signal:
// killed", ...); "running" while it runs.
func (p *process) exitDesc() string {
	if !p.exited() {
		return "running"
	}
	return p.cmd.ProcessState.String()
}

// killLeftovers kills every child still running and names them.
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

// readLog returns the whole log file of a process (all its runs).
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

// ---------------------------------------------------------------------------
// Ports

// handedOut remembers every port given out, so that two agents never get
// the same one even when the kernel hands it out again.
var handedOut = struct {
	sync.Mutex
	m map[int]bool
}{m: map[int]bool{}}

// freeAddr returns 127.0.0.1:PORT with PORT free for TCP, UDP or both at
// the time of the call. Another program may take it before the child binds
// it; the cluster start retries once on "address already in use".
func freeAddr(t testing.TB, tcp, udp bool) string {
	t.Helper()
	var err error
	for range 100 {
		var port int
		if port, err = tryPort(tcp, udp); err == nil {
			return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		}
	}
	t.Fatalf("no free loopback port: %v", err)
	return ""
}

func tryPort(tcp, udp bool) (int, error) {
	port := 0
	if tcp {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		defer ln.Close()
		port = ln.Addr().(*net.TCPAddr).Port
	}
	if udp {
		pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			return 0, err
		}
		defer pc.Close()
		port = pc.LocalAddr().(*net.UDPAddr).Port
	}
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.m[port] {
		return 0, fmt.Errorf("port %d was handed out before", port)
	}
	handedOut.m[port] = true
	return port, nil
}

// ---------------------------------------------------------------------------
// PKI and one-shot commands

// tlsFiles are the --tls-ca, --tls-cert and --tls-key files of one node.
type tlsFiles struct{ ca, cert, key string }

var pki = struct {
	sync.Mutex
	dirs  map[string]string // CA name -> directory
	nodes map[string]bool   // CA name + "/" + node name
}{dirs: map[string]string{}, nodes: map[string]bool{}}

// nodeTLS returns the TLS files of node name under the CA called caName
// ("cluster" for the chaos clusters; another name makes a foreign CA),
// issuing the CA and the certificate on first use.
func nodeTLS(t *testing.T, caName, name string) tlsFiles {
	t.Helper()
	pki.Lock()
	defer pki.Unlock()
	dir := pki.dirs[caName]
	if dir == "" {
		dir = filepath.Join(binDir, "pki-"+caName)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		mustRun(t, "tls", "ca", "create", "--dir", dir, "--common-name", "chaos "+caName+" CA")
		pki.dirs[caName] = dir
	}
	f := tlsFiles{
		ca:   filepath.Join(dir, "loadmesh-ca.pem"),
		cert: filepath.Join(dir, name+".pem"),
		key:  filepath.Join(dir, name+"-key.pem"),
	}
	if !pki.nodes[caName+"/"+name] {
		mustRun(t, "tls", "cert", "create", "--node", name, "--dir", dir,
			"--ca", f.ca, "--ca-key", filepath.Join(dir, "loadmesh-ca-key.pem"))
		pki.nodes[caName+"/"+name] = true
	}
	return f
}

// mustRun runs `loadmesh args...` to completion and returns its stdout;
// it fails t unless the command exits 0 within 20s (scaled).
func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	timeout := retry.Scale(20 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
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

// haveCmd reports whether name is an executable on PATH.
func haveCmd(name string) bool {
	_, err := exec.LookPath(name)
	return err == nil
}

// sh runs a command for the test's own plumbing (ip, mount) and returns
// an error with its output when it fails.
func sh(name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
