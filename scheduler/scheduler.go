package scheduler

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Deps are the Scheduler's collaborators; all are optional.
type Deps struct {
	// Now is the clock; time.Now if nil.
	Now func() time.Time
	// Rand is the policies' random source; the runtime's fast,
	// concurrency-safe generator if nil. It must be safe for concurrent
	// use (see LockedSource).
	Rand rand.Source
	// Registerer receives the scheduler's metrics; none are registered if
	// nil.
	Registerer prometheus.Registerer
	// LocalInflight, if set, returns the live number of requests in the
	// local backend (all of them, including those forwarded by peers),
	// for example Meter.Inflight. The local candidate's in-flight figure
	// is at least this. It is called on the request path: it must be
	// cheap and must not block.
	LocalInflight func() int
}

// Scheduler ties the pieces together for the ingress. It holds a snapshot
// of the candidates (SetPeers), chooses one per request with the
// configured Policy (Pick), and learns from every outcome (Ticket.Done):
// this node's per-peer in-flight counts and latency (Tracker), passive
// outlier ejection (Outliers), the retry budget (RetryBudget), per-peer
// in-flight caps (Breaker) and Retry-After holds.
//
// Pick and Done are safe for concurrent use and never block: a Pick reads
// one atomic pointer, asks the policy, and takes an in-flight slot with a
// compare-and-swap; with p2c-ewma it is O(1) whatever the cluster size.
// SetPeers is O(n log n) and meant to be called on a timer or on
// membership changes, not per request.
type Scheduler struct {
	cfg        Config
	now        func() time.Time
	policy     Policy
	zone       *ZoneAware
	tracker    *Tracker
	outliers   *Outliers
	budget     *RetryBudget
	localGauge func() int

	mu      sync.Mutex             // serialises SetPeers
	records map[string]*peerRecord // guarded by mu
	snap    atomic.Pointer[snapshot]

	pickedLocal, pickedPeer, noPeer, saturated, budgetOut, holds atomic.Uint64
	// panicking is set while no candidate is healthy and all are tried.
	panicking atomic.Bool
}

// snapshot is an immutable view of the peers.
type snapshot struct {
	cands []Peer // eligible peers, sorted by zone then name
	all   []Peer // every peer, in SetPeers order
}

// peerRecord is everything this node knows about one peer. A Peer in a
// snapshot points to its record; records outlive snapshots.
type peerRecord struct {
	stats      *PeerStats
	out        *outlierEntry
	holdUntil  atomic.Int64 // Retry-After: unix ns
	staleLoad  time.Duration
	localGauge func() int
	lastSeen   int64 // guarded by Scheduler.mu
}

func (r *peerRecord) available(now int64) bool {
	return r.holdUntil.Load() <= now && r.out.until.Load() <= now && !r.stats.breaker.Full()
}

// New returns a scheduler with no peers. It validates cfg and registers
// metrics on deps.Registerer; it starts no goroutines.
func New(cfg Config, deps Deps) (*Scheduler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("scheduler config: %w", err)
	}
	now := deps.Now
	if now == nil {
		now = time.Now
	}
	policy, err := NewPolicy(cfg.Policy, cfg.Balance, deps.Rand)
	if err != nil {
		return nil, err
	}
	tracker, err := NewTracker(cfg.Tracker, now)
	if err != nil {
		return nil, err
	}
	outliers, err := NewOutliers(cfg.Outliers, now)
	if err != nil {
		return nil, err
	}
	budget, err := NewRetryBudget(cfg.Retry, now)
	if err != nil {
		return nil, err
	}
	s := &Scheduler{
		cfg: cfg, now: now, policy: policy,
		tracker: tracker, outliers: outliers, budget: budget,
		localGauge: deps.LocalInflight,
		records:    map[string]*peerRecord{},
	}
	if lf, ok := policy.(*LocalFirst); ok {
		s.zone, _ = lf.inner.(*ZoneAware)
	} else {
		s.zone, _ = policy.(*ZoneAware)
	}
	s.snap.Store(&snapshot{})
	if deps.Registerer != nil {
		if err := deps.Registerer.Register(&collector{s: s}); err != nil {
			return nil, fmt.Errorf("register scheduler metrics: %w", err)
		}
	}
	return s, nil
}

