package test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/test/harness"
	"github.com/loadmesh/loadmesh/test/retry"
	"github.com/loadmesh/loadmesh/transport"
)

// TestCARotationUnderLoad rotates the cluster CA of a running cluster
// under steady load, through the agents' reload path (the files read
// again, as on SIGHUP), as the README's "Rotating the cluster CA" does:
//
//	a. create a new CA;
//	b. every node trusts the bundle old+new;
//	c. one node at a time gets a certificate from the new CA (and a
//	   node that joins meanwhile has one from the start);
//	d. every node trusts the new CA alone.
//
// No request fails, forwarded requests cross the peer channel between
// nodes holding certificates from different CAs, Raft commits a plan
// change after every step, and at the end a certificate from the old CA
// is refused on the peer channel and the Raft port.
func TestCARotationUnderLoad(t *testing.T) {
	skipShort(t)
	c := harness.Start(t, 3, harness.Options{
		Backends: true,
		TLSFiles: true,
		// The node that joins mid-rotation becomes a non-voter: Raft
		// still replicates to it over TLS, and three voters do not split
		// their votes the way four can on a busy machine.
		MaxVoters: 3,
		// random sends two requests in three to another node.
		Tune: func(i int, cfg *agent.Config) { cfg.Policy = "random" },
	})
	c.WaitForLeader(t)
	c.WaitForMembers(t)
	old := c.CA
	var ingresses []string
	for _, n := range c.Live() {
		ingresses = append(ingresses, n.HTTPAddr())
	}
	load := startSteadyLoad(t, ingresses, 2)
	plans := 0
	commit := func(step string) {
		t.Helper()
		plans++
		commitPlan(t, c, fmt.Sprintf("ca rotation: %s", step))
		// Some load in every state of the rotation (a busy machine
		// running -race answers a few requests a second).
		from := load.sent.Load()
		retry.RunFor(t, retry.Scale(60*time.Second), func(r *retry.R) {
			if sent := load.sent.Load() - from; sent < 20 {
				r.Fatalf("%d requests sent since %q, want 20", sent, step)
			}
		})
	}
	commit("before")

	// a. The new CA.
	next, err := transport.NewCA("loadmesh test CA 2", transport.DefaultCALifetime)
	if err != nil {
		t.Fatal(err)
	}
	both := append(append([]byte{}, old.CertPEM...), next.CertPEM...)
	oldFP, nextFP := transport.Fingerprint(old.Cert), transport.Fingerprint(next.Cert)

	// Before b a node refuses a certificate from the new CA.
	nextProbe := probeIdentity(t, both, next, "node-1")
	oldProbe := probeIdentity(t, both, old, "node-1")
	if err := probePeer(t, nextProbe, c.Nodes[0]); err == nil {
		t.Fatal("before the rotation node-0's peer channel accepted a certificate from the new CA")
	}

	// b. Trust both, everywhere.
	for _, n := range c.Live() {
		writeFile(t, n.Cfg.TLSCA, both)
		reloadTLS(t, n, "tls-ca")
	}
	for _, n := range c.Live() {
		checkTrust(t, n, []string{oldFP, nextFP}, oldFP)
		if err := probePeer(t, nextProbe, n); err != nil {
			t.Errorf("trusting both CAs, %s refuses a certificate from the new CA: %v", n.Name(), err)
		}
		if err := probeRaft(t, nextProbe, n); err != nil {
			t.Errorf("trusting both CAs, %s's raft port refuses a certificate from the new CA: %v", n.Name(), err)
		}
	}
	commit("trust both")

	// Retiring the old CA now would cut node-0 off: refused, nothing
	// changes.
	n0 := c.Nodes[0]
	writeFile(t, n0.Cfg.TLSCA, next.CertPEM)
	if _, err := n0.Reload(n0.Cfg); err == nil || !strings.Contains(err.Error(), "not issued by the cluster ca") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("reload of the new CA alone with an old-CA certificate: %v, want a one-line refusal", err)
	}
	checkTrust(t, n0, []string{oldFP, nextFP}, oldFP)
	writeFile(t, n0.Cfg.TLSCA, both)

	// c. Re-issue, one node at a time.
	for i, n := range c.Live() {
		certPEM, keyPEM, err := next.IssueNodeCert(n.Name(), transport.DefaultNodeCertLifetime, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, n.Cfg.TLSCert, certPEM)
		writeFile(t, n.Cfg.TLSKey, keyPEM)
		reloadTLS(t, n, "tls-cert")
		checkTrust(t, n, []string{oldFP, nextFP}, nextFP)
		commit("re-issued " + n.Name())
		if i == 0 {
			// A node that joins mid-rotation, with a certificate from the
			// new CA: handshakes between old and new certificates, in
			// both directions, on fresh connections.
			n3 := addNode(t, c, both, next)
			c.WaitForMembers(t)
			waitRaftMember(t, c, n3.Name())
			commit("node-3 joined")
		}
	}

	// d. Retire the old CA.
	for _, n := range c.Live() {
		writeFile(t, n.Cfg.TLSCA, next.CertPEM)
		reloadTLS(t, n, "tls-ca")
	}
	for _, n := range c.Live() {
		checkTrust(t, n, []string{nextFP}, nextFP)
		if err := probePeer(t, oldProbe, n); err == nil {
			t.Errorf("after retiring the old CA, %s's peer channel accepted an old-CA certificate", n.Name())
		}
		if err := probeRaft(t, oldProbe, n); err == nil {
			t.Errorf("after retiring the old CA, %s's raft port accepted an old-CA certificate", n.Name())
		}
		if err := probePeer(t, nextProbe, n); err != nil {
			t.Errorf("after retiring the old CA, %s refuses a new-CA certificate: %v", n.Name(), err)
		}
	}
	commit("old CA retired")

	// Every node took forwarded requests, so the peer channel carried
	// traffic throughout.
	load.report(t)
	load.mu.Lock()
	defer load.mu.Unlock()
	if len(load.servedBy) < 3 {
		t.Errorf("requests served by %v, want every node", load.servedBy)
	}
	routes := map[string]float64{}
	for _, n := range c.Live() {
		for route, v := range servedRoutes(t, n) {
			routes[route] += v
		}
	}
	// "local" also counts what a node served for its peers.
	t.Logf("requests answered 2xx, by route: %v", routes)
	if sent := float64(load.sent.Load()); routes["forwarded"] < sent/2 {
		t.Errorf("%v of %v requests forwarded across the peer channel, want most", routes["forwarded"], sent)
	}
	t.Logf("%d plan changes committed", plans)
}

