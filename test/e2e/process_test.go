//go:build unix

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/test/retry"
)

// ---------------------------------------------------------------------------
// The binary

var (
	// binDir holds the binary built for this run; TestMain removes it.
	binDir  string
	binOnce sync.Once
	binPath string
	binErr  error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "loadmesh-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	if left := killLeftovers(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "e2e: processes still running after the tests (killed now): %s\n", strings.Join(left, ", "))
		code = 1
	}
	httpClient.CloseIdleConnections()
	os.RemoveAll(dir)
	os.Exit(code)
}

// loadmeshBin returns the path of the loadmesh binary, building it on first
// use so that `go test -short` builds nothing.
func loadmeshBin(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		if p := os.Getenv("LOADMESH_E2E_BINARY"); p != "" {
			binPath, binErr = filepath.Abs(p)
			return
		}
		binPath, binErr = buildBinary(binDir)
	})
	if binErr != nil {
		t.Fatalf("loadmesh binary: %v", binErr)
	}
	return binPath
}

func buildBinary(dir string) (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("go env GOMOD: not inside a Go module")
	}
	bin := filepath.Join(dir, "loadmesh")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/loadmesh")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/loadmesh: %v\n%s", err, out)
	}
	return bin, nil
}

// childEnv is the test's environment without its LOADMESH_* variables, so
// that a developer's settings cannot leak into the children, plus the
// test clusters' operator token (agents bootstrap with it, commands send
// it), plus extra.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LOADMESH_") {
			env = append(env, kv)
		}
	}
	env = append(env, "LOADMESH_BOOTSTRAP_TOKEN="+e2eToken, "LOADMESH_TOKEN="+e2eToken)
	return append(env, extra...)
}

// e2eToken is every test cluster's first operator API token.
const e2eToken = "lm_e2e0000000000000_e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0"

// ---------------------------------------------------------------------------
// Long-running processes

// process is a running loadmesh child. Its stdout and stderr go to one log
// file, printed when the test fails.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	// ready reports whether the process serves; set by whoever starts it.
	ready func() error
	// done is closed once the process has exited and been reaped; after
	// that cmd.ProcessState is set.
	done chan struct{}
}

// running holds every child not yet reaped, for TestMain's last check.
var running = struct {
	sync.Mutex
	m map[*process]bool
}{m: map[*process]bool{}}

// startProcess runs `loadmesh args...` with env added to the environment.
// The process is stopped when the test ends (SIGTERM, then SIGKILL after
// 10s), and its log is printed if the test failed.
func startProcess(t *testing.T, name string, env []string, args ...string) *process {
	t.Helper()
	bin := loadmeshBin(t)
	// t.TempDir registers its removal before the cleanup below, so the
	// directory outlives the process and its log can still be printed.
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() // the child has its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Env = childEnv(env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = sysProcAttr()
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
		if !p.exited() && !p.stop() {
			t.Logf("%s did not exit within %s of SIGTERM; killed it", p.name, stopGrace())
		}
		if t.Failed() {
			t.Logf("==== %s: loadmesh %s (%s) ====\n%s", p.name, strings.Join(args, " "), p.cmd.ProcessState, p.logTail(64<<10))
		}
	})
	return p
}

func stopGrace() time.Duration { return retry.Scale(10 * time.Second) }

// exited reports whether the process has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits for the process to exit; after 10s (scaled)
// it sends SIGKILL. It reports whether the process exited on its own.
func (p *process) stop() bool {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return true
	case <-time.After(stopGrace()):
		p.kill()
		return false
	}
}

// kill sends SIGKILL and waits until the process has been reaped.
func (p *process) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// log returns everything the process has written so far.
func (p *process) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

func (p *process) logTail(n int) string {
	s := p.log()
	if len(s) > n {
		s = "[...]" + s[len(s)-n:]
	}
	return s
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
		names = append(names, fmt.Sprintf("%s (pid %d)", p.name, p.cmd.Process.Pid))
		p.kill()
	}
	return names
}

// errAddrInUse is a start-up failure because another program took a port
// between freeAddr and the child's bind.
type errAddrInUse struct{ error }

// waitStarted waits until every process passes its readiness check. It
// fails fast when one exits, with errAddrInUse if a port was taken.
func waitStarted(procs []*process) error {
	var last, exit error
	timeout := 20 * time.Second
	ok := retry.Until(timeout, func(r *retry.R) {
		for _, p := range procs {
			if p.exited() {
				exit = p.earlyExit()
				return // stop retrying
			}
			if err := p.ready(); err != nil {
				last = fmt.Errorf("%s: %w", p.name, err)
				r.Fatalf("%v", last)
			}
		}
	})
	switch {
	case exit != nil:
		return exit
	case !ok:
		return fmt.Errorf("not ready after %s: %v", retry.Scale(timeout), last)
	}
	return nil
}

