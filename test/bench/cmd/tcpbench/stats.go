package main

import (
	"math"
	"slices"
	"time"
)

// percentile is the nearest-rank p-th percentile of sorted (ascending):
// the smallest value with at least p % of the values at or below it.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// median of xs (the mean of the two middle values for an even count);
// 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Figures are cut toward the unfavourable side for loadmesh, as lmbench
// does: rates and rate ratios are truncated; latencies, latency ratios
// and memory are rounded up.
func floorTo(x float64, digits int) float64 {
	p := math.Pow10(digits)
	return math.Floor(x*p+1e-9) / p
}

func ceilTo(x float64, digits int) float64 {
	p := math.Pow10(digits)
	r := math.Ceil(x*p-1e-9) / p
	if r == 0 {
		return 0 // not -0
	}
	return r
}

// goal is how a measure is judged against HAProxy: a rate must reach
// min × HAProxy's; a latency must not exceed HAProxy's / min (0.8× the
// speed means 1.25× the time).
type goal struct {
	higherIsBetter bool
	min            float64 // 0.8
}

// ratio is loadmesh / HAProxy.
func ratio(lm, ref float64) (float64, bool) {
	if ref <= 0 || lm <= 0 || math.IsNaN(lm) || math.IsNaN(ref) {
		return 0, false
	}
	return lm / ref, true
}

// met says whether a loadmesh/HAProxy ratio meets g.
func (g goal) met(r float64) bool {
	if g.higherIsBetter {
		return r >= g.min
	}
	return r <= 1/g.min
}

// limit is the ratio loadmesh/HAProxy that just meets g.
func (g goal) limit() float64 {
	if g.higherIsBetter {
		return g.min
	}
	return 1 / g.min
}

// roundRatio cuts a ratio toward the unfavourable side for loadmesh.
func (g goal) roundRatio(r float64) float64 {
	if g.higherIsBetter {
		return floorTo(r, 2)
	}
	return ceilTo(r, 2)
}

// perConnKiB is the RSS growth per connection, in KiB.
func perConnKiB(beforeKiB, afterKiB int64, conns int) float64 {
	if conns <= 0 {
		return 0
	}
	return float64(afterKiB-beforeKiB) / float64(conns)
}

// rotate returns xs starting at element r mod len(xs), so that each
// round measures the paths in another order.
func rotate[T any](xs []T, r int) []T {
	if len(xs) == 0 {
		return nil
	}
	k := r % len(xs)
	return append(slices.Clone(xs[k:]), xs[:k]...)
}
