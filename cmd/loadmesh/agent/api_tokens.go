package agent

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/loadmesh/loadmesh/store"
)

// TokenView is a token as the API shows it: never its secret or hash.
type TokenView struct {
	Name      string     `json:"name"`
	ID        string     `json:"id"`
	Role      store.Role `json:"role"`
	Created   time.Time  `json:"created"`
	Expires   time.Time  `json:"expires,omitzero"`
	Expired   bool       `json:"expired,omitempty"`
	CreatedBy string     `json:"created_by"`
	Bootstrap bool       `json:"bootstrap,omitempty"`
	// Uses and Used are a join token's allowed and spent uses (Uses 0:
	// without limit).
	Uses int `json:"uses,omitempty"`
	Used int `json:"used,omitempty"`
}

func tokenView(t store.Token, now time.Time) TokenView {
	return TokenView{Name: t.Name, ID: t.ID, Role: t.Role, Created: t.Created, Expires: t.Expires,
		Expired: t.Expired(now), CreatedBy: t.CreatedBy, Bootstrap: t.Bootstrap, Uses: t.Uses, Used: t.Used}
}

// TokenCreateRequest is the body of POST /v1/tokens.
type TokenCreateRequest struct {
	Name string     `json:"name"`
	Role store.Role `json:"role"`
	// TTL is a Go duration ("720h"); empty or "0" means the token does
	// not expire.
	TTL    string `json:"ttl,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Uses is how many times a join token may be used: absent 1, 0 any
	// number until it expires. Only for role join.
	Uses *int `json:"uses,omitempty"`
}

// TokenCreated is the answer to POST /v1/tokens: the only time the token
// string is shown.
type TokenCreated struct {
	TokenView
	Token string `json:"token"`
}

// maxTokenTTL bounds --ttl.
const maxTokenTTL = 10 * 365 * 24 * time.Hour

func (a *Agent) registerTokenAPI(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		now := a.now()
		out := []TokenView{}
		for _, t := range a.fsm.Tokens() {
			out = append(out, tokenView(t, now))
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("POST /v1/tokens", a.leaderOnly(a.createToken))
	mux.HandleFunc("DELETE /v1/tokens/{name}", a.leaderOnly(a.revokeToken))
}

func (a *Agent) createToken(w http.ResponseWriter, r *http.Request) {
	var req TokenCreateRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, bodyStatus(err), err.Error())
		return
	}
	var secret string
	if req.Name == "" && req.Role == store.RoleJoin {
		secret, _ = NewToken()
		req.Name = joinTokenName(secret)
	}
	if err := store.ValidateTokenName(req.Name); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if !req.Role.Valid() {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("role %q: want one of %v", req.Role, store.Roles()))
		return
	}
	joinTTL, uses, msg := joinTokenRules(req)
	if msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	var ttl time.Duration
	if req.TTL != "" && req.Role != store.RoleJoin {
		var err error
		if ttl, err = time.ParseDuration(req.TTL); err != nil || ttl < 0 || ttl > maxTokenTTL || ttl > 0 && ttl < time.Minute {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("ttl %q: want a duration from 1m to %s, or 0 for none", req.TTL, maxTokenTTL))
			return
		}
	}
	if _, taken := a.tokenByName(req.Name); taken {
		writeError(w, http.StatusConflict, fmt.Sprintf("a token named %q exists; revoke it first or pick another name", req.Name))
		return
	}
	var err error
	if secret == "" {
		secret, err = NewToken()
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	now := a.now().UTC()
	tok := tokenRecord(secret, req.Name, req.Role, now, actor(r))
	if ttl > 0 {
		tok.Expires = now.Add(ttl)
	}
	if req.Role == store.RoleJoin {
		tok.Expires, tok.Uses = now.Add(joinTTL), uses
	}
	if req.Role == store.RoleJoin {
		a.pruneJoinTokens()
	}
	why := req.Reason
	if why == "" {
		why = "token create"
	}
	if _, err := a.apply(store.Command{Op: store.OpTokenCreate, Token: &tok, Time: now, Who: actor(r), Why: why}); err != nil {
		if errors.Is(err, store.ErrTokenExists) {
			writeError(w, http.StatusConflict, err.Error())
			return
		}
		writeApplyError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, TokenCreated{TokenView: tokenView(tok, now), Token: secret})
}

// tokenRecord is what the state keeps of token s (already validated).
func tokenRecord(s, name string, role store.Role, now time.Time, by string) store.Token {
	id, secret, _ := ParseToken(s)
	return store.Token{Name: name, ID: id, Role: role, Hash: hashSecret(secret), Created: now, CreatedBy: by}
}

func (a *Agent) tokenByName(name string) (store.Token, bool) {
	for _, t := range a.fsm.Tokens() {
		if t.Name == name {
			return t, true
		}
	}
	return store.Token{}, false
}

func (a *Agent) revokeToken(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := store.ValidateTokenName(name); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	tok, ok := a.tokenByName(name)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no token named %q", name))
		return
	}
	if tok.Role == store.RoleOperator {
		now, others := a.now(), 0
		for _, t := range a.fsm.Tokens() {
			if t.Name != name && t.Role.Allows(store.RoleOperator) && !t.Expired(now) {
				others++
			}
		}
		if others == 0 {
			writeError(w, http.StatusConflict, fmt.Sprintf("%q is the last operator token; create another operator token before revoking it", name))
			return
		}
	}
	why := r.URL.Query().Get("reason")
	if why == "" {
		why = "token revoke"
	}
	ev, err := a.apply(store.Command{Op: store.OpTokenRevoke, Token: &store.Token{Name: name}, Time: a.now().UTC(), Who: actor(r), Why: why})
	if err != nil {
		if errors.Is(err, store.ErrUnknownToken) {
			writeError(w, http.StatusNotFound, err.Error())
			return
		}
		writeApplyError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ev)
}
