package scheduler

import (
	"fmt"
	"math"
	"math/bits"
	"runtime"
	"sync/atomic"
	"time"
)

// The sliding windows here are rings of time buckets. Bucket i holds the
// counts of the interval number iv = now/width with iv%len == i; the bucket
// is reset by the first recorder that meets it in a newer interval. A
// window's figures cover the buckets of the last len intervals, the current
// (partial) one included, so they describe between (len-1)·width and
// len·width of history. Memory is fixed: len buckets, whatever the rate.
//
// Recording is lock-free: a few atomic adds, plus, once per bucket width, a
// reset claimed with a compare-and-swap. A sample recorded at the exact
// moment its bucket is recycled may be lost or land in the next interval;
// the figures are estimates and that error is far below their noise.

// bucketState is the part of a bucket that enter resets.
type bucketState interface{ zero() }

// enter makes the bucket whose epoch is ep current for interval iv and
// reports whether the sample may be added. An epoch holds iv+1 (0: never
// used), or -(iv+1) while one goroutine resets the bucket for iv. enter
// returns false for a late sample whose bucket already belongs to a newer
// interval.
func enter[B bucketState](ep *atomic.Int64, iv int64, b B) bool {
	want := iv + 1
	for spins := 0; ; spins++ {
		e := ep.Load()
		switch {
		case e == want:
			return true
		case e > want || -e > want:
			return false
		case e < 0: // being reset, for this or an older interval
			if spins > 8 {
				runtime.Gosched()
			}
		default: // an older interval: claim the reset
			if ep.CompareAndSwap(e, -want) {
				b.zero()
				ep.Store(want)
				return true
			}
		}
	}
}

// live reports whether an epoch value belongs to the window ending at
// interval iv that spans n intervals.
func live(e, iv int64, n int) bool {
	return e > 0 && e-1 <= iv && e-1 > iv-int64(n)
}

// counterRing is a sliding window of two counters (a, b) per bucket: used
// for requests and failures, or requests and retries.
type counterRing struct {
	width   int64 // bucket width in nanoseconds
	buckets []counterBucket
}

type counterBucket struct {
	epoch atomic.Int64
	a, b  atomic.Uint64
	_     [40]byte // keep buckets on separate cache lines
}

func (c *counterBucket) zero() { c.a.Store(0); c.b.Store(0) }

func newCounterRing(length time.Duration, n int) counterRing {
	return counterRing{width: max(int64(length)/int64(n), 1), buckets: make([]counterBucket, n)}
}

func (r *counterRing) add(now int64, da, db uint64) {
	iv := now / r.width
	b := &r.buckets[iv%int64(len(r.buckets))]
	if !enter(&b.epoch, iv, b) {
		return
	}
	if da != 0 {
		b.a.Add(da)
	}
	if db != 0 {
		b.b.Add(db)
	}
}

func (r *counterRing) sum(now int64) (a, b uint64) {
	iv := now / r.width
	for i := range r.buckets {
		bk := &r.buckets[i]
		if live(bk.epoch.Load(), iv, len(r.buckets)) {
			a += bk.a.Load()
			b += bk.b.Load()
		}
	}
	return a, b
}

// reset forgets everything. Concurrent adds may survive it.
func (r *counterRing) reset() {
	for i := range r.buckets {
		r.buckets[i].epoch.Store(0)
	}
}

// Latency histogram: log-linear ("HDR-style") buckets over microseconds,
// 8 sub-buckets per power of two. Values below 8µs are exact; above, a
// value is reported as the middle of its sub-bucket, within 6.25% of the
// truth. The top bucket starts at 2^27µs (about 134s); longer samples are
// counted there.
const (
	histSubBits = 3
	histSub     = 1 << histSubBits
	histMaxExp  = 26
	histBins    = histSub + (histMaxExp-histSubBits+1)*histSub // 200
)

func histBin(d time.Duration) int {
	u := uint64(max(d, 0) / time.Microsecond)
	if u < histSub {
		return int(u)
	}
	e := bits.Len64(u) - 1
	if e > histMaxExp {
		return histBins - 1
	}
	sub := int(u>>(e-histSubBits)) & (histSub - 1)
	return histSub + (e-histSubBits)*histSub + sub
}

