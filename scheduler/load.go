package scheduler

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
)

// Load is a node's compact load summary, gossiped to every other node (in
// memberlist node metadata) and read by their schedulers.
//
// Encoded with EncodeLoad it takes about 20 to 30 bytes and never more than
// MaxLoadSize. The encoding keeps: Version exactly; Inflight and Capacity
// exactly up to 2^28-1; RPS to 0.1 request/s up to about 26.8 million;
// LatencyEWMA and P95 to the microsecond up to 2^28µs (about 4.5 minutes);
// ErrorRate, CPU and Mem to 0.0001. Out-of-range values are clamped and NaN
// becomes 0. Quantize returns the value a receiver will decode.
type Load struct {
	// Version orders summaries from one node: every new summary has a
	// larger one, so a stale summary that arrives late never replaces a
	// newer one (LoadTable.Update). Use NextLoadVersion, which also keeps
	// versions increasing across restarts. 0 means "no summary".
	Version uint64
	// Inflight is the number of requests the node's backend is serving.
	Inflight int
	// Capacity is how many concurrent requests the node's backend takes
	// (its --capacity).
	Capacity int
	// RPS is the rate of requests served, per second, over the recent
	// window.
	RPS float64
	// LatencyEWMA is the node's peak-EWMA of its backend latency.
	LatencyEWMA time.Duration
	// P95 is the 95th percentile latency over the recent window.
	P95 time.Duration
	// ErrorRate is the share of failed requests over the recent window,
	// 0 to 1.
	ErrorRate float64
	// CPU and Mem are the node's (or its cgroup's) utilisation, 0 to 1.
	CPU, Mem float64
	// Healthy reports whether the node's backend passes its health check.
	Healthy bool
}

// MaxLoadSize is the largest encoding EncodeLoad produces.
const MaxLoadSize = 38

const (
	loadFormat1     byte = 1
	loadFlagHealthy byte = 1 << 0
	loadMaxInt           = 1<<28 - 1
	loadMaxMicros        = 1<<28 - 1
	loadMaxDeciRS        = 1<<28 - 1
	loadRatioUnit        = 10000
)

func quantInt(n int) uint64 { return uint64(min(max(n, 0), loadMaxInt)) }

func quantDur(d time.Duration) uint64 {
	if d <= 0 {
		return 0
	}
	if d >= loadMaxMicros*time.Microsecond {
		return loadMaxMicros
	}
	return uint64((d + time.Microsecond/2) / time.Microsecond)
}

func quantRPS(x float64) uint64 {
	if !(x > 0) { // also NaN
		return 0
	}
	return uint64(math.Round(min(x*10, loadMaxDeciRS)))
}

func quantRatio(x float64) uint64 {
	if !(x > 0) {
		return 0
	}
	return uint64(math.Round(min(x, 1) * loadRatioUnit))
}

// Quantize returns l as EncodeLoad will carry it: clamped to the encodable
// ranges and rounded to the encoding's precision. DecodeLoad(EncodeLoad(l))
// equals l.Quantize().
func (l Load) Quantize() Load {
	return Load{
		Version:     l.Version,
		Inflight:    int(quantInt(l.Inflight)),
		Capacity:    int(quantInt(l.Capacity)),
		RPS:         float64(quantRPS(l.RPS)) / 10,
		LatencyEWMA: time.Duration(quantDur(l.LatencyEWMA)) * time.Microsecond,
		P95:         time.Duration(quantDur(l.P95)) * time.Microsecond,
		ErrorRate:   float64(quantRatio(l.ErrorRate)) / loadRatioUnit,
		CPU:         float64(quantRatio(l.CPU)) / loadRatioUnit,
		Mem:         float64(quantRatio(l.Mem)) / loadRatioUnit,
		Healthy:     l.Healthy,
	}
}

// EncodeLoad returns the compact binary form of l (see Load for ranges and
// precision).
func EncodeLoad(l Load) []byte { return AppendLoad(make([]byte, 0, MaxLoadSize), l) }

// AppendLoad appends the compact binary form of l to dst and returns the
// extended slice. It allocates only if dst lacks room.
//
// Format 1: a format byte (1), a flags byte (bit 0: Healthy; other bits
// reserved, ignored by readers), then unsigned varints: Version, Inflight,
// Capacity, RPS in 0.1 request/s, LatencyEWMA and P95 in microseconds,
// ErrorRate, CPU and Mem in units of 0.0001. Readers ignore bytes after
// the last field, so later formats can append fields.
func AppendLoad(dst []byte, l Load) []byte {
	var flags byte
	if l.Healthy {
		flags |= loadFlagHealthy
	}
	dst = append(dst, loadFormat1, flags)
	dst = binary.AppendUvarint(dst, l.Version)
	dst = binary.AppendUvarint(dst, quantInt(l.Inflight))
	dst = binary.AppendUvarint(dst, quantInt(l.Capacity))
	dst = binary.AppendUvarint(dst, quantRPS(l.RPS))
	dst = binary.AppendUvarint(dst, quantDur(l.LatencyEWMA))
	dst = binary.AppendUvarint(dst, quantDur(l.P95))
	dst = binary.AppendUvarint(dst, quantRatio(l.ErrorRate))
	dst = binary.AppendUvarint(dst, quantRatio(l.CPU))
	dst = binary.AppendUvarint(dst, quantRatio(l.Mem))
	return dst
}

