package test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/cmd/loadmesh/demo"
	"github.com/loadmesh/loadmesh/test/harness"
	"github.com/loadmesh/loadmesh/test/retry"
	"github.com/loadmesh/loadmesh/transport"
)

// TestCARotationWithJoinedNode runs the README's CA rotation ("Rotating
// the cluster CA") on a cluster with a node that joined with a join
// token: three servers that hold the CA key and read their TLS files
// again on reload, and the joined node, which has no certificate files
// and follows each step by renewing on SIGHUP (Reload). Under steady
// load through every ingress, no request fails; at the end the joined
// node's certificate is from the new CA, it trusts only the new CA, and
// it still serves forwarded requests.
func TestCARotationWithJoinedNode(t *testing.T) {
	skipShort(t)
	old, err := transport.NewCA("loadmesh test CA", transport.DefaultCALifetime)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "ca-key.pem")
	oldKey, _ := old.KeyPEM()
	writeFile(t, keyFile, oldKey)
	c := harness.Start(t, 3, harness.Options{Backends: true, TLSFiles: true, CA: old, MaxVoters: 3,
		Tune: func(i int, cfg *agent.Config) {
			cfg.TLSCAKey = keyFile
			cfg.Policy = "random"
		}})
	leader := c.WaitForLeader(t)
	c.WaitForMembers(t)

	// The joined node, with the old CA as its trust.
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	writeFile(t, caFile, old.CertPEM)
	tok := createJoinToken(t, leader, `{"role":"join","ttl":"1h"}`)
	backend, err := demo.Start("127.0.0.1:0", "joined-backend", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { backend.Shutdown(context.Background()) })
	cfg := joinerConfig(t, c, "joined", caFile, tok.Token, leader)
	cfg.Backend = backend.URL()
	cfg.Policy = "random"
	j, err := startJoiner(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitRaftMember(t, c, "joined")

	next, err := transport.NewCA("loadmesh test CA 2", transport.DefaultCALifetime)
	if err != nil {
		t.Fatal(err)
	}
	both := append(append([]byte{}, old.CertPEM...), next.CertPEM...)
	oldFP, nextFP := transport.Fingerprint(old.Cert), transport.Fingerprint(next.Cert)
	joinedTrust := func(wantCAs []string, wantIssuer string) {
		t.Helper()
		retry.RunFor(t, time.Minute, func(r *retry.R) {
			st := j.Status().TLS
			var got []string
			for _, ca := range st.TrustedCAs {
				got = append(got, ca.Fingerprint)
			}
			if len(got) != len(wantCAs) || st.NodeCertIssuer != wantIssuer {
				r.Fatalf("joined node trusts %v, certificate from %s; want %v and %s", got, st.NodeCertIssuer, wantCAs, wantIssuer)
			}
			for i := range got {
				if got[i] != wantCAs[i] {
					r.Fatalf("joined node trusts %v, want %v", got, wantCAs)
				}
			}
		})
	}
	joinedTrust([]string{oldFP}, oldFP)

	ingresses := []string{j.HTTPAddr()}
	for _, n := range c.Live() {
		ingresses = append(ingresses, n.HTTPAddr())
	}
	load := startSteadyLoad(t, ingresses, 2)
	renew := func() {
		t.Helper()
		if _, err := j.Reload(cfg); err != nil {
			t.Fatalf("reload of the joined node: %v", err)
		}
	}

	// b. The servers trust both CAs; the joined node takes their bundle.
	for _, n := range c.Live() {
		writeFile(t, n.Cfg.TLSCA, both)
		reloadTLS(t, n, "tls-ca")
	}
	renew()
	joinedTrust([]string{oldFP, nextFP}, oldFP)
	commitPlan(t, c, "ca rotation with a joined node: trust both")

	// c. The servers sign with the new CA and get certificates from it;
	// the joined node renews and gets one from the new CA too.
	nextKey, _ := next.KeyPEM()
	writeFile(t, keyFile, nextKey)
	for _, n := range c.Live() {
		certPEM, keyPEM, err := next.IssueNodeCert(n.Name(), transport.DefaultNodeCertLifetime, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, n.Cfg.TLSCert, certPEM)
		writeFile(t, n.Cfg.TLSKey, keyPEM)
		reloadTLS(t, n, "tls-cert")
	}
	renew()
	joinedTrust([]string{oldFP, nextFP}, nextFP)
	commitPlan(t, c, "ca rotation with a joined node: re-issued")

	// d. The old CA is retired on the servers, then on the joined node.
	for _, n := range c.Live() {
		writeFile(t, n.Cfg.TLSCA, next.CertPEM)
		reloadTLS(t, n, "tls-ca")
	}
	renew()
	joinedTrust([]string{nextFP}, nextFP)
	commitPlan(t, c, "ca rotation with a joined node: old CA retired")
	load.report(t)

	// The joined node still takes requests forwarded to it over the peer
	// channel, now on new-CA certificates at both ends.
	if data, _ := os.ReadFile(filepath.Join(cfg.DataDir, "tls", "ca.pem")); string(data) != string(next.CertPEM) {
		t.Fatal("the joined node's DATA_DIR/tls/ca.pem is not the new CA alone")
	}
	retry.Run(t, servedBy(client(t), "http://"+c.Nodes[0].HTTPAddr()+"/after-rotation", "joined"))
}
