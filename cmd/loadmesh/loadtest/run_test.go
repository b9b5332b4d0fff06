package loadtest

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them: Run
// must wait for everything it started.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// meshLike is an httptest server that answers like a three-node mesh:
// every 10th request is a 503 without X-Loadmesh-Node (the ingress itself
// refusing), every 20th (offset 5) of the first 100 hangs until the
// client's timeout (only early ones, so they are over when the run ends),
// and the rest are served by node-a, node-b or node-c in turn. It counts
// what it did, to compare with the report.
type meshLike struct {
	n       atomic.Int64
	mu      sync.Mutex
	byNode  map[string]int64
	refused int64
	slow    int64
}

func (m *meshLike) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := m.n.Add(1)
	switch {
	case n%20 == 5 && n < 100:
		m.mu.Lock()
		m.slow++
		m.mu.Unlock()
		select {
		case <-r.Context().Done():
		case <-time.After(time.Minute):
		}
		return
	case n%10 == 0:
		m.mu.Lock()
		m.refused++
		m.mu.Unlock()
		http.Error(w, "no capacity", http.StatusServiceUnavailable)
		return
	}
	node := []string{"node-a", "node-b", "node-c"}[n%3]
	m.mu.Lock()
	m.byNode[node]++
	m.mu.Unlock()
	w.Header().Set(NodeHeader, node)
	w.Write([]byte("hello from " + node + "\n"))
}

// testConfig is 200 req/s for 1 s. The timeout is long enough that only
// meshLike's hanging requests reach it, even on a loaded machine
// (LOADMESH_TIMESCALE multiplies it).
func testConfig(url string) Config {
	c := DefaultConfig()
	c.URL = url
	c.Rate = 200
	c.Duration = time.Second
	c.Timeout = scale(time.Second)
	c.MaxWorkers = 400
	return c
}

func scale(d time.Duration) time.Duration {
	if f, err := strconv.ParseFloat(os.Getenv("LOADMESH_TIMESCALE"), 64); err == nil && f > 0 {
		return time.Duration(float64(d) * f)
	}
	return d
}

