package scheduler

import "time"

// Selector picks a peer from a PeerSource with a Policy, without feedback:
// no in-flight accounting, outlier detection or retry budget. It suits
// callers that only need a plain choice; the ingress should use a
// Scheduler.
type Selector struct {
	Source PeerSource
	Policy Policy
}

// Pick returns an eligible peer not named in exclude, or ErrNoPeers.
func (s *Selector) Pick(exclude []string) (Peer, error) {
	peers := s.Source.Peers()
	r := Request{Tried: exclude, Now: time.Now()}
	cands := peers[:0]
	for i := range peers {
		if r.Usable(&peers[i]) {
			cands = append(cands, peers[i])
		}
	}
	if len(cands) == 0 {
		return Peer{}, ErrNoPeers
	}
	i := s.Policy.Choose(cands, r)
	if i < 0 {
		return Peer{}, ErrNoPeers
	}
	return cands[i], nil
}
