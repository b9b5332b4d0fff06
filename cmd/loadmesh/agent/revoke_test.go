package agent

import (
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/loadmesh/loadmesh/store"
	"github.com/loadmesh/loadmesh/transport"
)

// TestCertRevoked: a revoked node's certificates issued up to its
// revocation are refused, one issued after it (a new machine that joined
// afresh under the name) is not, and other nodes are not affected.
func TestCertRevoked(t *testing.T) {
	ca, err := transport.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certOf := func(name string) *x509.Certificate {
		certPEM, _, err := ca.IssueNodeCert(name, time.Hour, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := pem.Decode(certPEM)
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	old, other := certOf("victim"), certOf("other")
	a := &Agent{cfg: Config{Name: "self"}, fsm: store.NewFSM(nil, nil)}
	if err := a.certRevoked(old); err != nil {
		t.Fatalf("refused before any revocation: %v", err)
	}
	revoke := func(at time.Time) {
		b, err := store.EncodeCommand(commandRevoke("victim", at, "test", "lost"))
		if err != nil {
			t.Fatal(err)
		}
		if res := a.fsm.Raft().Apply(&raft.Log{Index: 1, Data: b}); res != nil {
			if err, ok := res.(error); ok {
				t.Fatal(err)
			}
		}
	}
	revoke(old.NotBefore.Add(time.Second))
	if err := a.certRevoked(old); err == nil {
		t.Fatal("a certificate issued before the revocation is accepted")
	} else {
		t.Logf("refused: %v", err)
	}
	if err := a.certRevoked(other); err != nil {
		t.Fatalf("another node's certificate refused: %v", err)
	}
	if !a.revoked("victim") || a.revoked("other") || a.revoked("self") {
		t.Fatal("revoked() by name is wrong")
	}
	// A fresh certificate, issued after the revocation, is allowed.
	revoke(old.NotBefore.Add(-time.Second))
	if err := a.certRevoked(old); err != nil {
		t.Fatalf("a certificate issued after the revocation is refused: %v", err)
	}
}

// TestResolveKey covers what keyring writes accept.
func TestResolveKey(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	b64 := "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	fp := store.KeyFingerprint(key)
	if got, k, err := resolveKey(b64, store.OpKeyringInstall, store.Keyring{}); err != nil || got != fp || string(k) != string(key) {
		t.Fatalf("install by key: %s %v", got, err)
	}
	if got, _, err := resolveKey(fp, store.OpKeyringUse, store.Keyring{}); err != nil || got != fp {
		t.Fatalf("use by fingerprint: %s %v", got, err)
	}
	if _, _, err := resolveKey(fp, store.OpKeyringInstall, store.Keyring{}); err == nil {
		t.Fatal("install by fingerprint accepted")
	}
	for _, bad := range []string{"", "!!", "c2hvcnQ="} {
		if _, _, err := resolveKey(bad, store.OpKeyringRemove, store.Keyring{}); err == nil {
			t.Fatalf("%q accepted", bad)
		}
	}
}
