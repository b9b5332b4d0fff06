package transport

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// ClientKey identifies the client a rate or connection limit applies to:
// an IP address, or a name the client presents (a header value such as
// the calling member's identifier). An IPv6 address counts by its /64
// prefix, since one subscriber usually holds a whole /64. Keys of the two
// kinds never collide. The zero ClientKey is the "unknown client".
type ClientKey struct {
	addr netip.Addr // address keys: IPv4, or an IPv6 /64 prefix
	name string     // name keys
}

// maxKeyName is the longest name kept as it is; longer names are replaced
// by their SHA-256 digest, so that one key costs bounded memory.
const maxKeyName = 128

// KeyFromAddr is the key of a client address.
func KeyFromAddr(a netip.Addr) ClientKey {
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		a = p.Addr()
	}
	return ClientKey{addr: a}
}

// KeyFromRemoteAddr is the key of an address in "host:port" form (as in
// http.Request.RemoteAddr or net.Conn.RemoteAddr().String()); a bare IP
// is accepted too. An unparseable address gives the zero key.
func KeyFromRemoteAddr(s string) ClientKey {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return KeyFromAddr(ap.Addr())
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return KeyFromAddr(a)
	}
	return ClientKey{}
}

// KeyFromName is the key of a client that names itself; an empty name
// gives the zero key.
func KeyFromName(name string) ClientKey {
	if len(name) > maxKeyName {
		sum := sha256.Sum256([]byte(name))
		name = "sha256:" + string(sum[:])
	}
	return ClientKey{name: name}
}

// String is the key for logs.
func (k ClientKey) String() string {
	switch {
	case k.name != "":
		return "name:" + k.name
	case k.addr.Is6():
		return k.addr.String() + "/64"
	case k.addr.IsValid():
		return k.addr.String()
	}
	return "unknown"
}

// IsZero reports whether k is the unknown client.
func (k ClientKey) IsZero() bool { return k == ClientKey{} }

// clusterHash is the key's identity in reports to other nodes: the same on
// every node, 64 bits (small, and no client address leaves the node), and
// cryptographic so that no client can pick a name that collides with
// another's key.
func (k ClientKey) clusterHash() uint64 {
	h := sha256.New()
	if k.name != "" {
		h.Write([]byte{'n'})
		h.Write([]byte(k.name))
	} else {
		b := k.addr.As16()
		h.Write([]byte{'a'})
		h.Write(b[:])
	}
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0]))
}

// ClientIPKey keys a request by the client's IP address
// (Request.RemoteAddr, the peer of the TCP connection or QUIC session).
func ClientIPKey(r *http.Request) ClientKey { return KeyFromRemoteAddr(r.RemoteAddr) }

// HeaderKey keys a request by the value of header name; a request without
// it (or with an empty value) is keyed by its client IP.
func HeaderKey(name string) func(*http.Request) ClientKey {
	name = http.CanonicalHeaderKey(name)
	return func(r *http.Request) ClientKey {
		if v := r.Header[name]; len(v) > 0 && v[0] != "" {
			return KeyFromName(v[0])
		}
		return ClientIPKey(r)
	}
}

// ParseKeySpec turns "ip" or "header:NAME" into a request key function.
func ParseKeySpec(spec string) (func(*http.Request) ClientKey, error) {
	switch {
	case spec == "ip":
		return ClientIPKey, nil
	case strings.HasPrefix(spec, "header:"):
		name := spec[len("header:"):]
		if !validToken(name) {
			return nil, fmt.Errorf("rate limit key %q: %q is not a header name", spec, name)
		}
		return HeaderKey(name), nil
	}
	return nil, fmt.Errorf("rate limit key %q: want ip or header:NAME", spec)
}

// RateLimitConfig tunes a RateLimiter.
type RateLimitConfig struct {
	// Rate is the sustained allowance of one client key, in events
	// (requests, new connections) per second. Required, > 0.
	Rate float64
	// Burst is how many events a key may spend at once (the bucket size).
	// Default ceil(Rate); at least 1.
	Burst int
	// MaxKeys bounds the keys tracked at once. At the cap, a new key takes
	// the place of the least recently used of a small random sample
	// (counted in loadmesh_transport_ratelimit_evicted_total). Default
	// 100000; at least 64.
	MaxKeys int
	// Cluster shares each key's allowance with the other nodes, which must
	// exchange Report and Merge every Period (see RateLimiter). false:
	// each node allows Rate on its own.
	Cluster bool
	// Period is how often the owner calls Tick. A node's report is
	// forgotten when no newer one came for 4 periods. Default 500ms.
	Period time.Duration
	// ReportKeys bounds the keys in one report (the heaviest are kept).
	// Default 64; at most MaxReportKeys.
	ReportKeys int
}

