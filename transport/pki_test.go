package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// pkiTestCA caches CAs: key generation is cheap, but tests create many.
var pkiTestCA = struct {
	sync.Mutex
	m map[string]*CA
}{m: map[string]*CA{}}

// testCA returns a CA shared by all tests asking for the same name.
func testCA(t testing.TB, name string) *CA {
	t.Helper()
	pkiTestCA.Lock()
	defer pkiTestCA.Unlock()
	if ca, ok := pkiTestCA.m[name]; ok {
		return ca
	}
	ca, err := NewCA(name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pkiTestCA.m[name] = ca
	return ca
}

func testMutualTLS(t testing.TB, ca *CA, node string) *MutualTLS {
	t.Helper()
	m, err := DevMutualTLS(node, ca)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// expiredMutualTLS returns a MutualTLS whose certificate expired an hour
// ago. NewMutualTLS refuses such a certificate, so it is installed behind
// its back, as if it had expired while the node was running.
func expiredMutualTLS(t testing.TB, ca *CA, node string) *MutualTLS {
	t.Helper()
	m := testMutualTLS(t, ca, node)
	certPEM, keyPEM, err := ca.issueNodeCert(node, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	m.cert.Store(&pair)
	return m
}

// impostorMutualTLS returns a MutualTLS that trusts ca but presents a
// certificate for node issued by another CA: a node that knows the
// cluster but cannot prove membership.
func impostorMutualTLS(t testing.TB, ca *CA, node string) *MutualTLS {
	t.Helper()
	m := testMutualTLS(t, ca, node)
	m.cert.Store(testMutualTLS(t, testCA(t, "impostor"), node).cert.Load())
	return m
}

func parseCertPEM(t testing.TB, certPEM []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatal("no pem block")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNodeNameRoundTrip(t *testing.T) {
	ca := testCA(t, "ca")
	for _, name := range []string{"node-1", "a/b", "with space", "100%", "%2F", "ünïcødé", "x?y#z", strings.Repeat("n", MaxNodeNameLen)} {
		t.Run(name[:min(len(name), 16)], func(t *testing.T) {
			certPEM, _, err := ca.IssueNodeCert(name, time.Hour, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			cert := parseCertPEM(t, certPEM)
			got, err := NodeNameFromCert(cert)
			if err != nil {
				t.Fatal(err)
			}
			if got != name {
				t.Fatalf("NodeNameFromCert = %q, want %q", got, name)
			}
			if cert.Subject.CommonName != name {
				t.Fatalf("CommonName = %q, want %q", cert.Subject.CommonName, name)
			}
		})
	}
}

func TestIssueNodeCertRefusesBadInput(t *testing.T) {
	ca := testCA(t, "ca")
	for _, tc := range []struct {
		name     string
		node     string
		validFor time.Duration
		want     string
	}{
		{"empty name", "", time.Hour, "empty node name"},
		{"control char", "a\nb", time.Hour, "control characters"},
		{"invalid utf8", "a\xffb", time.Hour, "utf-8"},
		{"too long", strings.Repeat("n", MaxNodeNameLen+1), time.Hour, "longer than"},
		{"zero lifetime", "n", 0, "not positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ca.IssueNodeCert(tc.node, tc.validFor, nil, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestIssueNodeCertContents(t *testing.T) {
	ca := testCA(t, "ca")
	ips := []net.IP{net.ParseIP("10.0.0.1")}
	certPEM, _, err := ca.IssueNodeCert("node-1", 10*DefaultCALifetime, ips, []string{"node-1.example"})
	if err != nil {
		t.Fatal(err)
	}
	cert := parseCertPEM(t, certPEM)
	if !cert.NotAfter.Equal(ca.Cert.NotAfter) {
		t.Errorf("NotAfter = %s, want it clamped to the CA's %s", cert.NotAfter, ca.Cert.NotAfter)
	}
	if len(cert.IPAddresses) != 1 || !cert.IPAddresses[0].Equal(ips[0]) || len(cert.DNSNames) != 1 {
		t.Errorf("SANs = %v %v", cert.IPAddresses, cert.DNSNames)
	}
	if got := cert.URIs[0].String(); got != "loadmesh://node/node-1" {
		t.Errorf("URI SAN = %q", got)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		pool := x509.NewCertPool()
		pool.AddCert(ca.Cert)
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("verify for usage %v: %v", usage, err)
		}
	}
}

func TestCAFilesRoundTrip(t *testing.T) {
	ca, err := NewCA("cluster", DefaultCALifetime)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	certFile, keyFile := write("ca.pem", ca.CertPEM), write("ca-key.pem", keyPEM)

	loaded, err := LoadCA(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(ca.Cert) || !loaded.Key.Equal(ca.Key) {
		t.Fatal("loaded CA differs from the saved one")
	}

	// A certificate issued by the loaded CA works with the original's PEM,
	// and the whole identity loads from files.
	nodeCert, nodeKey, err := loaded.IssueNodeCert("node-1", DefaultNodeCertLifetime, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := LoadMutualTLS(certFile, write("node.pem", nodeCert), write("node-key.pem", nodeKey), "node-1")
	if err != nil {
		t.Fatal(err)
	}
	if m.NodeName() != "node-1" || m.Leaf() == nil {
		t.Fatalf("NodeName = %q, Leaf = %v", m.NodeName(), m.Leaf())
	}

	other, err := NewCA("other", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, _ := other.KeyPEM()
	if _, err := LoadCA(certFile, write("other-key.pem", otherKey)); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("LoadCA with another CA's key: err = %v", err)
	}
	if _, err := LoadCA(write("node-as-ca.pem", nodeCert), keyFile); err == nil || !strings.Contains(err.Error(), "not a ca") {
		t.Fatalf("LoadCA with a node certificate: err = %v", err)
	}
	if _, err := LoadCA(filepath.Join(dir, "missing.pem"), keyFile); err == nil {
		t.Fatal("LoadCA with a missing file succeeded")
	}
}

func TestNewMutualTLSRefusesBadIdentity(t *testing.T) {
	ca, other := testCA(t, "ca"), testCA(t, "other")
	certPEM, keyPEM, err := ca.IssueNodeCert("node-1", time.Hour, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	otherCert, otherKey, err := other.IssueNodeCert("node-1", time.Hour, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	expiredCert, expiredKey, err := ca.issueNodeCert("node-1", time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name            string
		ca, cert, key   []byte
		node, wantError string
	}{
		{"other ca", ca.CertPEM, otherCert, otherKey, "node-1", "not issued by the cluster ca"},
		{"wrong name", ca.CertPEM, certPEM, keyPEM, "node-2", `names node "node-1", want "node-2"`},
		{"expired", ca.CertPEM, expiredCert, expiredKey, "node-1", "expired"},
		{"mismatched key", ca.CertPEM, certPEM, otherKey, "node-1", "private key does not match"},
		{"no ca", nil, certPEM, keyPEM, "node-1", "no pem certificate"},
		{"leaf as ca", certPEM, certPEM, keyPEM, "node-1", "not a ca"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewMutualTLS(tc.ca, tc.cert, tc.key, tc.node)
			if err == nil || !strings.Contains(err.Error(), tc.wantError) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.wantError)
			}
		})
	}
}

// handshake runs a TLS handshake over an in-memory pipe and returns both
// sides' errors and connection states.
func handshake(t *testing.T, server, client *tls.Config) (serverState, clientState tls.ConnectionState, serverErr, clientErr error) {
	t.Helper()
	sc, cc := net.Pipe()
	defer sc.Close()
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv, cli := tls.Server(sc, server), tls.Client(cc, client)
	var wg sync.WaitGroup
	wg.Go(func() {
		serverErr = srv.HandshakeContext(ctx)
		if serverErr != nil {
			sc.Close() // unblock the client
		} else {
			// TLS 1.3 clients finish first; read so that a refusal of the
			// client certificate reaches the client.
			serverState = srv.ConnectionState()
			_, _ = srv.Write([]byte{1})
		}
	})
	clientErr = cli.HandshakeContext(ctx)
	if clientErr == nil {
		clientState = cli.ConnectionState()
		b := make([]byte, 1)
		if _, err := cli.Read(b); err != nil {
			clientErr = err
		}
	}
	if clientErr != nil {
		cc.Close()
	}
	wg.Wait()
	return serverState, clientState, serverErr, clientErr
}

func TestMutualTLSHandshake(t *testing.T) {
	ca, other := testCA(t, "ca"), testCA(t, "other")
	a, b := testMutualTLS(t, ca, "node-a"), testMutualTLS(t, ca, "node-b")
	foreign := testMutualTLS(t, other, "node-a")
	impostor := impostorMutualTLS(t, ca, "node-a")
	expired := expiredMutualTLS(t, ca, "node-a")

	for _, tc := range []struct {
		name              string
		server, client    *MutualTLS
		peerName          string
		serverErr, cliErr string // substrings; empty means success
	}{
		{name: "ok", server: b, client: a, peerName: "node-b"},
		{name: "any peer", server: b, client: a, peerName: ""},
		{name: "wrong server name", server: b, client: a, peerName: "node-c",
			cliErr: `names node "node-b", want "node-c"`, serverErr: "bad certificate"},
		{name: "client from other ca", server: b, client: impostor, peerName: "node-b",
			serverErr: "not issued by the cluster ca", cliErr: "bad certificate"},
		{name: "server from other ca", server: impostor, client: b, peerName: "node-a",
			cliErr: "not issued by the cluster ca", serverErr: "bad certificate"},
		{name: "client trusting other ca", server: b, client: foreign, peerName: "node-b",
			cliErr: "not issued by the cluster ca", serverErr: "bad certificate"},
		{name: "expired client", server: b, client: expired, peerName: "node-b",
			serverErr: "expired", cliErr: "bad certificate"},
		{name: "expired server", server: expired, client: b, peerName: "node-a",
			cliErr: "expired", serverErr: "bad certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ss, cs, serverErr, clientErr := handshake(t, tc.server.ServerConfig("h3"), tc.client.ClientConfig(tc.peerName, "h3"))
			check := func(side string, err error, want string) {
				t.Helper()
				switch {
				case want == "" && err != nil:
					t.Errorf("%s: unexpected error: %v", side, err)
				case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
					t.Errorf("%s: err = %v, want it to mention %q", side, err, want)
				}
			}
			check("server", serverErr, tc.serverErr)
			check("client", clientErr, tc.cliErr)
			if tc.serverErr != "" || tc.cliErr != "" {
				return
			}
			if name, err := tc.server.PeerName(ss); err != nil || name != tc.client.NodeName() {
				t.Errorf("server sees peer %q, %v; want %q", name, err, tc.client.NodeName())
			}
			if name, err := tc.client.PeerName(cs); err != nil || name != tc.server.NodeName() {
				t.Errorf("client sees peer %q, %v; want %q", name, err, tc.server.NodeName())
			}
			if ss.Version != tls.VersionTLS13 || ss.NegotiatedProtocol != "h3" {
				t.Errorf("version %x, protocol %q", ss.Version, ss.NegotiatedProtocol)
			}
		})
	}
}

func TestPeerNameRefusesUnverifiedState(t *testing.T) {
	ca, other := testCA(t, "ca"), testCA(t, "other")
	m := testMutualTLS(t, ca, "node-a")
	if _, err := m.PeerName(tls.ConnectionState{}); err == nil {
		t.Fatal("PeerName without certificates succeeded")
	}
	foreign := testMutualTLS(t, other, "node-b")
	if _, err := m.PeerName(tls.ConnectionState{PeerCertificates: []*x509.Certificate{foreign.Leaf()}}); err == nil {
		t.Fatal("PeerName accepted a certificate from another CA")
	}
}

func TestMutualTLSReload(t *testing.T) {
	ca := testCA(t, "ca")
	m := testMutualTLS(t, ca, "node-a")
	before := m.Leaf()
	server := m.ServerConfig() // built before the reload, as a listener would be

	certPEM, keyPEM, err := ca.IssueNodeCert("node-a", time.Hour, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Reload(certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	after := m.Leaf()
	if after.Equal(before) {
		t.Fatal("Reload did not replace the certificate")
	}
	_, cs, _, clientErr := handshake(t, server, testMutualTLS(t, ca, "node-b").ClientConfig("node-a"))
	if clientErr != nil {
		t.Fatal(clientErr)
	}
	if !cs.PeerCertificates[0].Equal(after) {
		t.Fatal("existing server config still serves the old certificate")
	}

	wrongPEM, wrongKey, err := ca.IssueNodeCert("node-b", time.Hour, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Reload(wrongPEM, wrongKey); err == nil {
		t.Fatal("Reload accepted a certificate for another node")
	}
	if !m.Leaf().Equal(after) {
		t.Fatal("failed Reload replaced the certificate")
	}
}

func TestDeriveSecretIsStableAndKeyBound(t *testing.T) {
	ca := testCA(t, "ca")
	m := testMutualTLS(t, ca, "node-a")
	s1, err := m.deriveSecret("x")
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := m.deriveSecret("x")
	s3, _ := m.deriveSecret("y")
	s4, _ := testMutualTLS(t, ca, "node-a").deriveSecret("x")
	if s1 != s2 || s1 == s3 || s1 == s4 {
		t.Fatal("derived secrets are not stable per key and label")
	}
}
