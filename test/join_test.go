package test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/cmd/loadmesh/demo"
	"github.com/loadmesh/loadmesh/cmd/loadmesh/provision"
	"github.com/loadmesh/loadmesh/store"
	"github.com/loadmesh/loadmesh/test/harness"
	"github.com/loadmesh/loadmesh/test/retry"
	"github.com/loadmesh/loadmesh/transport"
)

// joinCluster starts a 3-server cluster whose servers hold the CA key
// (--tls-ca, --tls-ca-key) and sign node certificates valid for certTTL;
// node-2 has no backend: it forwards every request. Voter seats are left
// free (--max-voters 5): a joined node without the CA key must still be a
// non-voter, so that it never leads (README, "Where the CA key lives").
func joinCluster(t *testing.T, certTTL time.Duration) (*harness.Cluster, string) {
	t.Helper()
	ca, err := transport.NewCA("loadmesh test CA", transport.DefaultCALifetime)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	c := harness.Start(t, 3, harness.Options{Backends: true, IngressOnly: []int{2}, CA: ca, Tune: func(i int, cfg *agent.Config) {
		cfg.TLSCA, cfg.TLSCAKey = caFile, keyFile
		if certTTL > 0 {
			cfg.CertTTL = certTTL
		}
	}})
	c.WaitForLeader(t)
	c.WaitForMembers(t)
	return c, caFile
}

// createJoinToken creates a join token through node's API.
func createJoinToken(t *testing.T, node *harness.Node, body string) agent.TokenCreated {
	t.Helper()
	var out agent.TokenCreated
	retry.Run(t, func(r *retry.R) {
		req, _ := http.NewRequest("POST", "http://"+node.APIAddr()+"/v1/tokens", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+harness.Token)
		resp, err := http.DefaultClient.Do(req)
		r.Check(err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			r.Fatalf("create token %s: %d %s", body, resp.StatusCode, b)
		}
		r.Check(json.Unmarshal(b, &out))
	})
	return out
}

// joiner is the config of a new node that joins with a token through
// server (its peer port); it has no certificate of its own.
func joinerConfig(t *testing.T, c *harness.Cluster, name, caFile, token string, server *harness.Node) agent.Config {
	cfg := agent.DefaultConfig()
	cfg.Name = name
	cfg.DataDir = t.TempDir()
	cfg.Gossip, cfg.Raft, cfg.Peer, cfg.HTTP, cfg.API = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.TLSCA = caFile
	cfg.JoinToken = token
	cfg.JoinServers = []string{server.PeerAddr()}
	cfg.Join = []string{c.Nodes[0].GossipAddr()}
	return cfg
}

// startJoiner starts a node from cfg; a nil error means it runs, and is
// shut down with the test.
func startJoiner(t *testing.T, cfg agent.Config) (*agent.Agent, error) {
	t.Helper()
	logs := &tLogWriter{t: t}
	t.Cleanup(logs.close) // runs after the agent's shutdown below
	a, err := agent.New(cfg, agent.Deps{
		Logger:      slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		TuneCluster: harness.FastTimers,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.Shutdown(ctx)
	})
	return a, nil
}

// tLogWriter sends logs to t.Log until the test ends (memberlist may
// still log from its last goroutines).
type tLogWriter struct {
	t      *testing.T
	mu     sync.Mutex
	closed bool
}