// ErrBadLoad is wrapped by every DecodeLoad error.
var ErrBadLoad = errors.New("bad load summary")

// DecodeLoad parses a summary written by EncodeLoad. It never panics, and it
// rejects (wrapping ErrBadLoad) unknown formats, truncated input and values
// outside the encodable ranges.
func DecodeLoad(b []byte) (Load, error) {
	var l Load
	if len(b) < 2 {
		return l, fmt.Errorf("%w: %d bytes is too short", ErrBadLoad, len(b))
	}
	if b[0] != loadFormat1 {
		return l, fmt.Errorf("%w: unknown format %d", ErrBadLoad, b[0])
	}
	l.Healthy = b[1]&loadFlagHealthy != 0
	r := loadReader{b: b[2:]}
	l.Version = r.next("version", math.MaxUint64)
	l.Inflight = int(r.next("inflight", loadMaxInt))
	l.Capacity = int(r.next("capacity", loadMaxInt))
	l.RPS = float64(r.next("rps", loadMaxDeciRS)) / 10
	l.LatencyEWMA = time.Duration(r.next("latency", loadMaxMicros)) * time.Microsecond
	l.P95 = time.Duration(r.next("p95", loadMaxMicros)) * time.Microsecond
	l.ErrorRate = float64(r.next("error rate", loadRatioUnit)) / loadRatioUnit
	l.CPU = float64(r.next("cpu", loadRatioUnit)) / loadRatioUnit
	l.Mem = float64(r.next("mem", loadRatioUnit)) / loadRatioUnit
	if r.err != nil {
		return Load{}, r.err
	}
	return l, nil
}

type loadReader struct {
	b   []byte
	err error
}

func (r *loadReader) next(field string, limit uint64) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = fmt.Errorf("%w: %s: truncated or overlong varint", ErrBadLoad, field)
		return 0
	}
	r.b = r.b[n:]
	if v > limit {
		r.err = fmt.Errorf("%w: %s %d exceeds %d", ErrBadLoad, field, v, limit)
		return 0
	}
	return v
}

// NextLoadVersion returns the version for a node's next summary after prev:
// the current Unix time in milliseconds, or prev+1 if that is not larger.
// Starting from the clock keeps versions increasing across restarts, so a
// restarted node's summaries are not rejected as stale by its peers (as
// long as its clock does not step back by more than its downtime; peers
// also Forget a node that left or died).
func NextLoadVersion(prev uint64, now time.Time) uint64 {
	ms := now.UnixMilli()
	if ms > 0 && uint64(ms) > prev {
		return uint64(ms)
	}
	return prev + 1
}

// LoadTable keeps the latest load summary received from each node. Safe
// for concurrent use; Update and Get take a read-write mutex.
type LoadTable struct {
	now func() time.Time
	mu  sync.RWMutex
	m   map[string]loadEntry
}

type loadEntry struct {
	l  Load
	at time.Time
}

// NewLoadTable returns an empty table; now stamps arrivals (time.Now if
// nil).
func NewLoadTable(now func() time.Time) *LoadTable {
	if now == nil {
		now = time.Now
	}
	return &LoadTable{now: now, m: map[string]loadEntry{}}
}

// Update records l as node's summary if it is newer than the one held
// (larger Version) and reports whether it did. Summaries with Version 0
// are ignored.
func (t *LoadTable) Update(node string, l Load) bool {
	if l.Version == 0 {
		return false
	}
	at := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if cur, ok := t.m[node]; ok && cur.l.Version >= l.Version {
		return false
	}
	t.m[node] = loadEntry{l: l, at: at}
	return true
}

// Get returns node's latest summary and how long ago it arrived.
func (t *LoadTable) Get(node string) (l Load, age time.Duration, ok bool) {
	t.mu.RLock()
	e, ok := t.m[node]
	t.mu.RUnlock()
	if !ok {
		return Load{}, 0, false
	}
	return e.l, max(t.now().Sub(e.at), 0), true
}

// Forget drops node's summary; call it when the node leaves or dies, so a
// node that comes back starts afresh.
func (t *LoadTable) Forget(node string) {
	t.mu.Lock()
	delete(t.m, node)
	t.mu.Unlock()
}

// Len returns the number of nodes with a summary.
func (t *LoadTable) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.m)
}

// Annotate sets Load and LoadAge of each peer from the table; peers without
// a summary get the zero Load.
func (t *LoadTable) Annotate(peers []Peer) {
	now := t.now()
	t.mu.RLock()
	defer t.mu.RUnlock()
	for i := range peers {
		e, ok := t.m[peers[i].Name]
		if !ok {
			peers[i].Load, peers[i].LoadAge = Load{}, 0
			continue
		}
		peers[i].Load, peers[i].LoadAge = e.l, max(now.Sub(e.at), 0)
	}
}
