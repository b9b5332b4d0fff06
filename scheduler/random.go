package scheduler

import (
	"math/rand/v2"
	"sync/atomic"
)

// Random chooses a usable candidate uniformly at random: O(1) while most
// candidates are usable, with an O(n) reservoir-sampling fallback when its
// draws keep hitting unusable ones. Safe for concurrent use.
type Random struct{ src rand.Source }

// NewRandom returns the policy (src nil: runtime).
func NewRandom(src rand.Source) *Random {
	if src == nil {
		src = runtimeSource{}
	}
	return &Random{src: src}
}

// Choose implements Policy.
func (x *Random) Choose(cands []Peer, r Request) int {
	n := len(cands)
	if n == 0 {
		return -1
	}
	for try := 0; try < 4; try++ {
		if i := randN(x.src, n); r.Usable(&cands[i]) {
			return i
		}
	}
	best, seen := -1, 0
	for i := range cands {
		if r.Usable(&cands[i]) {
			seen++
			if randN(x.src, seen) == 0 {
				best = i
			}
		}
	}
	return best
}

// RoundRobin cycles through the candidates, skipping unusable ones. It
// ignores load and weights; it is kept for the simple Selector. The zero
// value is ready to use. Safe for concurrent use.
type RoundRobin struct{ next atomic.Uint64 }

// Choose implements Policy.
func (rr *RoundRobin) Choose(cands []Peer, r Request) int {
	n := uint64(len(cands))
	if n == 0 {
		return -1
	}
	start := rr.next.Add(1) - 1
	for k := uint64(0); k < n; k++ {
		if i := int((start + k) % n); r.Usable(&cands[i]) {
			return i
		}
	}
	return -1
}
