//go:build linux

package netns

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/test/retry"
)

// loadRate is the steady load, GETs per second, round-robin over the
// target hosts' ingresses, open loop (a slow answer does not slow the
// sender).
const loadRate = 40

// loadGen sends the steady load from the test's namespace over the LAN
// and records every request. It is bounded in count and time.
type loadGen struct {
	maxTime time.Duration
	timeout time.Duration
	// backendOf maps host name to the name its backend answers with.
	backendOf map[string]string
	client    *http.Client

	mu      sync.Mutex
	targets []*host
	next    int
	samples []sample

	seq    atomic.Int64
	cancel context.CancelFunc
	wg     sync.WaitGroup
	done   chan struct{}
}

// sample is one request as the client saw it.
type sample struct {
	start    time.Time
	latency  time.Duration
	target   string // host whose ingress took the request
	servedBy string // X-Loadmesh-Node
	status   int
	err      string // empty on success
}

// startLoad sends loadRate GETs per second to the targets' ingresses for
// at most maxTime (loadRate × maxTime requests at most).
func startLoad(t *testing.T, b *bed, targets []*host, maxTime time.Duration) *loadGen {
	t.Helper()
	g := &loadGen{
		maxTime: maxTime, timeout: retry.Scale(10 * time.Second),
		backendOf: map[string]string{},
		client: &http.Client{Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 32,
			IdleConnTimeout:     30 * time.Second,
			DisableCompression:  true,
		}},
		targets: slices.Clone(targets),
		done:    make(chan struct{}),
	}
	for _, h := range b.hosts {
		g.backendOf[h.name] = h.backendName
	}
	ctx, cancel := context.WithTimeout(context.Background(), maxTime)
	g.cancel = cancel
	go g.run(ctx, loadRate*int(maxTime/time.Second))
	t.Cleanup(g.stop)
	return g
}

func (g *loadGen) run(ctx context.Context, maxCount int) {
	defer close(g.done)
	tick := time.NewTicker(time.Second / loadRate)
	defer tick.Stop()
	for range maxCount {
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

// setTargets changes the hosts whose ingresses get the next requests.
func (g *loadGen) setTargets(hs []*host) {
	g.mu.Lock()
	g.targets = slices.Clone(hs)
	g.mu.Unlock()
}

func (g *loadGen) pick() *host {
	g.mu.Lock()
	defer g.mu.Unlock()
	h := g.targets[g.next%len(g.targets)]
	g.next++
	return h
}

func (g *loadGen) one(runCtx context.Context) {
	h := g.pick()
	s := sample{start: time.Now(), target: h.name}
	// The request must end even when the load stops meanwhile: only its
	// own timeout cuts it short.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(runCtx), g.timeout)
	defer cancel()
	if err := g.get(ctx, h, &s); err != nil {
		s.err = err.Error()
	}
	s.latency = time.Since(s.start)
	g.mu.Lock()
	g.samples = append(g.samples, s)
	g.mu.Unlock()
}

func (g *loadGen) get(ctx context.Context, h *host, s *sample) error {
	u := fmt.Sprintf("http://%s/hosts/%d", h.http, g.seq.Add(1))
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
	if want, ok := g.backendOf[s.servedBy]; !ok || resp.Header.Get("X-Backend") != want {
		return fmt.Errorf("GET %s: X-Loadmesh-Node %q answered through backend %q", u, s.servedBy, resp.Header.Get("X-Backend"))
	}
	return nil
}

// snapshot returns a copy of the samples so far.
func (g *loadGen) snapshot() []sample {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.samples)
}

// waitAnswered waits until n more requests have been answered (either
// way) than when it was called: the load has been running for a while.
func (g *loadGen) waitAnswered(t *testing.T, n int) {
	t.Helper()
	g.mu.Lock()
	want := len(g.samples) + n
	g.mu.Unlock()
	retry.RunFor(t, time.Duration(n/loadRate+10)*time.Second, func(r *retry.R) {
		g.mu.Lock()
		got := len(g.samples)
		g.mu.Unlock()
		if got < want {
			r.Fatalf("%d requests answered, waiting for %d", got, want)
		}
	})
}

// figures summarises samples.
type figures struct {
	sent, failed, forwarded int
	p50, p99, max           time.Duration
	failures                []sample
}

func summarise(samples []sample) figures {
	var f figures
	var lat []time.Duration
	for _, s := range samples {
		f.sent++
		lat = append(lat, s.latency)
		if s.err != "" {
			f.failed++
			f.failures = append(f.failures, s)
		} else if s.servedBy != s.target {
			f.forwarded++
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

func (f figures) String() string {
	return fmt.Sprintf("%d requests sent, %d failed, %d forwarded to another host; latency p50 %s, p99 %s, max %s",
		f.sent, f.failed, f.forwarded, f.p50.Round(time.Millisecond), f.p99.Round(time.Millisecond), f.max.Round(time.Millisecond))
}

// between returns the samples started in [from, to).
func between(samples []sample, from, to time.Time) []sample {
	var out []sample
	for _, s := range samples {
		if !s.start.Before(from) && s.start.Before(to) {
			out = append(out, s)
		}
	}
	return out
}
