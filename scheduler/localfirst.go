package scheduler

import "sync/atomic"

// LocalFirst wraps a policy to prefer the local node (Peer.Local): it is
// chosen while it is usable and has headroom (Peer.Inflight below its
// capacity), because serving locally saves a network hop and keeps the
// peers' capacity for nodes that need it. Without headroom, or with
// unknown capacity, the local node competes with the others under the
// wrapped policy like any candidate.
//
// The local node's index is cached per candidate slice, so the check is
// O(1) for the Scheduler's snapshots. Safe for concurrent use.
type LocalFirst struct {
	inner Policy
	cache atomic.Pointer[localIndex]
}

type localIndex struct {
	peers []Peer
	i     int
}

// NewLocalFirst wraps inner.
func NewLocalFirst(inner Policy) *LocalFirst { return &LocalFirst{inner: inner} }

// Choose implements Policy.
func (l *LocalFirst) Choose(cands []Peer, r Request) int {
	if i := l.index(cands); i >= 0 {
		if p := &cands[i]; p.hasHeadroom() && r.Usable(p) {
			return i
		}
	}
	return l.inner.Choose(cands, r)
}

func (l *LocalFirst) index(cands []Peer) int {
	if c := l.cache.Load(); c != nil && sameSlice(c.peers, cands) {
		return c.i
	}
	li := &localIndex{peers: cands, i: -1}
	for i := range cands {
		if cands[i].Local {
			li.i = i
			break
		}
	}
	l.cache.Store(li)
	return li.i
}
