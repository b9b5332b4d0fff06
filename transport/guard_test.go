package transport

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// gtEnv is a backend, a Backend and an Ingress serving it locally, behind a
// Guard, served by an HTTP server: an agent's ingress in miniature.
type gtEnv struct {
	front    *httptest.Server
	reg      *prometheus.Registry
	backends atomic.Int64 // requests that reached the backend
}

func gtStart(t *testing.T, fast bool, cfg GuardConfig, deps GuardDeps, be http.HandlerFunc) *gtEnv {
	t.Helper()
	e := &gtEnv{reg: prometheus.NewRegistry()}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.backends.Add(1)
		be(w, r)
	}))
	t.Cleanup(srv.Close)
	b, err := NewBackend(BackendConfig{NodeName: "node-1", URL: srv.URL, Capacity: 8}, nil, e.reg)
	if err != nil {
		t.Fatal(err)
	}
	if !fast {
		b.fast = nil
	}
	t.Cleanup(b.CloseIdleConnections)
	in := NewIngress(IngressConfig{NodeName: "node-1"}, IngressDeps{Local: b, Metrics: b.RequestMetrics()})
	deps.Registerer = e.reg
	e.front = httptest.NewServer(NewGuard(cfg, deps, in))
	t.Cleanup(e.front.Close)
	return e
}

func echoBody(w http.ResponseWriter, r *http.Request) {
	n, _ := io.Copy(io.Discard, r.Body)
	io.WriteString(w, "read "+strconv.FormatInt(n, 10))
}

func TestGuardRateLimit(t *testing.T) {
	l, err := NewRateLimiter(RateLimitConfig{Rate: 0.5, Burst: 2}, RateLimitDeps{})
	if err != nil {
		t.Fatal(err)
	}
	e := gtStart(t, true, GuardConfig{}, GuardDeps{Limiter: l, Key: HeaderKey("X-Client")}, echoBody)
	do := func(client string) *http.Response {
		req, _ := http.NewRequest("GET", e.front.URL+"/", nil)
		if client != "" {
			req.Header.Set("X-Client", client)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	for i := range 2 {
		if resp := do("a"); resp.StatusCode != 200 {
			t.Fatalf("request %d of the burst: %d", i, resp.StatusCode)
		}
	}
	resp := do("a")
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("over the limit: %d, want 429", resp.StatusCode)
	}
	// 0.5/s: the next token is about 2 s away, rounded up to whole seconds.
	if ra := resp.Header.Get("Retry-After"); ra != "2" {
		t.Fatalf("Retry-After %q, want 2", ra)
	}
	if resp := do("b"); resp.StatusCode != 200 {
		t.Fatalf("another client key: %d", resp.StatusCode)
	}
	// Without the header the client counts by its IP, a key of its own.
	if resp := do(""); resp.StatusCode != 200 {
		t.Fatalf("no header (IP key): %d", resp.StatusCode)
	}
	if got := e.backends.Load(); got != 4 {
		t.Fatalf("the backend saw %d requests, want 4 (the refused one never reaches it)", got)
	}
}

func TestGuardBodyTooLarge(t *testing.T) {
	bothPaths(t, func(t *testing.T, fast bool) {
		e := gtStart(t, fast, GuardConfig{MaxBodyBytes: 1000}, GuardDeps{}, echoBody)
		post := func(body io.Reader, length int64) (int, string) {
			req, _ := http.NewRequest("PUT", e.front.URL+"/upload", body)
			req.ContentLength = length
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		if code, body := post(strings.NewReader(strings.Repeat("x", 1000)), 1000); code != 200 || body != "read 1000" {
			t.Fatalf("body at the limit: %d %q", code, body)
		}
		before := e.backends.Load()
		if code, _ := post(strings.NewReader(strings.Repeat("x", 1001)), 1001); code != http.StatusRequestEntityTooLarge {
			t.Fatalf("declared length over the limit: %d, want 413", code)
		}
		if e.backends.Load() != before {
			t.Fatal("a body declared too large reached the backend")
		}
		// A streamed body (chunked, no length) is cut at the limit.
		code, body := post(io.MultiReader(strings.NewReader(strings.Repeat("y", 5000))), -1)
		if code != http.StatusRequestEntityTooLarge {
			t.Fatalf("streamed body over the limit: %d %q, want 413", code, body)
		}
		if got := testutil.ToFloat64(series(e.reg, "loadmesh_transport_body_too_large_total", nil)); got != 2 {
			t.Fatalf("body_too_large_total = %v, want 2", got)
		}
		// The client's fault is not the backend's: no 5xx recorded.
		if n := testutil.ToFloat64(series(e.reg, "loadmesh_transport_requests_total", map[string]string{"route": "local", "outcome": "5xx"})); n != 0 {
			t.Fatalf("%v local 5xx recorded for client body faults", n)
		}
	})
}

func TestGuardSlowBody(t *testing.T) {
	bothPaths(t, func(t *testing.T, fast bool) {
		const timeout = 200 * time.Millisecond
		var slowBackend atomic.Bool
		e := gtStart(t, fast, GuardConfig{BodyTimeout: timeout}, GuardDeps{}, func(w http.ResponseWriter, r *http.Request) {
			n, _ := io.Copy(io.Discard, r.Body)
			if slowBackend.Load() {
				// Answer well after the body deadline would have passed.
				deadline := time.Now().Add(3 * timeout)
				for time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
				}
			}
			io.WriteString(w, "read "+strconv.FormatInt(n, 10))
		})
		// A client that sends part of its body and stalls gets 408.
		conn, err := net.Dial("tcp", e.front.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		io.WriteString(conn, "PUT /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
		conn.SetReadDeadline(time.Now().Add(ptScale(20 * time.Second)))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("no answer to a stalled body: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestTimeout {
			t.Fatalf("stalled body: %d, want 408", resp.StatusCode)
		}
		// The deadline covers the body only: a slow backend answering
		// after it is not cut.
		slowBackend.Store(true)
		req, _ := http.NewRequest("PUT", e.front.URL+"/slow-backend", strings.NewReader("hello"))
		r2, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r2.Body)
		r2.Body.Close()
		if r2.StatusCode != 200 || string(b) != "read 5" {
			t.Fatalf("slow backend after the body deadline: %d %q", r2.StatusCode, b)
		}
	})
}

// series is the value of one series of reg (0 if absent), as a collector
// for testutil.ToFloat64.
func series(reg *prometheus.Registry, name string, labels map[string]string) prometheus.Collector {
	return gathered{reg: reg, name: name, labels: labels}
}

// gathered re-exports one series of a registry as a collector, for
// testutil.ToFloat64.
type gathered struct {
	reg    *prometheus.Registry
	name   string
	labels map[string]string
}

func (g gathered) Describe(chan<- *prometheus.Desc) {}

func (g gathered) Collect(ch chan<- prometheus.Metric) {
	mfs, _ := g.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != g.name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := g.labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue series
				}
			}
			ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(g.name, "", nil, nil), prometheus.UntypedValue, m.GetCounter().GetValue())
			return
		}
	}
	ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(g.name, "", nil, nil), prometheus.UntypedValue, 0)
}
