//go:build linux

package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/test/retry"
)

// loadGen sends a steady stream of GETs, round-robin over the ingress
// ports that are currently targets, and records every request. It is
// bounded in rate, count and time.
//
// A client of the mesh knows several ingress addresses. When a connection
// to one is refused (the request never left the client: nothing listens
// there), it tries the next; such a request is "redirected", not failed.
// Every other error, and every answer other than a 200 from a node's own
// backend, is a failure.
type loadGen struct {
	rate     int           // requests per second
	maxCount int           // requests at most
	maxTime  time.Duration // run time at most
	timeout  time.Duration // per request
	// backendOf maps node name to the name its backend answers with.
	backendOf map[string]string

	client *http.Client
	mu     sync.Mutex
	// targets are the ingress addresses requests go to, by node name.
	targets map[string]string
	order   []string
	next    int
	// inflight counts requests in flight per target node.
	inflight map[string]int
	samples  []sample

	seq    atomic.Int64
	cancel context.CancelFunc
	wg     sync.WaitGroup
	done   chan struct{}
}

// sample is one request as the client saw it.
type sample struct {
	start    time.Time
	latency  time.Duration
	target   string // node whose ingress took the request
	servedBy string // X-Loadmesh-Node
	status   int
	err      string // empty on success
	// redirected counts refused connections before the request got in.
	redirected int
}

// startLoad begins sending rate GETs per second to the ingress ports of
// nodes, for at most maxTime.
func startLoad(t *testing.T, c *testCluster, rate int, maxTime time.Duration) *loadGen {
	t.Helper()
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	}
	g := &loadGen{
		rate: rate, maxTime: maxTime, maxCount: rate * int(maxTime/time.Second),
		timeout:   retry.Scale(15 * time.Second),
		backendOf: map[string]string{},
		client:    &http.Client{Transport: tr},
		targets:   map[string]string{},
		inflight:  map[string]int{},
		done:      make(chan struct{}),
	}
	for _, n := range c.nodes {
		g.backendOf[n.name] = n.backendName
		g.targets[n.name] = n.http
		g.order = append(g.order, n.name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), maxTime)
	g.cancel = cancel
	go g.run(ctx)
	t.Cleanup(g.stop)
	return g
}

func (g *loadGen) run(ctx context.Context) {
	defer close(g.done)
	tick := time.NewTicker(time.Second / time.Duration(g.rate))
	defer tick.Stop()
	for range g.maxCount {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			g.one(ctx)
		}()
	}
}

// stop ends the load and waits for the requests in flight. Idempotent.
func (g *loadGen) stop() {
	g.cancel()
	<-g.done
	g.wg.Wait()
	g.client.CloseIdleConnections()
}

// pick returns the next target in round-robin order, skipping names in
// skip; ok is false when none is left.
func (g *loadGen) pick(skip []string) (name, addr string, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for range g.order {
		name := g.order[g.next%len(g.order)]
		g.next++
		if addr, ok := g.targets[name]; ok && !slices.Contains(skip, name) {
			g.inflight[name]++
			return name, addr, true
		}
	}
	return "", "", false
}

func (g *loadGen) release(name string) {
	g.mu.Lock()
	g.inflight[name]--
	g.mu.Unlock()
}

func (g *loadGen) one(runCtx context.Context) {
	s := sample{start: time.Now()}
	defer func() {
		s.latency = time.Since(s.start)
		g.mu.Lock()
		g.samples = append(g.samples, s)
		g.mu.Unlock()
	}()
	// The request must end even when the load is stopped meanwhile: only
	// its own timeout cuts it short.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(runCtx), g.timeout)
	defer cancel()
	var tried []string
	for {
		name, addr, ok := g.pick(tried)
		if !ok {
			s.err = fmt.Sprintf("every ingress refused the connection (%v)", tried)
			return
		}
		s.target = name
		err := g.get(ctx, addr, &s)
		g.release(name)
		if err == nil {
			return
		}
		if isRefused(err) {
			tried = append(tried, name)
			s.redirected++
			continue
		}
		s.err = err.Error()
		return
	}
}

func (g *loadGen) get(ctx context.Context, addr string, s *sample) error {
	u := fmt.Sprintf("http://%s/chaos/%d", addr, g.seq.Add(1))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	s.status = resp.StatusCode
	s.servedBy = resp.Header.Get("X-Loadmesh-Node")
	switch {
	case err != nil:
		return fmt.Errorf("GET %s: %s, reading the body: %w", u, resp.Status, err)
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("GET %s: %s: %s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	want, ok := g.backendOf[s.servedBy]
	switch {
	case !ok:
		return fmt.Errorf("GET %s: X-Loadmesh-Node %q is no node of the cluster", u, s.servedBy)
	case resp.Header.Get("X-Backend") != want:
		return fmt.Errorf("GET %s: node %s answered through backend %q, want %q", u, s.servedBy, resp.Header.Get("X-Backend"), want)
	}
	return nil
}

// isRefused reports whether err means the connection was refused while it
// was being set up: nothing listened (ECONNREFUSED), or a listener closing
// at that moment reset it (ECONNRESET from connect). Either way the request
// cannot have reached the node, and any client may send it elsewhere.
func isRefused(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial" && (errors.Is(err, errConnRefused) || errors.Is(err, syscall.ECONNRESET))
}

var errConnRefused = syscall.ECONNREFUSED

// exclude stops sending new requests to node name and waits until the
// requests in flight to its ingress have ended.
func (g *loadGen) exclude(t *testing.T, name string) {
	t.Helper()
	g.mu.Lock()
	delete(g.targets, name)
	g.mu.Unlock()
	retry.Run(t, func(r *retry.R) {
		g.mu.Lock()
		n := g.inflight[name]
		g.mu.Unlock()
		if n > 0 {
			r.Fatalf("%d requests still in flight to %s", n, name)
		}
	})
}

// include sends requests to node n's ingress again.
func (g *loadGen) include(n *node) {
	g.mu.Lock()
	g.targets[n.name] = n.http
	g.mu.Unlock()
}

// snapshot returns a copy of the samples so far.
func (g *loadGen) snapshot() []sample {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.samples)
}

// figures summarises samples: the whole run, and the requests started in
// [from, to) for the latency during a fault.
type figures struct {
	sent, failed, redirected int
	forwarded                int // served by another node than the one whose ingress took it
	faultSent                int
	p50, p99, max            time.Duration // of requests started during the fault
	failures                 []sample
}

func summarise(samples []sample, from, to time.Time) figures {
	var f figures
	var lat []time.Duration
	for _, s := range samples {
		f.sent++
		if s.redirected > 0 {
			f.redirected++
		}
		if s.err != "" {
			f.failed++
			f.failures = append(f.failures, s)
		} else if s.servedBy != s.target {
			f.forwarded++
		}
		if !s.start.Before(from) && s.start.Before(to) {
			f.faultSent++
			lat = append(lat, s.latency)
		}
	}
	slices.SortFunc(f.failures, func(a, b sample) int { return a.start.Compare(b.start) })
	slices.Sort(lat)
	if len(lat) > 0 {
		f.p50 = lat[len(lat)*50/100]
		f.p99 = lat[min(len(lat)-1, len(lat)*99/100)]
		f.max = lat[len(lat)-1]
	}
	return f
}