// MaxReportKeys is the most keys a report may carry; 64 keys take about
// 800 bytes, well inside one gossip packet.
const MaxReportKeys = 80

// Validate reports every problem with c.
func (c RateLimitConfig) Validate() error {
	var errs []error
	if !(c.Rate > 0) || math.IsInf(c.Rate, 0) {
		errs = append(errs, fmt.Errorf("rate limit %v must be a positive number", c.Rate))
	}
	if c.Burst < 0 {
		errs = append(errs, fmt.Errorf("rate limit burst %d is negative", c.Burst))
	}
	if c.MaxKeys < 0 || (c.MaxKeys > 0 && c.MaxKeys < rlShards) {
		errs = append(errs, fmt.Errorf("rate limit max keys %d must be at least %d", c.MaxKeys, rlShards))
	}
	if c.Period < 0 {
		errs = append(errs, fmt.Errorf("rate limit period %s is negative", c.Period))
	}
	if c.ReportKeys < 0 || c.ReportKeys > MaxReportKeys {
		errs = append(errs, fmt.Errorf("rate limit report keys %d is outside 0..%d", c.ReportKeys, MaxReportKeys))
	}
	return errors.Join(errs...)
}

func (c *RateLimitConfig) setDefaults() {
	if c.Burst == 0 {
		c.Burst = max(1, int(math.Ceil(c.Rate)))
	}
	if c.MaxKeys == 0 {
		c.MaxKeys = 100_000
	}
	if c.Period == 0 {
		c.Period = 500 * time.Millisecond
	}
	if c.ReportKeys == 0 {
		c.ReportKeys = 64
	}
}

// RateLimiter is a token bucket per client key. It knows nothing of HTTP:
// the ingress asks it about requests (Guard), and a TCP service can ask
// it about new connections.
//
// # Cluster-wide allowance
//
// With Config.Cluster, the nodes share each key's allowance L (Rate)
// instead of each allowing L. Every Period each node measures the demand
// of every key (events per second that reached it, allowed or not) and
// reports its heaviest keys (Report, a few hundred bytes: a 64-bit hash
// per key, no address) to the other nodes, which Merge it. A node then
// refills the bucket of a key at its share of L: L minus what the other
// nodes use, where a node's use is its demand capped at a max-min fair
// level (water filling: if the demands exceed L, every node gets the same
// level λ, or its whole demand if that is smaller, with Σ min(dᵢ, λ) = L).
// A node sees the others' demand of one period before, and its own of
// now, so shares settle within a period or two; since demand does not
// depend on the shares, the scheme does not oscillate. The burst is
// scaled by the same share.
//
// It is an approximation. A node that has not yet heard from the others
// allows up to the full L for up to a report period (plus a burst), so a
// client spraying all nodes at once may get up to about N×L in the first
// period; keys below the reporting threshold (L / (8 × cluster size) per
// node) are not reported, so up to about 1/8 of L may be allowed above
// the limit in total; lost reports (UDP) leave the previous shares in
// force until they expire after 4 periods.
//
// # Concurrency
//
// Allow is safe for concurrent use and takes a read lock on one of 64
// shards. Tick must not run concurrently with itself; it is meant for one
// owner loop. Merge and SetClusterSize are safe for concurrent use.
type RateLimiter struct {
	cfg RateLimitConfig
	// setting is the current rate and burst (SetRate); cfg.Rate and
	// cfg.Burst are only the first ones.
	setting atomic.Pointer[rateSetting]
	seed    maphash.Seed
	shards  [rlShards]rlShard
	keys    atomic.Int64
	nodes   atomic.Int64 // cluster size as set by SetClusterSize
	metrics *rateLimitMetrics
	now     func() time.Time

	// others is the other nodes' demand by key hash, rebuilt by Tick;
	// read when a key's bucket is made.
	others atomic.Pointer[map[uint64][]float64]

	mu       sync.Mutex // guards remote
	remote   map[string]remoteReport
	lastTick time.Time
	lastSent int       // keys in the last report; Tick's
	scratch  []float64 // Tick's
}