func (p *process) earlyExit() error {
	log := strings.TrimSpace(p.log())
	lastLine := log[strings.LastIndexByte(log, '\n')+1:]
	err := fmt.Errorf("%s exited during start-up (%s): %s", p.name, p.cmd.ProcessState, lastLine)
	if strings.Contains(log, "address already in use") {
		return errAddrInUse{err}
	}
	return err
}

// launch starts a set of processes and waits until all are ready. When one
// of them could not bind a port, it stops them all and calls startAll
// again, once; startAll must pick fresh ports every time.
func launch(t *testing.T, what string, startAll func() []*process) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		procs := startAll()
		err := waitStarted(procs)
		if err == nil {
			return
		}
		for _, p := range procs {
			p.stop()
		}
		var inUse errAddrInUse
		if attempt == 2 || !errors.As(err, &inUse) {
			t.Fatalf("start %s: %v", what, err)
		}
		t.Logf("start %s: %v; starting again on fresh ports", what, err)
	}
}

// ---------------------------------------------------------------------------
// Ports

// handedOut remembers every port given to a test, so that two tests never
// get the same one even when the kernel hands it out again.
var handedOut = struct {
	sync.Mutex
	m map[int]bool
}{m: map[int]bool{}}

// freeAddr returns 127.0.0.1:PORT with PORT free for TCP, UDP or both (the
// gossip port needs both) at the time of the call.
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
// Agents and backends

// agentNode is the command line of one agent, on fresh loopback ports, and
// its process once started.
type agentNode struct {
	name, dataDir                 string
	gossip, raft, peer, http, api string
	backend                       string
	tls                           tlsFiles
	join                          []string
	bootstrapExpect               int
	// argv, when set, replaces the command line args builds; env is added
	// to the agent's environment.
	argv, env []string

	proc        *process
	startedAt   time.Time
	backendName string
}

// newAgentNode picks ports and a data dir for an agent named name.
func newAgentNode(t *testing.T, name string) *agentNode {
	t.Helper()
	return &agentNode{
		name:    name,
		dataDir: filepath.Join(t.TempDir(), "data"),
		gossip:  freeAddr(t, true, true),
		raft:    freeAddr(t, true, false),
		peer:    freeAddr(t, false, true),
		http:    freeAddr(t, true, false),
		api:     freeAddr(t, true, false),
		tls:     nodeTLS(t, name),
	}
}

// rename gives the agent another name, and that node's certificate.
func (a *agentNode) rename(t *testing.T, name string) {
	t.Helper()
	a.name, a.tls = name, nodeTLS(t, name)
}

// startAgent starts one agent named name on fresh ports, after setup has
// adjusted its command line, and waits until its API answers.
func startAgent(t *testing.T, name string, setup func(a *agentNode)) *agentNode {
	t.Helper()
	var a *agentNode
	launch(t, "agent "+name, func() []*process {
		a = newAgentNode(t, name)
		if setup != nil {
			setup(a)
		}
		return []*process{a.start(t)}
	})
	return a
}

// args is the agent's command line.
func (a *agentNode) args() []string {
	args := []string{"agent",
		"--name", a.name, "--data-dir", a.dataDir,
		"--gossip", a.gossip, "--raft", a.raft, "--peer", a.peer, "--http", a.http, "--api", a.api,
	}
	if a.tls != (tlsFiles{}) {
		args = append(args, "--tls-ca", a.tls.ca, "--tls-cert", a.tls.cert, "--tls-key", a.tls.key)
	}
	if a.backend != "" {
		args = append(args, "--backend", a.backend)
	}
	if a.bootstrapExpect > 0 {
		args = append(args, "--bootstrap-expect", strconv.Itoa(a.bootstrapExpect))
	}
	if len(a.join) > 0 {
		args = append(args, "--join", strings.Join(a.join, ","))
	}
	return args
}

// start starts the agent; it is ready once its API answers /healthz.
func (a *agentNode) start(t *testing.T) *process {
	t.Helper()
	args := a.argv
	if args == nil {
		args = a.args()
	}
	a.proc = startProcess(t, a.name, a.env, args...)
	a.startedAt = time.Now()
	a.proc.ready = func() error { return httpOK("http://" + a.api + "/healthz") }
	return a.proc
}

// startBackend starts `loadmesh backend` named name for the agent; it is
// ready once it answers.
func (a *agentNode) startBackend(t *testing.T, name string) *process {
	t.Helper()
	addr := freeAddr(t, true, false)
	a.backend, a.backendName = "http://"+addr, name
	p := startProcess(t, name, nil, "backend", "--listen", addr, "--name", name)
	p.ready = func() error { return httpOK(a.backend + "/") }
	return p
}

// testCluster is n agents that expect each other, each optionally fronting
// its own backend process.
type testCluster struct {
	agents []*agentNode
	// lastStart is when the last agent process was started.
	lastStart time.Time
}

// startCluster starts n agents with --bootstrap-expect n, each joining all
// the others, and (withBackends) a backend for each, and waits until every
// process answers. It does not wait for a leader.
func startCluster(t *testing.T, n int, withBackends bool) *testCluster {
	t.Helper()
	return startClusterWith(t, n, withBackends)
}