// commitPlan applies a plan through a follower's API (carried to the
// leader) and waits until every live node has it.
func commitPlan(t *testing.T, c *harness.Cluster, why string) {
	t.Helper()
	var follower *harness.Node
	// A busy machine running -race may hold elections now and then.
	retry.RunFor(t, retry.Scale(60*time.Second), func(r *retry.R) {
		for _, n := range c.Live() {
			if !n.Cluster().IsLeader() {
				follower = n
			}
		}
		u := "http://" + follower.APIAddr() + "/v1/plan?reason=" + strings.ReplaceAll(why, " ", "+")
		resp, err := http.Post(u, "application/yaml", strings.NewReader("mode: dry-run\n"))
		if err != nil {
			r.Fatalf("apply plan %q: %v", why, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			r.Fatalf("apply plan %q: %s: %s", why, resp.Status, body)
		}
	})
	retry.Run(t, func(r *retry.R) {
		for _, n := range c.Live() {
			if got := n.Plan().Spec().Why; got != why {
				r.Fatalf("%s has the plan of %q, want %q", n.Name(), got, why)
			}
		}
	})
}

func writeFile(t *testing.T, name string, b []byte) {
	t.Helper()
	// Written aside and renamed, as an operator's tool should: a reload
	// never reads half a file.
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, name); err != nil {
		t.Fatal(err)
	}
}

// reloadTLS reloads n's configuration and checks that what flag names
// was applied.
func reloadTLS(t *testing.T, n *harness.Node, flag string) {
	t.Helper()
	rep, err := n.Reload(n.Cfg)
	if err != nil {
		t.Fatalf("reload %s: %v", n.Name(), err)
	}
	t.Logf("%s reloaded: %q", n.Name(), rep.Applied)
	for _, a := range rep.Applied {
		if strings.HasPrefix(a, flag+": ") {
			return
		}
	}
	t.Fatalf("reload of %s applied %q, want a %s change", n.Name(), rep.Applied, flag)
}

