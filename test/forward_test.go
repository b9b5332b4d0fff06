package test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/test/harness"
	"github.com/loadmesh/loadmesh/test/retry"
	"github.com/loadmesh/loadmesh/transport"
)

// client is a plain HTTP client with its own pool, closed by the test.
func client(t *testing.T) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// waitForwarding waits until node's ingress can reach n serving peers.
func waitServingPeers(t *testing.T, c *harness.Cluster, via *harness.Node, want int) {
	t.Helper()
	hc := client(t)
	retry.Run(t, func(r *retry.R) {
		seen := map[string]bool{}
		for range 4 * want {
			resp, err := hc.Get("http://" + via.HTTPAddr() + "/warmup")
			r.Check(err)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				r.Fatalf("status %d", resp.StatusCode)
			}
			seen[resp.Header.Get(transport.HeaderNode)] = true
		}
		if len(seen) != want {
			r.Fatalf("served by %v, want %d nodes", seen, want)
		}
	})
}

func TestIngressOnlyNodeForwardsEverything(t *testing.T) {
	skipShort(t)
	c := harness.Start(t, 3, harness.Options{Backends: true, IngressOnly: []int{2}})
	c.WaitForLeader(t)
	ingress := c.Nodes[2]
	waitServingPeers(t, c, ingress, 2)

	hc := client(t)
	var mu sync.Mutex
	servedBy := map[string]int{}
	var wg sync.WaitGroup
	var failures atomic.Int64
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 125 {
				req, _ := http.NewRequest("GET", fmt.Sprintf("http://%s/r/%d/%d", ingress.HTTPAddr(), w, i), nil)
				req.Header.Set("X-Forwarded-For", "203.0.113.9")
				resp, err := hc.Do(req)
				if err != nil {
					if failures.Add(1) == 1 {
						t.Logf("first failure: %v", err)
					}
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				node := resp.Header.Get(transport.HeaderNode)
				if resp.StatusCode != 200 || !strings.Contains(string(body), fmt.Sprintf("/r/%d/%d", w, i)) {
					if failures.Add(1) == 1 {
						t.Logf("first failure: %d %s", resp.StatusCode, body)
					}
					continue
				}
				mu.Lock()
				servedBy[node]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if failures.Load() != 0 {
		t.Fatalf("%d of 1000 requests failed", failures.Load())
	}
	if servedBy[ingress.Name()] != 0 || servedBy["node-0"]+servedBy["node-1"] != 1000 || servedBy["node-0"] == 0 || servedBy["node-1"] == 0 {
		t.Fatalf("served by %v: want all 1000 by node-0 and node-1", servedBy)
	}
}

func TestForwardedHeaders(t *testing.T) {
	skipShort(t)
	got := make(chan http.Header, 1)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/h" {
			return // health checks
		}
		select {
		case got <- r.Header.Clone():
		default:
		}
	}))
	defer be.Close()
	c := harness.Start(t, 2, harness.Options{IngressOnly: []int{1}, Tune: func(i int, cfg *agent.Config) {
		if i == 0 {
			cfg.Backend = be.URL
		}
	}})
	c.WaitForLeader(t)
	hc := client(t)
	retry.Run(t, func(r *retry.R) {
		req, _ := http.NewRequest("GET", "http://"+c.Nodes[1].HTTPAddr()+"/h", nil)
		req.Header.Set("Connection", "keep-alive, X-Secret")
		req.Header.Set("X-Secret", "hop-by-hop")
		resp, err := hc.Do(req)
		r.Check(err)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get(transport.HeaderNode) != "node-0" {
			r.Fatalf("status %d node %q", resp.StatusCode, resp.Header.Get(transport.HeaderNode))
		}
	})
	h := <-got
	if h.Get("X-Forwarded-For") != "127.0.0.1" || h.Get("X-Forwarded-Proto") != "http" {
		t.Errorf("X-Forwarded-For %q Proto %q: want the client's, set once", h.Get("X-Forwarded-For"), h.Get("X-Forwarded-Proto"))
	}
	if via := h.Get("Via"); via != "1.1 node-1 (loadmesh)" {
		t.Errorf("Via %q: want exactly the ingress node", via)
	}
	if h.Get("X-Secret") != "" {
		t.Errorf("hop-by-hop header X-Secret reached the backend")
	}
}

