package httpcache

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"pgregory.net/rapid"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// origin is a fake upstream counting its requests.
type origin struct {
	n     atomic.Int64
	serve func(w http.ResponseWriter, r *http.Request, n int64)
	mu    sync.Mutex
	last  *http.Request
}

func (o *origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := o.n.Add(1)
	o.mu.Lock()
	o.last = r
	o.mu.Unlock()
	o.serve(w, r, n)
}

func (o *origin) lastReq() *http.Request {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.last
}

type fixture struct {
	c     *Cache
	clk   *clock
	o     *origin
	h     http.Handler
	reg   *prometheus.Registry
	cache *Cache
}

func newFixture(t *testing.T, serve func(w http.ResponseWriter, r *http.Request, n int64)) *fixture {
	t.Helper()
	clk := &clock{t: time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)}
	reg := prometheus.NewRegistry()
	cfg := DefaultConfig()
	cfg.NodeName = "a"
	cfg.Prefixes = []string{"/c/"}
	cfg.MaxBytes = 1 << 20
	c, err := New(cfg, Deps{Now: clk.now, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	o := &origin{serve: serve}
	return &fixture{c: c, clk: clk, o: o, h: c.Handler(o), reg: reg, cache: c}
}

func (f *fixture) get(t *testing.T, path string, kv ...string) *httptest.ResponseRecorder {
	t.Helper()
	return f.do(t, "GET", path, kv...)
}

func (f *fixture) do(t *testing.T, method, path string, kv ...string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(method, "http://example.org"+path, nil)
	for i := 0; i+1 < len(kv); i += 2 {
		r.Header.Add(kv[i], kv[i+1])
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	return w
}

func fixed(status int, body string, kv ...string) func(http.ResponseWriter, *http.Request, int64) {
	return func(w http.ResponseWriter, r *http.Request, n int64) {
		for i := 0; i+1 < len(kv); i += 2 {
			w.Header().Add(kv[i], kv[i+1])
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

func expect(t *testing.T, w *httptest.ResponseRecorder, status int, xcache, body string) {
	t.Helper()
	if w.Code != status || w.Header().Get(HeaderXCache) != xcache || (body != "" && w.Body.String() != body) {
		t.Fatalf("got %d %s %q (Cache-Status %q), want %d %s %q", w.Code, w.Header().Get(HeaderXCache), w.Body.String(),
			w.Header().Get(HeaderCacheStatus), status, xcache, body)
	}
}

func TestFreshHitAndExpiry(t *testing.T) {
	f := newFixture(t, fixed(200, "v", "Cache-Control", "max-age=60"))
	expect(t, f.get(t, "/c/x"), 200, "MISS", "v")
	f.clk.add(10 * time.Second)
	w := f.get(t, "/c/x")
	expect(t, w, 200, "HIT", "v")
	if w.Header().Get("Age") != "10" {
		t.Fatalf("Age %q, want 10", w.Header().Get("Age"))
	}
	if cs := w.Header().Get(HeaderCacheStatus); !strings.Contains(cs, "hit; ttl=50") {
		t.Fatalf("Cache-Status %q", cs)
	}
	f.clk.add(51 * time.Second)
	expect(t, f.get(t, "/c/x"), 200, "MISS", "v")
	if n := f.o.n.Load(); n != 2 {
		t.Fatalf("origin saw %d requests, want 2", n)
	}
	// Outside the prefixes: never cached, no cache headers.
	w = f.get(t, "/other")
	w = f.get(t, "/other")
	if w.Header().Get(HeaderXCache) != "" || f.o.n.Load() != 4 {
		t.Fatalf("uncached path: X-Cache %q, origin %d", w.Header().Get(HeaderXCache), f.o.n.Load())
	}
}

func TestNotStored(t *testing.T) {
	cases := []struct {
		name string
		resp []string
		req  []string
	}{
		{"no-store", []string{"Cache-Control", "no-store, max-age=60"}, nil},
		{"private", []string{"Cache-Control", "private, max-age=60"}, nil},
		{"authorization", []string{"Cache-Control", "max-age=60"}, []string{"Authorization", "Bearer x"}},
		{"cookie", []string{"Cache-Control", "max-age=60"}, []string{"Cookie", "s=1"}},
		{"set-cookie", []string{"Cache-Control", "max-age=60", "Set-Cookie", "s=1"}, nil},
		{"vary star", []string{"Cache-Control", "max-age=60", "Vary", "*"}, nil},
		{"no freshness", []string{"ETag", `"e"`}, nil},
		{"request no-store", []string{"Cache-Control", "max-age=60"}, []string{"Cache-Control", "no-store"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, fixed(200, "v", tc.resp...))
			f.get(t, "/c/x", tc.req...)
			w := f.get(t, "/c/x", tc.req...)
			if w.Header().Get(HeaderXCache) == "HIT" || f.o.n.Load() != 2 {
				t.Fatalf("stored: X-Cache %q, origin saw %d", w.Header().Get(HeaderXCache), f.o.n.Load())
			}
		})
	}
}

func TestAuthorizationWithPublicIsStored(t *testing.T) {
	f := newFixture(t, fixed(200, "v", "Cache-Control", "public, max-age=60"))
	f.get(t, "/c/x", "Authorization", "Bearer a")
	expect(t, f.get(t, "/c/x"), 200, "HIT", "v")
}

func TestVarySeparatesVariants(t *testing.T) {
	f := newFixture(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Vary", "Accept-Language")
		io.WriteString(w, "lang="+r.Header.Get("Accept-Language"))
	})
	expect(t, f.get(t, "/c/x", "Accept-Language", "fi"), 200, "MISS", "lang=fi")
	expect(t, f.get(t, "/c/x", "Accept-Language", "et"), 200, "MISS", "lang=et")
	expect(t, f.get(t, "/c/x", "Accept-Language", "fi"), 200, "HIT", "lang=fi")
	expect(t, f.get(t, "/c/x", "Accept-Language", "et"), 200, "HIT", "lang=et")
	expect(t, f.get(t, "/c/x"), 200, "MISS", "lang=")
	if n := f.o.n.Load(); n != 3 {
		t.Fatalf("origin saw %d requests, want 3", n)
	}
}

func TestRevalidationWith304(t *testing.T) {
	f := newFixture(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		w.Header().Set("Cache-Control", fmt.Sprintf("max-age=10, x-n=%d", n))
		w.Header().Set("ETag", `"v1"`)
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		io.WriteString(w, "body")
	})
	expect(t, f.get(t, "/c/x"), 200, "MISS", "body")
	f.clk.add(20 * time.Second)
	w := f.get(t, "/c/x")
	expect(t, w, 200, "REVALIDATED", "body")
	if got := f.o.lastReq().Header.Get("If-None-Match"); got != `"v1"` {
		t.Fatalf("revalidation sent If-None-Match %q", got)
	}
	if cc := w.Header().Get("Cache-Control"); cc != "max-age=10, x-n=2" {
		t.Fatalf("304 headers not merged: Cache-Control %q", cc)
	}
	expect(t, f.get(t, "/c/x"), 200, "HIT", "body")
	// A client's own conditional request is answered 304 from the store.
	expect(t, f.get(t, "/c/x", "If-None-Match", `"v1"`), 304, "HIT", "")
	if n := f.o.n.Load(); n != 2 {
		t.Fatalf("origin saw %d requests, want 2", n)
	}
}

func TestRequestNoCacheRevalidates(t *testing.T) {
	f := newFixture(t, fixed(200, "v", "Cache-Control", "max-age=60"))
	f.get(t, "/c/x")
	expect(t, f.get(t, "/c/x", "Cache-Control", "no-cache"), 200, "MISS", "v")
	expect(t, f.get(t, "/c/x", "Pragma", "no-cache"), 200, "MISS", "v")
	f.clk.add(30 * time.Second)
	expect(t, f.get(t, "/c/x", "Cache-Control", "max-age=5"), 200, "MISS", "v")
	expect(t, f.get(t, "/c/x", "Cache-Control", "only-if-cached"), 200, "HIT", "v")
	if n := f.o.n.Load(); n != 4 {
		t.Fatalf("origin saw %d requests, want 4", n)
	}
}

func TestStaleIfError(t *testing.T) {
	var fail atomic.Bool
	f := newFixture(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		if fail.Load() {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		w.Header().Set("Cache-Control", "max-age=10, stale-if-error=60")
		io.WriteString(w, "good")
	})
	f.get(t, "/c/x")
	fail.Store(true)
	f.clk.add(30 * time.Second)
	w := f.get(t, "/c/x")
	expect(t, w, 200, "STALE", "good")
	if !strings.Contains(w.Header().Get(HeaderCacheStatus), "stale-if-error") {
		t.Fatalf("Cache-Status %q", w.Header().Get(HeaderCacheStatus))
	}
	f.clk.add(60 * time.Second) // past the window
	expect(t, f.get(t, "/c/x"), 502, "MISS", "")
}

func TestMustRevalidateForbidsStale(t *testing.T) {
	var fail atomic.Bool
	f := newFixture(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		if fail.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Cache-Control", "max-age=10, must-revalidate, stale-if-error=60, stale-while-revalidate=60")
		io.WriteString(w, "good")
	})
	f.get(t, "/c/x")
	fail.Store(true)
	f.clk.add(20 * time.Second)
	expect(t, f.get(t, "/c/x"), 503, "MISS", "")
}

func TestStaleWhileRevalidate(t *testing.T) {
	release := make(chan struct{})
	f := newFixture(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		if n > 1 {
			<-release
		}
		w.Header().Set("Cache-Control", "max-age=10, stale-while-revalidate=60")
		fmt.Fprintf(w, "v%d", n)
	})
	expect(t, f.get(t, "/c/x"), 200, "MISS", "v1")
	f.clk.add(20 * time.Second)
	// Stale answers at once while one background revalidation waits.
	expect(t, f.get(t, "/c/x"), 200, "STALE", "v1")
	expect(t, f.get(t, "/c/x"), 200, "STALE", "v1")
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for {
		w := f.get(t, "/c/x")
		if w.Header().Get(HeaderXCache) == "HIT" {
			expect(t, w, 200, "HIT", "v2")
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no refreshed entry: %s %q", w.Header().Get(HeaderXCache), w.Body.String())
		}
		time.Sleep(5 * time.Millisecond) // polling the cache, not waiting for a fixed time
	}
	if n := f.o.n.Load(); n != 2 {
		t.Fatalf("origin saw %d requests, want 2 (one background revalidation)", n)
	}
}