// rateSetting is a RateLimiter's allowance per key.
type rateSetting struct {
	rate  float64
	burst int
}

// rlShards is the number of independently locked parts of the key table.
const rlShards = 64

type rlShard struct {
	mu sync.RWMutex
	m  map[ClientKey]*bucket
	_  [40]byte // keep shards on separate cache lines
}

// bucket is one key's state.
type bucket struct {
	lim  *rate.Limiter
	hash uint64
	hits atomic.Int64 // events since the last Tick
	seen atomic.Int64 // unix nanos of the last event
	// shared is set while other nodes' use lowers this node's share.
	shared atomic.Bool
	// demand (events per second, smoothed) belongs to Tick.
	demand float64
}

type remoteReport struct {
	at   time.Time
	keys []ReportKey
}

// RateLimitDeps are a RateLimiter's collaborators; all optional.
type RateLimitDeps struct {
	Registerer prometheus.Registerer
	// Now replaces time.Now (tests).
	Now func() time.Time
}

// NewRateLimiter returns a limiter allowing cfg.Rate events per second per
// key.
func NewRateLimiter(cfg RateLimitConfig, deps RateLimitDeps) (*RateLimiter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	l := &RateLimiter{
		cfg:    cfg,
		seed:   maphash.MakeSeed(),
		remote: map[string]remoteReport{},
		now:    deps.Now,
	}
	if l.now == nil {
		l.now = time.Now
	}
	l.setting.Store(&rateSetting{rate: cfg.Rate, burst: cfg.Burst})
	for i := range l.shards {
		l.shards[i].m = map[ClientKey]*bucket{}
	}
	l.metrics = newRateLimitMetrics(deps.Registerer, l)
	return l, nil
}

// Rate is the configured allowance per key, in events per second.
func (l *RateLimiter) Rate() float64 { return l.setting.Load().rate }

// SetRate replaces the allowance per key (burst 0: rate rounded up). New
// keys get it at once, keys already tracked at the next Tick. Safe for
// concurrent use.
func (l *RateLimiter) SetRate(rate float64, burst int) error {
	c := l.cfg
	c.Rate, c.Burst = rate, burst
	if err := c.Validate(); err != nil {
		return err
	}
	c.setDefaults()
	l.setting.Store(&rateSetting{rate: c.Rate, burst: c.Burst})
	return nil
}

// Keys is the number of keys tracked.
func (l *RateLimiter) Keys() int { return int(l.keys.Load()) }

// Allow spends one token of k's bucket. When the bucket is empty it
// returns false and how long until a token is available (for
// Retry-After).
func (l *RateLimiter) Allow(k ClientKey) (ok bool, retryAfter time.Duration) {
	now := l.now()
	b := l.bucket(k, now)
	b.hits.Add(1)
	b.seen.Store(now.UnixNano())
	if b.lim.AllowN(now, 1) {
		return true, 0
	}
	scope := scopeNode
	if b.shared.Load() {
		scope = scopeCluster
	}
	l.metrics.rejected[scope].Inc()
	lim := float64(b.lim.Limit())
	wait := time.Second
	if lim > 0 {
		wait = time.Duration((1 - b.lim.TokensAt(now)) / lim * float64(time.Second))
	}
	return false, max(wait, time.Millisecond)
}

func (l *RateLimiter) shard(k ClientKey) *rlShard {
	var h uint64
	if k.name != "" {
		h = maphash.String(l.seed, k.name)
	} else {
		b := k.addr.As16()
		h = maphash.Bytes(l.seed, b[:])
	}
	return &l.shards[h%rlShards]
}

