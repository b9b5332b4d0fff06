package agent

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/store"
)

func TestTokenFormat(t *testing.T) {
	tok, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	id, secret, err := ParseToken(tok)
	if err != nil || len(id) != store.TokenIDLen || len(secret) != 64 || len(tok) != TokenLen {
		t.Fatalf("ParseToken(%q) = %q, %q, %v", tok, id, secret, err)
	}
	other, _ := NewToken()
	if other == tok {
		t.Fatal("two new tokens are equal")
	}
	for _, bad := range []string{
		"", "lm_", "Bearer " + tok, tok + "0", tok[:len(tok)-1], "xx" + tok[2:],
		strings.ToUpper(tok[:3]) + tok[3:],
		tok[:19] + "-" + tok[20:],                       // no separator after the id
		tok[:len(tok)-1] + "g",                          // not hex
		tok[:3] + strings.ToUpper(tok[3:19]) + tok[19:], // upper-case id
	} {
		if _, _, err := ParseToken(bad); err == nil {
			t.Errorf("ParseToken(%q) accepted", bad)
		} else if len(bad) > 8 && strings.Contains(err.Error(), bad) {
			t.Errorf("ParseToken error repeats the token: %v", err)
		}
	}
}

func TestAccessPolicy(t *testing.T) {
	for _, tt := range []struct {
		method, path string
		want         access
	}{
		{"GET", "/healthz", access{open: true}},
		{"GET", "/readyz", access{open: true}},
		{"GET", "/v1/status", access{need: store.RoleRead, loopbackOpen: true}},
		{"HEAD", "/metrics", access{need: store.RoleRead, loopbackOpen: true}},
		{"GET", "/v1/events", access{need: store.RoleRead, loopbackOpen: true}},
		{"GET", "/v1/autoscaler", access{need: store.RoleRead, loopbackOpen: true}},
		{"GET", "/v1/tokens", access{need: store.RoleOperator}},
		{"POST", "/v1/tokens", access{need: store.RoleOperator}},
		{"DELETE", "/v1/tokens/x", access{need: store.RoleOperator}},
		{"GET", "/v1/snapshot", access{need: store.RoleOperator}},
		{"POST", "/v1/snapshot/restore", access{need: store.RoleOperator}},
		{"POST", "/v1/plan", access{need: store.RoleOperator}},
		{"POST", "/v1/nodes/a/drain", access{need: store.RoleOperator}},
		{"PUT", "/v1/anything", access{need: store.RoleOperator}},
		{"POST", "/healthz", access{open: true}},
	} {
		if got := accessFor(tt.method, tt.path); got != tt.want {
			t.Errorf("accessFor(%s %s) = %+v, want %+v", tt.method, tt.path, got, tt.want)
		}
	}
	for addr, want := range map[string]bool{
		"127.0.0.1:5000": true, "127.0.0.2:1": true, "[::1]:80": true, "[::ffff:127.0.0.1]:80": true,
		"10.0.0.1:5000": false, "[2001:db8::1]:80": false, "": false, "garbage": false,
	} {
		if got := isLoopback(addr); got != want {
			t.Errorf("isLoopback(%q) = %v", addr, got)
		}
	}
}

// fakeTokens is a token list for the authenticator.
type fakeTokens map[string]store.Token

func (f fakeTokens) TokenByID(id string) (store.Token, bool) { t, ok := f[id]; return t, ok }

func testToken(t *testing.T, name string, role store.Role, tokens fakeTokens, expires time.Time) string {
	t.Helper()
	s, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	rec := tokenRecord(s, name, role, time.Unix(1, 0), "test")
	rec.Expires = expires
	tokens[rec.ID] = rec
	return s
}

