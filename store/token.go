package store

import (
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/loadmesh/loadmesh/scheduler"
)

// Role is what an API token may do. Roles are not ranked: each grants a
// fixed set of permissions (see Allows), so that later roles (a join role
// for new agents, say) can grant something no existing role implies.
type Role string

const (
	// RoleRead may read status, plan, events and metrics.
	RoleRead Role = "read"
	// RoleOperator may read and change everything, tokens included.
	RoleOperator Role = "operator"
	// RoleJoin may only be spent, once per use, by a new node to have its
	// certificate signed by the cluster CA (token.use); it grants no API
	// call.
	RoleJoin Role = "join"
)

// roleGrants lists, for each role, the permissions it carries. A
// permission is named after the role that first needs it.
var roleGrants = map[Role][]Role{
	RoleRead:     {RoleRead},
	RoleOperator: {RoleRead, RoleOperator},
	RoleJoin:     {RoleJoin},
}

// Roles returns the known roles, sorted.
func Roles() []Role {
	out := make([]Role, 0, len(roleGrants))
	for r := range roleGrants {
		out = append(out, r)
	}
	slices.Sort(out)
	return out
}

// Valid reports whether r is a known role.
func (r Role) Valid() bool {
	_, ok := roleGrants[r]
	return ok
}

// Allows reports whether a token of role r may do what needs permission need.
func (r Role) Allows(need Role) bool {
	return slices.Contains(roleGrants[r], need)
}

// Token is an API token as the state keeps it: never its secret, only the
// SHA-256 of the secret.
type Token struct {
	// Name identifies the token to people and in the audit log; unique.
	Name string `json:"name"`
	// ID is the public part of the token string, unique; it finds the
	// token without comparing secrets.
	ID   string `json:"id"`
	Role Role   `json:"role"`
	// Hash is the hex SHA-256 of the token's secret. Tokens() leaves it out.
	Hash    string    `json:"hash,omitempty"`
	Created time.Time `json:"created"`
	// Expires is when the token stops working; zero means never.
	Expires   time.Time `json:"expires,omitzero"`
	CreatedBy string    `json:"created_by"`
	// Bootstrap marks the cluster's first operator token.
	Bootstrap bool `json:"bootstrap,omitempty"`
	// Uses is how many times a join token may be spent (token.use); 0
	// means without limit. Used counts the uses so far.
	Uses int `json:"uses,omitempty"`
	Used int `json:"used,omitempty"`
}

// Expired reports whether t no longer works at now.
func (t Token) Expired(now time.Time) bool {
	return !t.Expires.IsZero() && !now.Before(t.Expires)
}

func (t Token) describe() string {
	s := fmt.Sprintf("token %s role=%s id=%s", t.Name, t.Role, t.ID)
	if !t.Expires.IsZero() {
		s += " expires=" + t.Expires.UTC().Format(time.RFC3339)
	}
	if t.Uses > 0 {
		s += fmt.Sprintf(" uses=%d", t.Uses)
	}
	return s
}

// Token limits.
const (
	// MaxTokens bounds how many tokens the state keeps.
	MaxTokens = 1000
	// TokenIDLen is the length of a token ID: 8 random bytes in hex.
	TokenIDLen = 16
)

var (
	// ErrTokenExists is returned (as an Apply response) for a token whose
	// name or ID is taken.
	ErrTokenExists = errors.New("a token with that name already exists")
	// ErrUnknownToken is returned for a revocation of a token the state
	// does not hold.
	ErrUnknownToken = errors.New("no such token")
	// ErrTokensBootstrapped is returned for a second bootstrap token: the
	// cluster creates its first operator token once.
	ErrTokensBootstrapped = errors.New("the bootstrap token was already created")
	// ErrTooManyTokens is returned when the state holds MaxTokens tokens.
	ErrTooManyTokens = errors.New("too many tokens; revoke some first")
)

// ValidateTokenName accepts 1 to 64 bytes of letters, digits, '.', '_'
// and '-', starting with a letter or digit.
func ValidateTokenName(name string) error {
	if name == "" || len(name) > 64 {
		return errors.New("token name must be 1 to 64 bytes")
	}
	for i, c := range name {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || i > 0 && strings.ContainsRune("._-", c)
		if !ok {
			return fmt.Errorf("token name %q: use letters, digits, '.', '_' and '-', starting with a letter or digit", name)
		}
	}
	return nil
}