func TestLargeBodiesStreamThroughAForward(t *testing.T) {
	skipShort(t)
	c := harness.Start(t, 2, harness.Options{Backends: true, IngressOnly: []int{1}})
	c.WaitForLeader(t)
	waitServingPeers(t, c, c.Nodes[1], 1)
	hc := client(t)
	const size = 32 << 20

	// Download.
	resp, err := hc.Get(fmt.Sprintf("http://%s/big?size=%d", c.Nodes[1].HTTPAddr(), size))
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || n != size || resp.Header.Get(transport.HeaderNode) != "node-0" {
		t.Fatalf("download: %d bytes, %v, node %q", n, err, resp.Header.Get(transport.HeaderNode))
	}

	// Upload, echoed back: same bytes both ways, without Content-Length.
	src := io.LimitReader(&pattern{}, size)
	h := sha256.New()
	req, _ := http.NewRequest("POST", "http://"+c.Nodes[1].HTTPAddr()+"/up?echo=1", io.TeeReader(src, h))
	req.ContentLength = -1
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	back := sha256.New()
	n, err = io.Copy(back, resp.Body)
	resp.Body.Close()
	if err != nil || n != size || !bytes.Equal(h.Sum(nil), back.Sum(nil)) {
		t.Fatalf("echo upload: %d bytes back, %v, digests equal=%v", n, err, bytes.Equal(h.Sum(nil), back.Sum(nil)))
	}
}

// pattern is an endless non-trivial byte stream.
type pattern struct{ i byte }

func (p *pattern) Read(b []byte) (int, error) {
	for j := range b {
		b[j] = p.i
		p.i = p.i*31 + 7
	}
	return len(b), nil
}

func TestClientCancelReachesThePeer(t *testing.T) {
	skipShort(t)
	started, canceled := make(chan struct{}, 1), make(chan struct{}, 1)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/slow" {
			return
		}
		started <- struct{}{}
		select {
		case <-r.Context().Done():
			canceled <- struct{}{}
		case <-time.After(time.Minute):
		}
	}))
	defer be.Close()
	c := harness.Start(t, 2, harness.Options{IngressOnly: []int{1}, Tune: func(i int, cfg *agent.Config) {
		if i == 0 {
			cfg.Backend = be.URL
		}
	}})
	c.WaitForLeader(t)
	waitServingPeers(t, c, c.Nodes[1], 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+c.Nodes[1].HTTPAddr()+"/slow", nil)
	errc := make(chan error, 1)
	go func() {
		resp, err := client(t).Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	select {
	case <-started:
	case <-time.After(retry.Scale(10 * time.Second)):
		t.Fatal("request never reached the peer's backend")
	}
	cancel()
	select {
	case <-canceled:
	case <-time.After(retry.Scale(10 * time.Second)):
		t.Fatal("the backend behind the peer never saw the cancellation")
	}
	<-errc
}

func TestPeerKilledMidRunLosesNoIdempotentRequest(t *testing.T) {
	skipShort(t)
	c := harness.Start(t, 3, harness.Options{Backends: true, IngressOnly: []int{2}, BackendDelay: 2 * time.Millisecond})
	c.WaitForLeader(t)
	ingress := c.Nodes[2]
	waitServingPeers(t, c, ingress, 2)
	hc := client(t)
	var sent, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				sent.Add(1)
				resp, err := hc.Get("http://" + ingress.HTTPAddr() + "/g")
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}
	retry.Run(t, func(r *retry.R) {
		if sent.Load() < 200 {
			r.Fatalf("only %d sent", sent.Load())
		}
	})
	c.Kill(t, c.Nodes[0])
	n := sent.Load()
	retry.Run(t, func(r *retry.R) {
		if sent.Load() < n+500 {
			r.Fatalf("only %d sent since the kill", sent.Load()-n)
		}
	})
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d GETs failed after killing a peer; first: %v", failed.Load(), sent.Load(), firstErr.Load())
	}
	t.Logf("%d GETs, none failed", sent.Load())
}