// startClusterWith is startCluster with extra agent flags.
func startClusterWith(t *testing.T, n int, withBackends bool, extra ...string) *testCluster {
	t.Helper()
	c := &testCluster{}
	launch(t, fmt.Sprintf("%d-agent cluster", n), func() []*process {
		c.agents = make([]*agentNode, n)
		for i := range c.agents {
			c.agents[i] = newAgentNode(t, fmt.Sprintf("node%d", i+1))
		}
		var procs []*process
		for i, a := range c.agents {
			a.bootstrapExpect = n
			for j, b := range c.agents {
				if j != i {
					a.join = append(a.join, b.gossip)
				}
			}
			if withBackends {
				procs = append(procs, a.startBackend(t, fmt.Sprintf("b%d", i+1)))
			}
			if len(extra) > 0 {
				a.argv = append(a.args(), extra...)
			}
		}
		for _, a := range c.agents {
			procs = append(procs, a.start(t))
		}
		c.lastStart = c.agents[n-1].startedAt
		return procs
	})
	return c
}

func apis(agents []*agentNode) []string {
	var out []string
	for _, a := range agents {
		out = append(out, a.api)
	}
	return out
}

func (c *testCluster) agent(name string) *agentNode {
	for _, a := range c.agents {
		if a.name == name {
			return a
		}
	}
	return nil
}

func (c *testCluster) without(name string) []*agentNode {
	var out []*agentNode
	for _, a := range c.agents {
		if a.name != name {
			out = append(out, a)
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// The status API and the ingress

var httpClient = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}

// status is the documented JSON of GET /v1/status, decoded independently of
// the agent's Go types so that renaming a field breaks this test.
type status struct {
	Node struct {
		Name  string `json:"name"`
		Zone  string `json:"zone"`
		State string `json:"state"`
	} `json:"node"`
	Leader string `json:"leader"`
	Raft   struct {
		State       string   `json:"state"`
		Term        uint64   `json:"term"`
		CommitIndex uint64   `json:"commit_index"`
		Voters      []string `json:"voters"`
		Nonvoters   []string `json:"nonvoters"`
	} `json:"raft"`
	Members []member `json:"members"`
}

type member struct {
	Name      string `json:"name"`
	Status    string `json:"status"`
	Zone      string `json:"zone"`
	Addresses struct {
		Gossip string `json:"gossip"`
		HTTP   string `json:"http"`
		Peer   string `json:"peer"`
		Raft   string `json:"raft"`
		API    string `json:"api"`
	} `json:"addresses"`
}

func (st status) member(name string) (member, bool) {
	for _, m := range st.Members {
		if m.Name == name {
			return m, true
		}
	}
	return member{}, false
}

// get fetches u with a short timeout, so that a poll loop stays responsive
// when a process hangs.
func get(u string) (*http.Response, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), retry.Scale(2*time.Second))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

func httpOK(u string) error {
	resp, body, err := get(u)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", u, resp.Status, bytes.TrimSpace(body))
	}
	return nil
}

func getStatus(api string) (status, error) {
	var st status
	u := "http://" + api + "/v1/status"
	resp, body, err := get(u)
	if err != nil {
		return st, err
	}
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("GET %s: %v", u, err)
	}
	return st, nil
}

// agreedLeader asks every API for its status and returns the leader they
// all name. The named leader, if asked, must itself be in raft state Leader.
func agreedLeader(apis []string) (string, []status, error) {
	sts := make([]status, len(apis))
	for i, api := range apis {
		st, err := getStatus(api)
		if err != nil {
			return "", nil, err
		}
		if st.Leader == "" {
			return "", nil, fmt.Errorf("%s knows no leader (raft %s, term %d)", st.Node.Name, st.Raft.State, st.Raft.Term)
		}
		if i > 0 && st.Leader != sts[0].Leader {
			return "", nil, fmt.Errorf("%s names leader %s, %s names %s", sts[0].Node.Name, sts[0].Leader, st.Node.Name, st.Leader)
		}
		sts[i] = st
	}
	leader := sts[0].Leader
	for _, st := range sts {
		if st.Node.Name == leader && st.Raft.State != "Leader" {
			return "", nil, fmt.Errorf("%s is named leader but is in raft state %s", leader, st.Raft.State)
		}
	}
	return leader, sts, nil
}

