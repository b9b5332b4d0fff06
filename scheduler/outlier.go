package scheduler

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Outliers is passive outlier detection, in the manner of Envoy's outlier
// detection: it watches the outcome of real requests to each peer and
// ejects a peer that fails ConsecutiveFailures times in a row, or whose
// error rate over Window exceeds ErrorRate with at least MinRequests
// requests. An ejected peer gets no new requests until its ejection ends by
// itself after BaseEjection × 2^(n-1), capped at MaxEjection, where n counts
// its recent ejections (n drops by one for every BaseEjection the peer
// spends back in rotation). At most MaxEjectedShare of the peers are
// ejected at once, so a cluster-wide problem (a bad deploy, an overloaded
// database) does not eject everyone.
//
// Results are recorded with atomic operations; only an ejection decision
// takes a mutex. Safe for concurrent use.
type Outliers struct {
	cfg OutlierConfig
	now func() time.Time

	members atomic.Int64 // peers in the cluster; 0: count entries

	mu      sync.Mutex
	entries map[string]*outlierEntry // guarded by mu

	ejections atomic.Uint64
	skipped   atomic.Uint64
}

type outlierEntry struct {
	consec atomic.Int64
	window counterRing  // a: requests, b: failures
	until  atomic.Int64 // unix ns the current or last ejection ends; 0: never ejected
	count  atomic.Uint64

	n int // guarded by Outliers.mu: the ejection multiplier
}

// NewOutliers returns a detector knowing no peers. now is the clock
// (time.Now if nil).
func NewOutliers(cfg OutlierConfig, now func() time.Time) (*Outliers, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("outlier config: %w", err)
	}
	if now == nil {
		now = time.Now
	}
	return &Outliers{cfg: cfg, now: now, entries: map[string]*outlierEntry{}}, nil
}

func (o *Outliers) entry(peer string) *outlierEntry {
	o.mu.Lock()
	defer o.mu.Unlock()
	e, ok := o.entries[peer]
	if !ok {
		e = &outlierEntry{window: newCounterRing(o.cfg.Window, outlierBuckets)}
		o.entries[peer] = e
	}
	return e
}

const outlierBuckets = 10

// SetMembers tells the detector how many peers the cluster has, for
// MaxEjectedShare. Until it is called (or after SetMembers(0)) the peers it
// has seen results for are counted.
func (o *Outliers) SetMembers(n int) { o.members.Store(int64(max(n, 0))) }

// Record counts the outcome of one request to peer and reports whether it
// ejected the peer. Outcomes that arrive while the peer is ejected (from
// requests sent before) are ignored.
func (o *Outliers) Record(peer string, failed bool) bool {
	return o.record(o.entry(peer), failed, o.now().UnixNano())
}

func (o *Outliers) record(e *outlierEntry, failed bool, now int64) bool {
	if e.until.Load() > now {
		return false
	}
	if !failed {
		e.window.add(now, 1, 0)
		if e.consec.Load() != 0 {
			e.consec.Store(0)
		}
		return false
	}
	e.window.add(now, 1, 1)
	trip := false
	if c := o.cfg.ConsecutiveFailures; c > 0 && e.consec.Add(1) >= int64(c) {
		trip = true
	}
	if !trip && o.cfg.ErrorRate > 0 {
		req, fail := e.window.sum(now)
		trip = req >= uint64(o.cfg.MinRequests) && float64(fail) > o.cfg.ErrorRate*float64(req)
	}
	return trip && o.eject(e, now)
}

// eject ejects e unless that would exceed MaxEjectedShare.
func (o *Outliers) eject(e *outlierEntry, now int64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if e.until.Load() > now {
		return false
	}
	ejected := 0
	for _, x := range o.entries {
		if x.until.Load() > now {
			ejected++
		}
	}
	if ejected >= o.maxEjected() {
		o.skipped.Add(1)
		return false
	}
	base := int64(o.cfg.BaseEjection)
	if last := e.until.Load(); last > 0 && e.n > 0 {
		e.n = max(e.n-int((now-last)/base), 0)
	}
	e.n++
	d := int64(o.cfg.MaxEjection)
	if e.n-1 < 62 && base <= d>>(e.n-1) {
		d = base << (e.n - 1)
	}
	e.until.Store(now + d)
	e.count.Add(1)
	e.consec.Store(0)
	e.window.reset()
	o.ejections.Add(1)
	return true
}

// maxEjected is how many peers may be ejected at once: MaxEjectedShare of
// the members, rounded down, but at least one when there are two or more
// members and the share is not zero (one peer can always be ejected, as
// in Envoy). Called with mu held.
func (o *Outliers) maxEjected() int {
	n := int(o.members.Load())
	if n == 0 {
		n = len(o.entries)
	}
	k := int(math.Floor(o.cfg.MaxEjectedShare * float64(n)))
	if k == 0 && o.cfg.MaxEjectedShare > 0 && n >= 2 {
		k = 1
	}
	return k
}

// Ejected reports whether peer is ejected now.
func (o *Outliers) Ejected(peer string) bool {
	_, ok := o.EjectedUntil(peer)
	return ok
}

// EjectedUntil returns when peer's current ejection ends, and false if it
// is not ejected.
func (o *Outliers) EjectedUntil(peer string) (time.Time, bool) {
	o.mu.Lock()
	e, ok := o.entries[peer]
	o.mu.Unlock()
	if !ok {
		return time.Time{}, false
	}
	if u := e.until.Load(); u > o.now().UnixNano() {
		return time.Unix(0, u), true
	}
	return time.Time{}, false
}

// Forget drops peer's history.
func (o *Outliers) Forget(peer string) {
	o.mu.Lock()
	delete(o.entries, peer)
	o.mu.Unlock()
}

// OutlierStats are an Outliers' counters, ready to export as metrics.
type OutlierStats struct {
	// Ejections counts ejections since start.
	Ejections uint64
	// Skipped counts ejections not made because MaxEjectedShare of the
	// peers were ejected already.
	Skipped uint64
	// Ejected is the number of peers ejected now.
	Ejected int
}

// Stats returns the detector's counters.
func (o *Outliers) Stats() OutlierStats {
	now := o.now().UnixNano()
	st := OutlierStats{Ejections: o.ejections.Load(), Skipped: o.skipped.Load()}
	o.mu.Lock()
	for _, e := range o.entries {
		if e.until.Load() > now {
			st.Ejected++
		}
	}
	o.mu.Unlock()
	return st
}
