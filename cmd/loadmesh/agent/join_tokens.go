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
