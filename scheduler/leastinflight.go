package scheduler

import "math/rand/v2"

// LeastInflight chooses the usable candidate with the fewest requests in
// flight relative to its weight: the lowest (Peer.Inflight + 1) /
// Peer.Weight, which for equal capacities is simply the fewest in flight.
// Ties are broken uniformly at random so ingresses do not all pile onto
// the first of several idle peers. O(n) per decision. Safe for concurrent
// use.
type LeastInflight struct{ src rand.Source }

// NewLeastInflight returns the policy; src breaks ties (nil: runtime).
func NewLeastInflight(src rand.Source) *LeastInflight {
	if src == nil {
		src = runtimeSource{}
	}
	return &LeastInflight{src: src}
}

// Choose implements Policy.
func (l *LeastInflight) Choose(cands []Peer, r Request) int {
	// Compare (in flight + 1) / weight by cross-multiplying integers.
	best, ties := -1, 0
	var bestLoad, bestWeight int64
	for i := range cands {
		p := &cands[i]
		if !r.Usable(p) {
			continue
		}
		load, weight := int64(p.Inflight()+1), int64(max(p.EffectiveCapacity(), 1))
		switch lhs, rhs := load*bestWeight, bestLoad*weight; {
		case best < 0 || lhs < rhs:
			best, bestLoad, bestWeight, ties = i, load, weight, 1
		case lhs == rhs:
			ties++
			if randN(l.src, ties) == 0 {
				best = i
			}
		}
	}
	return best
}
