package transport

import (
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/time/rate"
	"pgregory.net/rapid"
)

// rlClock is a hand-driven clock.
type rlClock struct {
	mu sync.Mutex
	t  time.Time
}

func newRLClock() *rlClock { return &rlClock{t: time.Unix(1_700_000_000, 0)} }

func (c *rlClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *rlClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestLimiter(t testing.TB, cfg RateLimitConfig, clk *rlClock, reg prometheus.Registerer) *RateLimiter {
	t.Helper()
	l, err := NewRateLimiter(cfg, RateLimitDeps{Now: clk.Now, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestRateLimiterPerKey(t *testing.T) {
	clk := newRLClock()
	reg := prometheus.NewRegistry()
	l := newTestLimiter(t, RateLimitConfig{Rate: 10, Burst: 5}, clk, reg)
	a := KeyFromRemoteAddr("192.0.2.1:1234")
	b := KeyFromRemoteAddr("192.0.2.2:1234")
	for i := range 5 {
		if ok, _ := l.Allow(a); !ok {
			t.Fatalf("request %d of the burst refused", i)
		}
	}
	ok, wait := l.Allow(a)
	if ok {
		t.Fatal("request over the burst allowed")
	}
	if wait < 90*time.Millisecond || wait > 110*time.Millisecond {
		t.Fatalf("retry after %s, want about 100ms (one token at 10/s)", wait)
	}
	if ok, _ := l.Allow(b); !ok {
		t.Fatal("another key was refused: buckets are not per key")
	}
	clk.Advance(100 * time.Millisecond)
	if ok, _ := l.Allow(a); !ok {
		t.Fatal("refused after a token refilled")
	}
	if ok, _ := l.Allow(a); ok {
		t.Fatal("allowed a second request on one refilled token")
	}
	if got := testutil.ToFloat64(l.metrics.rejected[scopeNode]); got != 2 {
		t.Fatalf("rejected{scope=node} = %v, want 2", got)
	}
	if l.Keys() != 2 {
		t.Fatalf("keys = %d, want 2", l.Keys())
	}
}

// TestRateLimiterMatchesOneBucketPerKey checks, for random traffic over a
// few keys, that each key is allowed exactly what a token bucket of its
// own would allow: keys never share or steal tokens, and the count over
// any run stays within burst + rate × elapsed.
func TestRateLimiterMatchesOneBucketPerKey(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		rps := rapid.Float64Range(0.5, 1000).Draw(rt, "rate")
		burst := rapid.IntRange(1, 50).Draw(rt, "burst")
		clk := newRLClock()
		start := clk.Now()
		l := newTestLimiter(t, RateLimitConfig{Rate: rps, Burst: burst}, clk, nil)
		keys := []ClientKey{
			KeyFromRemoteAddr("198.51.100.7:1"),
			KeyFromRemoteAddr("[2001:db8::1]:1"),
			KeyFromName("member-a"),
			KeyFromName("198.51.100.7"), // a name that spells an address: another key
		}
		ref := make([]*rate.Limiter, len(keys))
		allowed := make([]int, len(keys))
		for i := range ref {
			ref[i] = rate.NewLimiter(rate.Limit(rps), burst)
		}
		steps := rapid.IntRange(1, 300).Draw(rt, "steps")
		for range steps {
			clk.Advance(time.Duration(rapid.IntRange(0, 50_000).Draw(rt, "µs")) * time.Microsecond)
			i := rapid.IntRange(0, len(keys)-1).Draw(rt, "key")
			got, _ := l.Allow(keys[i])
			want := ref[i].AllowN(clk.Now(), 1)
			if got != want {
				rt.Fatalf("key %v at %s: allowed %v, a bucket of its own says %v", keys[i], clk.Now().Sub(start), got, want)
			}
			if got {
				allowed[i]++
			}
		}
		limit := float64(burst) + rps*clk.Now().Sub(start).Seconds() + 1e-9
		for i, n := range allowed {
			if float64(n) > limit {
				rt.Fatalf("key %v: %d allowed, more than burst + rate × elapsed = %.2f", keys[i], n, limit)
			}
		}
	})
}

func TestClientKeys(t *testing.T) {
	for _, tc := range []struct{ a, b string }{
		{"[2001:db8:1:2:aaaa::1]:80", "[2001:db8:1:2:bbbb::9]:443"}, // one /64
		{"[::ffff:192.0.2.1]:80", "192.0.2.1:443"},                  // 4in6 is the IPv4 address
		{"[fe80::1%eth0]:80", "[fe80::2%eth1]:80"},                  // zones do not matter
	} {
		if ka, kb := KeyFromRemoteAddr(tc.a), KeyFromRemoteAddr(tc.b); ka != kb {
			t.Errorf("%s and %s: keys %v and %v differ", tc.a, tc.b, ka, kb)
		}
	}
	for _, tc := range []struct{ a, b string }{
		{"[2001:db8:1:2::1]:80", "[2001:db8:1:3::1]:80"},
		{"192.0.2.1:80", "192.0.2.2:80"},
	} {
		if KeyFromRemoteAddr(tc.a) == KeyFromRemoteAddr(tc.b) {
			t.Errorf("%s and %s share a key", tc.a, tc.b)
		}
	}
	if KeyFromName("192.0.2.1") == KeyFromRemoteAddr("192.0.2.1:80") {
		t.Error("a name key equals an address key")
	}
	long := string(make([]byte, 10_000))
	if k := KeyFromName(long); len(k.name) > maxKeyName {
		t.Errorf("a 10000-byte name is kept as %d bytes", len(k.name))
	}
	if KeyFromRemoteAddr("not an address") != (ClientKey{}) {
		t.Error("an unparseable address is not the zero key")
	}
}

func TestHeaderKeyFallsBackToIP(t *testing.T) {
	key, err := ParseKeySpec("header:X-Road-Client")
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "192.0.2.10:5555"
	if got, want := key(r), KeyFromAddr(netip.MustParseAddr("192.0.2.10")); got != want {
		t.Errorf("no header: key %v, want the client IP %v", got, want)
	}
	r.Header.Set("X-Road-Client", "")
	if got := key(r); got != KeyFromRemoteAddr(r.RemoteAddr) {
		t.Errorf("empty header: key %v, want the client IP", got)
	}
	r.Header.Set("x-road-client", "EE/GOV/70000001/app")
	if got, want := key(r), KeyFromName("EE/GOV/70000001/app"); got != want {
		t.Errorf("with header: key %v, want %v", got, want)
	}
	for _, bad := range []string{"", "cookie", "header:", "header:bad name"} {
		if _, err := ParseKeySpec(bad); err == nil {
			t.Errorf("ParseKeySpec(%q) accepted", bad)
		}
	}
}

func TestRateLimiterKeyCap(t *testing.T) {
	clk := newRLClock()
	l := newTestLimiter(t, RateLimitConfig{Rate: 1, Burst: 1, MaxKeys: 256}, clk, prometheus.NewRegistry())
	// A flood of spoofed names: every one a new key.
	for i := range 20_000 {
		l.Allow(KeyFromName(fmt.Sprintf("spoofed-%d", i)))
		clk.Advance(time.Microsecond)
	}
	if n := l.Keys(); n > 256 {
		t.Fatalf("%d keys tracked, cap 256", n)
	}
	n := 0
	for i := range l.shards {
		n += len(l.shards[i].m)
	}
	if n != l.Keys() {
		t.Fatalf("Keys() = %d but the shards hold %d", l.Keys(), n)
	}
	if ev := testutil.ToFloat64(l.metrics.evicted); ev < 20_000-256 {
		t.Fatalf("evicted %v keys, want at least %d", ev, 20_000-256)
	}
	// The victims are the least recently used of their sample: a key in
	// steady use survives the flood.
	hot := KeyFromName("steady")
	l.Allow(hot)
	for i := range 5_000 {
		l.Allow(KeyFromName(fmt.Sprintf("more-%d", i)))
		clk.Advance(time.Microsecond)
		if i%16 == 0 {
			l.Allow(hot)
		}
	}
	s := l.shard(hot)
	s.mu.RLock()
	_, kept := s.m[hot]
	s.mu.RUnlock()
	if !kept {
		t.Fatal("a key in steady use was evicted")
	}
}

func TestRateLimiterTickForgetsRefilledKeys(t *testing.T) {
	clk := newRLClock()
	l := newTestLimiter(t, RateLimitConfig{Rate: 10, Burst: 10, Period: 100 * time.Millisecond}, clk, nil)
	busy, idle := KeyFromName("busy"), KeyFromName("idle")
	l.Allow(idle)
	for range 4 {
		for range 5 {
			l.Allow(busy)
			clk.Advance(20 * time.Millisecond)
		}
		l.Tick()
	}
	if l.Keys() != 1 {
		t.Fatalf("%d keys after idle ones refilled, want 1 (busy)", l.Keys())
	}
	// An emptied bucket is kept while it refills: dropping it would hand
	// the key a full burst again.
	for range 10 {
		l.Allow(busy)
	}
	clk.Advance(300 * time.Millisecond)
	l.Tick()
	if l.Keys() != 1 {
		t.Fatal("a key was forgotten before its bucket refilled")
	}
	clk.Advance(time.Second)
	l.Tick()
	if l.Keys() != 0 {
		t.Fatal("a refilled idle key was kept")
	}
}

func TestShareWaterFilling(t *testing.T) {
	l := newTestLimiter(t, RateLimitConfig{Rate: 90, Burst: 30}, newRLClock(), nil)
	for _, tc := range []struct {
		name   string
		own    float64
		others []float64
		want   float64
	}{
		{"alone in demand", 100, []float64{0.5}, 89.5},
		{"three equal, over the limit", 300, []float64{300, 300}, 30},
		{"a small user keeps its demand", 1000, []float64{10}, 80},
		{"this node is the small one", 20, []float64{1000}, 20},
		{"everyone under the limit", 20, []float64{20, 20}, 50},
		{"new here, others use it all", 0, []float64{100, 100}, 90.0 / 12}, // the floor
	} {
		got, burst := l.share(l.setting.Load(), tc.own, tc.others, nil)
		if math.Abs(got-tc.want) > 1e-6 {
			t.Errorf("%s: share %v, want %v", tc.name, got, tc.want)
		}
		if wantBurst := max(1, int(math.Round(30*tc.want/90))); burst != wantBurst {
			t.Errorf("%s: burst %d, want %d", tc.name, burst, wantBurst)
		}
	}
}

// TestClusterShareConverges runs three limiters that exchange reports,
// with a client spraying one key over all three at twice the limit, and
// checks the total allowed over 10 s stays near the limit.
func TestClusterShareConverges(t *testing.T) {
	const limit, period = 60.0, 500 * time.Millisecond
	clk := newRLClock()
	nodes := make([]*RateLimiter, 3)
	for i := range nodes {
		nodes[i] = newTestLimiter(t, RateLimitConfig{Rate: limit, Burst: 10, Cluster: true, Period: period}, clk, nil)
		nodes[i].SetClusterSize(3)
	}
	key := KeyFromName("sprayer")
	allowed := 0
	const step = 5 * time.Millisecond // 200 req/s per node: 600 in all, 10× the limit
	var steady int
	for tick := range 20 {
		for range period / step {
			for _, n := range nodes {
				if ok, _ := n.Allow(key); ok {
					allowed++
					if tick >= 4 {
						steady++
					}
				}
			}
			clk.Advance(step)
		}
		for i, n := range nodes {
			if report := n.Tick(); report != nil {
				for j, m := range nodes {
					if j != i {
						if err := m.Merge(fmt.Sprintf("n%d", i), report); err != nil {
							t.Fatal(err)
						}
					}
				}
			}
		}
	}
	rate := float64(allowed) / 10
	steadyRate := float64(steady) / 8
	t.Logf("allowed %.1f/s over 10 s, %.1f/s after 2 s; limit %.0f/s", rate, steadyRate, limit)
	if steadyRate > 1.1*limit || steadyRate < 0.8*limit {
		t.Errorf("steady rate %.1f/s, want within [0.8, 1.1] × %v", steadyRate, limit)
	}
	if rate > 1.5*limit {
		t.Errorf("rate %.1f/s over 10 s, want at most 1.5 × %v", rate, limit)
	}
	// Reports expire: a node that hears nothing for 4 periods goes back
	// to the full allowance.
	clk.Advance(5 * period)
	nodes[0].Tick()
	n := 0
	for range 100 {
		if ok, _ := nodes[0].Allow(key); ok {
			n++
		}
	}
	if n < 10 {
		t.Errorf("after the others' reports expired, %d of a full burst of 10 allowed", n)
	}
}

func TestReportRoundTrip(t *testing.T) {
	keys := []ReportKey{{Hash: 1, Rate: 12.34}, {Hash: math.MaxUint64, Rate: 0}, {Hash: 42, Rate: 1e9}}
	got, err := DecodeReport(EncodeReport(keys))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(keys) {
		t.Fatalf("round trip: %v, want %v", got, keys)
	}
	if len(EncodeReport(make([]ReportKey, 64))) > 1000 {
		t.Fatal("a report of 64 keys does not fit a gossip packet")
	}
	for _, bad := range [][]byte{nil, {2, 0}, {1}, {1, 1, 0, 0}, append(EncodeReport(keys), 0), {1, 200, 1}} {
		if _, err := DecodeReport(bad); err == nil {
			t.Errorf("DecodeReport(%v) accepted", bad)
		}
	}
}

func FuzzDecodeReport(f *testing.F) {
	f.Add(EncodeReport(nil))
	f.Add(EncodeReport([]ReportKey{{Hash: 7, Rate: 3.5}, {Hash: 1 << 63, Rate: 1e6}}))
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := DecodeReport(b)
		if err != nil {
			return
		}
		again, err := DecodeReport(EncodeReport(keys))
		if err != nil || fmt.Sprint(again) != fmt.Sprint(keys) {
			t.Fatalf("decode(encode(%v)) = %v, %v", keys, again, err)
		}
	})
}

func BenchmarkRateLimiterAllow(b *testing.B) {
	l, err := NewRateLimiter(RateLimitConfig{Rate: 1e9, Burst: 1e9}, RateLimitDeps{})
	if err != nil {
		b.Fatal(err)
	}
	keys := make([]ClientKey, 1024)
	for i := range keys {
		keys[i] = KeyFromAddr(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}))
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for i := range b.N {
			l.Allow(keys[i&1023])
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				l.Allow(keys[i&1023])
				i++
			}
		})
	})
}

func BenchmarkGuard(b *testing.B) {
	l, err := NewRateLimiter(RateLimitConfig{Rate: 1e9, Burst: 1e9}, RateLimitDeps{})
	if err != nil {
		b.Fatal(err)
	}
	g := NewGuard(GuardConfig{MaxBodyBytes: 1 << 20, BodyTimeout: time.Minute}, GuardDeps{Limiter: l},
		http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "192.0.2.1:40000"
	w := httptest.NewRecorder()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		g.ServeHTTP(w, r)
	}
}