// histValue is the representative (middle) value of bin i.
func histValue(i int) time.Duration {
	if i < histSub {
		return time.Duration(i)*time.Microsecond + time.Microsecond/2
	}
	e := (i-histSub)/histSub + histSubBits
	sub := (i - histSub) % histSub
	lo := uint64(histSub+sub) << (e - histSubBits)
	w := uint64(1) << (e - histSubBits)
	return time.Duration(lo)*time.Microsecond + time.Duration(w)*time.Microsecond/2
}

// Window records requests over a sliding time window and reports their rate,
// error rate and latency percentiles. Memory is fixed (about 850 bytes per
// bucket); Record is lock-free and allocation-free. Safe for concurrent use.
type Window struct {
	now     func() time.Time
	width   int64
	length  int64
	created int64
	buckets []windowBucket
}

type windowBucket struct {
	epoch  atomic.Int64
	count  atomic.Uint64
	errors atomic.Uint64
	hist   [histBins]atomic.Uint32
}

func (b *windowBucket) zero() {
	b.count.Store(0)
	b.errors.Store(0)
	for i := range b.hist {
		b.hist[i].Store(0)
	}
}

// NewWindow returns an empty window. now is the clock (time.Now if nil).
func NewWindow(cfg WindowConfig, now func() time.Time) (*Window, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("window config: %w", err)
	}
	if now == nil {
		now = time.Now
	}
	return &Window{
		now:     now,
		width:   int64(cfg.Length) / int64(cfg.Buckets),
		length:  int64(cfg.Length),
		created: now().UnixNano(),
		buckets: make([]windowBucket, cfg.Buckets),
	}, nil
}

// Record counts one finished request with its latency; failed marks an
// error.
func (w *Window) Record(latency time.Duration, failed bool) {
	w.record(w.now().UnixNano(), latency, failed)
}

func (w *Window) record(now int64, latency time.Duration, failed bool) {
	iv := now / w.width
	b := &w.buckets[iv%int64(len(w.buckets))]
	if !enter(&b.epoch, iv, b) {
		return
	}
	b.count.Add(1)
	if failed {
		b.errors.Add(1)
	}
	b.hist[histBin(latency)].Add(1)
}

// WindowStats are a Window's figures at one moment.
type WindowStats struct {
	// Requests and Errors are the counts in the window.
	Requests, Errors uint64
	// Span is the history the counts cover: the window length, or less
	// while the window is younger than that.
	Span time.Duration
	// RPS is Requests/Span in requests per second.
	RPS float64
	// ErrorRate is Errors/Requests, 0 without requests.
	ErrorRate float64
	// P50, P95 and P99 are latency percentiles (within 6.25%); 0 without
	// requests.
	P50, P95, P99 time.Duration
}

// Stats returns the window's current figures. It takes O(buckets × 200)
// and allocates nothing.
func (w *Window) Stats() WindowStats {
	now := w.now().UnixNano()
	iv := now / w.width
	var st WindowStats
	var hist [histBins]uint64
	for i := range w.buckets {
		b := &w.buckets[i]
		if !live(b.epoch.Load(), iv, len(w.buckets)) {
			continue
		}
		st.Requests += b.count.Load()
		st.Errors += b.errors.Load()
		for j := range b.hist {
			if v := b.hist[j].Load(); v != 0 {
				hist[j] += uint64(v)
			}
		}
	}
	span := int64(len(w.buckets)-1)*w.width + now%w.width
	span = min(span, now-w.created)
	st.Span = time.Duration(max(span, 0))
	if st.Span > 0 {
		st.RPS = float64(st.Requests) / st.Span.Seconds()
	}
	if st.Requests > 0 {
		st.ErrorRate = float64(st.Errors) / float64(st.Requests)
	}
	var total uint64
	for _, v := range hist {
		total += v
	}
	st.P50 = quantile(&hist, total, 0.50)
	st.P95 = quantile(&hist, total, 0.95)
	st.P99 = quantile(&hist, total, 0.99)
	return st
}

func quantile(hist *[histBins]uint64, total uint64, q float64) time.Duration {
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	var cum uint64
	for i, v := range hist {
		cum += v
		if cum >= rank {
			return histValue(i)
		}
	}
	return histValue(histBins - 1)
}
