package scheduler

import "sync"

// WeightedRoundRobin is nginx's smooth weighted round-robin: each usable
// candidate's current weight grows by its weight (Peer.EffectiveCapacity,
// at least 1) on every decision, the candidate with the largest current
// weight is chosen, and its current weight drops by the sum of the
// weights. Over any cycle of W = sum of weights decisions each candidate
// is chosen exactly its weight times, interleaved rather than in bursts
// (weights 5, 1, 1 give a a b a c a a).
//
// Candidates not usable for a request sit that decision out. The current
// weights are kept per candidate slice and carried over when a new slice
// lists the same names in the same order. O(n) per decision under a mutex.
// Safe for concurrent use.
type WeightedRoundRobin struct {
	mu      sync.Mutex
	peers   []Peer
	current []int64
}

// NewWeightedRoundRobin returns the policy.
func NewWeightedRoundRobin() *WeightedRoundRobin { return &WeightedRoundRobin{} }

// Choose implements Policy.
func (w *WeightedRoundRobin) Choose(cands []Peer, r Request) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !sameSlice(w.peers, cands) {
		if !sameMembers(w.peers, cands) {
			w.current = make([]int64, len(cands))
		}
		w.peers = cands
	}
	best := -1
	var total int64
	for i := range cands {
		p := &cands[i]
		if !r.Usable(p) {
			continue
		}
		weight := int64(max(p.EffectiveCapacity(), 1))
		w.current[i] += weight
		total += weight
		if best < 0 || w.current[i] > w.current[best] {
			best = i
		}
	}
	if best >= 0 {
		w.current[best] -= total
	}
	return best
}
