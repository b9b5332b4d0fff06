package scheduler

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Tracker keeps what this node observes of each peer between gossip rounds:
// the requests it has in flight to the peer and a peak-EWMA of the latency
// it measures to it (network hop included). These are fresher than the
// peer's gossiped Load and are merged with it by Peer.Inflight and
// Peer.Latency.
//
// Entries are created on first use and live until Forget. Lookups by name
// go through a sync.Map; hot paths should keep the *PeerStats returned by
// Peer and call its methods, which are atomic operations plus a short,
// per-peer writer lock for the EWMA. Safe for concurrent use.
type Tracker struct {
	cfg   TrackerConfig
	now   func() time.Time
	peers sync.Map // string → *PeerStats
}

// NewTracker returns an empty tracker. now is the clock (time.Now if nil).
func NewTracker(cfg TrackerConfig, now func() time.Time) (*Tracker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("tracker config: %w", err)
	}
	if now == nil {
		now = time.Now
	}
	return &Tracker{cfg: cfg, now: now}, nil
}

// Peer returns the entry for name, creating it if needed.
func (t *Tracker) Peer(name string) *PeerStats {
	if v, ok := t.peers.Load(name); ok {
		return v.(*PeerStats)
	}
	ps := &PeerStats{t: t, fresh: int64(t.cfg.FreshFor)}
	ps.ewma.setTau(t.cfg.Decay)
	v, _ := t.peers.LoadOrStore(name, ps)
	return v.(*PeerStats)
}

// Begin counts a request to peer as in flight (whatever its in-flight cap;
// use Peer(name).TryBegin to respect it).
func (t *Tracker) Begin(peer string) { t.Peer(peer).Begin() }

// End finishes a request begun with Begin (it must follow one): it records
// the latency and whether it failed (err != nil).
func (t *Tracker) End(peer string, latency time.Duration, err error) {
	t.Peer(peer).End(latency, err)
}

// Inflight returns this node's requests in flight to peer.
func (t *Tracker) Inflight(peer string) int {
	if v, ok := t.peers.Load(peer); ok {
		return v.(*PeerStats).Inflight()
	}
	return 0
}

// Latency returns this node's latency estimate for peer, whether it is
// fresh (a sample within FreshFor) and whether there is any.
func (t *Tracker) Latency(peer string) (d time.Duration, fresh, ok bool) {
	if v, found := t.peers.Load(peer); found {
		return v.(*PeerStats).Latency()
	}
	return 0, false, false
}

// Forget drops peer's entry. Holders of its *PeerStats may keep using it.
func (t *Tracker) Forget(peer string) { t.peers.Delete(peer) }

// PeerStats is a Tracker's entry for one peer. Its in-flight counter is
// also the peer's concurrency breaker (see Breaker and TryBegin).
type PeerStats struct {
	t        *Tracker
	fresh    int64 // FreshFor in nanoseconds
	breaker  Breaker
	ewma     PeakEWMA
	requests atomic.Uint64
	failures atomic.Uint64
	// lastEvent is when (unix ns) a request to the peer last ended, or
	// started while none was in flight: with requests in flight, now minus
	// lastEvent is how long the peer has been silent.
	lastEvent atomic.Int64
}

// stalled returns how long the peer has answered nothing while requests
// to it were in flight (0 when none is in flight).
func (s *PeerStats) stalled(now int64) time.Duration {
	if s.breaker.Inflight() == 0 {
		return 0
	}
	return time.Duration(max(now-s.lastEvent.Load(), 0))
}

func (s *PeerStats) begun() {
	if s.breaker.Inflight() == 1 {
		s.lastEvent.Store(s.t.now().UnixNano())
	}
}

// Begin counts a request as in flight, ignoring the in-flight cap.
func (s *PeerStats) Begin() { s.breaker.force(); s.begun() }

// TryBegin counts a request as in flight unless the peer is at its
// in-flight cap, and reports whether it did.
func (s *PeerStats) TryBegin() bool {
	if !s.breaker.Acquire() {
		return false
	}
	s.begun()
	return true
}

// End finishes a request begun with Begin or TryBegin, recording its
// latency and whether it failed.
func (s *PeerStats) End(latency time.Duration, err error) {
	s.end(s.t.now().UnixNano(), latency, err != nil)
}

// end records the outcome at now (unix nanoseconds). A failure never makes
// the peer look faster: its latency is raised to the current estimate, so
// a peer failing fast does not attract traffic (a "black hole").
func (s *PeerStats) end(now int64, latency time.Duration, failed bool) {
	s.breaker.Release()
	s.lastEvent.Store(now)
	s.requests.Add(1)
	if failed {
		s.failures.Add(1)
		if cur, _, ok := s.ewma.value(now); ok && latency < cur {
			latency = cur
		}
	}
	s.ewma.observe(now, latency)
}

// abandon finishes a request without recording an outcome (the client went
// away; it says nothing about the peer).
func (s *PeerStats) abandon() {
	s.breaker.Release()
	s.lastEvent.Store(s.t.now().UnixNano())
}

// Inflight returns this node's requests in flight to the peer.
func (s *PeerStats) Inflight() int { return s.breaker.Inflight() }

// Breaker returns the peer's in-flight cap.
func (s *PeerStats) Breaker() *Breaker { return &s.breaker }

// Latency returns the latency estimate now, whether it is fresh and whether
// there is any.
func (s *PeerStats) Latency() (d time.Duration, fresh, ok bool) {
	return s.latency(s.t.now().UnixNano())
}

func (s *PeerStats) latency(now int64) (time.Duration, bool, bool) {
	d, stamp, ok := s.ewma.value(now)
	return d, ok && now-stamp <= s.fresh, ok
}

// Requests and Failures return how many requests ended, and how many of
// them failed, since the entry was created.
func (s *PeerStats) Requests() uint64 { return s.requests.Load() }

// Failures: see Requests.
func (s *PeerStats) Failures() uint64 { return s.failures.Load() }
