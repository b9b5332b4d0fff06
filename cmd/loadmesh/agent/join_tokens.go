package agent

import (
	"fmt"
	"time"

	"github.com/loadmesh/loadmesh/store"
)

// maxJoinTokenUses bounds --uses of a join token.
const maxJoinTokenUses = 1000

// joinTokenRules applies the rules of join tokens to a create request:
// a join token must expire (default DefaultJoinTokenTTL, at most
// maxJoinTokenTTL) and is single-use unless --uses says otherwise (0:
// without limit, until it expires); other roles take no --uses. It
// returns the TTL and the uses, or a message for a 400.
func joinTokenRules(req TokenCreateRequest) (time.Duration, int, string) {
	if req.Role != store.RoleJoin {
		if req.Uses != nil && *req.Uses != 0 {
			return 0, 0, fmt.Sprintf("uses: only join tokens are limited in uses, not %s tokens", req.Role)
		}
		return 0, 0, ""
	}
	ttl := DefaultJoinTokenTTL
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d < time.Minute || d > maxJoinTokenTTL {
			return 0, 0, fmt.Sprintf("ttl %q: a join token lives from 1m to %s", req.TTL, maxJoinTokenTTL)
		}
		ttl = d
	}
	uses := 1
	if req.Uses != nil {
		uses = *req.Uses
	}
	if uses < 0 || uses > maxJoinTokenUses {
		return 0, 0, fmt.Sprintf("uses %d: want 1 to %d, or 0 for any number until the token expires", uses, maxJoinTokenUses)
	}
	return ttl, uses, ""
}

// joinTokenName names a join token created without a name after its ID.
func joinTokenName(secret string) string {
	id, _, _ := ParseToken(secret)
	return "join-" + id[:8]
}

// spentTokenGrace is how long a spent join token (expired or used up)
// stays listed, so that `token list` shows what became of it, before the
// leader prunes it.
const spentTokenGrace = time.Hour

// pruneJoinTokens revokes, through Raft, the join tokens spent for longer
// than spentTokenGrace. The leader runs it whenever it creates a join
// token, which bounds how many pile up. Each removal is audited.
func (a *Agent) pruneJoinTokens() {
	now := a.now()
	for _, t := range a.fsm.Tokens() {
		spentSince := t.Expires
		if t.Uses > 0 && t.Used >= t.Uses {
			spentSince = t.Created // used up: at the latest since creation
		}
		if !t.Spent(now) || now.Sub(spentSince) < spentTokenGrace {
			continue
		}
		if _, err := a.apply(store.Command{Op: store.OpTokenRevoke, Token: &store.Token{Name: t.Name}, Time: now.UTC(),
			Who: a.cfg.Name, Why: "join token spent (expired or used up)"}); err != nil {
			a.log.Warn("prune spent join token", "token", t.Name, "error", err)
			return
		}
	}
}
