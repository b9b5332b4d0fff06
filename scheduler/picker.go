package scheduler

import (
	"errors"
	"slices"
	"sync/atomic"
)

// ErrNoPeers is returned when no peer can take a request.
var ErrNoPeers = errors.New("no peer can serve the request")

// Peer is a node as the scheduler sees it: plain data copied from
// membership and the plan.
type Peer struct {
	Name string
	Zone string
	// Addr is where forwarded requests go (the node's peer address).
	Addr string
	// State is the node's plan state; only StateActive takes traffic.
	State NodeState
	// Serving is true when the node has a backend that can serve.
	Serving bool
	// Capacity is the node's --capacity (concurrent requests).
	Capacity int
}

// Eligible reports whether p may be sent new forwarded requests.
func (p Peer) Eligible() bool { return p.Serving && p.Addr != "" && p.State.TakesTraffic() }

// PeerSource lists the other nodes of the cluster. It must be cheap and
// must not block; the returned slice is the caller's.
type PeerSource interface {
	Peers() []Peer
}

// Policy chooses one of several eligible candidates. Implementations must be
// safe for concurrent use. candidates is never empty and must not be
// modified or retained.
type Policy interface {
	Choose(candidates []Peer) Peer
}

// RoundRobin cycles through the candidates.
type RoundRobin struct{ next atomic.Uint64 }

// Choose implements Policy.
func (rr *RoundRobin) Choose(c []Peer) Peer {
	return c[(rr.next.Add(1)-1)%uint64(len(c))]
}

// Selector picks a peer for a request from a PeerSource with a Policy.
type Selector struct {
	Source PeerSource
	Policy Policy
}

// Pick returns an eligible peer not named in exclude, or ErrNoPeers.
func (s *Selector) Pick(exclude []string) (Peer, error) {
	peers := s.Source.Peers()
	cands := peers[:0]
	for _, p := range peers {
		if p.Eligible() && !slices.Contains(exclude, p.Name) {
			cands = append(cands, p)
		}
	}
	if len(cands) == 0 {
		return Peer{}, ErrNoPeers
	}
	return s.Policy.Choose(cands), nil
}
