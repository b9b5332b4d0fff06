package agent

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/loadmesh/loadmesh/store"
)

// API tokens are "lm_<id>_<secret>": 8 random bytes of ID and 32 of
// secret, both in lowercase hex. The ID finds the token in the replicated
// state; only the SHA-256 of the secret is stored there.
const (
	tokenPrefix    = "lm_"
	tokenSecretLen = 64
	// TokenLen is the length of every API token string.
	TokenLen = len(tokenPrefix) + store.TokenIDLen + 1 + tokenSecretLen
)

// NewToken returns a new random API token.
func NewToken() (string, error) {
	var b [8 + 32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("new token: %w", err)
	}
	return tokenPrefix + hex.EncodeToString(b[:8]) + "_" + hex.EncodeToString(b[8:]), nil
}

// ParseToken splits an API token into its ID and secret. Its errors never
// repeat the token.
func ParseToken(s string) (id, secret string, err error) {
	rest, ok := strings.CutPrefix(s, tokenPrefix)
	if !ok || len(s) != TokenLen || rest[store.TokenIDLen] != '_' {
		return "", "", errors.New("malformed API token: want lm_<16 hex digits>_<64 hex digits>")
	}
	id, secret = rest[:store.TokenIDLen], rest[store.TokenIDLen+1:]
	for _, c := range id + secret {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", "", errors.New("malformed API token: want lm_<16 hex digits>_<64 hex digits>")
		}
	}
	return id, secret, nil
}

// hashSecret is what the state keeps of a token's secret.
func hashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// access is what one API call requires.
type access struct {
	// open calls need no token from anyone.
	open bool
	// need is the permission a token must grant.
	need store.Role
	// loopbackOpen calls need no token from a caller on a loopback address.
	loopbackOpen bool
}

// accessFor is the API's access policy. Liveness and readiness probes are
// open, and so are the dashboard's static files (the data it shows comes
// from the reads below); reads are open on loopback and otherwise need a
// read token; token management and every write need an operator token, on
// loopback too, and so does reading a snapshot of the state.
func accessFor(method, path string) access {
	switch {
	case path == "/healthz" || path == "/readyz":
		return access{open: true}
	case (method == http.MethodGet || method == http.MethodHead) && isDashboardPage(path):
		return access{open: true}
	case path == "/v1/tokens" || strings.HasPrefix(path, "/v1/tokens/"):
		return access{need: store.RoleOperator}
	case path == "/v1/snapshot" || strings.HasPrefix(path, "/v1/snapshot/"):
		// A snapshot holds the token hashes and the audit log: reading
		// one takes an operator token too.
		return access{need: store.RoleOperator}
	case method == http.MethodGet || method == http.MethodHead:
		return access{need: store.RoleRead, loopbackOpen: true}
	}
	return access{need: store.RoleOperator}
}