// SetPeers replaces the candidate list. peers should include the local
// node (Local true) when it has a backend, so that serving locally is one
// of the choices. Peers with an empty or repeated name are skipped. The
// figures kept for a peer that is no longer listed are forgotten after
// Tracker.ForgetAfter. The slice is not retained.
func (s *Scheduler) SetPeers(peers []Peer) {
	now := s.now().UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	all := make([]Peer, 0, len(peers))
	seen := make(map[string]bool, len(peers))
	for _, p := range peers {
		if p.Name == "" || seen[p.Name] {
			continue
		}
		seen[p.Name] = true
		rec := s.records[p.Name]
		if rec == nil {
			rec = &peerRecord{
				stats:      s.tracker.Peer(p.Name),
				out:        s.outliers.entry(p.Name),
				staleLoad:  s.cfg.Tracker.StaleLoadAfter,
				localGauge: s.localGauge,
			}
			s.records[p.Name] = rec
		}
		rec.lastSeen = now
		rec.stats.breaker.SetMax(s.cfg.Breaker.capFor(p.EffectiveCapacity()))
		p.live = rec
		all = append(all, p)
	}
	cands := make([]Peer, 0, len(all))
	for i := range all {
		if all[i].Eligible() {
			cands = append(cands, all[i])
		}
	}
	// Panic mode, as Envoy's: when health checks fail everywhere (often a
	// sign of an overloaded or partitioned checker rather than of dead
	// backends), trying them beats refusing every request.
	panicking := false
	if len(cands) == 0 {
		for i := range all {
			p := &all[i]
			if p.Serving && p.State.TakesTraffic() && (p.Local || p.Addr != "") {
				c := *p
				c.Load.Healthy = true // the candidate copy only; Status shows the truth
				cands = append(cands, c)
				panicking = true
			}
		}
	}
	s.panicking.Store(panicking)
	slices.SortFunc(cands, func(a, b Peer) int {
		return cmp.Or(cmp.Compare(a.Zone, b.Zone), cmp.Compare(a.Name, b.Name))
	})
	for name, rec := range s.records {
		if !seen[name] && now-rec.lastSeen >= int64(s.cfg.Tracker.ForgetAfter) && rec.stats.Inflight() == 0 {
			delete(s.records, name)
			s.tracker.Forget(name)
			s.outliers.Forget(name)
		}
	}
	s.outliers.SetMembers(len(all))
	s.snap.Store(&snapshot{cands: cands, all: all})
}

// Refresh is SetPeers(src.Peers()).
func (s *Scheduler) Refresh(src PeerSource) { s.SetPeers(src.Peers()) }

// Ticket is a chosen peer with an in-flight slot held for the request.
// Call Done exactly once when the attempt is over.
type Ticket struct {
	// Peer is the chosen peer; Peer.Local means "serve locally".
	Peer Peer

	s     *Scheduler
	rec   *peerRecord
	start int64
}

// Result is the outcome of one attempt, reported with Ticket.Done.
type Result struct {
	// Err is a transport failure (dial, reset, timeout). An error wrapping
	// context.Canceled means the client went away: it releases the slot
	// but says nothing about the peer.
	Err error
	// Status is the HTTP status the peer answered, 0 if none.
	Status int
	// RetryAfter is the Retry-After header of a 429 or 503 answer. The
	// peer then gets no new requests from this node until that time
	// (capped by Retry.MaxRetryAfter), and a 503 carrying it is taken as
	// deliberate load shedding rather than a failure.
	RetryAfter string
	// Latency overrides the latency measured from Pick to Done, for
	// example with the time to the response headers of a long stream. 0
	// measures.
	Latency time.Duration
}

