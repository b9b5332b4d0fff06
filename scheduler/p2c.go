package scheduler

import (
	"math/rand/v2"
	"time"
)

// P2C is the power-of-two-random-choices policy with a peak-EWMA cost, as
// in Finagle's and Linkerd's p2c-peak-ewma balancers: it draws two distinct
// candidates at random and takes the one with the lower
//
//	cost = latency × (in flight + 1) / weight
//
// where latency is Peer.Latency (at least 1µs), in flight is Peer.Inflight
// and weight is Peer.Weight (capacity). A peer with no latency figure at
// all (new, never measured, nothing gossiped) costs 0 while it has nothing
// in flight, so one request probes it, as in Finagle; while that probe is
// out it is costed at DefaultLatency, so a cold peer is not flooded before
// its first answer. Comparing two random
// candidates instead of all of them keeps each decision O(1) and avoids the
// herd behaviour of "always the least loaded", where every ingress sends
// its next requests to the same peer between load updates; the exponential
// improvement over a single random choice is Mitzenmacher's "power of two
// choices" result.
//
// With usable candidates the decision is O(1): two random draws and two
// cost evaluations. When its draws keep hitting unusable candidates (tried,
// ejected, at their cap) it falls back to one O(n) pass that samples two of
// the usable ones uniformly. Safe for concurrent use.
type P2C struct {
	src            rand.Source
	defaultLatency float64
}

// NewP2C returns the policy. defaultLatency is assumed for peers with no
// latency figure (10ms if <= 0); src is the random source (nil: runtime).
func NewP2C(defaultLatency time.Duration, src rand.Source) *P2C {
	if src == nil {
		src = runtimeSource{}
	}
	if defaultLatency <= 0 {
		defaultLatency = 10 * time.Millisecond
	}
	return &P2C{src: src, defaultLatency: float64(defaultLatency)}
}

// Choose implements Policy.
func (p *P2C) Choose(cands []Peer, r Request) int {
	n := len(cands)
	switch n {
	case 0:
		return -1
	case 1:
		if r.Usable(&cands[0]) {
			return 0
		}
		return -1
	}
	for try := 0; try < 3; try++ {
		i := randN(p.src, n)
		j := randN(p.src, n-1)
		if j >= i {
			j++
		}
		if r.Usable(&cands[i]) && r.Usable(&cands[j]) {
			return p.better(cands, i, j, &r)
		}
	}
	// Reservoir-sample two usable candidates in one pass.
	a, b, seen := -1, -1, 0
	for i := range cands {
		if !r.Usable(&cands[i]) {
			continue
		}
		seen++
		switch {
		case seen == 1:
			a = i
		case seen == 2:
			b = i
		default:
			if k := randN(p.src, seen); k < 2 {
				if k == 0 {
					a = i
				} else {
					b = i
				}
			}
		}
	}
	if b < 0 {
		return a
	}
	if randN(p.src, 2) == 0 { // ties go to the first: make it a random one
		a, b = b, a
	}
	return p.better(cands, a, b, &r)
}

// better returns the cheaper of i and j; i on a tie.
func (p *P2C) better(cands []Peer, i, j int, r *Request) int {
	if p.cost(&cands[j], r) < p.cost(&cands[i], r) {
		return j
	}
	return i
}

func (p *P2C) cost(c *Peer, r *Request) float64 {
	inflight := c.Inflight()
	lat := p.defaultLatency
	if d, ok := c.Latency(r.Now); ok {
		// A zero latency would make in-flight requests cost nothing.
		lat = float64(max(d, minLatency))
	} else if inflight == 0 {
		return 0 // unknown and idle: probe it
	}
	return lat * float64(inflight+1) / c.Weight()
}

// minLatency floors known latencies in the cost.
const minLatency = time.Microsecond
