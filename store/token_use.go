package store

import (
	"errors"
	"fmt"
	"time"

	"github.com/loadmesh/loadmesh/scheduler"
)

// Errors of token.use, returned as the Apply response. Every replica
// decides the same way, so a join token's uses hold cluster-wide.
var (
	// ErrTokenWrongRole is returned for a token.use of a token that is not
	// a join token.
	ErrTokenWrongRole = errors.New("not a join token")
	// ErrTokenExpired is returned for a token.use of an expired token.
	ErrTokenExpired = errors.New("join token expired")
	// ErrTokenUsedUp is returned for a token.use of a join token whose uses
	// are all spent.
	ErrTokenUsedUp = errors.New("join token already used up")
)

// applyTokenUse spends one use of the join token named c.Token.Name at
// c.Time, for the node c.Node. The audit event carries what the proposer
// issued with it (c.After: certificate serial and expiry). The caller
// holds f.mu.
func (f *FSM) applyTokenUse(c Command, ev scheduler.Event) (scheduler.Event, error) {
	t, ok := f.st.Tokens[c.Token.Name]
	switch {
	case !ok:
		return ev, fmt.Errorf("%w: %q", ErrUnknownToken, c.Token.Name)
	case t.Role != RoleJoin:
		return ev, fmt.Errorf("%w: token %q has role %s", ErrTokenWrongRole, t.Name, t.Role)
	case t.Expired(c.Time):
		return ev, fmt.Errorf("%w: token %q expired at %s", ErrTokenExpired, t.Name, t.Expires.UTC().Format(time.RFC3339))
	case t.Uses > 0 && t.Used >= t.Uses:
		return ev, fmt.Errorf("%w: token %q was used %d of %d times", ErrTokenUsedUp, t.Name, t.Used, t.Uses)
	}
	t.Used++
	f.st.Tokens[t.Name] = t
	ev.Before = t.describe()
	ev.After = c.After
	return f.record(ev), nil
}

// UsesLeft is how many more times t may be spent, or -1 without limit.
func (t Token) UsesLeft() int {
	if t.Uses == 0 {
		return -1
	}
	return max(t.Uses-t.Used, 0)
}

// Spent reports whether t is a join token that can no longer be used at
// now: expired or used up. The leader prunes those.
func (t Token) Spent(now time.Time) bool {
	return t.Role == RoleJoin && (t.Expired(now) || t.Uses > 0 && t.Used >= t.Uses)
}