func TestHeadFromGetEntry(t *testing.T) {
	f := newFixture(t, fixed(200, "body", "Cache-Control", "max-age=60"))
	w := f.do(t, "HEAD", "/c/x")
	if w.Header().Get(HeaderXCache) != "BYPASS" {
		t.Fatalf("HEAD miss: %q", w.Header().Get(HeaderXCache))
	}
	f.get(t, "/c/x")
	w = f.do(t, "HEAD", "/c/x")
	expect(t, w, 200, "HIT", "")
	if w.Body.Len() != 0 || w.Header().Get("Content-Length") != "4" {
		t.Fatalf("HEAD answer: body %q, Content-Length %q", w.Body.String(), w.Header().Get("Content-Length"))
	}
}

func TestUnsafeMethodInvalidates(t *testing.T) {
	f := newFixture(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprintf(w, "v%d", n)
	})
	f.get(t, "/c/x")
	expect(t, f.get(t, "/c/x"), 200, "HIT", "v1")
	f.do(t, "POST", "/c/x")
	expect(t, f.get(t, "/c/x"), 200, "MISS", "v3")
}

func TestConcurrentMissesCollapse(t *testing.T) {
	release := make(chan struct{})
	f := newFixture(t, func(w http.ResponseWriter, r *http.Request, n int64) {
		<-release
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "v")
	})
	const n = 20
	var wg sync.WaitGroup
	results := make(chan string, n)
	var started sync.WaitGroup
	started.Add(n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started.Done()
			w := f.get(t, "/c/x")
			results <- w.Header().Get(HeaderXCache) + " " + w.Body.String()
		}()
	}
	started.Wait()
	// The origin holds the first request; the others join its flight or,
	// arriving after it, hit the stored answer: either way one upstream
	// request. (The pause only makes joining the flight likely; nothing
	// below depends on it.)
	for f.o.n.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	close(results)
	for r := range results {
		if !strings.HasSuffix(r, " v") {
			t.Fatalf("answer %q", r)
		}
	}
	if got := f.o.n.Load(); got != 1 {
		t.Fatalf("origin saw %d requests for %d concurrent misses, want 1", got, n)
	}
	collapsed := testutil.ToFloat64(f.c.m.collapsed)
	hits := testutil.ToFloat64(f.c.m.requests.WithLabelValues(resultHit))
	if collapsed+hits != n-1 {
		t.Fatalf("collapsed %v + hits %v, want %d", collapsed, hits, n-1)
	}
	t.Logf("%v of %d requests collapsed into the first one's fill, %v hits", collapsed, n, hits)
}