func TestForeignCertificateIsRefused(t *testing.T) {
	skipShort(t)
	other, err := transport.NewCA("another CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// node-0 serves (cluster CA); node-1 is ingress-only (cluster CA);
	// node-2 serves but its certificate comes from another CA.
	c := harness.Start(t, 3, harness.Options{
		NoBootstrapExpect: true, Backends: true, IngressOnly: []int{1},
		CAFor: func(i int) *transport.CA {
			if i == 2 {
				return other
			}
			return nil
		},
	})
	c.WaitForMembers(t) // gossip is not TLS; it is what forwarding is refused on
	waitServingPeers(t, c, c.Nodes[1], 1)
	hc := client(t)
	// Through the cluster's ingress-only node nothing reaches node-2.
	for range 50 {
		resp, err := hc.Get("http://" + c.Nodes[1].HTTPAddr() + "/x")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get(transport.HeaderNode) != "node-0" {
			t.Fatalf("status %d served by %q; want node-0 only", resp.StatusCode, resp.Header.Get(transport.HeaderNode))
		}
	}
	// node-2 cannot forward into the cluster: with its own backend removed
	// from the picture by filling it... instead ask node-0's peer channel
	// directly with node-2's identity.
	foreign, err := transport.DevMutualTLS("node-2", other)
	if err != nil {
		t.Fatal(err)
	}
	_ = foreign
	ps, err := transport.NewPeerServer(transport.PeerConfig{Addr: "127.0.0.1:0", DialTimeout: time.Second, MaxIdleTimeout: 5 * time.Second,
		MaxConcurrentStreams: 100, StreamReceiveWindow: 1 << 20, ConnectionReceiveWindow: 1 << 20, MaxHeaderBytes: 1 << 20},
		transport.PeerDeps{TLS: foreign, Handler: http.NotFoundHandler()})
	if err != nil {
		t.Fatal(err)
	}
	if err := ps.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer ps.Shutdown(context.Background())
	m, _ := c.Nodes[0].Cluster().Member("node-0")
	req, _ := http.NewRequest("GET", "https://"+m.Addresses.Peer+"/x", nil)
	_, err = ps.Client().RoundTripPeer(req, transport.PeerTarget{Name: "node-0", Addr: m.Addresses.Peer})
	if err == nil {
		t.Fatal("a node with a foreign certificate forwarded into the cluster")
	}
	t.Logf("foreign node refused as expected: %v", err)
}

func TestWrongGossipKeyCannotJoin(t *testing.T) {
	skipShort(t)
	keyA := "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	keyB := "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="
	c := harness.Start(t, 2, harness.Options{NoBootstrapExpect: true, Tune: func(i int, cfg *agent.Config) {
		cfg.Encrypt = keyA
		if i == 2 {
			cfg.Encrypt = keyB
		}
	}})
	c.WaitForMembers(t)
	bad := c.Add(t)
	// The intruder gives up at its first join: retrying cannot help (it
	// reports why; the agent command then exits). Nobody let it in.
	select {
	case err := <-bad.Failed():
		if !errors.Is(err, cluster.ErrGossipKey) {
			t.Fatalf("the node with the wrong key failed with %v, want %v", err, cluster.ErrGossipKey)
		}
	case <-time.After(retry.Scale(20 * time.Second)):
		t.Fatal("the node with the wrong key has not given up")
	}
	for _, n := range c.Nodes[:2] {
		if _, ok := n.Cluster().Member(bad.Name()); ok {
			t.Fatalf("%s admitted %s, which has another gossip key", n.Name(), bad.Name())
		}
	}
	if got := len(bad.Cluster().Members()); got != 1 {
		t.Fatalf("the node with the wrong key sees %d members", got)
	}
}