// Failed reports whether the outcome counts against the peer: a transport
// error other than the client's cancellation, or a 5xx status other than
// 503 with Retry-After. 429 is not a failure.
func (r Result) Failed() bool {
	if r.Err != nil {
		return !errors.Is(r.Err, context.Canceled)
	}
	return r.Status >= 500 && (r.Status != 503 || r.RetryAfter == "")
}

// Done reports the outcome of the attempt and releases its in-flight slot.
// Calling Done on the zero Ticket does nothing.
func (t Ticket) Done(res Result) {
	if t.rec != nil {
		t.s.done(t.rec, t.start, res)
	}
}

// Pick chooses the peer for one attempt of a request. key is the
// consistent-hash affinity key (may be empty); tried names the peers this
// request was already sent to. A Pick with tried peers is a retry and
// needs the retry budget; one without counts as a first attempt.
//
// It returns ErrNoPeers when no candidate is usable, ErrSaturated (which
// wraps ErrNoPeers) when candidates exist but all are at their in-flight
// caps, and ErrRetryBudgetExhausted for a retry over budget.
func (s *Scheduler) Pick(key string, tried []string) (Ticket, error) {
	snap := s.snap.Load()
	now := s.now()
	r := Request{Key: key, Tried: tried, Now: now, nowNs: now.UnixNano()}
	if len(snap.cands) == 0 {
		s.noPeer.Add(1)
		return Ticket{}, ErrNoPeers
	}
	if len(tried) > 0 {
		if !s.budget.tryRetry(r.nowNs) {
			s.budgetOut.Add(1)
			return Ticket{}, ErrRetryBudgetExhausted
		}
	} else {
		s.budget.record(r.nowNs)
	}
	for attempt := 0; attempt < 3; attempt++ {
		i := s.policy.Choose(snap.cands, r)
		if i < 0 {
			break
		}
		p := &snap.cands[i]
		if p.live.stats.TryBegin() {
			if p.Local {
				s.pickedLocal.Add(1)
			} else {
				s.pickedPeer.Add(1)
			}
			return Ticket{Peer: *p, s: s, rec: p.live, start: r.nowNs}, nil
		}
		// Another request took its last slot since the policy looked:
		// leave it out and ask again. Copies tried; rare.
		r.Tried = append(r.Tried[:len(r.Tried):len(r.Tried)], p.Name)
	}
	if saturated(snap.cands, &r) {
		s.saturated.Add(1)
		return Ticket{}, ErrSaturated
	}
	s.noPeer.Add(1)
	return Ticket{}, ErrNoPeers
}

// saturated reports whether some candidate would be usable but for its
// in-flight cap.
func saturated(cands []Peer, r *Request) bool {
	now := r.nanos()
	for i := range cands {
		p := &cands[i]
		if !p.live.stats.breaker.Full() || p.live.holdUntil.Load() > now || p.live.out.until.Load() > now {
			continue
		}
		if !slices.Contains(r.Tried, p.Name) {
			return true
		}
	}
	return false
}

func (s *Scheduler) done(rec *peerRecord, start int64, res Result) {
	now := s.now().UnixNano()
	if res.Err != nil && errors.Is(res.Err, context.Canceled) {
		rec.stats.abandon()
		return
	}
	lat := res.Latency
	if lat <= 0 {
		lat = time.Duration(max(now-start, 0))
	}
	failed := res.Failed()
	rec.stats.end(now, lat, failed)
	s.outliers.record(rec.out, failed, now)
	if s.cfg.Retry.MaxRetryAfter > 0 && (res.Status == 429 || res.Status == 503) && res.RetryAfter != "" {
		if d, ok := ParseRetryAfter(res.RetryAfter, time.Unix(0, now)); ok && d > 0 {
			until := now + int64(min(d, s.cfg.Retry.MaxRetryAfter))
			for {
				cur := rec.holdUntil.Load()
				if cur >= until || rec.holdUntil.CompareAndSwap(cur, until) {
					break
				}
			}
			s.holds.Add(1)
		}
	}
}

