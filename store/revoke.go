package store

import (
	"maps"
	"time"

	"github.com/loadmesh/loadmesh/scheduler"
)

// OpNodeRevoke revokes the node named Node at Time: every node refuses its
// certificates issued before that instant, the leader takes it out of the
// Raft configuration, and the plan holds it cordoned.
const OpNodeRevoke Op = "node.revoke"

// RevokedNode records one revocation.
type RevokedNode struct {
	At  time.Time `json:"at"`
	Who string    `json:"who,omitempty"`
	Why string    `json:"why,omitempty"`
}

// NodeRevoked reports whether the node called name is revoked, and since
// when. A certificate for that name issued (NotBefore) after at belongs to
// a new machine that joined afresh and is allowed; older ones are refused.
func (f *FSM) NodeRevoked(name string) (at time.Time, ok bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	r, ok := f.st.Revoked[name]
	return r.At, ok
}

// RevokedNodes returns a copy of the revoked nodes by name.
func (f *FSM) RevokedNodes() map[string]RevokedNode {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return maps.Clone(f.st.Revoked)
}

// applyRevoke records a revocation and cordons the node in the plan. A
// second revocation of the same name moves its time forward. The caller
// holds f.mu.
func (f *FSM) applyRevoke(c Command, ev scheduler.Event) (scheduler.Event, error) {
	if f.st.Revoked == nil {
		f.st.Revoked = map[string]RevokedNode{}
	}
	f.st.Revoked[c.Node] = RevokedNode{At: c.Time, Who: c.Who, Why: c.Why}
	p := &f.st.Plan
	if n, ok := p.Nodes[c.Node]; ok {
		ev.Before = describe(n)
		if n.State != scheduler.StateCordoned {
			n.State, n.Since = scheduler.StateCordoned, c.Time
		}
		p.Nodes[c.Node] = n
		ev.After = describe(n) + " revoked"
	} else {
		ev.After = "revoked"
	}
	p.Version++
	ev.Version = p.Version
	f.notifySecurity()
	return f.record(ev), nil
}
