package test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/test/harness"
	"github.com/loadmesh/loadmesh/transport"
)

func TestIngressTLSServesHTTP2AndHTTP3(t *testing.T) {
	skipShort(t)
	ca, err := transport.NewCA("ingress test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.IssueNodeCert("ingress", time.Hour, []net.IP{net.IPv4(127, 0, 0, 1)}, []string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, certPEM, 0o600)
	os.WriteFile(keyFile, keyPEM, 0o600)

	c := harness.Start(t, 1, harness.Options{Backends: true, Tune: func(i int, cfg *agent.Config) {
		cfg.HTTPTLSCert, cfg.HTTPTLSKey = certFile, keyFile
	}})
	c.WaitForLeader(t)
	addr := c.Nodes[0].HTTPAddr()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM)

	// HTTP/2 over TLS, with Alt-Svc announcing HTTP/3 on the same port.
	h2 := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}
	defer h2.CloseIdleConnections()
	resp, err := (&http.Client{Transport: h2, Timeout: 10 * time.Second}).Get("https://" + addr + "/over-h2")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	_, port, _ := net.SplitHostPort(addr)
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 || resp.Header.Get("Alt-Svc") != `h3=":`+port+`"; ma=86400` {
		t.Fatalf("h2: proto %s status %d Alt-Svc %q", resp.Proto, resp.StatusCode, resp.Header.Get("Alt-Svc"))
	}
	if !strings.Contains(string(body), "/over-h2") || resp.Header.Get(transport.HeaderNode) != "node-0" {
		t.Fatalf("h2 body %q", body)
	}

	// HTTP/3 on the UDP port of the same number.
	h3 := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	defer h3.Close()
	resp, err = (&http.Client{Transport: h3, Timeout: 10 * time.Second}).Get("https://" + addr + "/over-h3")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 3 || resp.StatusCode != 200 || !strings.Contains(string(body), "/over-h3") {
		t.Fatalf("h3: proto %s status %d body %q", resp.Proto, resp.StatusCode, body)
	}
}
