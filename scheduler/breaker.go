package scheduler

import "sync/atomic"

// Breaker caps the requests this node has in flight to one peer: a
// concurrency circuit breaker in the style of Envoy's max_requests. Over
// the cap Acquire fails at once, so the caller picks another peer or
// answers 503 instead of queueing behind a peer that is already full.
//
// The zero value has no cap. Safe for concurrent use; Acquire and Release
// are a handful of atomic operations.
type Breaker struct {
	max      atomic.Int64 // 0: no cap
	inflight atomic.Int64
	rejected atomic.Uint64
}

// NewBreaker returns a breaker allowing limit concurrent requests (no cap if
// limit <= 0).
func NewBreaker(limit int) *Breaker {
	b := &Breaker{}
	b.SetMax(limit)
	return b
}

// SetMax changes the cap; limit <= 0 removes it. Requests already in
// flight are not affected.
func (b *Breaker) SetMax(limit int) { b.max.Store(int64(max(limit, 0))) }

// Max returns the cap, 0 when there is none.
func (b *Breaker) Max() int { return int(b.max.Load()) }

// Acquire takes a slot and reports whether it got one. Every successful
// Acquire must be followed by exactly one Release.
func (b *Breaker) Acquire() bool {
	limit := b.max.Load()
	if limit <= 0 {
		b.inflight.Add(1)
		return true
	}
	for {
		n := b.inflight.Load()
		if n >= limit {
			b.rejected.Add(1)
			return false
		}
		if b.inflight.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// force takes a slot whatever the cap.
func (b *Breaker) force() { b.inflight.Add(1) }

// Release returns a slot taken by Acquire. Releasing more slots than were
// taken is a programming error; the count then stays at zero.
func (b *Breaker) Release() {
	if b.inflight.Add(-1) < 0 {
		b.inflight.CompareAndSwap(-1, 0)
	}
}

// Full reports whether Acquire would fail now.
func (b *Breaker) Full() bool {
	limit := b.max.Load()
	return limit > 0 && b.inflight.Load() >= limit
}

// Inflight returns the number of slots taken.
func (b *Breaker) Inflight() int { return int(b.inflight.Load()) }

// Rejected returns how many Acquire calls have failed.
func (b *Breaker) Rejected() uint64 { return b.rejected.Load() }
