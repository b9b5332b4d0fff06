package loadtest

import (
	"math"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// rampPacer is a vegeta.Pacer whose rate is piecewise linear in time: the
// stages of a ramp, then a constant rate for ever. Hit n (counting from 1)
// is due at the moment the integral of the rate reaches n, so a constant
// rate r sends its first hit at 1/r, as vegeta's ConstantPacer does.
//
// It is a pure function of its arguments and safe for concurrent use.
type rampPacer struct {
	segs []segment
	hold float64 // requests/s after the last segment
	// max stops the attack after this many hits (0: no bound).
	max uint64
}

// segment is one linear piece: the rate goes from r0 to r1 between t0
// and t1 (seconds since the start); h0 is the hits due by t0.
type segment struct {
	t0, t1, r0, r1, h0 float64
}

var _ vegeta.Pacer = (*rampPacer)(nil)

func newRampPacer(stages []Stage, rate float64, max uint64) *rampPacer {
	p := &rampPacer{hold: rate, max: max}
	var t, r, h float64
	for _, s := range stages {
		d := s.Duration.Seconds()
		if d > 0 {
			p.segs = append(p.segs, segment{t0: t, t1: t + d, r0: r, r1: s.Rate, h0: h})
			h += (r + s.Rate) / 2 * d
			t += d
		}
		r = s.Rate
	}
	if len(stages) > 0 {
		p.hold = r
	}
	return p
}

// tail is where the constant part starts: its time and the hits due then.
func (p *rampPacer) tail() (t, h float64) {
	if n := len(p.segs); n > 0 {
		s := p.segs[n-1]
		return s.t1, s.h0 + (s.r0+s.r1)/2*(s.t1-s.t0)
	}
	return 0, 0
}

// Rate is the instantaneous rate at elapsed, in requests/s.
func (p *rampPacer) Rate(elapsed time.Duration) float64 {
	x := elapsed.Seconds()
	for _, s := range p.segs {
		if x < s.t1 {
			if x < s.t0 {
				x = s.t0
			}
			return s.r0 + (s.r1-s.r0)*(x-s.t0)/(s.t1-s.t0)
		}
	}
	return p.hold
}

// hits is the number of hits due by elapsed (a real number).
func (p *rampPacer) hits(elapsed time.Duration) float64 {
	x := elapsed.Seconds()
	if x <= 0 {
		return 0
	}
	for _, s := range p.segs {
		if x < s.t1 {
			dx := x - s.t0
			slope := (s.r1 - s.r0) / (s.t1 - s.t0)
			return s.h0 + s.r0*dx + slope*dx*dx/2
		}
	}
	t, h := p.tail()
	return h + p.hold*(x-t)
}

// dueAt is when hit n falls due, in seconds, or +Inf if never.
func (p *rampPacer) dueAt(n float64) float64 {
	for _, s := range p.segs {
		need := n - s.h0
		d := s.t1 - s.t0
		slope := (s.r1 - s.r0) / d
		// Solve r0·x + slope·x²/2 = need for x in [0, d].
		var x float64
		if slope == 0 {
			if s.r0 <= 0 {
				continue
			}
			x = need / s.r0
		} else {
			disc := s.r0*s.r0 + 2*slope*need
			if disc < 0 {
				continue
			}
			x = (-s.r0 + math.Sqrt(disc)) / slope
		}
		if x >= 0 && x <= d {
			return s.t0 + x
		}
	}
	t, h := p.tail()
	if p.hold <= 0 {
		return math.Inf(1)
	}
	return t + (n-h)/p.hold
}

// Pace implements vegeta.Pacer.
func (p *rampPacer) Pace(elapsed time.Duration, hits uint64) (time.Duration, bool) {
	if p.max > 0 && hits >= p.max {
		return 0, true
	}
	if float64(hits) < math.Floor(p.hits(elapsed)) {
		return 0, false // behind: send now
	}
	at := p.dueAt(float64(hits + 1))
	if math.IsInf(at, 1) || at > MaxDuration.Seconds() {
		return 0, true // the rate stays 0: nothing more is due
	}
	return time.Duration(at*1e9) - elapsed, false
}

// boundedPacer stops another pacer after max hits.
type boundedPacer struct {
	vegeta.Pacer
	max uint64
}

func (b boundedPacer) Pace(elapsed time.Duration, hits uint64) (time.Duration, bool) {
	if hits >= b.max {
		return 0, true
	}
	return b.Pacer.Pace(elapsed, hits)
}