func TestRunAgainstMesh(t *testing.T) {
	srv := &meshLike{byNode: map[string]int64{}}
	ts := httptest.NewServer(srv)
	defer ts.Close()

	rep, err := Run(context.Background(), testConfig(ts.URL+"/x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	sent := srv.n.Load()
	// 200 req/s for 1 s: 200 due; vegeta may squeeze one more in at the
	// end. (On a starved machine it falls behind: checked below.)
	if rep.ExpectedRequests != 200 || rep.Requests > 202 {
		t.Errorf("requests %d of %d expected, want about 200", rep.Requests, rep.ExpectedRequests)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	errs := map[string]int64{}
	for _, e := range rep.Errors {
		errs[e.Kind] = e.Count
	}
	nodes := map[string]NodeShare{}
	var share float64
	var inNodes int64
	for _, n := range rep.Nodes {
		nodes[n.Node] = n
		share += n.Share
		inNodes += n.Requests
	}
	if inNodes != rep.Requests || share < 0.999 || share > 1.001 {
		t.Errorf("nodes %v hold %d requests of %d (shares add up to %v)", rep.Nodes, inNodes, rep.Requests, share)
	}
	// Every request without an answer is a timeout, and so (no response).
	if errs[KindTimeout] != nodes[NodeNoResponse].Requests || rep.StatusCodes["0"] != errs[KindTimeout] {
		t.Errorf("timeouts %d, (no response) %d, status 0: %d", errs[KindTimeout], nodes[NodeNoResponse].Requests, rep.StatusCodes["0"])
	}
	// Every 503 came without a node header.
	if errs["http_503"] != nodes[NodeNone].Requests || nodes[NodeNone].Errors != errs["http_503"] || rep.StatusCodes["503"] != errs["http_503"] {
		t.Errorf("503s %d, (none) %+v, status 503: %d", errs["http_503"], nodes[NodeNone], rep.StatusCodes["503"])
	}
	if len(errs) > 2 || errs[KindTimeout] < srv.slow {
		t.Errorf("errors %v, want http_503 and at least %d timeouts only", rep.Errors, srv.slow)
	}
	served := srv.byNode["node-a"] + srv.byNode["node-b"] + srv.byNode["node-c"]
	if errs[KindTimeout] > srv.slow {
		// On a badly overloaded machine (other test processes, -race)
		// an answer can take longer than the timeout; the report is then
		// checked for consistency only.
		t.Logf("%d timeouts beyond the %d hanging requests, %d of 200 requests sent at %.1f req/s: comparing loosely",
			errs[KindTimeout]-srv.slow, srv.slow, rep.Requests, rep.Rate)
		if rep.Requests < sent || rep.Succeeded > served || errs["http_503"] > srv.refused {
			t.Errorf("report %d sent, %d ok, %d 503s; server saw %d, served %d, refused %d",
				rep.Requests, rep.Succeeded, errs["http_503"], sent, served, srv.refused)
		}
	} else {
		if rep.Requests < 100 || rep.Rate < 50 || rep.Rate > 220 {
			t.Errorf("%d requests at %.1f req/s, want about 200 in 1 s", rep.Requests, rep.Rate)
		}
		if rep.Requests != sent || rep.Succeeded != served || errs["http_503"] != srv.refused {
			t.Errorf("report %d sent, %d ok, %d 503s; server saw %d, served %d, refused %d",
				rep.Requests, rep.Succeeded, errs["http_503"], sent, served, srv.refused)
		}
		if want := float64(served) / float64(sent); rep.SuccessRatio != want {
			t.Errorf("success ratio %v, want %v", rep.SuccessRatio, want)
		}
		for _, name := range []string{"node-a", "node-b", "node-c"} {
			if nodes[name].Requests != srv.byNode[name] || nodes[name].Errors != 0 {
				t.Errorf("%s: %+v, server served %d", name, nodes[name], srv.byNode[name])
			}
			if s := nodes[name].Share; s < 0.25 || s > 0.35 {
				t.Errorf("%s share %.3f, want about 0.3", name, s)
			}
		}
	}
	if len(nodes) != 5 {
		t.Errorf("nodes %v, want node-a, node-b, node-c, (none) and (no response)", rep.Nodes)
	}

	l := rep.Latency
	if !(0 < l.Min && l.Min <= l.P50 && l.P50 <= l.P90 && l.P90 <= l.P95 && l.P95 <= l.P99 && l.P99 <= l.Max) {
		t.Errorf("latencies out of order: %+v", l)
	}
	// The timeouts waited the full timeout.
	if to := scale(time.Second).Seconds(); l.Max < to || l.Max > 2*to {
		t.Errorf("max latency %v, want the %vs timeout", l.Max, to)
	}
	var inHist int64
	for i, b := range rep.Histogram {
		inHist += b.Count
		if b.To != nil && *b.To <= b.From || i > 0 && b.From != *rep.Histogram[i-1].To {
			t.Errorf("bucket %d [%v, %v) does not follow", i, b.From, b.To)
		}
	}
	if inHist != rep.Requests {
		t.Errorf("histogram holds %d requests, want %d", inHist, rep.Requests)
	}

	var text strings.Builder
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Target      GET " + ts.URL + "/x", "Latency histogram", "HTTP 503 Service Unavailable",
		"timeout (no complete answer within --timeout)", "node-a", "(none)", "(no response)", "p99"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
}

// TestReportJSON checks the --json schema: every documented key is there
// with the right JSON type.
func TestReportJSON(t *testing.T) {
	ts := httptest.NewServer(&meshLike{byNode: map[string]int64{}})
	defer ts.Close()
	cfg := testConfig(ts.URL)
	cfg.Duration = 300 * time.Millisecond
	cfg.Ramp = []Stage{{200, 100 * time.Millisecond}}
	rep, err := Run(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(b.String()), &doc); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, b.String())
	}
	types := map[string]string{
		"method": "string", "url": "string", "load": "object", "interrupted": "bool",
		"expected_requests": "number", "requests": "number", "succeeded": "number",
		"duration_seconds": "number", "wait_seconds": "number", "rate": "number", "throughput": "number",
		"success_ratio": "number", "bytes_in": "number", "bytes_out": "number",
		"latency_seconds": "object", "histogram": "array", "status_codes": "object",
		"errors": "array", "nodes": "array",
	}
	for k, want := range types {
		if got := jsonType(doc[k]); got != want {
			t.Errorf("%s: %s, want %s", k, got, want)
		}
	}
	lat := doc["latency_seconds"].(map[string]any)
	for _, k := range []string{"min", "mean", "p50", "p90", "p95", "p99", "max"} {
		if jsonType(lat[k]) != "number" {
			t.Errorf("latency_seconds.%s missing", k)
		}
	}
	load := doc["load"].(map[string]any)
	for _, k := range []string{"rate", "duration_seconds", "ramp", "connections", "max_workers", "timeout_seconds", "http2", "description"} {
		if _, ok := load[k]; !ok {
			t.Errorf("load.%s missing", k)
		}
	}
	checkItems := func(key string, fields ...string) {
		items := doc[key].([]any)
		if len(items) == 0 {
			t.Errorf("%s is empty", key)
		}
		for _, it := range items {
			m := it.(map[string]any)
			for _, f := range fields {
				if _, ok := m[f]; !ok {
					t.Errorf("%s item %v lacks %s", key, m, f)
				}
			}
		}
	}
	checkItems("histogram", "from", "to", "count")
	checkItems("errors", "kind", "description", "count")
	checkItems("nodes", "node", "requests", "share", "errors", "mean_latency_seconds")
	// A 0→200 ramp over 100 ms then 200 req/s for 200 ms: 10 + 40 due.
	if rep.ExpectedRequests != 50 {
		t.Errorf("expected %d requests, want 50", rep.ExpectedRequests)
	}
}

func jsonType(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "bool"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case nil:
		return "null"
	}
	return "?"
}

func TestRunConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	cfg := testConfig("http://" + addr + "/")
	cfg.Duration = 200 * time.Millisecond
	rep, err := Run(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Requests == 0 || rep.Succeeded != 0 || len(rep.Errors) != 1 || rep.Errors[0].Kind != KindRefused ||
		rep.Errors[0].Count != rep.Requests || !strings.Contains(rep.Errors[0].Example, "connection refused") {
		t.Errorf("against a closed port: %d requests, errors %+v", rep.Requests, rep.Errors)
	}
	if len(rep.Nodes) != 1 || rep.Nodes[0].Node != NodeNoResponse || rep.Nodes[0].Share != 1 {
		t.Errorf("nodes %+v, want all (no response)", rep.Nodes)
	}
}

func TestRunBounds(t *testing.T) {
	var hits atomic.Int64
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer ts.Close()

	t.Run("max requests", func(t *testing.T) {
		hits.Store(0)
		cfg := testConfig(ts.URL)
		cfg.MaxRequests = 25
		rep, err := Run(context.Background(), cfg, nil)
		if err != nil || rep.Requests != 25 || hits.Load() != 25 {
			t.Errorf("--max-requests 25: %d sent, %d seen, %v", rep.Requests, hits.Load(), err)
		}
	})
	t.Run("full speed is closed loop", func(t *testing.T) {
		hits.Store(0)
		cfg := testConfig(ts.URL)
		cfg.Rate, cfg.Connections, cfg.MaxWorkers, cfg.MaxRequests = 0, 4, 0, 500
		cfg.Duration, cfg.Timeout = scale(5*time.Second), scale(5*time.Second)
		rep, err := Run(context.Background(), cfg, nil)
		if err != nil || rep.Requests != 500 || rep.Succeeded != 500 || rep.Load.MaxWorkers != 4 {
			t.Errorf("--rate 0 --max-requests 500: %+v, %v", rep, err)
		}
	})
	t.Run("interrupted", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		cfg := testConfig(ts.URL)
		cfg.Duration = time.Minute
		start := time.Now()
		rep, err := Run(ctx, cfg, nil)
		if err != nil || !rep.Interrupted || time.Since(start) > 5*time.Second || rep.Requests == 0 || rep.Requests > 100 {
			t.Errorf("cancelled after 200ms: interrupted %v, %d requests, took %s, %v",
				rep.Interrupted, rep.Requests, time.Since(start), err)
		}
	})
	t.Run("invalid config", func(t *testing.T) {
		cfg := testConfig("not a url")
		if _, err := Run(context.Background(), cfg, nil); err == nil {
			t.Error("no error for a bad URL")
		}
	})
}

func TestProgressBar(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer ts.Close()
	cfg := testConfig(ts.URL)
	cfg.Duration = 500 * time.Millisecond
	var bar syncBuffer
	if _, err := Run(context.Background(), cfg, &bar); err != nil {
		t.Fatal(err)
	}
	out := bar.String()
	if !strings.Contains(out, "100%") || !strings.Contains(out, "sent") {
		t.Errorf("progress output %q", out)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b = append(s.b, p...)
	return len(p), nil
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(slices.Clone(s.b))
}