// bucket returns k's bucket, making it if needed.
func (l *RateLimiter) bucket(k ClientKey, now time.Time) *bucket {
	s := l.shard(k)
	s.mu.RLock()
	b := s.m[k]
	s.mu.RUnlock()
	if b != nil {
		return b
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if b = s.m[k]; b != nil {
		return b
	}
	if len(s.m) >= l.cfg.MaxKeys/rlShards {
		l.evictOne(s)
	}
	hash := k.clusterHash()
	st := l.setting.Load()
	limit, burst := st.rate, st.burst
	shared := false
	if p := l.others.Load(); p != nil {
		if others := (*p)[hash]; len(others) > 0 {
			// Other nodes use this key already: start from what they
			// leave (this node's own demand is not known yet).
			var buf [16]float64
			limit, burst = l.share(st, 0, others, buf[:0])
			shared = limit < st.rate
		}
	}
	b = &bucket{lim: rate.NewLimiter(rate.Limit(limit), burst), hash: hash}
	b.shared.Store(shared)
	b.seen.Store(now.UnixNano())
	k.name = strings.Clone(k.name)
	s.m[k] = b
	l.keys.Add(1)
	return b
}

// evictOne drops the least recently used of a few keys picked at random
// (map iteration starts at a random place). Caller holds s.mu.
func (l *RateLimiter) evictOne(s *rlShard) {
	var victim ClientKey
	oldest := int64(math.MaxInt64)
	n := 0
	for k, b := range s.m {
		if seen := b.seen.Load(); seen < oldest {
			victim, oldest = k, seen
		}
		if n++; n == 8 {
			break
		}
	}
	if n > 0 {
		delete(s.m, victim)
		l.keys.Add(-1)
		l.metrics.evicted.Inc()
	}
}

// SetClusterSize tells the limiter how many nodes share the allowance;
// it sets the reporting threshold. Values below 1 count as 1.
func (l *RateLimiter) SetClusterSize(n int) { l.nodes.Store(int64(max(n, 1))) }

// share returns this node's rate and burst for a key it demands own of
// (events per second) while the other nodes demand others. buf is scratch
// space.
func (l *RateLimiter) share(st *rateSetting, own float64, others, buf []float64) (float64, int) {
	L := st.rate
	all := append(append(buf[:0], others...), own)
	slices.Sort(all)
	level := math.Inf(1)
	rem := L
	for i, d := range all {
		if d*float64(len(all)-i) >= rem {
			level = rem / float64(len(all)-i)
			break
		}
		rem -= d
	}
	used := 0.0
	for _, d := range others {
		used += min(d, level)
	}
	// A floor keeps a node that has just met the key (and knows none of
	// its own demand yet) from locking it out entirely.
	floor := L / float64(4*(len(others)+1))
	r := max(L-used, floor)
	burst := max(1, int(math.Round(float64(st.burst)*r/L)))
	return r, burst
}

// Tick measures each key's demand over the time since the last Tick,
// forgets keys idle long enough to have refilled, applies the other
// nodes' reports (with Config.Cluster) and returns this node's report to
// send to them, or nil when there is nothing to send. Call it every
// Config.Period from one goroutine.
func (l *RateLimiter) Tick() []byte {
	now := l.now()
	dt := l.cfg.Period.Seconds()
	if !l.lastTick.IsZero() {
		dt = max(now.Sub(l.lastTick).Seconds(), 1e-3)
	}
	l.lastTick = now
	var others map[uint64][]float64
	reporters := 0
	if l.cfg.Cluster {
		others, reporters = l.collectRemote(now)
		l.others.Store(&others)
	}
	nodes := max(int(l.nodes.Load()), reporters+1)
	st := l.setting.Load()
	threshold := st.rate / float64(8*nodes)
	idleAfter := int64(2 * l.cfg.Period)
	var heavy []ReportKey
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		for k, b := range s.m {
			hits := b.hits.Swap(0)
			b.demand = 0.5*b.demand + 0.5*float64(hits)/dt
			theirs := others[b.hash]
			if hits == 0 && len(theirs) == 0 && now.UnixNano()-b.seen.Load() > idleAfter &&
				b.lim.TokensAt(now) >= float64(b.lim.Burst()) {
				// A full bucket is what a new key gets (at the full rate
				// when no other node uses the key): dropping it loses
				// nothing.
				delete(s.m, k)
				l.keys.Add(-1)
				continue
			}
			limit, burst := st.rate, st.burst
			if len(theirs) > 0 {
				limit, burst = l.share(st, b.demand, theirs, l.scratch)
			}
			if cur := float64(b.lim.Limit()); math.Abs(cur-limit) > 0.005*st.rate || b.lim.Burst() != burst {
				b.lim.SetLimitAt(now, rate.Limit(limit))
				b.lim.SetBurstAt(now, burst)
			}
			b.shared.Store(limit < st.rate)
			if l.cfg.Cluster && b.demand >= threshold && b.demand > 0 {
				heavy = append(heavy, ReportKey{Hash: b.hash, Rate: b.demand})
			}
		}
		s.mu.Unlock()
	}
	if !l.cfg.Cluster {
		return nil
	}
	if len(heavy) == 0 {
		if l.lastSent == 0 {
			return nil
		}
		// Once: tell the others that this node no longer uses any key.
		l.lastSent = 0
		return EncodeReport(nil)
	}
	if len(heavy) > l.cfg.ReportKeys {
		slices.SortFunc(heavy, func(a, b ReportKey) int { return cmpFloatDesc(a.Rate, b.Rate) })
		heavy = heavy[:l.cfg.ReportKeys]
	}
	l.lastSent = len(heavy)
	return EncodeReport(heavy)
}