// sendRequests sends n GETs round-robin over the agents' ingress ports and
// checks that every one is answered 200 by one of the agents, through that
// agent's own backend. It returns how many each agent served.
func sendRequests(t *testing.T, agents []*agentNode, n int) map[string]int {
	t.Helper()
	backendOf := map[string]string{}
	for _, a := range agents {
		backendOf[a.name] = a.backendName
	}
	served := map[string]int{}
	var failures []string
	for i := range n {
		a := agents[i%len(agents)]
		u := fmt.Sprintf("http://%s/e2e/%d", a.http, i)
		resp, body, err := get(u)
		switch {
		case err != nil:
			failures = append(failures, err.Error())
			continue
		case resp.StatusCode != http.StatusOK:
			failures = append(failures, fmt.Sprintf("GET %s: %s: %s", u, resp.Status, bytes.TrimSpace(body)))
			continue
		}
		node := resp.Header.Get("X-Loadmesh-Node")
		want, ok := backendOf[node]
		switch {
		case !ok:
			failures = append(failures, fmt.Sprintf("GET %s: X-Loadmesh-Node %q, want one of %v", u, node, slices.Sorted(maps.Keys(backendOf))))
		case resp.Header.Get("X-Backend") != want:
			failures = append(failures, fmt.Sprintf("GET %s: served by node %s through backend %q, want %q", u, node, resp.Header.Get("X-Backend"), want))
		default:
			served[node]++
		}
	}
	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed; the first: %s", len(failures), n, failures[0])
	}
	return served
}

// ---------------------------------------------------------------------------
// Mutual TLS between nodes

// pki is the cluster CA and the node certificates, made with `loadmesh tls`
// on first use and shared by every test: node names repeat across tests.
var pki = struct {
	sync.Mutex
	dir   string
	nodes map[string]bool
}{nodes: map[string]bool{}}

// tlsFiles are the --tls-ca, --tls-cert and --tls-key files of one node.
type tlsFiles struct{ ca, cert, key string }

// nodeTLS returns the TLS files for the node named name, issuing its
// certificate (and the CA, the first time) if needed.
func nodeTLS(t *testing.T, name string) tlsFiles {
	t.Helper()
	pki.Lock()
	defer pki.Unlock()
	if pki.dir == "" {
		dir := filepath.Join(binDir, "pki")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		mustRun(t, "tls", "ca", "create", "--dir", dir)
		pki.dir = dir
	}
	f := tlsFiles{
		ca:   filepath.Join(pki.dir, "loadmesh-ca.pem"),
		cert: filepath.Join(pki.dir, name+".pem"),
		key:  filepath.Join(pki.dir, name+"-key.pem"),
	}
	if !pki.nodes[name] {
		mustRun(t, "tls", "cert", "create", "--node", name, "--dir", pki.dir,
			"--ca", f.ca, "--ca-key", filepath.Join(pki.dir, "loadmesh-ca-key.pem"))
		pki.nodes[name] = true
	}
	return f
}

// ---------------------------------------------------------------------------
// One-shot commands

type result struct {
	stdout, stderr string
	code           int
}

// run runs `loadmesh args...` to completion, failing t if it takes more
// than 20s (scaled).
func run(t *testing.T, env []string, args ...string) result {
	t.Helper()
	timeout := retry.Scale(20 * time.Second)
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, loadmeshBin(t), args...)
	cmd.Env = childEnv(env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = sysProcAttr()
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("loadmesh %s: still running after %s; killed it. stderr:\n%s", strings.Join(args, " "), timeout, stderr.String())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("loadmesh %s: %v", strings.Join(args, " "), err)
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}

// mustRun runs `loadmesh args...` and fails t unless it exits 0.
func mustRun(t *testing.T, args ...string) result {
	t.Helper()
	res := run(t, nil, args...)
	if res.code != 0 {
		t.Fatalf("loadmesh %s: exit status %d: %s", strings.Join(args, " "), res.code, res.stderr)
	}
	return res
}

func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("process-level test; skipped with -short")
	}
}

// ---------------------------------------------------------------------------
// Tests

func TestProcessClusterSurvivesLeaderKill(t *testing.T) {
	skipShort(t)
	t.Parallel()
	c := startCluster(t, 3, true)

	var leader string
	retry.Run(t, func(r *retry.R) {
		l, _, err := agreedLeader(apis(c.agents))
		r.Check(err)
		leader = l
	})
	t.Logf("formation: %s after the third agent started, all three agents named leader %s", time.Since(c.lastStart).Round(time.Millisecond), leader)

	names := []string{"node1", "node2", "node3"}
	retry.Run(t, func(r *retry.R) {
		_, sts, err := agreedLeader(apis(c.agents))
		r.Check(err)
		for _, st := range sts {
			if st.Node.State != "active" || st.Raft.Term == 0 || st.Raft.CommitIndex == 0 {
				r.Fatalf("%s: plan state %q, raft term %d, commit index %d; want active and both > 0",
					st.Node.Name, st.Node.State, st.Raft.Term, st.Raft.CommitIndex)
			}
			if !slices.Equal(st.Raft.Voters, names) || len(st.Raft.Nonvoters) != 0 {
				r.Fatalf("%s: voters %v and non-voters %v, want voters %v", st.Node.Name, st.Raft.Voters, st.Raft.Nonvoters, names)
			}
			for _, a := range c.agents {
				m, ok := st.member(a.name)
				if !ok || m.Status != "alive" {
					r.Fatalf("%s: member %s is %q, want alive (members %+v)", st.Node.Name, a.name, m.Status, st.Members)
				}
			}
		}
	})

	checkStatusCommand(t, c.agents[0], leader, names)
	checkMembersCommand(t, c)

	served := sendRequests(t, c.agents, 100)
	t.Logf("100 requests before the kill were served by %v", served)

	old := c.agent(leader)
	survivors := c.without(leader)
	killedAt := time.Now()
	old.proc.kill()
	if ws, ok := old.proc.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("leader %s: %s, want killed by SIGKILL", leader, old.proc.cmd.ProcessState)
	}

	var newLeader string
	retry.Run(t, func(r *retry.R) {
		l, _, err := agreedLeader(apis(survivors))
		r.Check(err)
		if l == leader {
			r.Fatalf("survivors still name the killed %s", leader)
		}
		newLeader = l
	})
	t.Logf("failover: %s after SIGKILL of leader %s, both survivors named leader %s", time.Since(killedAt).Round(time.Millisecond), leader, newLeader)

	served = sendRequests(t, survivors, 100)
	t.Logf("100 requests after the kill were served by %v", served)
}

