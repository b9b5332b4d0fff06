package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/store"
	"github.com/loadmesh/loadmesh/test/retry"
	"github.com/loadmesh/loadmesh/transport"
)

// syncBuffer is a bytes.Buffer safe for the agent's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var tokenRE = regexp.MustCompile(`lm_[0-9a-f]{16}_[0-9a-f]{64}`)

// secureAgent starts a single dev node whose certificates (node and API,
// both from a fresh CA given as files) expire in 10 days, and an HTTPS
// client that trusts that CA.
func secureAgent(t *testing.T) (*Agent, *http.Client, *syncBuffer, *syncBuffer) {
	t.Helper()
	ca, err := transport.NewCA("security test CA", 365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.IssueNodeCert("solo", 10*24*time.Hour, []net.IP{net.IPv4(127, 0, 0, 1)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := map[string][]byte{"ca.pem": ca.CertPEM, "node.pem": certPEM, "node-key.pem": keyPEM}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := DefaultConfig()
	cfg.Name, cfg.Dev = "solo", true
	cfg.Gossip, cfg.Raft, cfg.Peer, cfg.HTTP, cfg.API = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.TLSCA, cfg.TLSCert, cfg.TLSKey = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "node.pem"), filepath.Join(dir, "node-key.pem")
	cfg.APITLSCert, cfg.APITLSKey = cfg.TLSCert, cfg.TLSKey
	logs, out := &syncBuffer{}, &syncBuffer{}
	a, err := New(cfg, Deps{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), BootstrapOut: out})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), retry.Scale(20*time.Second))
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.Shutdown(ctx)
	})
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	t.Cleanup(tr.CloseIdleConnections)
	return a, &http.Client{Transport: tr, Timeout: retry.Scale(30 * time.Second)}, logs, out
}

type apiCaller struct {
	t    *testing.T
	hc   *http.Client
	base string
}

