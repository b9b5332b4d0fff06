package scheduler

import (
	"fmt"
	"sync/atomic"
	"time"
)

// Meter measures this node's own backend load and produces the Load
// summary it gossips: requests in flight, a latency peak-EWMA, and a
// sliding Window's rate, error rate and p95. Begin and End are lock-free
// on the hot path (the EWMA takes a short writer lock). Safe for
// concurrent use.
type Meter struct {
	now      func() time.Time
	inflight atomic.Int64
	ewma     PeakEWMA
	window   *Window
	version  atomic.Uint64
}

// NewMeter returns a meter with no history. now is the clock (time.Now if
// nil).
func NewMeter(cfg MeterConfig, now func() time.Time) (*Meter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("meter config: %w", err)
	}
	if now == nil {
		now = time.Now
	}
	w, err := NewWindow(cfg.Window, now)
	if err != nil {
		return nil, err
	}
	m := &Meter{now: now, window: w}
	m.ewma.setTau(cfg.Decay)
	return m, nil
}

// Begin counts a request as in flight in the local backend.
func (m *Meter) Begin() { m.inflight.Add(1) }

// End finishes a request counted by Begin, recording its latency and
// whether it failed.
func (m *Meter) End(latency time.Duration, failed bool) {
	m.inflight.Add(-1)
	now := m.now().UnixNano()
	m.ewma.observe(now, latency)
	m.window.record(now, latency, failed)
}

// Inflight returns the requests in flight in the local backend. It fits
// Deps.LocalInflight.
func (m *Meter) Inflight() int { return int(max(m.inflight.Load(), 0)) }

// Stats returns the window's figures.
func (m *Meter) Stats() WindowStats { return m.window.Stats() }

// Load returns the node's next summary, with a new Version. capacity,
// healthy, cpu and mem come from the caller (the agent knows its
// --capacity, its health check and its cgroup). It costs a Window.Stats
// (about a microsecond), so call it once per gossip round, not per
// request.
func (m *Meter) Load(capacity int, healthy bool, cpu, mem float64) Load {
	now := m.now()
	st := m.window.Stats()
	lat, _ := m.ewma.Value(now)
	for {
		prev := m.version.Load()
		next := NextLoadVersion(prev, now)
		if m.version.CompareAndSwap(prev, next) {
			return Load{
				Version:     next,
				Inflight:    m.Inflight(),
				Capacity:    capacity,
				RPS:         st.RPS,
				LatencyEWMA: lat,
				P95:         st.P95,
				ErrorRate:   st.ErrorRate,
				CPU:         cpu,
				Mem:         mem,
				Healthy:     healthy,
			}
		}
	}
}