func checkStatusCommand(t *testing.T, a *agentNode, leader string, names []string) {
	t.Helper()
	res := run(t, nil, "status", "--api", "http://"+a.api)
	if res.code != 0 {
		t.Fatalf("loadmesh status: exit %d: %s", res.code, res.stderr)
	}
	for _, want := range []string{
		"Node:    " + a.name,
		"Leader:  " + leader,
		"Voters:  " + strings.Join(names, ", "),
	} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("loadmesh status output lacks %q:\n%s", want, res.stdout)
		}
	}
	for _, n := range names {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(n) + `( \*)?\s+alive\s`).MatchString(res.stdout) {
			t.Errorf("loadmesh status output lists no alive member %s:\n%s", n, res.stdout)
		}
	}
}

func checkMembersCommand(t *testing.T, c *testCluster) {
	t.Helper()
	// --api without a scheme is accepted too.
	res := run(t, nil, "members", "--api", c.agents[1].api, "--json")
	if res.code != 0 {
		t.Fatalf("loadmesh members --json: exit %d: %s", res.code, res.stderr)
	}
	var members []member
	if err := json.Unmarshal([]byte(res.stdout), &members); err != nil {
		t.Fatalf("loadmesh members --json: %v:\n%s", err, res.stdout)
	}
	if len(members) != len(c.agents) {
		t.Fatalf("loadmesh members --json lists %d members, want %d:\n%s", len(members), len(c.agents), res.stdout)
	}
	for i, a := range c.agents {
		m := members[i]
		got := []string{m.Name, m.Status, m.Addresses.Gossip, m.Addresses.HTTP, m.Addresses.Peer, m.Addresses.Raft, m.Addresses.API}
		want := []string{a.name, "alive", a.gossip, a.http, a.peer, a.raft, a.api}
		if !slices.Equal(got, want) {
			t.Errorf("member %d: got %q, want %q", i, got, want)
		}
	}
}