func TestAuthenticator(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tokens := fakeTokens{}
	op := testToken(t, "ops", store.RoleOperator, tokens, time.Time{})
	read := testToken(t, "grafana", store.RoleRead, tokens, now.Add(time.Hour))
	expired := testToken(t, "old", store.RoleOperator, tokens, now.Add(-time.Second))
	revoked, _ := NewToken()
	wrongSecret := op[:len(op)-4] + "0000"
	if wrongSecret == op {
		wrongSecret = op[:len(op)-4] + "1111"
	}
	au := &authenticator{tokens: tokens, now: func() time.Time { return now }, log: slog.New(slog.DiscardHandler)}
	var who string
	h := au.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who = actor(r)
		w.WriteHeader(http.StatusNoContent)
	}))
	const local, remote = "127.0.0.1:40000", "192.0.2.7:40000"
	for _, tt := range []struct {
		name, method, path, from, auth string
		status                         int
		who                            string
	}{
		{"probe from anywhere", "GET", "/healthz", remote, "", 204, "api"},
		{"probe with a bad token", "GET", "/readyz", remote, "Bearer nonsense", 204, "api"},
		{"local read", "GET", "/v1/status", local, "", 204, "api"},
		{"local metrics", "GET", "/metrics", local, "", 204, "api"},
		{"remote read without token", "GET", "/v1/status", remote, "", 401, ""},
		{"remote read with read token", "GET", "/v1/events", remote, "Bearer " + read, 204, "grafana"},
		{"local read with a bad token", "GET", "/v1/status", local, "Bearer " + revoked, 401, ""},
		{"local write without token", "POST", "/v1/nodes/a/drain", local, "", 401, ""},
		{"write with read token", "POST", "/v1/plan", local, "Bearer " + read, 403, ""},
		{"write with operator token", "POST", "/v1/plan", remote, "Bearer " + op, 204, "ops"},
		{"scheme is case-insensitive", "POST", "/v1/plan", remote, "bearer " + op, 204, "ops"},
		{"token list with read token", "GET", "/v1/tokens", local, "Bearer " + read, 403, ""},
		{"token list without token on loopback", "GET", "/v1/tokens", local, "", 401, ""},
		{"token list with operator token", "GET", "/v1/tokens", remote, "Bearer " + op, 204, "ops"},
		{"snapshot with read token", "GET", "/v1/snapshot", local, "Bearer " + read, 403, ""},
		{"snapshot without token on loopback", "GET", "/v1/snapshot", local, "", 401, ""},
		{"expired token", "POST", "/v1/plan", local, "Bearer " + expired, 401, ""},
		{"revoked (unknown) token", "POST", "/v1/plan", local, "Bearer " + revoked, 401, ""},
		{"wrong secret", "POST", "/v1/plan", local, "Bearer " + wrongSecret, 401, ""},
		{"basic auth", "POST", "/v1/plan", local, "Basic b3BzOnNlY3JldA==", 401, ""},
		{"bare token", "POST", "/v1/plan", local, op, 401, ""},
		{"malformed token", "POST", "/v1/plan", local, "Bearer lm_12_34", 401, ""},
		{"huge token", "POST", "/v1/plan", local, "Bearer " + strings.Repeat("a", 10000), 401, ""},
		{"control characters", "POST", "/v1/plan", local, "Bearer lm_\x00\n" + op[5:], 401, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			who = ""
			req := httptest.NewRequest(tt.method, tt.path, nil)
			req.RemoteAddr = tt.from
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.status || who != tt.who {
				t.Fatalf("%s %s from %s: %d (who %q), want %d (who %q): %s", tt.method, tt.path, tt.from, rec.Code, who, tt.status, tt.who, rec.Body)
			}
			if rec.Code < 400 {
				return
			}
			var e apiError
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" || strings.Contains(e.Error, "\n") {
				t.Fatalf("error body is not a one-line JSON error: %q", rec.Body)
			}
			if rec.Code == 401 && rec.Header().Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			for _, secret := range []string{op, read, expired, revoked} {
				if strings.Contains(rec.Body.String(), secret[19:]) {
					t.Errorf("error repeats a secret: %s", rec.Body)
				}
			}
		})
	}
}

func TestAuthenticatorImplicitLoopbackToken(t *testing.T) {
	tokens := fakeTokens{}
	op := testToken(t, "bootstrap", store.RoleOperator, tokens, time.Time{})
	au := &authenticator{tokens: tokens, now: time.Now, log: slog.New(slog.DiscardHandler), implicit: op}
	for from, want := range map[string]bool{"127.0.0.1:1": true, "192.0.2.1:1": false} {
		req := httptest.NewRequest("POST", "/v1/plan", nil)
		req.RemoteAddr = from
		p, _, aerr := au.authenticate(req)
		if ok := aerr == nil && p.Name == "bootstrap"; ok != want {
			t.Errorf("from %s: accepted %v (%+v, %v), want %v", from, ok, p, aerr, want)
		}
	}
}

// FuzzAuthorization: whatever a client sends as Authorization, the answer
// is a decision (never a panic), a refusal is one line, and only the one
// real token gets in.
func FuzzAuthorization(f *testing.F) {
	tokens := fakeTokens{}
	s, _ := NewToken()
	rec := tokenRecord(s, "ops", store.RoleOperator, time.Unix(1, 0), "test")
	tokens[rec.ID] = rec
	au := &authenticator{tokens: tokens, now: time.Now, log: slog.New(slog.DiscardHandler)}
	for _, seed := range []string{"Bearer " + s, "Bearer " + s[:len(s)-1] + "0", "bearer  " + s, "Basic eDp5", "Bearer lm__", "Bearer " + strings.Repeat("lm_", 40), ""} {
		f.Add(seed, "POST", "/v1/plan")
	}
	f.Fuzz(func(t *testing.T, header, method, path string) {
		req := httptest.NewRequest("GET", "/", nil)
		req.Method, req.URL.Path = method, path
		req.RemoteAddr = "192.0.2.1:1"
		req.Header["Authorization"] = []string{header}
		p, ok, aerr := au.authenticate(req)
		switch {
		case aerr != nil:
			if strings.Contains(aerr.msg, "\n") || aerr.status != 401 && aerr.status != 403 {
				t.Fatalf("refusal %d %q", aerr.status, aerr.msg)
			}
		case ok && p.Name != "ops":
			t.Fatalf("authenticated as %+v", p)
		case ok:
			if id, secret, err := ParseToken(strings.TrimSpace(header[len("Bearer "):])); err != nil || id != rec.ID || hashSecret(secret) != rec.Hash {
				t.Fatalf("header %q got in", header)
			}
		}
	})
}
