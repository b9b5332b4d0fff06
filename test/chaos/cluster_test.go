//go:build linux

package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/test/retry"
)

// node is one agent with its own backend process. Its addresses, data dir
// and log files stay the same across restarts.
type node struct {
	name                          string
	dataDir                       string
	gossip, raft, peer, http, api string
	backendAddr, backendName      string
	// netns, when set, is the network namespace both processes run in.
	netns string
	// args is the agent's command line, reused on every restart.
	args       []string
	logPath    string
	backendLog string

	proc    *process
	backend *process
}

// testCluster is a set of agents expecting each other, each fronting its
// own `loadmesh backend`.
type testCluster struct {
	// owner is the test that started the cluster: processes, restarted
	// ones included, stop when it ends. t is the (sub)test now using the
	// cluster, for failures.
	owner, t *testing.T
	nodes    []*node
	// key is the gossip encryption key (--encrypt).
	key string
}

// clusterOpts shapes a cluster.
type clusterOpts struct {
	n int
	// topo, when set, runs node i in topo's namespace i on its own IP
	// (fixed ports); otherwise every node uses fresh loopback ports.
	topo *netTopo
	// dataDir, when set, may return a data dir for node i ("" for the
	// default under t.TempDir).
	dataDir func(i int) string
}

// startCluster starts opts.n agents with --bootstrap-expect n, gossip
// encryption and mutual TLS, and waits until every one is healthy: one
// leader named by all, every member alive everywhere, the same plan.
func startCluster(t *testing.T, opts clusterOpts) *testCluster {
	t.Helper()
	c := &testCluster{owner: t, t: t, key: strings.TrimSpace(mustRun(t, "keygen"))}
	logDir := t.TempDir()
	for attempt := 1; ; attempt++ {
		c.nodes = nil
		for i := range opts.n {
			n := &node{name: fmt.Sprintf("node%d", i+1)}
			n.logPath = filepath.Join(logDir, fmt.Sprintf("%s.%d.log", n.name, attempt))
			n.backendLog = filepath.Join(logDir, fmt.Sprintf("%s-backend.%d.log", n.name, attempt))
			n.backendName = "b" + strconv.Itoa(i+1)
			if opts.topo != nil {
				ip := opts.topo.ip[i]
				n.netns = opts.topo.ns[i]
				n.gossip, n.raft, n.peer = ip+":7946", ip+":7948", ip+":7947"
				n.http, n.api = ip+":8080", ip+":7950"
				n.backendAddr = "127.0.0.1:9000" // the namespace's own loopback
			} else {
				n.gossip = freeAddr(t, true, true)
				n.raft = freeAddr(t, true, false)
				n.peer = freeAddr(t, false, true)
				n.http = freeAddr(t, true, false)
				n.api = freeAddr(t, true, false)
				n.backendAddr = freeAddr(t, true, false)
			}
			if opts.dataDir != nil {
				n.dataDir = opts.dataDir(i)
			}
			if n.dataDir == "" {
				n.dataDir = filepath.Join(t.TempDir(), "data")
			}
			c.nodes = append(c.nodes, n)
		}
		for _, n := range c.nodes {
			tls := nodeTLS(t, "cluster", n.name)
			n.args = []string{"agent",
				"--name", n.name, "--data-dir", n.dataDir,
				"--gossip", n.gossip, "--raft", n.raft, "--peer", n.peer, "--http", n.http, "--api", n.api,
				"--backend", "http://" + n.backendAddr,
				"--bootstrap-expect", strconv.Itoa(opts.n),
				"--encrypt", c.key,
				// Every ingress spreads requests over all nodes, so that
				// about 4 in 5 cross the QUIC peer channel. With the
				// default p2c-ewma a lightly loaded node serves everything
				// itself and the faults would never meet a forwarded
				// request.
				"--policy", "random",
				"--tls-ca", tls.ca, "--tls-cert", tls.cert, "--tls-key", tls.key,
			}
			var join []string
			for _, o := range c.nodes {
				if o != n {
					join = append(join, o.gossip)
				}
			}
			n.args = append(n.args, "--join", strings.Join(join, ","))
			n.startBackend(t)
		}
		for _, n := range c.nodes {
			n.start(t)
		}
		err := c.waitStarted(c.nodes)
		if err == nil {
			break
		}
		for _, n := range c.nodes {
			n.proc.stop(stopGrace())
			n.backend.stop(stopGrace())
		}
		if attempt == 2 || !strings.Contains(err.Error(), "address already in use") || opts.topo != nil {
			t.Fatalf("start %d-agent cluster: %v", opts.n, err)
		}
		t.Logf("start cluster: %v; starting again on fresh ports", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpLogs()
		}
	})
	c.waitHealthy("cluster formation", 60*time.Second)
	return c
}