func TestBadInput(t *testing.T) {
	skipShort(t)
	t.Parallel()

	// A port something else holds, and one nothing listens on.
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { held.Close() })
	heldAddr := held.Addr().String()
	closedAddr := freeAddr(t, true, false)

	tests := []struct {
		name string
		// args is the command line; a is a valid agent on fresh ports,
		// which the case may change before calling a.args().
		args func(t *testing.T, a *agentNode) []string
		env  []string
		// want are substrings of the one line on stderr.
		want []string
		// code is the exit code wanted; 0 means any non-zero code.
		code int
		// logs: the agent starts, and logs, before it finds the problem;
		// only the last line of stderr is checked.
		logs bool
	}{
		{
			name: "unknown flag",
			args: func(t *testing.T, a *agentNode) []string { return append(a.args(), "--no-such-flag") },
			want: []string{"unknown flag", "--no-such-flag"},
		},
		{
			name: "join port not a number",
			args: func(t *testing.T, a *agentNode) []string { return append(a.args(), "--join", "127.0.0.1:notaport") },
			want: []string{"--join", "127.0.0.1:notaport"},
		},
		{
			name: "join without host",
			args: func(t *testing.T, a *agentNode) []string { return append(a.args(), "--join", ":99999") },
			want: []string{"--join", ":99999"},
		},
		{
			name: "join port out of range",
			args: func(t *testing.T, a *agentNode) []string { return append(a.args(), "--join", "127.0.0.1:99999") },
			want: []string{"--join", "99999"},
		},
		{
			name: "http port in use",
			args: func(t *testing.T, a *agentNode) []string { a.http = heldAddr; return a.args() },
			want: []string{heldAddr, "address already in use"},
		},
		{
			name: "api port in use",
			args: func(t *testing.T, a *agentNode) []string { a.api = heldAddr; return a.args() },
			want: []string{heldAddr, "address already in use"},
		},
		{
			name: "api address not an IP",
			args: func(t *testing.T, a *agentNode) []string { a.api = "localhost:7950"; return a.args() },
			want: []string{"--api", "localhost:7950"},
		},
		{
			// Tests run as root, whom chmod does not stop; a regular file
			// as the parent stops everyone.
			name: "data dir under a regular file",
			args: func(t *testing.T, a *agentNode) []string {
				a.dataDir = filepath.Join(writeFile(t, ""), "sub")
				return a.args()
			},
			want: []string{"data dir", "not a directory"},
		},
		{
			name: "data dir of another node",
			args: func(t *testing.T, a *agentNode) []string {
				first := startAgent(t, "a", func(first *agentNode) { first.dataDir = a.dataDir })
				if !first.proc.stop() || first.proc.cmd.ProcessState.ExitCode() != 0 {
					t.Fatalf("agent a: %s after SIGTERM, want exit status 0", first.proc.cmd.ProcessState)
				}
				a.rename(t, "b")
				return a.args()
			},
			want: []string{"another node", `"a"`, `"b"`},
		},
		{
			name: "no TLS files",
			args: func(t *testing.T, a *agentNode) []string { a.tls = tlsFiles{}; return a.args() },
			want: []string{"mutual TLS", "--tls-ca"},
		},
		{
			// --tls-ca alone asks the cluster for a certificate (a join
			// token), so without a token it says what is missing.
			name: "TLS CA without certificate, key or join token",
			args: func(t *testing.T, a *agentNode) []string {
				a.tls = tlsFiles{}
				return append(a.args(), "--tls-ca", nodeTLS(t, a.name).ca)
			},
			want: []string{"no join token", "--join-token", "--tls-cert and --tls-key"},
		},
		{
			name: "certificate of another node",
			args: func(t *testing.T, a *agentNode) []string { a.tls = nodeTLS(t, "someone-else"); return a.args() },
			want: []string{"someone-else"},
		},
		{
			name: "gossip key missing while the cluster uses one",
			args: func(t *testing.T, a *agentNode) []string {
				seed := startAgent(t, "seed", func(s *agentNode) { s.env = []string{"LOADMESH_ENCRYPT=" + e2eGossipKey} })
				return append(a.args(), "--join", seed.gossip)
			},
			want: []string{"gossip", "encrypt", "no key", "--encrypt"},
			logs: true,
		},
		{
			name: "gossip key set while the cluster uses none",
			args: func(t *testing.T, a *agentNode) []string {
				seed := startAgent(t, "seed", nil)
				return append(a.args(), "--join", seed.gossip, "--encrypt", e2eGossipKey)
			},
			want: []string{"--encrypt is set", "do not encrypt gossip"},
			logs: true,
		},
		{
			name: "data dir of another cluster",
			args: func(t *testing.T, a *agentNode) []string {
				// a's data dir gets a cluster of its own, then a joins
				// another one with it.
				first := startAgent(t, "bad", func(first *agentNode) { first.dataDir = a.dataDir })
				retry.Run(t, func(r *retry.R) { r.Check(httpOK("http://" + first.api + "/readyz")) })
				if !first.proc.stop() || first.proc.cmd.ProcessState.ExitCode() != 0 {
					t.Fatalf("agent bad: %s after SIGTERM, want exit status 0", first.proc.cmd.ProcessState)
				}
				seed := startAgent(t, "seed", nil)
				retry.Run(t, func(r *retry.R) { r.Check(httpOK("http://" + seed.api + "/readyz")) })
				return append(a.args(), "--join", seed.gossip)
			},
			want: []string{"another cluster", "empty --data-dir", "--join"},
			logs: true,
		},
		{
			name: "dev node told to join others",
			args: func(t *testing.T, a *agentNode) []string {
				return []string{"agent", "--dev", "--join", "127.0.0.1:7946", "--http", a.http, "--api", a.api}
			},
			want: []string{"--dev", "throwaway CA", "--join"},
		},
		{
			name: "negative shutdown grace",
			args: func(t *testing.T, a *agentNode) []string { return append(a.args(), "--shutdown-grace", "-1s") },
			want: []string{"--shutdown-grace", "-1s"},
		},
		{
			name: "capacity zero",
			args: func(t *testing.T, a *agentNode) []string { return append(a.args(), "--capacity", "0") },
			want: []string{"--capacity 0"},
		},
		{
			name: "unknown log level",
			args: func(t *testing.T, a *agentNode) []string { return append(a.args(), "--log-level", "loud") },
			want: []string{"--log-level", "loud"},
		},
		{
			name: "config file with an unknown key",
			args: func(t *testing.T, a *agentNode) []string {
				return append(a.args(), "--config", writeFile(t, "zone: z\nno-such-key: 1\n"))
			},
			want: []string{"config file", "no-such-key"},
		},
		{
			name: "config file not YAML",
			args: func(t *testing.T, a *agentNode) []string {
				return append(a.args(), "--config", writeFile(t, "zone: [unclosed\n"))
			},
			want: []string{"config file", "yaml"},
		},
		{
			name: "config file with a bad value",
			args: func(t *testing.T, a *agentNode) []string {
				return append(a.args(), "--config", writeFile(t, "dead-server-grace: soon\n"))
			},
			want: []string{"config file", "dead-server-grace", "soon"},
		},
		{
			name: "config file with a mapping for a single value",
			args: func(t *testing.T, a *agentNode) []string {
				return append(a.args(), "--config", writeFile(t, "name: {x: 1}\n"))
			},
			want: []string{"config file", "name", "mapping"},
		},
		{
			name: "config file with a list for a single value",
			args: func(t *testing.T, a *agentNode) []string {
				return append(a.args(), "--config", writeFile(t, "zone: [a, b]\n"))
			},
			want: []string{"config file", "zone", "list"},
		},
		{
			name: "config file that is a list",
			args: func(t *testing.T, a *agentNode) []string {
				return append(a.args(), "--config", writeFile(t, "- a\n- b\n"))
			},
			want: []string{"config file", "line 1"},
		},
		{
			name: "config file missing",
			args: func(t *testing.T, a *agentNode) []string {
				return append(a.args(), "--config", filepath.Join(t.TempDir(), "missing.yaml"))
			},
			want: []string{"config file", "missing.yaml"},
		},
		{
			name: "env var not a number",
			args: func(t *testing.T, a *agentNode) []string { return a.args() },
			env:  []string{"LOADMESH_CAPACITY=lots"},
			want: []string{"LOADMESH_CAPACITY", "lots"},
		},
		{
			name: "env var not a duration",
			args: func(t *testing.T, a *agentNode) []string { return a.args() },
			env:  []string{"LOADMESH_DEAD_SERVER_GRACE=forever"},
			want: []string{"LOADMESH_DEAD_SERVER_GRACE", "forever"},
		},
		{
			name: "status of an agent that is not running",
			args: func(t *testing.T, a *agentNode) []string { return []string{"status", "--api", "http://" + closedAddr} },
			want: []string{"cannot reach agent", closedAddr},
			code: 1,
		},
		{
			name: "members of an agent that is not running",
			args: func(t *testing.T, a *agentNode) []string { return []string{"members", "--api", closedAddr} },
			want: []string{"cannot reach agent", closedAddr},
			code: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := tt.args(t, newAgentNode(t, "bad"))
			res := run(t, tt.env, args...)
			t.Logf("loadmesh %s\nexit %d, stderr: %s", strings.Join(args, " "), res.code, res.stderr)
			switch {
			case tt.code == 0 && res.code == 0:
				t.Errorf("exit status 0, want non-zero")
			case tt.code != 0 && res.code != tt.code:
				t.Errorf("exit status %d, want %d", res.code, tt.code)
			}
			msg := strings.TrimRight(res.stderr, "\n")
			if tt.logs {
				msg = msg[strings.LastIndexByte(msg, '\n')+1:]
			}
			if msg == "" || strings.Contains(msg, "\n") {
				t.Fatalf("stderr is not one line:\n%s", res.stderr)
			}
			for _, bad := range []string{"panic", "goroutine ", ".go:"} {
				if strings.Contains(msg, bad) {
					t.Errorf("stderr contains %q:\n%s", bad, msg)
				}
			}
			if !strings.HasPrefix(msg, "loadmesh: ") {
				t.Errorf("stderr %q does not start with \"loadmesh: \"", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("stderr %q does not mention %q", msg, w)
				}
			}
		})
	}
}