func (c apiCaller) call(method, path, token, body string) (int, []byte) {
	c.t.Helper()
	var code int
	var out []byte
	// 503 is "no leader yet, or leadership moved": try again.
	retry.Run(c.t, func(r *retry.R) {
		req, err := http.NewRequest(method, c.base+path, strings.NewReader(body))
		r.Check(err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.hc.Do(req)
		r.Check(err)
		defer resp.Body.Close()
		out, _ = io.ReadAll(resp.Body)
		code = resp.StatusCode
		if code == http.StatusServiceUnavailable {
			r.Fatalf("%s %s: %d %s", method, path, code, out)
		}
	})
	return code, out
}

func (c apiCaller) must(method, path, token, body string, want int) []byte {
	c.t.Helper()
	code, out := c.call(method, path, token, body)
	if code != want {
		c.t.Fatalf("%s %s: %d %s, want %d", method, path, code, out, want)
	}
	return out
}

func TestAccessControlOnOneNode(t *testing.T) {
	a, hc, logs, out := secureAgent(t)
	api := apiCaller{t: t, hc: hc, base: "https://" + a.APIAddr()}

	// The first leader makes the bootstrap token up and prints it once.
	var boot string
	retry.Run(t, func(r *retry.R) {
		if boot = tokenRE.FindString(out.String()); boot == "" {
			r.Fatalf("no bootstrap token printed yet")
		}
	})
	if n := strings.Count(out.String(), "lm_"); n != 1 {
		t.Fatalf("bootstrap output has %d tokens, want 1:\n%s", n, out)
	}

	// Plain HTTP is not served.
	if resp, err := http.Get("http://" + a.APIAddr() + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("the API answered plain HTTP with --api-tls-cert")
		}
	}

	api.must("POST", "/v1/nodes/solo/cordon", "", "", http.StatusUnauthorized)
	api.must("GET", "/v1/status", "", "", http.StatusOK)

	created := api.must("POST", "/v1/tokens", boot, `{"name": "grafana", "role": "read", "ttl": "24h"}`, http.StatusOK)
	var tc TokenCreated
	if err := json.Unmarshal(created, &tc); err != nil || tc.Role != store.RoleRead || tc.Expires.IsZero() || tc.CreatedBy != "bootstrap" {
		t.Fatalf("created %s (%v)", created, err)
	}
	read := tc.Token
	if _, _, err := ParseToken(read); err != nil {
		t.Fatal(err)
	}
	api.must("POST", "/v1/tokens", boot, `{"name": "grafana", "role": "read"}`, http.StatusConflict)
	api.must("POST", "/v1/tokens", boot, `{"name": "x", "role": "admin"}`, http.StatusBadRequest)
	api.must("POST", "/v1/tokens", boot, `{"name": "x", "role": "read", "ttl": "-1h"}`, http.StatusBadRequest)
	api.must("POST", "/v1/tokens", read, `{"name": "y", "role": "operator"}`, http.StatusForbidden)
	api.must("POST", "/v1/nodes/solo/cordon", read, "", http.StatusForbidden)

	// An operator write is in the audit log under the token's name.
	var ev scheduler.Event
	if err := json.Unmarshal(api.must("POST", "/v1/nodes/solo/cordon", boot, `{"reason": "auth test"}`, http.StatusOK), &ev); err != nil || ev.Who != "bootstrap" {
		t.Fatalf("cordon event %+v (%v)", ev, err)
	}

	var list []TokenView
	if err := json.Unmarshal(api.must("GET", "/v1/tokens", boot, "", http.StatusOK), &list); err != nil || len(list) != 2 || !list[0].Bootstrap || list[1].Name != "grafana" {
		t.Fatalf("token list %+v (%v)", list, err)
	}
	api.must("GET", "/v1/tokens", read, "", http.StatusForbidden)

	// Revocation: the last operator token stays; a read token goes.
	api.must("DELETE", "/v1/tokens/bootstrap", boot, "", http.StatusConflict)
	api.must("DELETE", "/v1/tokens/nosuch", boot, "", http.StatusNotFound)
	api.must("GET", "/v1/events", read, "", http.StatusOK)
	api.must("DELETE", "/v1/tokens/grafana?reason=rotated", boot, "", http.StatusOK)
	api.must("GET", "/v1/events", read, "", http.StatusUnauthorized)

	// Certificates that expire in 10 days are reported in status and
	// metrics, and the leader records it.
	var st Status
	if err := json.Unmarshal(api.must("GET", "/v1/status", "", "", http.StatusOK), &st); err != nil || st.TLS == nil ||
		st.TLS.NodeCertExpires.IsZero() || st.TLS.CAExpires.IsZero() || st.TLS.APICertExpires.IsZero() ||
		strings.Join(st.TLS.Expiring, ",") != "node,api" {
		t.Fatalf("status tls %+v (%v)", st.TLS, err)
	}
	metrics := string(api.must("GET", "/metrics", "", "", http.StatusOK))
	for _, c := range []string{"node", "ca", "api"} {
		if !strings.Contains(metrics, fmt.Sprintf(`loadmesh_tls_certificate_expiry_timestamp_seconds{cert=%q}`, c)) {
			t.Errorf("no expiry metric for the %s certificate", c)
		}
	}
	retry.Run(t, func(r *retry.R) {
		n := 0
		for _, e := range a.Plan().Events(0) {
			if e.Kind == "tls.cert_expiring" && e.Node == "solo" {
				n++
			}
		}
		if n != 2 {
			r.Fatalf("%d tls.cert_expiring events, want 2 (node and api)", n)
		}
	})
	if !strings.Contains(logs.String(), "node certificate (--tls-cert) expires on") {
		t.Error("no warning about the node certificate in the log")
	}

	// No secret is in the audit log, a snapshot or the log.
	events := string(api.must("GET", "/v1/events?limit=10000", "", "", http.StatusOK))
	snap, err := a.Plan().Raft().Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{boot, read} {
		_, s, _ := ParseToken(secret)
		for where, text := range map[string]string{"events": events, "snapshot": sink.String(), "log": logs.String(), "metrics": metrics} {
			if strings.Contains(text, s) {
				t.Errorf("a token secret is in the %s", where)
			}
		}
	}
	if strings.Count(out.String(), boot) != 1 {
		t.Errorf("the bootstrap token was printed %d times", strings.Count(out.String(), boot))
	}
}

// memSink is a raft.SnapshotSink in memory.
type memSink struct{ bytes.Buffer }

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Cancel() error { return nil }
func (m *memSink) Close() error  { return nil }

var _ raft.SnapshotSink = (*memSink)(nil)

func TestCertExpiryWindow(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cert := func(lifetime, left time.Duration) namedCert {
		return namedCert{name: "node", cert: &x509.Certificate{NotBefore: now.Add(left - lifetime), NotAfter: now.Add(left)}}
	}
	day := 24 * time.Hour
	for _, tt := range []struct {
		lifetime, left time.Duration
		want           bool
	}{
		{365 * day, 100 * day, false},
		{365 * day, 72 * day, true}, // a fifth of a year is 73 days
		{3650 * day, 700 * day, true},
		{60 * day, 31 * day, false},
		{60 * day, 29 * day, true}, // 30 days at least
		{60 * day, -day, true},
	} {
		msg, got := expiring(cert(tt.lifetime, tt.left), now)
		if got != tt.want || got == (msg == "") {
			t.Errorf("lifetime %s, %s left: expiring %v (%q), want %v", tt.lifetime, tt.left, got, msg, tt.want)
		}
	}
}