// use makes t, a subtest of the cluster's owner, the test that failures
// are reported to.
func (c *testCluster) use(t *testing.T) { c.t = t }

// restart starts node n's agent again with the same command line, data dir
// and ports.
func (c *testCluster) restart(n *node) { n.start(c.owner) }

// prefix is the command prefix that runs a process in the node's namespace.
func (n *node) prefix() []string {
	if n.netns == "" {
		return nil
	}
	return []string{"ip", "netns", "exec", n.netns}
}

func (n *node) startBackend(t *testing.T) {
	n.backend = startProcess(t, n.backendName, n.backendLog, n.prefix(),
		[]string{"backend", "--listen", n.backendAddr, "--name", n.backendName})
}

// start starts (or restarts) the agent with its command line.
func (n *node) start(t *testing.T) {
	n.proc = startProcess(t, n.name, n.logPath, n.prefix(), n.args)
}

func (n *node) log() string { return readLog(n.logPath) }

// waitStarted waits until every node's API answers /healthz; it fails
// fast when one exits.
func (c *testCluster) waitStarted(nodes []*node) error {
	var last error
	ok := retry.Until(30*time.Second, func(r *retry.R) {
		for _, n := range nodes {
			if n.proc.exited() || n.backend.exited() {
				last = fmt.Errorf("%s exited during start-up (%s): %s", n.name, n.proc.exitDesc(), lastLine(n.log()))
				return
			}
			if _, err := apiGet(n.api, "/healthz"); err != nil {
				last = fmt.Errorf("%s: %w", n.name, err)
				r.Fatalf("%v", last)
			}
		}
	})
	if !ok || last != nil && strings.Contains(last.Error(), "exited") {
		return last
	}
	return nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}

func (c *testCluster) dumpLogs() {
	for _, n := range c.nodes {
		c.t.Logf("==== %s (pid %d, %s) ====\n%s", n.name, n.proc.pid(), n.proc.exitDesc(), tail(n.log(), 48<<10))
	}
}

func (c *testCluster) node(name string) *node {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	c.t.Fatalf("no node %q", name)
	return nil
}

func (c *testCluster) names() []string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, n.name)
	}
	return out
}

func (c *testCluster) without(names ...string) []*node {
	var out []*node
	for _, n := range c.nodes {
		if !slices.Contains(names, n.name) {
			out = append(out, n)
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// The status API

// apiClient talks to the agents' APIs, always with the operator token (the
// API is open to reads only on loopback, and nodes in a network namespace
// see the test's address as remote).
var apiClient = &http.Client{Transport: &http.Transport{
	DisableKeepAlives: true, // an API that hangs must not hold a pooled connection
}}

// apiDo sends one API request with a short timeout and returns the status
// code and body.
func apiDo(method, addr, path string, body []byte, token string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), retry.Scale(3*time.Second))
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := apiClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// apiGet fetches path and wants 200.
func apiGet(addr, path string) ([]byte, error) {
	code, b, err := apiDo(http.MethodGet, addr, path, nil, chaosToken)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET %s%s: %d: %s", addr, path, code, bytes.TrimSpace(b))
	}
	return b, nil
}

// status is the documented JSON of GET /v1/status (decoded independently
// of the agent's Go types).
type status struct {
	Node struct {
		Name  string `json:"name"`
		State string `json:"state"`
	} `json:"node"`
	Leader string `json:"leader"`
	Raft   struct {
		State        string   `json:"state"`
		Term         uint64   `json:"term"`
		CommitIndex  uint64   `json:"commit_index"`
		AppliedIndex uint64   `json:"applied_index"`
		Voters       []string `json:"voters"`
		Nonvoters    []string `json:"nonvoters"`
	} `json:"raft"`
	Plan struct {
		Version uint64 `json:"version"`
	} `json:"plan"`
	Members []struct {
		Name   string `json:"name"`
		Status string `json:"status"`
	} `json:"members"`
}

func (st status) memberStatus(name string) string {
	for _, m := range st.Members {
		if m.Name == name {
			return m.Status
		}
	}
	return "absent"
}

func getStatus(api string) (status, error) {
	var st status
	b, err := apiGet(api, "/v1/status")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("GET %s/v1/status: %v", api, err)
	}
	return st, nil
}