func (w *tLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *tLogWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

// issuances counts the token.use audit events.
func issuances(n *harness.Node) int {
	count := 0
	for _, ev := range n.Plan().Events(0) {
		if ev.Kind == string(store.OpTokenUse) {
			count++
		}
	}
	return count
}

// servedSerial is the serial of the certificate node serves on its peer
// port.
func servedSerial(t *testing.T, caPEM []byte, peerAddr string) *big.Int {
	t.Helper()
	conf, err := transport.JoinClientTLS(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	var serial *big.Int
	verify := conf.VerifyConnection
	conf.VerifyConnection = func(cs tls.ConnectionState) error {
		serial = cs.PeerCertificates[0].SerialNumber
		return verify(cs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, peerAddr, conf, nil)
	if err != nil {
		t.Fatal(err)
	}
	conn.CloseWithError(0, "")
	return serial
}

func TestJoinWithToken(t *testing.T) {
	skipShort(t)
	c, caFile := joinCluster(t, 0)
	leader := c.WaitForLeader(t)
	var followers []*harness.Node
	for _, n := range c.Nodes {
		if n != leader {
			followers = append(followers, n)
		}
	}
	tok := createJoinToken(t, followers[0], `{"role":"join","ttl":"1h"}`)
	if tok.Uses != 1 || tok.Expires.Sub(tok.Created) != time.Hour || !strings.HasPrefix(tok.Name, "join-") {
		t.Fatalf("join token %+v", tok.TokenView)
	}

	// The new node asks a follower, which carries the request to the
	// leader.
	backend, err := demo.Start("127.0.0.1:0", "joiner-backend", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { backend.Shutdown(context.Background()) })
	cfg := joinerConfig(t, c, "joiner", caFile, tok.Token, followers[0])
	cfg.Backend = backend.URL()
	j, err := startJoiner(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The key was made on the node, and only the node can read it.
	st, err := os.Stat(filepath.Join(cfg.DataDir, "tls", "node-key.pem"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("node key: %v %v", st, err)
	}
	certPEM, _ := os.ReadFile(filepath.Join(cfg.DataDir, "tls", "node.pem"))
	if !bytes.Contains(certPEM, []byte("CERTIFICATE")) {
		t.Fatal("no certificate written")
	}
	if issuances(leader) != 1 {
		t.Fatalf("%d issuances audited, want 1", issuances(leader))
	}
	ev := lastEvent(leader, string(store.OpTokenUse))
	if ev.Node != "joiner" || ev.Who != tok.Name || !strings.Contains(ev.After, "serial=") || !strings.Contains(ev.Why, "via "+followers[0].Name()) {
		t.Fatalf("issuance event %+v", ev)
	}
	// It joins and serves requests forwarded to it.
	retry.Run(t, func(r *retry.R) {
		if m, ok := leader.Cluster().Member("joiner"); !ok || m.Status != "alive" {
			r.Fatalf("joiner not an alive member: %+v", m)
		}
	})
	// With voter seats free it is still a non-voter: it has no CA key.
	retry.Run(t, func(r *retry.R) {
		st := leader.Cluster().RaftStatus()
		if !slices.Contains(st.Nonvoters, "joiner") || slices.Contains(st.Voters, "joiner") {
			r.Fatalf("raft voters %v, non-voters %v; want joiner a non-voter", st.Voters, st.Nonvoters)
		}
	})
	retry.Run(t, servedBy(client(t), "http://"+c.Nodes[2].HTTPAddr()+"/forwarded", "joiner"))

	// The token was single-use: a second node is refused, and nothing is
	// signed for it.
	refused := func(t *testing.T, name, token string, via *harness.Node, want string) {
		t.Helper()
		before := issuances(leader)
		cfg := joinerConfig(t, c, name, caFile, token, via)
		_, err := startJoiner(t, cfg)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("join with %s: %v, want %q", name, err, want)
		}
		if _, err := os.Stat(filepath.Join(cfg.DataDir, "tls", "node.pem")); err == nil {
			t.Fatal("a certificate was written for a refused token")
		}
		if issuances(leader) != before {
			t.Fatal("a refused token was audited as an issuance")
		}
		t.Logf("refused as expected: %v", err)
	}
	t.Run("reused", func(t *testing.T) {
		refused(t, "second", tok.Token, followers[1], "is used up (1 of 1 uses)")
	})
	t.Run("forged", func(t *testing.T) {
		id, _, _ := agent.ParseToken(tok.Token)
		forged := "lm_" + id + "_" + strings.Repeat("ab", 32)
		refused(t, "forged", forged, followers[1], "wrong secret for token id "+id)
	})
	t.Run("unknown", func(t *testing.T) {
		other, _ := agent.NewToken()
		refused(t, "unknown", other, followers[1], "no token with id")
	})
	t.Run("wrong role operator", func(t *testing.T) {
		refused(t, "op", harness.Token, leader, "has role operator, not join")
	})
	t.Run("wrong role read", func(t *testing.T) {
		read := createJoinToken(t, leader, `{"name":"reader","role":"read"}`)
		refused(t, "reader", read.Token, leader, "has role read, not join")
	})
	t.Run("expired", func(t *testing.T) {
		// A join token that expired an hour ago, written straight through
		// Raft (the API only makes tokens that start out valid).
		secret := strings.Repeat("cd", 32)
		h := sha256.Sum256([]byte(secret))
		now := time.Now().UTC()
		old := store.Token{Name: "old", ID: "0123456789abcdef", Role: store.RoleJoin, Hash: hex.EncodeToString(h[:]),
			Created: now.Add(-2 * time.Hour), Expires: now.Add(-time.Hour), CreatedBy: "test", Uses: 1}
		b, err := store.EncodeCommand(store.Command{Op: store.OpTokenCreate, Token: &old, Time: now, Who: "test", Why: "test"})
		if err != nil {
			t.Fatal(err)
		}
		retry.Run(t, func(r *retry.R) {
			_, err := c.WaitForLeader(t).Cluster().Apply(b, 5*time.Second)
			r.Check(err)
		})
		refused(t, "late", "lm_0123456789abcdef_"+secret, followers[0], `token "old" expired at`)
	})
	t.Run("name in use", func(t *testing.T) {
		fresh := createJoinToken(t, leader, `{"role":"join"}`)
		refused(t, "joiner", fresh.Token, leader, `node name "joiner" is in use by a live member`)
	})

	// Creating a join token prunes those spent for over an hour ("old"
	// expired an hour before it was made); the used-up one made minutes
	// ago stays listed.
	names := map[string]bool{}
	for _, tk := range c.WaitForLeader(t).Plan().Tokens() {
		names[tk.Name] = true
	}
	if names["old"] || !names[tok.Name] {
		t.Fatalf("tokens after pruning: %v", names)
	}

	// A restart uses the certificate it has; the used-up token does not
	// matter any more.
	if err := j.Shutdown(context.Background()); err != nil {
		t.Logf("shutdown: %v", err)
	}
	cfg.Gossip, cfg.Peer = j.GossipAddr(), j.PeerAddr()
	cfg.Join = []string{leader.GossipAddr()}
	if _, err := startJoiner(t, cfg); err != nil {
		t.Fatalf("restart with the issued certificate: %v", err)
	}
	if issuances(leader) != 1 {
		t.Fatalf("restart issued again: %d issuances", issuances(leader))
	}
}

func lastEvent(n *harness.Node, kind string) (out struct{ Node, Who, Why, After string }) {
	for _, ev := range n.Plan().Events(0) {
		if ev.Kind == kind {
			out.Node, out.Who, out.Why, out.After = ev.Node, ev.Who, ev.Why, ev.After
		}
	}
	return out
}

func TestJoinedNodeRenewsItsCertificate(t *testing.T) {
	skipShort(t)
	c, caFile := joinCluster(t, 2*time.Minute)
	leader := c.WaitForLeader(t)
	tok := createJoinToken(t, leader, `{"role":"join","ttl":"10m"}`)
	backend, err := demo.Start("127.0.0.1:0", "renewer-backend", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { backend.Shutdown(context.Background()) })
	cfg := joinerConfig(t, c, "renewer", caFile, tok.Token, leader)
	cfg.Backend = backend.URL()
	j, err := startJoiner(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(caFile)
	first := servedSerial(t, caPEM, j.PeerAddr())
	firstExpiry := j.Status().TLS.NodeCertExpires

	// Traffic through the leader keeps reaching the renewer while its
	// certificate is replaced.
	served := servedBy(client(t), "http://"+c.Nodes[2].HTTPAddr()+"/r", "renewer")
	retry.Run(t, served)

	// The certificate lives 2m (backdated 30s): it renews itself once less
	// than a third is left, 70s after it was issued. (1m, the shortest
	// --cert-ttl, leaves too little slack for a loaded machine with -race,
	// where the test cluster can be without a leader for half a minute.)
	retry.RunFor(t, 3*time.Minute, func(r *retry.R) {
		if s := servedSerial(t, caPEM, j.PeerAddr()); s.Cmp(first) == 0 {
			r.Fatalf("still serving serial %s", s.Text(16))
		}
	})
	second := servedSerial(t, caPEM, j.PeerAddr())
	if !j.Status().TLS.NodeCertExpires.After(firstExpiry) {
		t.Fatalf("status shows expiry %s, not after %s", j.Status().TLS.NodeCertExpires, firstExpiry)
	}
	renewals := 0
	for _, ev := range leader.Plan().Events(0) {
		if ev.Kind == "cert.renew" && ev.Node == "renewer" {
			renewals++
		}
	}
	if renewals == 0 {
		t.Fatal("renewal not audited")
	}
	disk, _ := os.ReadFile(filepath.Join(cfg.DataDir, "tls", "node.pem"))
	if c := parseLeaf(t, disk); c.SerialNumber.Cmp(second) != 0 {
		t.Fatalf("the renewed certificate was not written to the data dir")
	}
	retry.Run(t, served)
	// An explicit renewal works too, with a new key each time.
	retry.Run(t, func(r *retry.R) { // leadership may move meanwhile
		r.Check(j.RenewCert(context.Background()))
	})
	if s := servedSerial(t, caPEM, j.PeerAddr()); s.Cmp(second) == 0 {
		t.Fatal("explicit renewal did not change the served certificate")
	}
	retry.Run(t, served)
}

func parseLeaf(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatal("no certificate")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// recordScript records the hook request it got on stdin in dir.
const recordScript = `#!/bin/sh
cat > "%s/$LOADMESH_HOOK_ID.json.tmp" && mv "%s/$LOADMESH_HOOK_ID.json.tmp" "%s/$LOADMESH_HOOK_ID.json"
echo '{"started":["via-test"]}'
`

// TestScaleOutHookCarriesAWorkingJoinToken: the scale_out hook's request
// holds a fresh join token, the join servers and the CA certificate, and
// a node started with just those joins.
func TestScaleOutHookCarriesAWorkingJoinToken(t *testing.T) {
	skipShort(t)
	dir := t.TempDir()
	script := filepath.Join(dir, "provision.sh")
	if err := os.WriteFile(script, fmt.Appendf(nil, recordScript, dir, dir, dir), 0o755); err != nil {
		t.Fatal(err)
	}
	c, _ := joinCluster(t, 0)
	leader := c.WaitForLeader(t)
	spec := fmt.Sprintf(`mode: auto
interval: 1s
limits: {min_active: 4, max_active: 5}
targets: {inflight_utilisation: 0.7}
standby: {keep: 0}
hooks:
  scale_out: {command: ["/bin/sh", %q], timeout: 10s, retries: 0}
  provision_timeout: 5m
`, script)
	retry.Run(t, func(r *retry.R) {
		resp, err := http.Post("http://"+c.WaitForLeader(t).APIAddr()+"/v1/plan", "application/yaml", strings.NewReader(spec))
		r.Check(err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			r.Fatalf("apply spec: %s %s", resp.Status, b)
		}
	})
	var req provision.Request
	retry.RunFor(t, 30*time.Second, func(r *retry.R) {
		files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
		if len(files) == 0 {
			r.Fatalf("no hook request recorded")
		}
		f, err := os.Open(files[0])
		r.Check(err)
		defer f.Close()
		req, err = provision.ReadRequest(f)
		r.Check(err)
	})
	if req.Kind != provision.KindScaleOut || req.JoinToken == "" || len(req.JoinServers) != 3 || !strings.Contains(req.CACert, "BEGIN CERTIFICATE") {
		t.Fatalf("hook request without what a new node needs: token %v servers %v ca %d bytes", req.JoinToken != "", req.JoinServers, len(req.CACert))
	}
	id, _, err := agent.ParseToken(req.JoinToken)
	if err != nil {
		t.Fatal(err)
	}
	tok, ok := leader.Plan().TokenByID(id)
	if !ok || tok.Role != store.RoleJoin || tok.Uses != req.Count || tok.CreatedBy != "autoscaler" || tok.Expires.Sub(tok.Created) < time.Hour {
		t.Fatalf("hook token %+v (count %d)", tok, req.Count)
	}
	// The token's creation is audited, and the event does not show the
	// secret.
	created := false
	for _, ev := range leader.Plan().Events(0) {
		if ev.Kind == string(store.OpTokenCreate) && ev.Who == "autoscaler" && strings.Contains(ev.Why, req.ID) {
			created = true
		}
		if strings.Contains(ev.After+ev.Before+ev.Why, req.JoinToken[20:]) {
			t.Fatalf("audit event shows the token secret: %+v", ev)
		}
	}
	if !created {
		t.Fatal("hook token creation not audited")
	}

	// A provisioning script has everything: start a node with only these.
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, []byte(req.CACert), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := agent.DefaultConfig()
	cfg.Name, cfg.DataDir = "autoscaled", t.TempDir()
	cfg.Gossip, cfg.Raft, cfg.Peer, cfg.HTTP, cfg.API = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.TLSCA, cfg.JoinToken, cfg.JoinServers, cfg.Join = caFile, req.JoinToken, req.JoinServers, req.Cluster.Seeds
	if _, err := startJoiner(t, cfg); err != nil {
		t.Fatal(err)
	}
	retry.Run(t, func(r *retry.R) {
		if m, ok := c.WaitForLeader(t).Cluster().Member("autoscaled"); !ok || m.Status != "alive" {
			r.Fatalf("autoscaled node not alive: %+v", m)
		}
	})
}

// TestJoinClientErrors: a new node says in one line when no join server
// answers, and when the server's certificate is not from the CA it was
// given (it trusts nothing else, and sends no request there).
func TestJoinClientErrors(t *testing.T) {
	skipShort(t)
	c, _ := joinCluster(t, 0)
	other, err := transport.NewCA("another CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherFile := filepath.Join(t.TempDir(), "other-ca.pem")
	if err := os.WriteFile(otherFile, other.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	tok := createJoinToken(t, c.WaitForLeader(t), `{"role":"join"}`)
	start := func(cfg agent.Config, within time.Duration) error {
		a, err := agent.New(cfg, agent.Deps{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		err = a.Start(ctx)
		if err == nil {
			a.Shutdown(context.Background())
		}
		return err
	}
	cfg := joinerConfig(t, c, "stranger", otherFile, tok.Token, c.Nodes[0])
	err = start(cfg, 20*time.Second)
	if err == nil || !strings.Contains(err.Error(), "does not verify against the given --tls-ca") {
		t.Fatalf("server from another CA: %v", err)
	}
	id, _, _ := agent.ParseToken(tok.Token)
	if left, _ := c.WaitForLeader(t).Plan().TokenByID(id); left.Used != 0 {
		t.Fatal("the token was spent on a server the node does not trust")
	}
	cfg = joinerConfig(t, c, "lonely", c.Nodes[0].Cfg.TLSCA, tok.Token, c.Nodes[0])
	cfg.JoinServers = []string{"127.0.0.1:1"}
	err = start(cfg, 3*time.Second)
	if err == nil || !strings.Contains(err.Error(), "no join server reachable (tried 127.0.0.1:1)") {
		t.Fatalf("nothing listening: %v", err)
	}
	t.Logf("%v", err)
}

// TestJoinedNodeTakesTheTrustBundleOnReload: a node whose certificate the
// cluster issued has no certificate files of its own to reload. On SIGHUP
// (Reload) it renews at once, and takes the servers' --tls-ca with the new
// certificate: that is how it learns a new CA during a CA rotation
// (README, "Rotating the cluster CA").
func TestJoinedNodeTakesTheTrustBundleOnReload(t *testing.T) {
	skipShort(t)
	c, caFile := joinCluster(t, 0)
	leader := c.WaitForLeader(t)
	tok := createJoinToken(t, leader, `{"role":"join","ttl":"1h"}`)
	backend, err := demo.Start("127.0.0.1:0", "rotating-backend", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { backend.Shutdown(context.Background()) })
	cfg := joinerConfig(t, c, "rotating", caFile, tok.Token, leader)
	cfg.Backend = backend.URL()
	j, err := startJoiner(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	oldCA, _ := os.ReadFile(caFile)
	first := servedSerial(t, oldCA, j.PeerAddr())
	if n := len(j.Status().TLS.TrustedCAs); n != 1 {
		t.Fatalf("joined node trusts %d CAs, want 1", n)
	}

	// The servers' --tls-ca becomes a bundle of the old and a new CA
	// (step 2 of a rotation; the servers' own trust is injected in this
	// harness, so only the file they hand out changes).
	newCA, err := transport.NewCA("loadmesh test CA 2", transport.DefaultCALifetime)
	if err != nil {
		t.Fatal(err)
	}
	bundle := append(append([]byte{}, oldCA...), newCA.CertPEM...)
	if err := os.WriteFile(caFile, bundle, 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := j.Reload(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(rep.Applied, func(s string) bool { return strings.Contains(s, "renewal from the cluster") }) {
		t.Fatalf("reload applied %q, want a renewal", rep.Applied)
	}
	retry.RunFor(t, time.Minute, func(r *retry.R) {
		if n := len(j.Status().TLS.TrustedCAs); n != 2 {
			r.Fatalf("joined node trusts %d CAs, want 2", n)
		}
	})
	if s := servedSerial(t, oldCA, j.PeerAddr()); s.Cmp(first) == 0 {
		t.Fatal("the reload did not renew the certificate")
	}
	disk, _ := os.ReadFile(filepath.Join(cfg.DataDir, "tls", "ca.pem"))
	if !bytes.Equal(disk, bundle) {
		t.Fatal("the trust bundle was not written to DATA_DIR/tls/ca.pem")
	}
	// It keeps serving through the mesh.
	retry.Run(t, servedBy(client(t), "http://"+c.Nodes[2].HTTPAddr()+"/b", "rotating"))
}

// servedBy checks that a GET of url is answered by the node called want
// (X-Loadmesh-Node), for retry.Run.
func servedBy(hc *http.Client, url, want string) func(r *retry.R) {
	return func(r *retry.R) {
		resp, err := hc.Get(url)
		r.Check(err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if got := resp.Header.Get(transport.HeaderNode); got != want {
			r.Fatalf("served by %q, want %s", got, want)
		}
	}
}
