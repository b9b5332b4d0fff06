// Package harness starts complete loadmesh agents inside a test process, on
// loopback with ephemeral ports, and waits for cluster states with retries.
//
//	c := harness.Start(t, 3, harness.Options{})
//	leader := c.WaitForLeader(t)
//
// Every agent is shut down by t.Cleanup; logs go to t.Log.
package harness

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/cmd/loadmesh/demo"
	"github.com/loadmesh/loadmesh/test/retry"
	"github.com/loadmesh/loadmesh/transport"
)

// Options shape a test cluster.
type Options struct {
	// NoBootstrapExpect starts the first agent alone (it bootstraps itself)
	// and joins the others to it, instead of --bootstrap-expect N.
	NoBootstrapExpect bool
	// Backends gives each agent a demo backend of its own.
	Backends bool
	// BackendDelay is the demo backends' delay.
	BackendDelay time.Duration
	// DeadServerGrace overrides the test default of 2s.
	DeadServerGrace time.Duration
	// MaxVoters overrides the default of 5.
	MaxVoters int
	// IngressOnly lists nodes (by index) started without a backend.
	IngressOnly []int
	// CAFor, when set and returning non-nil, issues node i's certificate
	// from another CA than the cluster's.
	CAFor func(i int) *transport.CA
	// Tune adjusts each agent's config before it starts.
	Tune func(i int, cfg *agent.Config)
	// StrictAuth makes API requests without a token count as anonymous,
	// as in production. By default a loopback request without one is
	// taken as carrying Token, so tests can call the API directly.
	StrictAuth bool
	// TLSFiles gives each agent its identity as files (--tls-ca,
	// --tls-cert and --tls-key, in a directory of its own: ca.pem,
	// node.pem, node-key.pem) instead of injecting it, so that Reload
	// reads them again, as on SIGHUP.
	TLSFiles bool
	// CA, when set, is the cluster CA instead of a new one (tests that need
	// its key in a file).
	CA *transport.CA
}

// Token is the operator token every test cluster is bootstrapped with
// (--bootstrap-token).
const Token = "lm_7e57000000000000_7e577e577e577e577e577e577e577e577e577e577e577e577e577e577e577e57"

// Node is one agent of a test cluster.
type Node struct {
	*agent.Agent
	Cfg     agent.Config
	Backend *demo.Server
	// BootstrapOut is what the agent printed about a made-up bootstrap
	// token.
	BootstrapOut *SyncBuffer
	stopped      bool
}

// SyncBuffer is a bytes.Buffer safe for concurrent use.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Cluster is a set of in-process agents.
type Cluster struct {
	opts Options
	// CA issues every node's certificate.
	CA    *transport.CA
	log   *logSink
	mu    sync.Mutex
	Nodes []*Node
}

// FastTimers shortens gossip and reconcile timers for tests. Raft keeps its
// production timers: shorter ones cause spurious elections on busy 2-core
// machines running -race.
func FastTimers(c *cluster.Config) {
	c.GossipInterval = 50 * time.Millisecond
	// Probes stay long enough that a busy machine running -race does not
	// suspect healthy nodes.
	c.ProbeInterval = 300 * time.Millisecond
	c.ProbeTimeout = 200 * time.Millisecond
	c.SuspicionMult = 3
	c.PushPullInterval = time.Second
	c.ReconcileInterval = 200 * time.Millisecond
	c.RetryJoinMin = 100 * time.Millisecond
	c.RetryJoinMax = time.Second
}

// Start starts n agents and waits until each has joined the cluster.
func Start(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	// Node certificates live as long as their CA: a short-lived CA would
	// make every node report its certificate as expiring.
	ca, err := transport.NewCA("loadmesh test CA", transport.DefaultCALifetime)
	if err != nil {
		t.Fatal(err)
	}
	if opts.CA != nil {
		ca = opts.CA
	}
	c := &Cluster{opts: opts, log: newLogSink(t), CA: ca}
	t.Cleanup(c.log.close) // runs last: after every agent has stopped
	t.Cleanup(c.shutdownAll)
	for i := 0; i < n; i++ {
		cfg := c.config(t, i, n)
		if i > 0 {
			cfg.Join = []string{c.Nodes[0].GossipAddr()}
		}
		c.startNode(t, cfg)
	}
	return c
}