func TestLargeResponseStreamsUnstored(t *testing.T) {
	big := strings.Repeat("x", 200<<10) // above a tenth of 1 MiB
	f := newFixture(t, fixed(200, big, "Cache-Control", "max-age=60"))
	expect(t, f.get(t, "/c/x"), 200, "MISS", big)
	expect(t, f.get(t, "/c/x"), 200, "MISS", big)
	if n := f.o.n.Load(); n != 2 {
		t.Fatalf("origin saw %d", n)
	}
}

func TestPurge(t *testing.T) {
	f := newFixture(t, fixed(200, "v", "Cache-Control", "max-age=60", "Vary", "Accept"))
	f.get(t, "/c/a/1", "Accept", "x")
	f.get(t, "/c/a/1", "Accept", "y")
	f.get(t, "/c/a/2")
	f.get(t, "/c/b/1")
	if n := f.c.Purge("example.org/c/a/1", false); n != 3 {
		t.Fatalf("purged %d items, want 3 (vary record and two variants)", n)
	}
	expect(t, f.get(t, "/c/a/2"), 200, "HIT", "v")
	if n := f.c.Purge("/c/a/", true); n != 2 {
		t.Fatalf("purged %d items, want 2", n)
	}
	expect(t, f.get(t, "/c/a/2"), 200, "MISS", "v")
	expect(t, f.get(t, "/c/b/1"), 200, "HIT", "v")
}

