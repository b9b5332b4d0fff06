package test

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

	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/test/harness"
	"github.com/loadmesh/loadmesh/test/retry"
	"github.com/loadmesh/loadmesh/transport/httpcache"
)

// cacheOrigin is the one backend every node of a cache test fronts; it
// counts requests per path.
type cacheOrigin struct {
	mu      sync.Mutex
	counts  map[string]int
	failSIE atomic.Bool
	release chan struct{} // /c/slow waits for it
}

func (o *cacheOrigin) count(path string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.counts[path]
}

func (o *cacheOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	o.counts[r.URL.Path]++
	n := o.counts[r.URL.Path]
	o.mu.Unlock()
	h := w.Header()
	switch p := r.URL.Path; {
	case p == "/c/slow":
		<-o.release
		h.Set("Cache-Control", "max-age=300")
	case p == "/c/vary":
		h.Set("Cache-Control", "max-age=300")
		h.Set("Vary", "Accept-Language")
		io.WriteString(w, "lang="+r.Header.Get("Accept-Language"))
		return
	case p == "/c/nostore":
		h.Set("Cache-Control", "no-store")
	case p == "/c/private":
		h.Set("Cache-Control", "private, max-age=300")
	case p == "/c/auth":
		h.Set("Cache-Control", "max-age=300")
	case p == "/c/etag":
		h.Set("Cache-Control", "max-age=1")
		h.Set("ETag", `"e1"`)
		if r.Header.Get("If-None-Match") == `"e1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	case p == "/c/sie":
		if o.failSIE.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		h.Set("Cache-Control", "max-age=1, stale-if-error=300")
	case strings.HasPrefix(p, "/c/big/"):
		h.Set("Cache-Control", "max-age=300")
		w.Write(make([]byte, 60<<10))
		return
	case strings.HasPrefix(p, "/c/"):
		h.Set("Cache-Control", "max-age=300")
	}
	fmt.Fprintf(w, "%s #%d", r.URL.Path, n)
}

func TestMeshCache(t *testing.T) {
	skipShort(t)
	o := &cacheOrigin{counts: map[string]int{}, release: make(chan struct{})}
	srv := httptest.NewServer(o)
	t.Cleanup(srv.Close)
	c := harness.Start(t, 3, harness.Options{Tune: func(i int, cfg *agent.Config) {
		cfg.Backend = srv.URL
		cfg.HealthPath = "/health"
		cfg.Cache = []string{"/c/"}
		cfg.CacheSize = 1 << 20
	}})
	c.WaitForLeader(t)
	waitOwners := func(n int) {
		retry.Run(t, func(r *retry.R) {
			for _, node := range c.Live() {
				if got := len(node.CacheStats().Owners); got != n {
					r.Fatalf("%s sees %d owners, want %d", node.Name(), got, n)
				}
			}
		})
	}
	waitOwners(3)
	hc := client(t)
	get := func(node *harness.Node, path string, kv ...string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+node.HTTPAddr()+path, nil)
		req.Host = "example.org" // the same key whichever ingress it enters
		for i := 0; i+1 < len(kv); i += 2 {
			req.Header.Set(kv[i], kv[i+1])
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	ownerOf := func(path string) string {
		name, ok := c.Nodes[0].CacheOwner("example.org" + path)
		if !ok {
			t.Fatalf("no owner for %s", path)
		}
		return name
	}

	// Warm the peer channels first: every ingress asks every owner once and
	// gets its answer. (A lookup that fails — the first QUIC handshake on a
	// loaded machine, say — is served without the owner by design, which
	// would add a backend request to the next subtest's count.)
	warm := map[string]string{} // owner → a key it owns
	for i := 0; len(warm) < len(c.Nodes) && i < 1000; i++ {
		path := fmt.Sprintf("/c/warm-%d", i)
		if o := ownerOf(path); warm[o] == "" {
			warm[o] = path
		}
	}
	for owner, path := range warm {
		for _, node := range c.Nodes {
			retry.Run(t, func(r *retry.R) {
				resp, _ := get(node, path)
				if cs := resp.Header.Get(httpcache.HeaderCacheStatus); !strings.Contains(cs, `node="`+owner+`"`) {
					r.Fatalf("%s via %s: Cache-Status %q, want the owner %s", path, node.Name(), cs, owner)
				}
			})
		}
	}

	t.Run("concurrent misses on every ingress make one backend request", func(t *testing.T) {
		var wg sync.WaitGroup
		var bad atomic.Int64
		for _, node := range c.Nodes {
			for range 5 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					req, _ := http.NewRequest("GET", "http://"+node.HTTPAddr()+"/c/slow", nil)
					req.Host = "example.org"
					resp, err := hc.Do(req)
					if err != nil {
						bad.Add(1)
						return
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || string(b) != "/c/slow #1" {
						t.Errorf("answer %d %q (%s)", resp.StatusCode, b, resp.Header.Get(httpcache.HeaderCacheStatus))
					}
				}()
			}
		}
		retry.Run(t, func(r *retry.R) {
			if o.count("/c/slow") == 0 {
				r.Fatalf("the backend has not seen the request yet")
			}
		})
		close(o.release)
		wg.Wait()
		if bad.Load() > 0 || o.count("/c/slow") != 1 {
			t.Fatalf("%d failures; backend saw %d requests for 15 concurrent misses over 3 ingresses, want 1", bad.Load(), o.count("/c/slow"))
		}
	})

	t.Run("a hit is served by the owner for a request entering another node", func(t *testing.T) {
		owner := ownerOf("/c/a")
		for i, node := range c.Nodes {
			resp, body := get(node, "/c/a")
			want := "HIT"
			if i == 0 {
				want = "MISS"
			}
			if resp.Header.Get(httpcache.HeaderXCache) != want || body != "/c/a #1" ||
				!strings.Contains(resp.Header.Get(httpcache.HeaderCacheStatus), `node="`+owner+`"`) {
				t.Fatalf("via %s: %s %q, Cache-Status %q; owner %s", node.Name(), resp.Header.Get(httpcache.HeaderXCache), body,
					resp.Header.Get(httpcache.HeaderCacheStatus), owner)
			}
		}
		if o.count("/c/a") != 1 {
			t.Fatalf("backend saw %d requests", o.count("/c/a"))
		}
		// Only the owner stores it.
		stored := 0
		for _, node := range c.Nodes {
			stored += node.CacheStats().Entries
		}
		t.Logf("owner %s; %d items stored over the cluster", owner, stored)
	})

	t.Run("a POST through another ingress invalidates the owner's entry", func(t *testing.T) {
		get(c.Nodes[0], "/c/post")
		if resp, _ := get(c.Nodes[1], "/c/post"); resp.Header.Get(httpcache.HeaderXCache) != "HIT" {
			t.Fatal("not cached")
		}
		for _, node := range c.Nodes {
			if node.Name() == ownerOf("/c/post") {
				continue
			}
			req, _ := http.NewRequest("POST", "http://"+node.HTTPAddr()+"/c/post", strings.NewReader("x"))
			req.Host = "example.org"
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			// The invalidation reached the owner before the answer came.
			if resp, _ := get(c.Nodes[2], "/c/post"); resp.Header.Get(httpcache.HeaderXCache) != "MISS" {
				t.Fatalf("after a POST via %s: %s", node.Name(), resp.Header.Get(httpcache.HeaderXCache))
			}
			break
		}
	})

	t.Run("vary keeps variants apart", func(t *testing.T) {
		for round := range 2 {
			for i, lang := range []string{"fi", "et"} {
				_, body := get(c.Nodes[(round+i)%3], "/c/vary", "Accept-Language", lang)
				if body != "lang="+lang {
					t.Fatalf("round %d: %q for %s", round, body, lang)
				}
			}
		}
		if o.count("/c/vary") != 2 {
			t.Fatalf("backend saw %d requests, want 2", o.count("/c/vary"))
		}
	})

	t.Run("no-store, private and Authorization are not cached", func(t *testing.T) {
		for _, p := range []string{"/c/nostore", "/c/private", "/c/auth"} {
			for _, node := range c.Nodes {
				resp, _ := get(node, p, "Authorization", map[bool]string{true: "Bearer x"}[p == "/c/auth"])
				if x := resp.Header.Get(httpcache.HeaderXCache); x == "HIT" {
					t.Fatalf("%s via %s was a hit", p, node.Name())
				}
			}
			if o.count(p) != 3 {
				t.Fatalf("%s: backend saw %d requests, want 3", p, o.count(p))
			}
		}
	})

	t.Run("revalidation with 304", func(t *testing.T) {
		get(c.Nodes[1], "/c/etag")
		retry.Run(t, func(r *retry.R) {
			resp, body := get(c.Nodes[2], "/c/etag")
			if resp.Header.Get(httpcache.HeaderXCache) != "REVALIDATED" || body != "/c/etag #1" {
				r.Fatalf("%s %q", resp.Header.Get(httpcache.HeaderXCache), body)
			}
		})
	})

	t.Run("stale-if-error when the backend fails", func(t *testing.T) {
		get(c.Nodes[0], "/c/sie")
		o.failSIE.Store(true)
		retry.Run(t, func(r *retry.R) {
			resp, body := get(c.Nodes[1], "/c/sie")
			if resp.StatusCode != 200 || resp.Header.Get(httpcache.HeaderXCache) != "STALE" || body != "/c/sie #1" {
				r.Fatalf("%d %s %q", resp.StatusCode, resp.Header.Get(httpcache.HeaderXCache), body)
			}
		})
	})

	t.Run("purge by prefix reaches the owners", func(t *testing.T) {
		paths := []string{"/c/p/1", "/c/p/2", "/c/p/3", "/c/p/4"}
		for _, p := range paths {
			get(c.Nodes[0], p)
			if resp, _ := get(c.Nodes[1], p); resp.Header.Get(httpcache.HeaderXCache) != "HIT" {
				t.Fatalf("%s not cached", p)
			}
		}
		req, _ := http.NewRequest("DELETE", "http://"+c.Nodes[2].APIAddr()+"/v1/cache?prefix=/c/p/", nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("purge: %d %s", resp.StatusCode, b)
		}
		for _, p := range paths {
			retry.Run(t, func(r *retry.R) {
				if n := o.count(p); n < 2 {
					if resp, _ := get(c.Nodes[0], p); resp.Header.Get(httpcache.HeaderXCache) != "MISS" {
						r.Fatalf("%s still cached at its owner %s", p, ownerOf(p))
					}
				}
			})
		}
		if resp, _ := get(c.Nodes[0], "/c/a"); resp.Header.Get(httpcache.HeaderXCache) != "HIT" {
			t.Fatalf("/c/a outside the prefix was purged")
		}
	})

	t.Run("memory bound per node", func(t *testing.T) {
		start := time.Now()
		for i := range 80 {
			get(c.Nodes[i%3], fmt.Sprintf("/c/big/%d", i))
		}
		t.Logf("80 big answers in %s", time.Since(start))
		var evictions uint64
		for _, node := range c.Nodes {
			st := node.CacheStats()
			if st.Bytes > uint64(st.MaxBytes) {
				t.Fatalf("%s holds %d bytes, over %d", node.Name(), st.Bytes, st.MaxBytes)
			}
			evictions += st.Evictions
			t.Logf("%s: %d items, %d bytes, %d evictions", node.Name(), st.Entries, st.Bytes, st.Evictions)
		}
		if evictions == 0 {
			t.Fatal("4.8 MB of answers into 3 MiB of cache evicted nothing")
		}
	})

	t.Run("adding a node moves about a quarter of the keys, all to it", func(t *testing.T) {
		const keys = 2000
		before := make([]string, keys)
		for i := range before {
			before[i] = ownerOf(fmt.Sprintf("/k/%d", i))
		}
		added := c.Add(t)
		waitOwners(4)
		moved := 0
		for i := range before {
			after := ownerOf(fmt.Sprintf("/k/%d", i))
			if after != before[i] {
				moved++
				if after != added.Name() {
					t.Fatalf("key %d moved from %s to %s, not to the new node %s", i, before[i], after, added.Name())
				}
			}
		}
		frac := float64(moved) / keys
		t.Logf("%d of %d keys (%.1f %%) moved to the new node", moved, keys, 100*frac)
		if frac < 0.15 || frac > 0.35 {
			t.Fatalf("%.1f %% of the keys moved, want about 25 %%", 100*frac)
		}
	})
	t.Run("an unreachable owner does not fail requests", func(t *testing.T) {
		var victim *harness.Node
		path := ""
		for i := 0; victim == nil; i++ {
			path = fmt.Sprintf("/c/gone/%d", i)
			if o := ownerOf(path); o != c.Nodes[0].Name() {
				victim = c.Node(o)
			}
		}
		c.Kill(t, victim)
		// Before and after the others notice: always an answer.
		for range 3 {
			resp, body := get(c.Nodes[0], path)
			if resp.StatusCode != 200 || !strings.HasPrefix(body, path+" #") {
				t.Fatalf("with the owner %s down: %d %q", victim.Name(), resp.StatusCode, body)
			}
		}
	})
}