func validateToken(t *Token, op Op) error {
	if t == nil {
		return errors.New("no token")
	}
	var errs []error
	if err := ValidateTokenName(t.Name); err != nil {
		errs = append(errs, err)
	}
	if op == OpTokenRevoke || op == OpTokenUse {
		return errors.Join(errs...)
	}
	if !t.Role.Valid() {
		errs = append(errs, fmt.Errorf("role %q is not a token role", t.Role))
	}
	if !isLowerHex(t.ID, TokenIDLen) {
		errs = append(errs, fmt.Errorf("token id must be %d lowercase hex digits", TokenIDLen))
	}
	if !isLowerHex(t.Hash, 64) {
		errs = append(errs, errors.New("token hash must be a hex SHA-256"))
	}
	if t.Created.IsZero() {
		errs = append(errs, errors.New("token creation time is not set"))
	}
	if !t.Expires.IsZero() && !t.Expires.After(t.Created) {
		errs = append(errs, errors.New("token expires before it is created"))
	}
	if t.Uses < 0 || t.Used < 0 || t.Uses > 0 && t.Used > t.Uses {
		errs = append(errs, fmt.Errorf("token uses %d and used %d are inconsistent", t.Uses, t.Used))
	}
	if t.Role == RoleJoin && t.Expires.IsZero() {
		errs = append(errs, errors.New("a join token must expire"))
	}
	if len(t.CreatedBy) > 128 {
		errs = append(errs, errors.New("token creator name longer than 128 bytes"))
	}
	return errors.Join(errs...)
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// applyToken runs token.create and token.revoke. Token changes are not
// plan changes: the plan version stays, and the audit event carries it.
// The caller holds f.mu.
func (f *FSM) applyToken(c Command, ev scheduler.Event) (scheduler.Event, error) {
	ev.Version = f.st.Plan.Version
	switch c.Op {
	case OpTokenCreate:
		t := *c.Token
		if t.Bootstrap && f.st.TokensBootstrapped {
			return ev, ErrTokensBootstrapped
		}
		if _, taken := f.st.Tokens[t.Name]; taken {
			return ev, fmt.Errorf("%w: %q", ErrTokenExists, t.Name)
		}
		if _, taken := f.tokenIDs[t.ID]; taken {
			return ev, fmt.Errorf("%w: id %s", ErrTokenExists, t.ID)
		}
		if len(f.st.Tokens) >= MaxTokens {
			return ev, ErrTooManyTokens
		}
		if f.st.Tokens == nil {
			f.st.Tokens = map[string]Token{}
		}
		f.st.Tokens[t.Name] = t
		f.tokenIDs[t.ID] = t.Name
		if t.Bootstrap {
			f.st.TokensBootstrapped = true
		}
		ev.After = t.describe()
	case OpTokenRevoke:
		t, ok := f.st.Tokens[c.Token.Name]
		if !ok {
			return ev, fmt.Errorf("%w: %q", ErrUnknownToken, c.Token.Name)
		}
		delete(f.st.Tokens, t.Name)
		delete(f.tokenIDs, t.ID)
		ev.Before = t.describe()
	case OpTokenUse:
		return f.applyTokenUse(c, ev)
	}
	return f.record(ev), nil
}

// TokenByID returns the token with the given ID, hash included, for
// verifying a presented secret.
func (f *FSM) TokenByID(id string) (Token, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	name, ok := f.tokenIDs[id]
	if !ok {
		return Token{}, false
	}
	return f.st.Tokens[name], true
}

// Tokens lists the tokens by name, without their hashes.
func (f *FSM) Tokens() []Token {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]Token, 0, len(f.st.Tokens))
	for _, t := range f.st.Tokens {
		t.Hash = ""
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b Token) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// TokensBootstrapped reports whether the cluster's first operator token
// was created (it may have been revoked since).
func (f *FSM) TokensBootstrapped() bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.TokensBootstrapped
}

// indexTokens rebuilds the ID index from st.Tokens.
func indexTokens(tokens map[string]Token) map[string]string {
	idx := make(map[string]string, len(tokens))
	for name, t := range tokens {
		idx[t.ID] = name
	}
	return idx
}