// checkTrust checks n's GET /v1/status: the CAs it trusts, in order, and
// the one that signed its certificate.
func checkTrust(t *testing.T, n *harness.Node, trusted []string, issuer string) {
	t.Helper()
	resp, err := http.Get("http://" + n.APIAddr() + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st agent.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if st.TLS == nil {
		t.Fatalf("%s: status has no tls", n.Name())
	}
	var got []string
	for _, ca := range st.TLS.TrustedCAs {
		got = append(got, ca.Fingerprint)
	}
	if strings.Join(got, ",") != strings.Join(trusted, ",") || st.TLS.NodeCertIssuer != issuer {
		t.Fatalf("%s trusts %q with a certificate from %s; want %q and %s", n.Name(), got, st.TLS.NodeCertIssuer, trusted, issuer)
	}
}

// addNode starts one more agent whose --tls-ca is caPEM and whose
// certificate is from signer.
func addNode(t *testing.T, c *harness.Cluster, caPEM []byte, signer *transport.CA) *harness.Node {
	t.Helper()
	name := fmt.Sprintf("node-%d", len(c.Nodes))
	certPEM, keyPEM, err := signer.IssueNodeCert(name, transport.DefaultNodeCertLifetime, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := map[string][]byte{"ca.pem": caPEM, "node.pem": certPEM, "node-key.pem": keyPEM}
	for f, b := range files {
		writeFile(t, filepath.Join(dir, f), b)
	}
	// Add takes the harness' per-node tuning; the TLS files are this
	// node's own.
	n := c.AddWith(t, func(cfg *agent.Config) {
		cfg.TLSCA, cfg.TLSCert, cfg.TLSKey = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "node.pem"), filepath.Join(dir, "node-key.pem")
	})
	if n.Name() != name {
		t.Fatalf("added %s, want %s", n.Name(), name)
	}
	return n
}

// waitRaftMember waits until the leader has name in its Raft
// configuration, as a voter or not.
func waitRaftMember(t *testing.T, c *harness.Cluster, name string) {
	t.Helper()
	retry.RunFor(t, retry.Scale(60*time.Second), func(r *retry.R) {
		for _, n := range c.Live() {
			if !n.Cluster().IsLeader() {
				continue
			}
			st := n.Cluster().RaftStatus()
			if slices.Contains(st.Voters, name) || slices.Contains(st.Nonvoters, name) {
				return
			}
			r.Fatalf("raft voters %v, non-voters %v; want %s among them", st.Voters, st.Nonvoters, name)
		}
		r.Fatalf("no leader")
	})
}

// probeIdentity is a node identity outside the cluster's agents: it
// trusts caPEM and holds a certificate for node (a live member, so that
// only the CA decides) from signer.
func probeIdentity(t *testing.T, caPEM []byte, signer *transport.CA, node string) *transport.MutualTLS {
	t.Helper()
	certPEM, keyPEM, err := signer.IssueNodeCert(node, time.Hour, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := transport.NewMutualTLS(caPEM, certPEM, keyPEM, node)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// probePeer forwards one request to n's peer channel on a new QUIC
// connection made with id.
func probePeer(t *testing.T, id *transport.MutualTLS, n *harness.Node) error {
	t.Helper()
	cfg := transport.DefaultPeerConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.DialTimeout = retry.Scale(3 * time.Second)
	srv, err := transport.NewPeerServer(cfg, transport.PeerDeps{TLS: id, Handler: http.NotFoundHandler()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), retry.Scale(5*time.Second))
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://probe.example/ca-rotation", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().RoundTripPeer(req, transport.PeerTarget{Name: n.Name(), Addr: n.PeerAddr()})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("forwarded probe: %s", resp.Status)
	}
	return nil
}

// probeRaft opens a TLS connection to n's Raft port with id. The server
// verifies the client certificate after the client's handshake is done,
// so a refusal shows as an alert on the first read; an accepted probe
// reads nothing (Raft waits for an RPC) until the deadline.
func probeRaft(t *testing.T, id *transport.MutualTLS, n *harness.Node) error {
	t.Helper()
	d := &net.Dialer{Timeout: retry.Scale(3 * time.Second)}
	conn, err := tls.DialWithDialer(d, "tcp", n.Cluster().RaftAddr(), id.ClientConfig(n.Name(), "loadmesh-raft/1"))
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, err = conn.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	return fmt.Errorf("raft port: %w", err)
}

// servedRoutes reads n's loadmesh_transport_requests_total for 2xx
// answers, by route (local, forwarded).
func servedRoutes(t *testing.T, n *harness.Node) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + n.APIAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for line := range strings.Lines(string(body)) {
		if !strings.HasPrefix(line, "loadmesh_transport_requests_total{") || !strings.Contains(line, `outcome="2xx"`) {
			continue
		}
		for _, route := range []string{"local", "forwarded"} {
			if strings.Contains(line, `route="`+route+`"`) {
				var v float64
				fmt.Sscanf(line[strings.LastIndexByte(line, ' ')+1:], "%g", &v)
				out[route] += v
			}
		}
	}
	return out
}
