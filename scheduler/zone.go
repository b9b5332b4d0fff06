package scheduler

import (
	"sync/atomic"
	"time"
)

// ZoneAware wraps a policy to keep traffic in the ingress node's zone while
// that zone has headroom, and to spill across zones when it does not.
//
// The zone has headroom when the sum of Peer.Inflight of its eligible
// candidates is below headroom × the sum of their capacities (candidates of
// unknown capacity are left out of both sums; a zone where all are unknown
// counts as having headroom). Then the wrapped
// policy chooses among the zone's candidates only; if none of them is
// usable for the request, or the zone has no headroom, it chooses among
// all candidates.
//
// The zone's candidates are found once per candidate slice and cached (a
// sub-slice when they are contiguous, as in the Scheduler's snapshots,
// which are sorted by zone). The headroom verdict costs an O(zone size) sum
// and is reused for recheck (0: recomputed for every decision). Safe for
// concurrent use.
type ZoneAware struct {
	inner    Policy
	zone     string
	headroom float64
	recheck  int64

	cache  atomic.Pointer[zoneView]
	spills atomic.Uint64
}

type zoneView struct {
	peers []Peer // identity of the full slice
	sub   []Peer // the zone's candidates
	idx   []int  // sub[j] is peers[idx[j]]; nil when sub is peers[off:]
	off   int

	checkedAt atomic.Int64 // unix ns of the last headroom verdict; 0: none
	room      atomic.Bool
}

// NewZoneAware wraps inner for an ingress in zone. headroom is the usable
// share of the zone's capacity (0.8 if not in (0, 1]); recheck is how long
// a headroom verdict is reused.
func NewZoneAware(inner Policy, zone string, headroom float64, recheck time.Duration) *ZoneAware {
	if !(headroom > 0 && headroom <= 1) {
		headroom = 0.8
	}
	return &ZoneAware{inner: inner, zone: zone, headroom: headroom, recheck: int64(max(recheck, 0))}
}

// Choose implements Policy.
func (z *ZoneAware) Choose(cands []Peer, r Request) int {
	v := z.view(cands)
	if len(v.sub) > 0 && len(v.sub) < len(cands) {
		if z.hasRoom(v, &r) {
			if j := z.inner.Choose(v.sub, r); j >= 0 {
				if v.idx != nil {
					return v.idx[j]
				}
				return v.off + j
			}
		}
		z.spills.Add(1)
	}
	return z.inner.Choose(cands, r)
}

// Spills counts decisions that left the zone (no headroom, or no usable
// candidate in it).
func (z *ZoneAware) Spills() uint64 { return z.spills.Load() }

func (z *ZoneAware) view(cands []Peer) *zoneView {
	if v := z.cache.Load(); v != nil && sameSlice(v.peers, cands) {
		return v
	}
	v := &zoneView{peers: cands}
	lo, hi, contiguous := -1, -1, true
	for i := range cands {
		if cands[i].Zone != z.zone {
			continue
		}
		if lo < 0 {
			lo = i
		} else if i != hi {
			contiguous = false
		}
		hi = i + 1
		v.idx = append(v.idx, i)
	}
	switch {
	case lo < 0:
	case contiguous:
		v.sub, v.off, v.idx = cands[lo:hi], lo, nil
	default:
		v.sub = make([]Peer, len(v.idx))
		for j, i := range v.idx {
			v.sub[j] = cands[i]
		}
	}
	z.cache.Store(v)
	return v
}

func (z *ZoneAware) hasRoom(v *zoneView, r *Request) bool {
	now := r.nanos()
	if z.recheck > 0 {
		if at := v.checkedAt.Load(); at != 0 && now-at >= 0 && now-at < z.recheck {
			return v.room.Load()
		}
	}
	inflight, capacity := 0, 0
	for i := range v.sub {
		if p := &v.sub[i]; p.Eligible() {
			if c := p.EffectiveCapacity(); c > 0 {
				inflight += p.Inflight()
				capacity += c
			}
		}
	}
	room := capacity == 0 || float64(inflight) < z.headroom*float64(capacity)
	v.room.Store(room)
	v.checkedAt.Store(now)
	return room
}
