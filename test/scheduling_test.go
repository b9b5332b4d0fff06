package test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/test/harness"
	"github.com/loadmesh/loadmesh/test/retry"
	"github.com/loadmesh/loadmesh/transport"
)

// tunableBackend answers after a delay that the test can change, and can be
// made to fail its health check.
type tunableBackend struct {
	*httptest.Server
	delay     atomic.Int64
	unhealthy atomic.Bool
}

func newTunableBackend(t *testing.T) *tunableBackend {
	b := &tunableBackend{}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			if b.unhealthy.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			return
		}
		if d := time.Duration(b.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(b.Close)
	return b
}

// spread sends n GETs with c workers through addr and counts the serving
// node of each; any failure fails the test.
func spread(t *testing.T, hc *http.Client, addr string, workers, n int) map[string]int {
	t.Helper()
	var mu sync.Mutex
	out := map[string]int{}
	var failed atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				resp, err := hc.Get("http://" + addr + "/work")
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
					continue
				}
				mu.Lock()
				out[resp.Header.Get(transport.HeaderNode)]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d of %d requests failed", f, n)
	}
	return out
}

func TestTrafficMovesAwayFromASlowNodeAndBack(t *testing.T) {
	skipShort(t)
	fast, slow := newTunableBackend(t), newTunableBackend(t)
	c := harness.Start(t, 3, harness.Options{IngressOnly: []int{2}, Tune: func(i int, cfg *agent.Config) {
		switch i {
		case 0:
			cfg.Backend = fast.URL
		case 1:
			cfg.Backend = slow.URL
		}
		cfg.HealthPath = "/health"
	}})
	c.WaitForLeader(t)
	ingress := c.Nodes[2]
	waitServingPeers(t, c, ingress, 2)
	hc := client(t)

	// Far slower than any stall a busy test machine adds to every node.
	slow.delay.Store(int64(150 * time.Millisecond))
	fast.delay.Store(int64(time.Millisecond))
	// Once the scheduler has seen the difference, the slow node gets only
	// a small share (p2c still probes it now and then).
	retry.RunFor(t, 30*time.Second, func(r *retry.R) {
		got := spread(t, hc, ingress.HTTPAddr(), 8, 400)
		if share := float64(got["node-1"]) / 400; share > 0.15 {
			r.Fatalf("slow node-1 got %.0f%% of requests (%v); want at most 15%%", 100*share, got)
		}
	})
	// It recovers: traffic comes back.
	slow.delay.Store(int64(time.Millisecond))
	retry.RunFor(t, 30*time.Second, func(r *retry.R) {
		got := spread(t, hc, ingress.HTTPAddr(), 8, 400)
		if share := float64(got["node-1"]) / 400; share < 0.30 {
			r.Fatalf("recovered node-1 got %.0f%% of requests (%v); want at least 30%%", 100*share, got)
		}
	})
}

func TestUnhealthyBackendLeavesRotationButItsIngressForwards(t *testing.T) {
	skipShort(t)
	b0, b1 := newTunableBackend(t), newTunableBackend(t)
	c := harness.Start(t, 3, harness.Options{IngressOnly: []int{2}, Tune: func(i int, cfg *agent.Config) {
		switch i {
		case 0:
			cfg.Backend = b0.URL
		case 1:
			cfg.Backend = b1.URL
		}
		cfg.HealthPath = "/health"
		cfg.HealthInterval = 100 * time.Millisecond
		cfg.HealthTimeout = 50 * time.Millisecond
	}})
	c.WaitForLeader(t)
	waitServingPeers(t, c, c.Nodes[2], 2)
	hc := client(t)
	b1.unhealthy.Store(true)
	// Every node learns node-1 is unhealthy from gossip...
	for _, n := range c.Live() {
		retry.Run(t, func(r *retry.R) {
			for _, m := range n.Status().Members {
				if m.Name == "node-1" && (m.Load == nil || m.Load.Healthy) {
					r.Fatalf("%s still sees node-1 healthy", n.Name())
				}
			}
		})
	}
	// ...and sends it nothing, while node-1's own ingress forwards to node-0.
	// (The picker reads gossip on its 100 ms refresh, a moment after the
	// status above: a batch that starts before it may still reach node-1,
	// so the batch is retried until one goes to node-0 alone.)
	for _, via := range []*harness.Node{c.Nodes[2], c.Nodes[1]} {
		retry.Run(t, func(r *retry.R) {
			if got := spread(t, hc, via.HTTPAddr(), 4, 200); got["node-0"] != 200 {
				r.Fatalf("through %s: served by %v, want node-0 only", via.Name(), got)
			}
		})
	}
	b1.unhealthy.Store(false)
	retry.Run(t, func(r *retry.R) {
		got := spread(t, hc, c.Nodes[2].HTTPAddr(), 4, 100)
		if got["node-1"] == 0 {
			r.Fatalf("healthy again node-1 gets nothing: %v", got)
		}
	})

}