func (c *Cluster) config(t testing.TB, i, n int) agent.Config {
	cfg := agent.DefaultConfig()
	cfg.Name = fmt.Sprintf("node-%d", i)
	cfg.DataDir = t.TempDir()
	cfg.Gossip, cfg.Raft, cfg.Peer, cfg.HTTP, cfg.API = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.DeadServerGrace = 2 * time.Second
	if c.opts.DeadServerGrace > 0 {
		cfg.DeadServerGrace = c.opts.DeadServerGrace
	}
	if c.opts.MaxVoters > 0 {
		cfg.MaxVoters = c.opts.MaxVoters
	}
	if !c.opts.NoBootstrapExpect {
		cfg.BootstrapExpect = n
	}
	cfg.BootstrapToken = Token
	if c.opts.Tune != nil {
		c.opts.Tune(i, &cfg)
	}
	return cfg
}

func (c *Cluster) startNode(t testing.TB, cfg agent.Config) *Node {
	t.Helper()
	node := &Node{Cfg: cfg, BootstrapOut: &SyncBuffer{}}
	i := len(c.Nodes)
	if c.opts.Backends && cfg.Backend == "" && !slices.Contains(c.opts.IngressOnly, i) {
		b, err := demo.Start("127.0.0.1:0", cfg.Name+"-backend", c.opts.BackendDelay)
		if err != nil {
			t.Fatal(err)
		}
		node.Backend = b
		node.Cfg.Backend = b.URL()
	}
	ca := c.CA
	if c.opts.CAFor != nil {
		if other := c.opts.CAFor(i); other != nil {
			ca = other
		}
	}
	var id *transport.MutualTLS
	if c.opts.TLSFiles {
		if node.Cfg.TLSCA == "" {
			writeTLSFiles(t, &node.Cfg, ca)
		}
	} else {
		var err error
		if id, err = transport.DevMutualTLS(cfg.Name, ca); err != nil {
			t.Fatal(err)
		}
	}
	implicit := Token
	if c.opts.StrictAuth {
		implicit = ""
	}
	a, err := agent.New(node.Cfg, agent.Deps{
		TLS:                   id,
		Logger:                slog.New(slog.NewTextHandler(c.log, &slog.HandlerOptions{Level: slog.LevelInfo})),
		TuneCluster:           FastTimers,
		BootstrapOut:          node.BootstrapOut,
		ImplicitLoopbackToken: implicit,
	})
	if err != nil {
		t.Fatalf("agent %s: %v", cfg.Name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatalf("start agent %s: %v", cfg.Name, err)
	}
	node.Agent = a
	c.mu.Lock()
	c.Nodes = append(c.Nodes, node)
	c.mu.Unlock()
	return node
}

// Add starts one more agent that joins through the first live node.
func (c *Cluster) Add(t testing.TB) *Node {
	t.Helper()
	i := len(c.Nodes)
	cfg := c.config(t, i, 0)
	cfg.BootstrapExpect = 0
	cfg.Join = []string{c.Live()[0].GossipAddr()}
	return c.startNode(t, cfg)
}

// AddWith is Add with tune applied to the new agent's configuration last,
// for example to give it TLS files of its own.
func (c *Cluster) AddWith(t testing.TB, tune func(cfg *agent.Config)) *Node {
	t.Helper()
	cfg := c.config(t, len(c.Nodes), 0)
	cfg.BootstrapExpect = 0
	cfg.Join = []string{c.Live()[0].GossipAddr()}
	tune(&cfg)
	return c.startNode(t, cfg)
}

// Restart starts a stopped node again with the same name, data dir and
// addresses, as a restarted server would.
func (c *Cluster) Restart(t testing.TB, n *Node) *Node {
	t.Helper()
	cfg := n.Cfg
	cfg.Gossip, cfg.Raft, cfg.Peer, cfg.HTTP, cfg.API = n.GossipAddr(), n.Cluster().RaftAddr(), n.PeerAddr(), n.HTTPAddr(), n.APIAddr()
	cfg.Backend = ""
	if n.Backend != nil {
		cfg.Backend = n.Backend.URL()
	}
	cfg.BootstrapExpect = 0
	cfg.Join = nil
	for _, l := range c.Live() {
		cfg.Join = append(cfg.Join, l.GossipAddr())
	}
	c.mu.Lock()
	c.Nodes = slices.DeleteFunc(c.Nodes, func(x *Node) bool { return x == n })
	c.mu.Unlock()
	nn := c.startNode(t, cfg)
	nn.Backend = n.Backend
	return nn
}

// Live returns the nodes not stopped or killed.
func (c *Cluster) Live() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Node
	for _, n := range c.Nodes {
		if !n.stopped {
			out = append(out, n)
		}
	}
	return out
}

// Node returns the live node with the given name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Live() {
		if n.Name() == name {
			return n
		}
	}
	return nil
}