// e2eGossipKey is a gossip encryption key (--encrypt) for tests.
const e2eGossipKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

// writeFile writes content to a new file and returns its path.
func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "file.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestConfigSources(t *testing.T) {
	skipShort(t)
	t.Parallel()

	// yaml renders a config file; decoy is a valid address that must lose
	// to a higher-precedence source (nothing ever listens on it).
	yaml := func(kv ...string) string {
		var b strings.Builder
		for i := 0; i < len(kv); i += 2 {
			fmt.Fprintf(&b, "%s: %q\n", kv[i], kv[i+1])
		}
		return b.String()
	}
	decoy := func(t *testing.T) string { return freeAddr(t, true, false) }

	tests := []struct {
		name string
		// setup sets a.argv and a.env from a's chosen values; the agent
		// must come up with exactly those.
		setup    func(t *testing.T, a *agentNode)
		wantName string
		wantZone string
	}{
		{
			name: "file",
			setup: func(t *testing.T, a *agentNode) {
				tls := nodeTLS(t, "file-node")
				a.argv = []string{"agent", "--config", writeFile(t, yaml(
					"name", "file-node", "zone", "file-zone", "data-dir", a.dataDir,
					"gossip", a.gossip, "raft", a.raft, "peer", a.peer, "http", a.http, "api", a.api,
					"tls-ca", tls.ca, "tls-cert", tls.cert, "tls-key", tls.key,
					"capacity", "8", "log-level", "debug"))}
			},
			wantName: "file-node",
			wantZone: "file-zone",
		},
		{
			name: "env",
			setup: func(t *testing.T, a *agentNode) {
				tls := nodeTLS(t, "env-node")
				a.argv = []string{"agent"}
				a.env = []string{
					"LOADMESH_NAME=env-node", "LOADMESH_ZONE=env-zone", "LOADMESH_DATA_DIR=" + a.dataDir,
					"LOADMESH_GOSSIP=" + a.gossip, "LOADMESH_RAFT=" + a.raft, "LOADMESH_PEER=" + a.peer,
					"LOADMESH_HTTP=" + a.http, "LOADMESH_API=" + a.api,
					"LOADMESH_TLS_CA=" + tls.ca, "LOADMESH_TLS_CERT=" + tls.cert, "LOADMESH_TLS_KEY=" + tls.key,
					"LOADMESH_DEAD_SERVER_GRACE=1m",
				}
			},
			wantName: "env-node",
			wantZone: "env-zone",
		},
		{
			// name: flag > env > file; zone and api: env > file; http: flag >
			// env > file; data dir and the other addresses: file only.
			name: "command line beats env beats file",
			setup: func(t *testing.T, a *agentNode) {
				tls := nodeTLS(t, "cli-node")
				file := writeFile(t, yaml(
					"name", "file-node", "zone", "file-zone", "data-dir", a.dataDir,
					"gossip", a.gossip, "raft", a.raft, "peer", a.peer, "http", decoy(t), "api", decoy(t),
					"tls-ca", tls.ca, "tls-cert", tls.cert, "tls-key", tls.key))
				a.env = []string{"LOADMESH_NAME=env-node", "LOADMESH_ZONE=env-zone", "LOADMESH_API=" + a.api, "LOADMESH_HTTP=" + decoy(t)}
				a.argv = []string{"agent", "--config", file, "--name", "cli-node", "--http", a.http}
			},
			wantName: "cli-node",
			wantZone: "env-zone",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := startAgent(t, tt.name, func(a *agentNode) { tt.setup(t, a) })
			var st status
			retry.Run(t, func(r *retry.R) {
				var err error
				st, err = getStatus(a.api)
				r.Check(err)
				if _, ok := st.member(tt.wantName); !ok {
					r.Fatalf("not yet a member of its own gossip pool: %+v", st.Members)
				}
			})
			if st.Node.Name != tt.wantName || st.Node.Zone != tt.wantZone {
				t.Errorf("node %q in zone %q, want %q in zone %q", st.Node.Name, st.Node.Zone, tt.wantName, tt.wantZone)
			}
			self, _ := st.member(tt.wantName)
			got := []string{self.Zone, self.Addresses.Gossip, self.Addresses.Raft, self.Addresses.Peer, self.Addresses.HTTP, self.Addresses.API}
			want := []string{tt.wantZone, a.gossip, a.raft, a.peer, a.http, a.api}
			if !slices.Equal(got, want) {
				t.Errorf("own member entry: zone and addresses %q, want %q", got, want)
			}
			if ents, err := os.ReadDir(a.dataDir); err != nil || len(ents) == 0 {
				t.Errorf("data dir %s unused: %v", a.dataDir, err)
			}
		})
	}
}