// agreedLeader asks every node and returns the leader all of them name;
// the named leader must itself be in raft state Leader.
func agreedLeader(nodes []*node) (string, []status, error) {
	sts := make([]status, len(nodes))
	for i, n := range nodes {
		st, err := getStatus(n.api)
		if err != nil {
			return "", nil, err
		}
		if st.Leader == "" {
			return "", nil, fmt.Errorf("%s knows no leader (raft %s, term %d)", n.name, st.Raft.State, st.Raft.Term)
		}
		if i > 0 && st.Leader != sts[0].Leader {
			return "", nil, fmt.Errorf("%s names leader %s, %s names %s", nodes[0].name, sts[0].Leader, n.name, st.Leader)
		}
		sts[i] = st
	}
	for i, st := range sts {
		if nodes[i].name == st.Leader && st.Raft.State != "Leader" {
			return "", nil, fmt.Errorf("%s is named leader but is in raft state %s", st.Leader, st.Raft.State)
		}
	}
	return sts[0].Leader, sts, nil
}

// leader returns the current agreed leader of the whole cluster.
func (c *testCluster) leader() string {
	c.t.Helper()
	var l string
	retry.Run(c.t, func(r *retry.R) {
		var err error
		l, _, err = agreedLeader(c.nodes)
		r.Check(err)
	})
	return l
}

// healthy checks the cluster as a whole: one leader named by all, every
// node alive in every node's view and a voter, the same applied index, and
// the same plan and audit log everywhere.
func (c *testCluster) healthy() error {
	_, sts, err := agreedLeader(c.nodes)
	if err != nil {
		return err
	}
	names := c.names()
	for i, st := range sts {
		for _, name := range names {
			if s := st.memberStatus(name); s != "alive" {
				return fmt.Errorf("%s sees %s as %s", c.nodes[i].name, name, s)
			}
		}
		if !slices.Equal(st.Raft.Voters, names) {
			return fmt.Errorf("%s: raft voters %v, want %v", c.nodes[i].name, st.Raft.Voters, names)
		}
		if st.Raft.AppliedIndex != sts[0].Raft.AppliedIndex {
			return fmt.Errorf("%s applied index %d, %s %d", c.nodes[0].name, sts[0].Raft.AppliedIndex, c.nodes[i].name, st.Raft.AppliedIndex)
		}
	}
	_, err = c.sameState(c.nodes)
	return err
}

// waitHealthy waits up to timeout (scaled) for healthy and returns how long
// that took.
func (c *testCluster) waitHealthy(what string, timeout time.Duration) time.Duration {
	c.t.Helper()
	start := time.Now()
	var last error
	if !retry.Until(timeout, func(r *retry.R) {
		last = c.healthy()
		r.Check(last)
	}) {
		c.t.Fatalf("%s: cluster not healthy after %s: %v", what, retry.Scale(timeout), last)
	}
	return time.Since(start)
}

// replicated is one node's copy of the replicated state, as its API shows it.
type replicated struct {
	plan   []byte // GET /v1/plan without the "leader" field
	events []byte // GET /v1/events?limit=10000
	tokens []byte // GET /v1/tokens without "expired"
	nevent int
	pver   uint64
}

