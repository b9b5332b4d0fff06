package transport

import (
	"crypto/tls"
	"crypto/x509"
	"slices"
	"strings"
	"testing"
	"time"
)

// bundle concatenates the CAs' certificates, as `loadmesh tls ca bundle`
// writes them.
func bundle(cas ...*CA) []byte {
	var b []byte
	for _, ca := range cas {
		b = append(b, ca.CertPEM...)
	}
	return b
}

// issue returns a node certificate and key for node, signed by ca.
func issue(t testing.TB, ca *CA, node string) (certPEM, keyPEM []byte) {
	t.Helper()
	certPEM, keyPEM, err := ca.IssueNodeCert(node, time.Hour, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
}

// identity returns a MutualTLS for node that trusts caPEM and holds a
// certificate from signer.
func identity(t testing.TB, caPEM []byte, signer *CA, node string) *MutualTLS {
	t.Helper()
	certPEM, keyPEM := issue(t, signer, node)
	m, err := NewMutualTLS(caPEM, certPEM, keyPEM, node)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// expectHandshake runs a handshake from client to server and checks that
// it succeeds (refused == "") or that the side that verifies fails with
// an error mentioning refused.
func expectHandshake(t *testing.T, what string, server, client *MutualTLS, refused string) {
	t.Helper()
	_, _, serverErr, clientErr := handshake(t, server.ServerConfig(), client.ClientConfig(server.NodeName()))
	if refused == "" {
		if serverErr != nil || clientErr != nil {
			t.Errorf("%s: server %v, client %v; want a handshake", what, serverErr, clientErr)
		}
		return
	}
	if (serverErr == nil || !strings.Contains(serverErr.Error(), refused)) && (clientErr == nil || !strings.Contains(clientErr.Error(), refused)) {
		t.Errorf("%s: server %v, client %v; want a refusal mentioning %q", what, serverErr, clientErr, refused)
	}
}

func TestBundleTrustsEveryCA(t *testing.T) {
	old, next, other := testCA(t, "old"), testCA(t, "new"), testCA(t, "other")
	both := bundle(old, next)
	server := identity(t, both, old, "node-a")
	fromOld := identity(t, both, old, "node-b")
	fromNew := identity(t, both, next, "node-c")
	oldOnly := identity(t, bundle(old), old, "node-d")

	expectHandshake(t, "client from the old ca", server, fromOld, "")
	expectHandshake(t, "client from the new ca", server, fromNew, "")
	expectHandshake(t, "server from the new ca, client from the old ca", fromNew, fromOld, "")
	// A node that trusts only the old CA still refuses the new one: that
	// is why every node must trust the bundle before any certificate is
	// re-issued.
	expectHandshake(t, "old-only server, client from the new ca", oldOnly, fromNew, "not issued by the cluster ca")
	expectHandshake(t, "client from another ca", server, identity(t, bundle(other), other, "node-e"), "not issued by the cluster ca")

	if got := server.TrustedCAs(); len(got) != 2 || !got[0].Equal(old.Cert) || !got[1].Equal(next.Cert) {
		t.Errorf("trusted %d cas, want old and new in bundle order", len(got))
	}
	if !server.Issuer().Equal(old.Cert) || !fromNew.Issuer().Equal(next.Cert) {
		t.Error("Issuer does not name the signing ca")
	}
}

// TestReloadAllRotatesTheCA runs the whole rotation on one node, with the
// tls.Configs built before it (as listeners are) and a peer that follows
// the same steps.
func TestReloadAllRotatesTheCA(t *testing.T) {
	old, next := testCA(t, "old"), testCA(t, "new")
	a := identity(t, bundle(old), old, "node-a")
	b := identity(t, bundle(old), old, "node-b")
	aCert, aKey := issue(t, old, "node-a")
	if err := a.ReloadAll(bundle(old), aCert, aKey); err != nil {
		t.Fatal(err)
	}
	newPeer := identity(t, bundle(old, next), next, "node-c")
	expectHandshake(t, "before: a peer from the new ca", a, newPeer, "not issued by the cluster ca")

	// b: trust both.
	if err := a.ReloadAll(bundle(old, next), aCert, aKey); err != nil {
		t.Fatal(err)
	}
	if n := len(a.TrustedCAs()); n != 2 {
		t.Fatalf("trusting %d cas after reloading a bundle of 2", n)
	}
	expectHandshake(t, "bundle: a peer from the new ca", a, newPeer, "")
	expectHandshake(t, "bundle: a peer from the old ca", a, b, "")

	// c: re-issue from the new CA; the peer still holding an old-CA
	// certificate trusts only the old CA, so it refuses a.
	nCert, nKey := issue(t, next, "node-a")
	if err := a.ReloadAll(bundle(old, next), nCert, nKey); err != nil {
		t.Fatal(err)
	}
	if !a.Issuer().Equal(next.Cert) {
		t.Fatal("after re-issue the certificate is not from the new ca")
	}
	expectHandshake(t, "re-issued: a peer from the old ca that trusts both", a, identity(t, bundle(old, next), old, "node-d"), "")
	expectHandshake(t, "re-issued: a peer that trusts only the old ca", b, a, "not issued by the cluster ca")

	// d: retire the old CA.
	if err := a.ReloadAll(bundle(next), nCert, nKey); err != nil {
		t.Fatal(err)
	}
	expectHandshake(t, "retired: a peer from the new ca", a, newPeer, "")
	stale := identity(t, bundle(old, next), old, "node-e")
	expectHandshake(t, "retired: client from the old ca", a, stale, "not issued by the cluster ca")
	expectHandshake(t, "retired: server from the old ca", stale, a, "not issued by the cluster ca")
	if _, err := a.PeerName(tlsState(stale.Leaf())); err == nil {
		t.Error("PeerName accepted an old-ca certificate after the old ca was retired")
	}
}

func TestReloadAllRefusesACertOutsideTheBundle(t *testing.T) {
	old, next := testCA(t, "old"), testCA(t, "new")
	a := identity(t, bundle(old, next), old, "node-a")
	before, trusted := a.Leaf(), a.TrustedCAs()
	oldCert, oldKey := issue(t, old, "node-a")
	newCert, _ := issue(t, next, "node-a")
	bCert, bKey := issue(t, old, "node-b")
	for _, tc := range []struct {
		name          string
		ca, cert, key []byte
		want          string
	}{
		{"old ca retired too early", bundle(next), oldCert, oldKey, "not issued by the cluster ca"},
		{"cert of another node", bundle(old, next), bCert, bKey, `names node "node-b"`},
		{"key of another certificate", bundle(old, next), newCert, oldKey, "private key does not match"},
		{"no ca", []byte("nothing here"), oldCert, oldKey, "no pem certificate"},
		{"a node certificate as ca", oldCert, oldCert, oldKey, "not a ca certificate"},
	} {
		err := a.ReloadAll(tc.ca, tc.cert, tc.key)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error mentioning %q", tc.name, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error is not one line: %q", tc.name, err)
		}
	}
	if !a.Leaf().Equal(before) || !slices.EqualFunc(a.TrustedCAs(), trusted, (*x509.Certificate).Equal) {
		t.Fatal("a refused ReloadAll changed the certificate or the trusted cas")
	}
	// The old API checks against the bundle in force.
	if err := a.Reload(oldCert, oldKey); err != nil {
		t.Fatalf("Reload of an old-ca certificate while both are trusted: %v", err)
	}
	if err := a.ReloadAll(bundle(next), nil, nil); err == nil {
		t.Fatal("ReloadAll without a certificate succeeded")
	}
}

