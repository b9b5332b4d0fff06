package scheduler

import (
	"errors"
	"fmt"
	"time"
)

// ErrNoPeers is returned when no peer can take a request: none is eligible,
// every eligible one was already tried, is ejected, or asked to be left alone.
var ErrNoPeers = errors.New("no peer can serve the request")

// ErrSaturated is returned by Scheduler.Pick when candidates exist but every
// one of them is at its in-flight cap (see Breaker). It wraps ErrNoPeers, so
// callers that only distinguish "nobody" keep working; both map to 503.
var ErrSaturated = fmt.Errorf("%w: every candidate is at its in-flight cap", ErrNoPeers)

// ErrRetryBudgetExhausted is returned by Scheduler.Pick for a retry (a
// request with tried peers) when the retry budget is spent. The caller
// should answer with the error of the last attempt instead of retrying.
var ErrRetryBudgetExhausted = errors.New("retry budget exhausted")

// Peer is a node as the scheduler sees it: plain data copied from
// membership, the plan and gossiped load, plus (inside a Scheduler) a link
// to what this node measured itself about that peer.
//
// A Peer is a value. The Scheduler attaches its live per-peer state when it
// takes a snapshot, so the Inflight and Latency methods of a Peer handed to
// a Policy see this node's current figures without copying them in.
type Peer struct {
	Name string
	Zone string
	// Addr is where forwarded requests go (the node's peer address). It
	// may be empty for the local node.
	Addr string
	// State is the node's plan state; only StateActive takes traffic.
	State NodeState
	// Serving is true when the node has a backend that can serve.
	Serving bool
	// Capacity is the node's --capacity (concurrent requests). 0 means
	// unknown; Load.Capacity is used then.
	Capacity int
	// Local is true for the node running this scheduler: choosing it means
	// "serve with the local backend".
	Local bool
	// Load is the peer's last gossiped load summary; Version 0 means none
	// has been received yet.
	Load Load
	// LoadAge is how long ago Load was received (see LoadTable.Annotate).
	LoadAge time.Duration

	// live is this node's own view of the peer; nil outside a Scheduler.
	live *peerRecord
}

// Healthy reports whether the peer's backend is healthy as far as gossip
// knows. A peer that has not gossiped a load summary yet (Load.Version 0)
// counts as healthy, so nodes that do not publish load still take traffic.
func (p *Peer) Healthy() bool { return p.Load.Version == 0 || p.Load.Healthy }

// Eligible reports whether p may be sent new requests judging by its plan
// state, role and health: it is active, has a backend, has an address (or is
// the local node) and is healthy. Per-request conditions (ejection, in-flight
// cap, Retry-After, already tried) are checked by Request.Usable.
func (p *Peer) Eligible() bool {
	return p.Serving && p.State.TakesTraffic() && (p.Local || p.Addr != "") && p.Healthy()
}

// EffectiveCapacity is Capacity, or the gossiped Load.Capacity when Capacity
// is 0. It is 0 when neither is known.
func (p *Peer) EffectiveCapacity() int {
	if p.Capacity > 0 {
		return p.Capacity
	}
	return max(p.Load.Capacity, 0)
}

// Weight is the peer's share of traffic relative to others: its effective
// capacity, or 1 when that is unknown.
func (p *Peer) Weight() float64 {
	if c := p.EffectiveCapacity(); c > 0 {
		return float64(c)
	}
	return 1
}

// Inflight is the peer's effective number of requests in flight: the larger
// of the gossiped figure and this node's own in-flight requests to it (for
// the local node, also the local backend's live count when the Scheduler was
// given one). Gossip is a little old but counts every sender; the local
// count is exact but only counts us; max is a conservative blend that never
// forgets our own load. A gossiped figure older than the tracker's
// StaleLoadAfter is ignored.
func (p *Peer) Inflight() int {
	g := p.Load.Inflight
	if p.live == nil {
		return max(g, 0)
	}
	if p.live.staleLoad > 0 && p.LoadAge > p.live.staleLoad {
		g = 0
	}
	n := max(g, p.live.stats.Inflight())
	if p.Local && p.live.localGauge != nil {
		n = max(n, p.live.localGauge())
	}
	return n
}

// Latency is the peer's effective latency at now and whether any figure is
// known: this node's own peak-EWMA to the peer while it is fresh (a sample
// within the tracker's FreshFor), otherwise the gossiped Load.LatencyEWMA,
// otherwise this node's stale estimate. The local estimate includes the
// network hop; the gossiped one is the backend's own.
//
// While requests to the peer are in flight and it has answered none of them
// for longer than the estimate, the silence itself is the estimate: a peer
// that died (or hangs) looks slower every moment instead of keeping the
// figure it had, or falling back to an old gossiped one.
func (p *Peer) Latency(now time.Time) (time.Duration, bool) {
	var stalled time.Duration
	if p.live != nil {
		ns := now.UnixNano()
		stalled = p.live.stats.stalled(ns)
		if d, fresh, ok := p.live.stats.latency(ns); ok && (fresh || p.Load.LatencyEWMA <= 0) {
			return max(d, stalled), true
		}
	}
	if p.Load.LatencyEWMA > 0 {
		return max(p.Load.LatencyEWMA, stalled), true
	}
	if stalled > 0 {
		return stalled, true
	}
	return 0, false
}

// hasHeadroom reports whether the peer is below its effective capacity. A
// peer with unknown capacity has no known headroom.
func (p *Peer) hasHeadroom() bool {
	c := p.EffectiveCapacity()
	return c > 0 && p.Inflight() < c
}

// PeerSource lists the nodes of the cluster. It must be cheap and must not
// block; the returned slice is the caller's.
type PeerSource interface {
	Peers() []Peer
}