// Kill stops n abruptly, as a crash would (no leave, no leadership transfer).
func (c *Cluster) Kill(t testing.TB, n *Node) {
	t.Helper()
	c.mu.Lock()
	n.stopped = true
	c.mu.Unlock()
	if err := n.Kill(); err != nil {
		t.Logf("kill %s: %v", n.Name(), err)
	}
}

// Stop shuts n down gracefully (it leaves the cluster).
func (c *Cluster) Stop(t testing.TB, n *Node) {
	t.Helper()
	c.mu.Lock()
	n.stopped = true
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Logf("stop %s: %v", n.Name(), err)
	}
}

func (c *Cluster) shutdownAll() {
	var wg sync.WaitGroup
	for _, n := range c.Live() {
		wg.Add(1)
		go func(n *Node) {
			defer wg.Done()
			n.Kill()
		}(n)
	}
	wg.Wait()
	for _, n := range c.Nodes {
		if n.Backend != nil {
			n.Backend.Shutdown(context.Background())
		}
	}
}

// WaitForLeader waits until every live node names the same live leader,
// and every node started with Token has it in its replica (the leader
// creates it once it leads), and returns the leader.
func (c *Cluster) WaitForLeader(t testing.TB) *Node {
	t.Helper()
	var leader *Node
	retry.Run(t, func(r *retry.R) {
		leader = c.leaderNow(r)
		for _, n := range c.Live() {
			if _, ok := n.Plan().TokenByID(tokenID); n.Cfg.BootstrapToken == Token && !ok {
				r.Fatalf("%s does not have the bootstrap token yet", n.Name())
			}
		}
	})
	return leader
}

// tokenID is Token's ID.
var tokenID = Token[3:19]

func (c *Cluster) leaderNow(r *retry.R) *Node {
	live := c.Live()
	name := ""
	for _, n := range live {
		l := n.Cluster().Leader()
		if l == "" {
			r.Fatalf("%s knows no leader", n.Name())
		}
		if name != "" && l != name {
			r.Fatalf("%s says leader is %s, another node says %s", n.Name(), l, name)
		}
		name = l
	}
	ln := c.Node(name)
	if ln == nil || !ln.Cluster().IsLeader() {
		r.Fatalf("leader %q is not a live leader", name)
	}
	return ln
}

// WaitForMembers waits until every live node sees exactly the live nodes
// as alive.
func (c *Cluster) WaitForMembers(t testing.TB) {
	t.Helper()
	retry.Run(t, func(r *retry.R) {
		live := c.Live()
		for _, n := range live {
			alive := 0
			for _, m := range n.Cluster().Members() {
				if m.Status == cluster.StatusAlive {
					alive++
				}
			}
			if alive != len(live) {
				r.Fatalf("%s sees %d alive members, want %d", n.Name(), alive, len(live))
			}
		}
	})
}

// AuthTransport wraps rt (http.DefaultTransport when nil) so that every
// request without an Authorization header carries token.
func AuthTransport(rt http.RoundTripper, token string) http.RoundTripper {
	if rt == nil {
		rt = http.DefaultTransport
	}
	return authTransport{rt, token}
}

type authTransport struct {
	rt    http.RoundTripper
	token string
}

func (a authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Header.Get("Authorization") == "" {
		req = req.Clone(req.Context())
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	return a.rt.RoundTrip(req)
}

// logSink forwards agent logs to t.Log until the test's cleanup closes it;
// logging after a test has finished would panic.
type logSink struct {
	t      testing.TB
	mu     sync.Mutex
	closed bool
	quiet  bool
}

func newLogSink(t testing.TB) *logSink {
	return &logSink{t: t, quiet: os.Getenv("LOADMESH_TEST_LOG") == "0"}
}

var _ io.Writer = (*logSink)(nil)

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed && !l.quiet {
		l.t.Log(string(p[:len(p)-1]))
	}
	return len(p), nil
}

func (l *logSink) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
}

// writeTLSFiles issues cfg's node a certificate from ca and points
// cfg's --tls-* at files holding it (see Options.TLSFiles).
func writeTLSFiles(t testing.TB, cfg *agent.Config, ca *transport.CA) {
	t.Helper()
	certPEM, keyPEM, err := ca.IssueNodeCert(cfg.Name, transport.DefaultNodeCertLifetime, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg.TLSCA, cfg.TLSCert, cfg.TLSKey = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "node.pem"), filepath.Join(dir, "node-key.pem")
	for f, b := range map[string][]byte{cfg.TLSCA: ca.CertPEM, cfg.TLSCert: certPEM, cfg.TLSKey: keyPEM} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