func mustIssue(t testing.TB, ca *CA, node string) []byte {
	c, _ := issue(t, ca, node)
	return c
}

func TestCheckCABundle(t *testing.T) {
	old, next := testCA(t, "old"), testCA(t, "new")
	now := time.Now()
	if err := CheckCABundle([]*x509.Certificate{old.Cert, next.Cert}, now); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cas  []*x509.Certificate
		at   time.Time
		want string
	}{
		{"empty", nil, now, "no ca"},
		{"duplicate", []*x509.Certificate{old.Cert, next.Cert, old.Cert}, now, "twice"},
		{"expired", []*x509.Certificate{old.Cert}, now.Add(2 * time.Hour), "expired"},
		{"node certificate", []*x509.Certificate{parseCertPEM(t, mustIssue(t, old, "node-a"))}, now, "not a ca"},
	} {
		if err := CheckCABundle(tc.cas, tc.at); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error mentioning %q", tc.name, err, tc.want)
		}
	}
	if fp := Fingerprint(old.Cert); len(fp) != 64 || fp == Fingerprint(next.Cert) {
		t.Errorf("fingerprint %q", fp)
	}
}

func tlsState(peer *x509.Certificate) tls.ConnectionState {
	return tls.ConnectionState{PeerCertificates: []*x509.Certificate{peer}}
}