func TestDevMode(t *testing.T) {
	skipShort(t)
	t.Parallel()
	tmp := t.TempDir()
	a := startAgent(t, "dev", func(a *agentNode) {
		a.argv = []string{"agent", "--dev",
			"--http", a.http, "--api", a.api, "--gossip", a.gossip, "--raft", a.raft, "--peer", a.peer}
		// The throwaway data dir goes here, to check that it is removed.
		a.env = []string{"TMPDIR=" + tmp}
	})

	var target string
	re := regexp.MustCompile(`send requests to:\s+(\S+)`)
	retry.Run(t, func(r *retry.R) {
		m := re.FindStringSubmatch(a.proc.log())
		if m == nil {
			r.Fatalf("no \"send requests to:\" line in the output yet")
		}
		target = m[1]
	})
	if u, err := url.Parse(target); err != nil || u.Host != a.http {
		t.Fatalf("dev agent says to send requests to %q, want http://%s/", target, a.http)
	}

	retry.Run(t, func(r *retry.R) {
		resp, body, err := get(target)
		r.Check(err)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Loadmesh-Node") == "" {
			r.Fatalf("GET %s: %s, X-Loadmesh-Node %q: %s", target, resp.Status, resp.Header.Get("X-Loadmesh-Node"), body)
		}
	})
	retry.Run(t, func(r *retry.R) { r.Check(httpOK("http://" + a.api + "/readyz")) })

	start := time.Now()
	a.proc.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.proc.done:
	case <-time.After(retry.Scale(5 * time.Second)):
		t.Fatalf("dev agent still running %s after SIGTERM", retry.Scale(5*time.Second))
	}
	if code := a.proc.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("dev agent: %s after SIGTERM, want exit status 0", a.proc.cmd.ProcessState)
	}
	t.Logf("dev agent exited 0 %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	if left, _ := filepath.Glob(filepath.Join(tmp, "loadmesh-dev-*")); len(left) > 0 {
		t.Errorf("dev agent left its throwaway data behind: %v", left)
	}
}
