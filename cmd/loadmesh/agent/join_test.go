package agent

import (
	"crypto/x509"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/store"
)

func TestJoinLimiterCountsFailuresPerIP(t *testing.T) {
	var l joinLimiter
	for range joinFailBurst {
		if l.blocked("10.0.0.1") {
			t.Fatal("blocked before the burst was spent")
		}
		l.failed("10.0.0.1")
	}
	if !l.blocked("10.0.0.1") {
		t.Fatal("not blocked after the burst of failures")
	}
	if l.blocked("10.0.0.2") {
		t.Fatal("another address is blocked too")
	}
}

func TestJoinTokenRules(t *testing.T) {
	zero, three, many := 0, 3, 5000
	for _, tt := range []struct {
		name string
		req  TokenCreateRequest
		ttl  time.Duration
		uses int
		msg  string
	}{
		{"defaults", TokenCreateRequest{Role: store.RoleJoin}, time.Hour, 1, ""},
		{"uses", TokenCreateRequest{Role: store.RoleJoin, TTL: "30m", Uses: &three}, 30 * time.Minute, 3, ""},
		{"unlimited uses", TokenCreateRequest{Role: store.RoleJoin, Uses: &zero}, time.Hour, 0, ""},
		{"too long", TokenCreateRequest{Role: store.RoleJoin, TTL: "48h"}, 0, 0, "a join token lives from 1m to 24h"},
		{"never expires", TokenCreateRequest{Role: store.RoleJoin, TTL: "0"}, 0, 0, "a join token lives"},
		{"too many uses", TokenCreateRequest{Role: store.RoleJoin, Uses: &many}, 0, 0, "uses 5000"},
		{"uses on a read token", TokenCreateRequest{Role: store.RoleRead, Uses: &three}, 0, 0, "only join tokens"},
		{"read token", TokenCreateRequest{Role: store.RoleRead, TTL: "720h"}, 0, 0, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ttl, uses, msg := joinTokenRules(tt.req)
			if tt.msg != "" {
				if !strings.Contains(msg, tt.msg) {
					t.Fatalf("message %q, want %q", msg, tt.msg)
				}
				return
			}
			if msg != "" || ttl != tt.ttl || uses != tt.uses {
				t.Fatalf("got %s %d %q", ttl, uses, msg)
			}
		})
	}
}

func TestLeaderWithoutCAKeyRefuses(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Name, cfg.DataDir, cfg.TLSCA = "s1", t.TempDir(), "/nonexistent/ca.pem"
	a, err := New(cfg, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.caSigner()
	if err == nil || err.Error() != "leader s1 holds no CA key (--tls-ca-key); start the servers that may sign node certificates with --tls-ca-key" {
		t.Fatalf("caSigner: %v", err)
	}
}

func TestValidateJoinFlags(t *testing.T) {
	base := DefaultConfig()
	base.Name, base.DataDir = "n", "/tmp/x"
	for _, tt := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"token without ca", func(c *Config) { c.JoinToken = "t" }, "--join-token needs --tls-ca"},
		{"token with cert", func(c *Config) { c.JoinToken, c.TLSCA, c.TLSCert, c.TLSKey = "t", "ca", "c", "k" }, "--join-token is for a node without --tls-cert"},
		{"cert without key", func(c *Config) { c.TLSCA, c.TLSCert = "ca", "c" }, "go together"},
		{"ca key without ca", func(c *Config) { c.TLSCAKey = "k" }, "--tls-ca-key needs --tls-ca"},
		{"short cert ttl", func(c *Config) { c.CertTTL = time.Second }, "--cert-ttl 1s"},
		{"bad join server", func(c *Config) { c.JoinServers = []string{"nohost"} }, "--join-server"},
		{"ok join", func(c *Config) { c.TLSCA, c.JoinToken, c.JoinServers = "ca", "t", []string{"10.0.0.1:7947"} }, ""},
		{"ok issued cert", func(c *Config) { c.TLSCA = "ca" }, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			tt.mod(&c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate: %v, want %q", err, tt.want)
			}
		})
	}
}

func TestRenewDue(t *testing.T) {
	now := time.Now()
	c := &x509.Certificate{NotBefore: now.Add(-20 * time.Hour), NotAfter: now.Add(10 * time.Hour)}
	if renewDue(c, now) {
		t.Fatal("due with a third of the lifetime left")
	}
	if !renewDue(c, now.Add(time.Minute)) {
		t.Fatal("not due with less than a third left")
	}
	if d := renewCheck(c); d < 48*time.Minute || d > time.Hour+12*time.Minute {
		t.Fatalf("check interval %s", d)
	}
}

func TestJoinTokenGrantsNoAPICall(t *testing.T) {
	secret, _ := NewToken()
	tok := tokenRecord(secret, "j", store.RoleJoin, time.Now(), "test")
	tok.Expires, tok.Uses = time.Now().Add(time.Hour), 1
	au := &authenticator{tokens: fakeTokens{tok.ID: tok}, now: time.Now, log: slog.New(slog.DiscardHandler)}
	h := au.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	for _, c := range []struct{ method, path string }{{"GET", "/v1/status"}, {"POST", "/v1/tokens"}, {"GET", "/v1/tokens"}} {
		r := httptest.NewRequest(c.method, c.path, nil)
		r.RemoteAddr = "192.0.2.7:40000"
		r.Header.Set("Authorization", "Bearer "+secret)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "has role join") {
			t.Errorf("%s %s with a join token: %d %s", c.method, c.path, w.Code, w.Body.String())
		}
	}
}