func cmpFloatDesc(a, b float64) int {
	switch {
	case a > b:
		return -1
	case a < b:
		return 1
	}
	return 0
}

// collectRemote drops stale reports and returns the other nodes' demand
// by key hash, and how many nodes reported.
func (l *RateLimiter) collectRemote(now time.Time) (map[uint64][]float64, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[uint64][]float64{}
	for node, r := range l.remote {
		if now.Sub(r.at) > 4*l.cfg.Period {
			delete(l.remote, node)
			continue
		}
		for _, k := range r.keys {
			out[k.Hash] = append(out[k.Hash], k.Rate)
		}
	}
	return out, len(l.remote)
}

// maxRemoteNodes bounds the nodes whose reports are kept.
const maxRemoteNodes = 4096

// Merge takes in another node's report (from Report via gossip). A newer
// report from the same node replaces the older one. Safe for concurrent
// use; it does not block for long.
func (l *RateLimiter) Merge(from string, report []byte) error {
	keys, err := DecodeReport(report)
	if err != nil {
		return fmt.Errorf("rate limit report from %s: %w", from, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, known := l.remote[from]; !known && len(l.remote) >= maxRemoteNodes {
		return fmt.Errorf("rate limit report from %s: too many nodes", from)
	}
	if len(keys) == 0 {
		delete(l.remote, from)
		return nil
	}
	l.remote[from] = remoteReport{at: l.now(), keys: keys}
	return nil
}

// Forget drops the report of a node that left.
func (l *RateLimiter) Forget(node string) {
	l.mu.Lock()
	delete(l.remote, node)
	l.mu.Unlock()
}

// ReportKey is one key of a report: its cluster hash and the demand a node
// saw, in events per second.
type ReportKey struct {
	Hash uint64
	Rate float64
}

// reportVersion is the first byte of an encoded report.
const reportVersion = 1

// maxReportRate bounds a rate in a report (events per second).
const maxReportRate = 1e9

// EncodeReport encodes keys: a version byte, a uvarint count, then per key
// 8 bytes of hash (big endian) and the rate in hundredths of an event per
// second as a uvarint. Rates are rounded to that precision and capped at
// 1e9.
func EncodeReport(keys []ReportKey) []byte {
	b := make([]byte, 0, 2+len(keys)*13)
	b = append(b, reportVersion)
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = binary.BigEndian.AppendUint64(b, k.Hash)
		b = binary.AppendUvarint(b, uint64(math.Round(min(max(k.Rate, 0), maxReportRate)*100)))
	}
	return b
}

// DecodeReport decodes what EncodeReport made, refusing anything else.
func DecodeReport(b []byte) ([]ReportKey, error) {
	if len(b) == 0 {
		return nil, errors.New("empty report")
	}
	if b[0] != reportVersion {
		return nil, fmt.Errorf("report version %d, want %d", b[0], reportVersion)
	}
	b = b[1:]
	n, sz := binary.Uvarint(b)
	if sz <= 0 || n > MaxReportKeys {
		return nil, errors.New("bad key count")
	}
	b = b[sz:]
	keys := make([]ReportKey, 0, n)
	for range n {
		if len(b) < 8 {
			return nil, errors.New("truncated report")
		}
		h := binary.BigEndian.Uint64(b)
		b = b[8:]
		v, sz := binary.Uvarint(b)
		if sz <= 0 || v > maxReportRate*100 {
			return nil, errors.New("bad rate")
		}
		b = b[sz:]
		keys = append(keys, ReportKey{Hash: h, Rate: float64(v) / 100})
	}
	if len(b) != 0 {
		return nil, errors.New("trailing bytes")
	}
	return keys, nil
}