func TestMetrics(t *testing.T) {
	f := newFixture(t, fixed(200, "v", "Cache-Control", "max-age=60"))
	f.get(t, "/c/x")
	f.get(t, "/c/x")
	if got := testutil.ToFloat64(f.c.m.requests.WithLabelValues("hit")); got != 1 {
		t.Fatalf("hits %v", got)
	}
	if got := testutil.ToFloat64(f.c.m.requests.WithLabelValues("miss")); got != 1 {
		t.Fatalf("misses %v", got)
	}
	probs, err := testutil.GatherAndLint(f.reg)
	if err != nil || len(probs) > 0 {
		t.Fatalf("lint: %v %v", err, probs)
	}
}

func TestStoreNeverExceedsItsSize(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		const max = 1 << 20
		s := newStore(max)
		defer s.close()
		ops := rapid.IntRange(1, 300).Draw(rt, "ops")
		r := httptest.NewRequest("GET", "/", nil)
		for i := range ops {
			key := fmt.Sprintf("k%d", rapid.IntRange(0, 50).Draw(rt, "key"))
			size := rapid.IntRange(0, 120<<10).Draw(rt, "size")
			e := &entry{status: 200, header: http.Header{}, body: make([]byte, size)}
			s.put(key, r, e)
			if i%10 == 0 {
				s.c.CleanUp()
				if b := s.bytes(); b > max {
					rt.Fatalf("store holds %d bytes, over its %d", b, max)
				}
			}
		}
		s.c.CleanUp()
		if b := s.bytes(); b > max {
			rt.Fatalf("store holds %d bytes, over its %d", b, max)
		}
	})
}

func TestEvictionsCounted(t *testing.T) {
	s := newStore(1 << 20)
	defer s.close()
	r := httptest.NewRequest("GET", "/", nil)
	for i := range 100 {
		s.put(fmt.Sprintf("k%d", i), r, &entry{header: http.Header{}, body: make([]byte, 50<<10)})
	}
	s.c.CleanUp()
	if s.bytes() > 1<<20 || s.evictions.Load() == 0 {
		t.Fatalf("bytes %d, evictions %d", s.bytes(), s.evictions.Load())
	}
}

func TestLookupHeaderStripped(t *testing.T) {
	f := newFixture(t, fixed(200, "v"))
	f.get(t, "/other", HeaderLookup, "evil")
	if f.o.lastReq().Header.Get(HeaderLookup) != "" {
		t.Fatal("client's lookup header reached upstream")
	}
}