// PeerStatus is one peer as the scheduler sees it, for status pages and
// metrics.
type PeerStatus struct {
	Name  string
	Zone  string
	Local bool
	// Eligible: see Peer.Eligible.
	Eligible bool
	// Inflight is the effective figure (Peer.Inflight); LocalInflight is
	// this node's own requests to the peer, and MaxInflight its cap (0:
	// none).
	Inflight, LocalInflight, MaxInflight int
	// Latency is the effective latency (Peer.Latency); LatencyKnown is
	// false when there is no figure.
	Latency      time.Duration
	LatencyKnown bool
	// EjectedUntil is the end of the current ejection, zero if none;
	// Ejections counts the peer's ejections.
	EjectedUntil time.Time
	Ejections    uint64
	// HoldUntil is the end of a Retry-After hold, zero if none.
	HoldUntil time.Time
	// Requests and Failures count this node's finished requests to it.
	Requests, Failures uint64
}

// Status describes every peer of the last SetPeers, in its order.
func (s *Scheduler) Status() []PeerStatus {
	snap := s.snap.Load()
	now := s.now()
	ns := now.UnixNano()
	out := make([]PeerStatus, 0, len(snap.all))
	for i := range snap.all {
		p := &snap.all[i]
		st := PeerStatus{
			Name: p.Name, Zone: p.Zone, Local: p.Local, Eligible: p.Eligible(),
			Inflight: p.Inflight(), LocalInflight: p.live.stats.Inflight(), MaxInflight: p.live.stats.breaker.Max(),
			Ejections: p.live.out.count.Load(),
			Requests:  p.live.stats.Requests(), Failures: p.live.stats.Failures(),
		}
		st.Latency, st.LatencyKnown = p.Latency(now)
		if u := p.live.out.until.Load(); u > ns {
			st.EjectedUntil = time.Unix(0, u)
		}
		if u := p.live.holdUntil.Load(); u > ns {
			st.HoldUntil = time.Unix(0, u)
		}
		out = append(out, st)
	}
	return out
}

// Stats are the scheduler's counters, ready to export as metrics.
type Stats struct {
	// PickedLocal and PickedPeer count successful picks of the local node
	// and of other peers.
	PickedLocal, PickedPeer uint64
	// NoPeer, Saturated and BudgetExhausted count picks that failed with
	// ErrNoPeers, ErrSaturated and ErrRetryBudgetExhausted.
	NoPeer, Saturated, BudgetExhausted uint64
	// RetryAfterHolds counts Retry-After answers that put a peer on hold.
	RetryAfterHolds uint64
	// BreakerRejections counts failed in-flight slot acquisitions (a race
	// lost at a peer's cap) over the current peers.
	BreakerRejections uint64
	// ZoneSpills counts decisions that left this node's zone (0 without
	// zone awareness).
	ZoneSpills uint64
	// Panic is true while no candidate passes its health check, so all
	// of them are tried regardless (panic mode).
	Panic bool
	// Outliers and RetryBudget are the detector's and the budget's figures.
	Outliers    OutlierStats
	RetryBudget RetryBudgetStats
}

// Stats returns the scheduler's counters.
func (s *Scheduler) Stats() Stats {
	st := Stats{
		PickedLocal: s.pickedLocal.Load(), PickedPeer: s.pickedPeer.Load(),
		NoPeer: s.noPeer.Load(), Saturated: s.saturated.Load(), BudgetExhausted: s.budgetOut.Load(),
		RetryAfterHolds: s.holds.Load(),
		Panic:           s.panicking.Load(),
		Outliers:        s.outliers.Stats(),
		RetryBudget:     s.budget.Stats(),
	}
	if s.zone != nil {
		st.ZoneSpills = s.zone.Spills()
	}
	snap := s.snap.Load()
	for i := range snap.all {
		st.BreakerRejections += snap.all[i].live.stats.breaker.Rejected()
	}
	return st
}
