package transport

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSignNodeCSR(t *testing.T) {
	ca := testCA(t, "ca")
	csrPEM, keyPEM, err := NewNodeKeyCSR("node/one")
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ParseNodeCSR(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := NewSerial()
	// The node name is the signer's: whatever the request names, the
	// certificate names the node it is signed for.
	certPEM, cert, err := ca.SignNodeCSR(csr, "node/one", 10*time.Minute, serial)
	if err != nil {
		t.Fatal(err)
	}
	if cert.SerialNumber.Cmp(serial) != 0 {
		t.Fatalf("serial %s, want %s", cert.SerialNumber, serial)
	}
	if got := cert.NotAfter.Sub(cert.NotBefore); got < 12*time.Minute || got > 13*time.Minute {
		t.Fatalf("lifetime %s, want 10m plus a quarter of it backdated", got)
	}
	m, err := NewMutualTLS(ca.CertPEM, certPEM, keyPEM, "node/one")
	if err != nil {
		t.Fatalf("signed certificate does not work for mutual tls: %v", err)
	}
	if name, _ := NodeNameFromCert(m.Leaf()); name != "node/one" {
		t.Fatalf("node name %q", name)
	}
	if _, _, err := ca.SignNodeCSR(csr, "", time.Minute, nil); err == nil {
		t.Fatal("signed for an empty node name")
	}
	// A bundle of CAs: the signer is the certificate that matches the key.
	other := testCA(t, "other")
	keyOf, _ := ca.KeyPEM()
	signer, err := ParseCA(append(append([]byte{}, other.CertPEM...), ca.CertPEM...), keyOf)
	if err != nil || !bytes.Equal(signer.Cert.Raw, ca.Cert.Raw) {
		t.Fatalf("signer from bundle: %v", err)
	}
	if _, err := ParseCA(other.CertPEM, keyOf); err == nil {
		t.Fatal("a key that belongs to no certificate of the bundle was taken")
	}
}

func TestParseNodeCSRKeys(t *testing.T) {
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	mk := func(key any) []byte {
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "n"}}, key)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: pemTypeCSR, Bytes: der})
	}
	if _, err := ParseNodeCSR(mk(ed)); err != nil {
		t.Errorf("ed25519: %v", err)
	}
	if _, err := ParseNodeCSR(mk(p384)); err == nil || !strings.Contains(err.Error(), "P-256") {
		t.Errorf("P-384 accepted: %v", err)
	}
	bad := mk(ed)
	block, _ := pem.Decode(bad)
	block.Bytes[len(block.Bytes)-1] ^= 1 // break the signature
	if _, err := ParseNodeCSR(pem.EncodeToMemory(block)); err == nil {
		t.Error("request with a broken signature accepted")
	}
	if _, err := ParseNodeCSR([]byte("junk")); err == nil {
		t.Error("junk accepted")
	}
}

func TestJoinProtocol(t *testing.T) {
	ca := testCA(t, "ca")
	calls := make(chan JoinCall, 4)
	srv := ptStart(t, "server", nil, func(s *ptSetup) {
		s.deps.Join = func(ctx context.Context, c JoinCall) JoinResponse {
			calls <- c
			if c.Request.Token == "bad" {
				return JoinResponse{Error: "join token refused: no such token"}
			}
			csr, err := ParseNodeCSR([]byte(c.Request.CSR))
			if err != nil {
				return JoinResponse{Error: err.Error()}
			}
			certPEM, _, err := ca.SignNodeCSR(csr, c.Request.Node, time.Hour, nil)
			if err != nil {
				return JoinResponse{Error: err.Error()}
			}
			return JoinResponse{Cert: string(certPEM), CABundle: string(ca.CertPEM), Signer: "server"}
		}
	})
	addr := srv.srv.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	csrPEM, keyPEM, _ := NewNodeKeyCSR("fresh")

	// A new node without certificate, trusting the cluster CA.
	conf, err := JoinClientTLS(ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := RequestJoin(ctx, addr, conf, JoinRequest{Token: "good", Node: "fresh", CSR: string(csrPEM)})
	if err != nil {
		t.Fatal(err)
	}
	if c := <-calls; c.Peer != "" || c.Request.Node != "fresh" || c.Remote == nil {
		t.Fatalf("call %+v", c)
	}
	m, err := NewMutualTLS([]byte(resp.CABundle), []byte(resp.Cert), keyPEM, "fresh")
	if err != nil {
		t.Fatal(err)
	}
	// A refusal comes back as a JoinError with the server's line.
	_, err = RequestJoin(ctx, addr, conf, JoinRequest{Token: "bad", Node: "fresh", CSR: string(csrPEM)})
	if !IsJoinRefusal(err) || err.Error() != "join token refused: no such token" {
		t.Fatalf("refusal: %v", err)
	}
	<-calls
	// A node with a certificate is authenticated by it (renewal).
	_, err = RequestJoin(ctx, addr, m.ClientConfig("server"), JoinRequest{Node: "fresh", CSR: string(csrPEM)})
	if err != nil {
		t.Fatal(err)
	}
	if c := <-calls; c.Peer != "fresh" {
		t.Fatalf("renewal call authenticated as %q", c.Peer)
	}
	// A certificate from another CA is refused in the handshake.
	stranger := testMutualTLS(t, testCA(t, "other"), "stranger")
	if _, err := RequestJoin(ctx, addr, stranger.ClientConfig(""), JoinRequest{Node: "stranger", CSR: string(csrPEM)}); err == nil || IsJoinRefusal(err) {
		t.Fatalf("foreign client certificate: %v", err)
	}
	// A new node given another CA does not trust the server.
	wrong, _ := JoinClientTLS(testCA(t, "other").CertPEM)
	_, err = RequestJoin(ctx, addr, wrong, JoinRequest{Token: "good", Node: "fresh", CSR: string(csrPEM)})
	if err == nil || !strings.Contains(err.Error(), "does not verify against the given --tls-ca") {
		t.Fatalf("untrusted server: %v", err)
	}
	select {
	case c := <-calls:
		t.Fatalf("handler called for a refused handshake: %+v", c)
	default:
	}
	// Without a Join handler the peer port does not speak the protocol.
	plain := ptStart(t, "plain", nil)
	if _, err := RequestJoin(ctx, plain.srv.Addr().String(), conf, JoinRequest{Token: "good"}); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("join on a server without handler: %v", err)
	}
}