func getReplicated(api string) (replicated, error) {
	var rep replicated
	b, err := apiGet(api, "/v1/plan")
	if err != nil {
		return rep, err
	}
	var plan map[string]json.RawMessage
	if err := json.Unmarshal(b, &plan); err != nil {
		return rep, fmt.Errorf("GET %s/v1/plan: %v", api, err)
	}
	delete(plan, "leader")
	json.Unmarshal(plan["version"], &rep.pver)
	rep.plan, _ = json.Marshal(plan) // sorted keys
	if rep.events, err = apiGet(api, "/v1/events?limit=10000"); err != nil {
		return rep, err
	}
	var evs []json.RawMessage
	if err := json.Unmarshal(rep.events, &evs); err != nil {
		return rep, fmt.Errorf("GET %s/v1/events: %v", api, err)
	}
	rep.nevent = len(evs)
	b, err = apiGet(api, "/v1/tokens")
	if err != nil {
		return rep, err
	}
	// "expired" is computed by each node from its clock when asked, not
	// replicated: a token crossing its expiry would differ for a moment.
	var tokens []map[string]json.RawMessage
	if err := json.Unmarshal(b, &tokens); err != nil {
		return rep, fmt.Errorf("GET %s/v1/tokens: %v", api, err)
	}
	for _, tok := range tokens {
		delete(tok, "expired")
	}
	rep.tokens, _ = json.Marshal(tokens)
	return rep, nil
}

// sameState checks that nodes show byte-identical plans, audit logs and
// token lists, and returns that state.
func (c *testCluster) sameState(nodes []*node) (replicated, error) {
	var first replicated
	for i, n := range nodes {
		rep, err := getReplicated(n.api)
		if err != nil {
			return first, err
		}
		if i == 0 {
			first = rep
			continue
		}
		switch {
		case !bytes.Equal(rep.plan, first.plan):
			return first, fmt.Errorf("plan differs: %s has version %d, %s version %d", nodes[0].name, first.pver, n.name, rep.pver)
		case !bytes.Equal(rep.events, first.events):
			return first, fmt.Errorf("audit log differs: %s has %d events, %s %d", nodes[0].name, first.nevent, n.name, rep.nevent)
		case !bytes.Equal(rep.tokens, first.tokens):
			return first, fmt.Errorf("token list differs between %s and %s", nodes[0].name, n.name)
		}
	}
	return first, nil
}

// intact checks that the audit log now starts with every event of before:
// nothing recorded earlier was lost or changed.
func intact(before, now replicated) error {
	var a, b []json.RawMessage
	if err := json.Unmarshal(before.events, &a); err != nil {
		return err
	}
	if err := json.Unmarshal(now.events, &b); err != nil {
		return err
	}
	if len(b) < len(a) {
		return fmt.Errorf("audit log shrank from %d to %d events", len(a), len(b))
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return fmt.Errorf("audit event %d changed:\nbefore %s\nnow    %s", i, a[i], b[i])
		}
	}
	if now.pver < before.pver {
		return fmt.Errorf("plan version went back from %d to %d", before.pver, now.pver)
	}
	return nil
}

// write makes one audited change through node n's API (carried to the
// leader when n is a follower): it creates a read token named name. It
// retries on 502/503 (no leader yet, leadership moving) until timeout and
// returns how long the write took to succeed.
func (c *testCluster) write(n *node, name string, timeout time.Duration) (time.Duration, error) {
	body, _ := json.Marshal(map[string]string{"name": name, "role": "read", "reason": "chaos write probe"})
	start := time.Now()
	var last error
	ok := retry.Until(timeout, func(r *retry.R) {
		code, b, err := apiDo(http.MethodPost, n.api, "/v1/tokens", body, chaosToken)
		switch {
		case err != nil:
			last = err
		case code == http.StatusOK || code == http.StatusCreated:
			last = nil
			return
		case code == http.StatusConflict && strings.Contains(string(b), "exists"):
			// An earlier attempt went through but its answer was lost.
			last = nil
			return
		default:
			last = fmt.Errorf("POST %s/v1/tokens: %d: %s", n.api, code, bytes.TrimSpace(b))
		}
		r.Check(last)
	})
	if !ok {
		return time.Since(start), last
	}
	return time.Since(start), nil
}

// alive checks that the node's process runs and its API answers /healthz.
func (n *node) alive() error {
	if n.proc.exited() {
		return fmt.Errorf("%s exited: %s", n.name, n.proc.exitDesc())
	}
	_, err := apiGet(n.api, "/healthz")
	return err
}

// sigstop and sigcont freeze and thaw the agent.
func (n *node) sigstop() { n.proc.signal(syscall.SIGSTOP) }
func (n *node) sigcont() { n.proc.signal(syscall.SIGCONT) }

var errNotRoot = errors.New("not root")

func requireRoot() error {
	if os.Geteuid() != 0 {
		return errNotRoot
	}
	return nil
}
