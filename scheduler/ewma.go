package scheduler

import (
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultDecay is the time constant (tau) of a PeakEWMA created with a zero
// decay: Finagle's and Linkerd's default.
const DefaultDecay = 10 * time.Second

// PeakEWMA is a time-decaying, peak-sensitive moving average of latency, as
// used by Finagle's and Linkerd's (tower's) peak-EWMA load balancers.
//
// Choices, and why:
//
//   - Time-based decay with time constant tau: a sample's weight depends on
//     how long it has been since the previous one (w = exp(-Δt/tau)), not on
//     how many samples arrived, so a peer sent 10 requests/s and one sent
//     10,000 requests/s forget the past equally fast.
//   - Peaks are taken at once: a sample above the current value replaces it
//     outright. A peer that suddenly slows down is avoided by the very next
//     decision instead of after many samples; it has to earn a lower value
//     back sample by sample.
//   - The value decays towards zero while no samples arrive
//     (Value = v·exp(-idle/tau)), so a peer we stopped sending to because it
//     looked slow is eventually tried again. Finagle and tower get this by
//     applying a zero-valued observation on every read; this type computes
//     the same decay at read time without writing, so readers never contend
//     and the estimate does not depend on how often it is read.
//   - Observe decays the prior to now before comparing, so a sample counts
//     as a peak when it exceeds what a reader would see at that moment.
//
// Writers are serialised by a mutex; readers are lock-free (a sequence lock
// over two atomics). The zero value is ready to use with DefaultDecay.
type PeakEWMA struct {
	tau float64 // nanoseconds; 0 means DefaultDecay

	mu    sync.Mutex    // serialises writers
	seq   atomic.Uint64 // odd while a writer updates cost and stamp
	cost  atomic.Uint64 // math.Float64bits of the estimate in nanoseconds
	stamp atomic.Int64  // unix nanoseconds of the last sample; 0 = none
}

// NewPeakEWMA returns an estimator with time constant tau (DefaultDecay when
// tau <= 0). After tau without samples the value has fallen to 1/e (37%).
func NewPeakEWMA(tau time.Duration) *PeakEWMA {
	e := &PeakEWMA{}
	e.setTau(tau)
	return e
}

func (e *PeakEWMA) setTau(tau time.Duration) {
	if tau <= 0 {
		tau = DefaultDecay
	}
	e.tau = float64(tau)
}

func (e *PeakEWMA) tauNs() float64 {
	if e.tau <= 0 {
		return float64(DefaultDecay)
	}
	return e.tau
}

// Observe adds a latency sample taken at now.
func (e *PeakEWMA) Observe(now time.Time, sample time.Duration) {
	e.observe(now.UnixNano(), sample)
}

func (e *PeakEWMA) observe(now int64, sample time.Duration) {
	x := float64(max(sample, 0))
	e.mu.Lock()
	cost, stamp := math.Float64frombits(e.cost.Load()), e.stamp.Load()
	if stamp == 0 {
		cost = x
	} else {
		w := math.Exp(-float64(max(now-stamp, 0)) / e.tauNs())
		prior := cost * w
		if x >= prior {
			cost = x
		} else {
			cost = prior*w + x*(1-w)
		}
	}
	// Samples from concurrent callers may arrive slightly out of order;
	// keep the stamp monotonic.
	now = max(now, stamp, 1) // 0 means "no sample"
	e.seq.Add(1)
	e.cost.Store(math.Float64bits(cost))
	e.stamp.Store(now)
	e.seq.Add(1)
	e.mu.Unlock()
}

// load returns the stored estimate and the time of the last sample
// consistently with each other.
func (e *PeakEWMA) load() (cost float64, stamp int64) {
	for spins := 0; ; spins++ {
		s := e.seq.Load()
		if s&1 == 0 {
			c, st := e.cost.Load(), e.stamp.Load()
			if e.seq.Load() == s {
				return math.Float64frombits(c), st
			}
		}
		if spins > 8 {
			runtime.Gosched()
		}
	}
}

// value returns the estimate decayed to now, the time of the last sample,
// and false when there has been no sample.
func (e *PeakEWMA) value(now int64) (time.Duration, int64, bool) {
	cost, stamp := e.load()
	if stamp == 0 {
		return 0, 0, false
	}
	if idle := now - stamp; idle > 0 {
		cost *= math.Exp(-float64(idle) / e.tauNs())
	}
	return time.Duration(cost), stamp, true
}

// Value returns the estimate at now, decayed for the time since the last
// sample, and false when no sample has been observed yet.
func (e *PeakEWMA) Value(now time.Time) (time.Duration, bool) {
	d, _, ok := e.value(now.UnixNano())
	return d, ok
}

// LastSample returns when the last sample was observed; the zero Time if
// none was.
func (e *PeakEWMA) LastSample() time.Time {
	_, st := e.load()
	if st == 0 {
		return time.Time{}
	}
	return time.Unix(0, st)
}