// isLoopback reports whether a request's RemoteAddr is a loopback address.
func isLoopback(remoteAddr string) bool {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// principal is the token a request was authenticated with.
type principal struct {
	Name string
	Role store.Role
}

type principalKey struct{}

// principalOf returns the token that authenticated r, if any.
func principalOf(r *http.Request) (principal, bool) {
	p, ok := r.Context().Value(principalKey{}).(principal)
	return p, ok
}

// tokenSource finds a token by ID; store.FSM is one. It must be safe for
// concurrent use.
type tokenSource interface {
	TokenByID(id string) (store.Token, bool)
}

// authenticator checks the API token of every request against the local
// replica of the token list. A follower that carries a write to the leader
// forwards the Authorization header, and the leader checks it again: it
// never takes the follower's word, nor its loopback address, for a write.
type authenticator struct {
	tokens tokenSource
	now    func() time.Time
	log    *slog.Logger
	// implicit, when set, is the token of loopback requests that carry
	// none (Deps.ImplicitLoopbackToken; tests only).
	implicit string
}

// authError is a refused request: 401 or 403 and a one-line reason.
type authError struct {
	status int
	msg    string
	// token is the name of the token presented, if it is known.
	token string
}

func (e *authError) Error() string { return e.msg }

// dummyHash is compared against when no token has the presented ID, so
// that an unknown ID takes as long as a wrong secret.
var dummyHash = sha256.Sum256([]byte("loadmesh"))

// authenticate decides a request: the principal (ok false for an
// anonymous request that is allowed), or an error.
func (au *authenticator) authenticate(r *http.Request) (principal, bool, *authError) {
	acc := accessFor(r.Method, r.URL.Path)
	header := r.Header.Get("Authorization")
	loopback := isLoopback(r.RemoteAddr)
	if header == "" {
		switch {
		case acc.open || acc.loopbackOpen && loopback:
			return principal{}, false, nil
		case loopback && au.implicit != "":
			header = "Bearer " + au.implicit
		default:
			return principal{}, false, &authError{status: http.StatusUnauthorized,
				msg: "this call needs an API token: send Authorization: Bearer <token> (the CLI takes --token or LOADMESH_TOKEN)"}
		}
	}
	if acc.open {
		// A probe that sends a token anyway is not refused for it.
		return principal{}, false, nil
	}
	scheme, raw, _ := strings.Cut(header, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return principal{}, false, &authError{status: http.StatusUnauthorized, msg: "the Authorization header must be: Bearer <token>"}
	}
	tok, _, match, err := checkTokenSecret(au.tokens, raw)
	if err != nil {
		return principal{}, false, &authError{status: http.StatusUnauthorized, msg: err.Error()}
	}
	if match != tokenMatches {
		return principal{}, false, &authError{status: http.StatusUnauthorized, msg: "unknown or revoked API token"}
	}
	if now := au.now(); tok.Expired(now) {
		return principal{}, false, &authError{status: http.StatusUnauthorized, token: tok.Name,
			msg: fmt.Sprintf("API token %q expired at %s", tok.Name, tok.Expires.UTC().Format(time.RFC3339))}
	}
	if !tok.Role.Allows(acc.need) {
		return principal{}, false, &authError{status: http.StatusForbidden, token: tok.Name,
			msg: fmt.Sprintf("API token %q has role %s; %s %s needs a token with role %s", tok.Name, tok.Role, r.Method, r.URL.Path, acc.need)}
	}
	return principal{Name: tok.Name, Role: tok.Role}, true, nil
}

// tokenMatch is what checkTokenSecret found.
type tokenMatch int

const (
	tokenUnknown     tokenMatch = iota // no token has the ID
	tokenWrongSecret                   // the ID is known, the secret is not its
	tokenMatches
)

// checkTokenSecret finds the token the string s names (lm_<id>_<secret>)
// in src and compares the secret's SHA-256 with the one kept, in constant
// time; an unknown ID is compared against a dummy hash, so that it takes
// as long as a wrong secret. It returns the token found (zero if unknown)
// and its ID; err is set for a malformed string, and never repeats it.
func checkTokenSecret(src tokenSource, s string) (store.Token, string, tokenMatch, error) {
	id, secret, err := ParseToken(strings.TrimSpace(s))
	if err != nil {
		return store.Token{}, "", tokenUnknown, err
	}
	tok, found := src.TokenByID(id)
	want := dummyHash[:]
	if found {
		if want, err = hex.DecodeString(tok.Hash); err != nil {
			found, want = false, dummyHash[:]
		}
	}
	got := sha256.Sum256([]byte(secret))
	equal := subtle.ConstantTimeCompare(got[:], want) == 1
	switch {
	case !found:
		return store.Token{}, id, tokenUnknown, nil
	case !equal:
		return tok, id, tokenWrongSecret, nil
	}
	return tok, id, tokenMatches, nil
}

// wrap puts the access policy in front of h.
func (au *authenticator) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok, aerr := au.authenticate(r)
		if aerr != nil {
			au.log.Info("api request refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr,
				"status", aerr.status, "token", aerr.token, "reason", aerr.msg)
			if aerr.status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="loadmesh"`)
			}
			writeError(w, aerr.status, aerr.msg)
			return
		}
		if ok {
			r = r.WithContext(context.WithValue(r.Context(), principalKey{}, p))
		}
		h.ServeHTTP(w, r)
	})
}

// requireAuth wraps the API handler in the access policy.
func (a *Agent) requireAuth(h http.Handler) http.Handler {
	au := &authenticator{tokens: a.fsm, now: a.now, log: a.log, implicit: a.deps.ImplicitLoopbackToken}
	return au.wrap(h)
}
