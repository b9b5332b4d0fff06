package scheduler

import (
	"errors"
	"sync"
	"testing"
	"time"
)

func TestTracker(t *testing.T) {
	clk := newFakeClock()
	cfg := DefaultTrackerConfig()
	tr, err := NewTracker(cfg, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	tr.Begin("a")
	tr.Begin("a")
	tr.Begin("b")
	if tr.Inflight("a") != 2 || tr.Inflight("b") != 1 || tr.Inflight("zz") != 0 {
		t.Fatalf("in flight a=%d b=%d", tr.Inflight("a"), tr.Inflight("b"))
	}
	tr.End("a", 20*time.Millisecond, nil)
	if d, fresh, ok := tr.Latency("a"); !ok || !fresh || d != 20*time.Millisecond {
		t.Fatalf("latency %v fresh %v ok %v", d, fresh, ok)
	}
	// A failure that returns fast must not make the peer look faster.
	tr.End("a", time.Millisecond, errors.New("reset"))
	if d, _, _ := tr.Latency("a"); d != 20*time.Millisecond {
		t.Fatalf("fast failure lowered the latency to %v", d)
	}
	if ps := tr.Peer("a"); ps.Inflight() != 0 || ps.Requests() != 2 || ps.Failures() != 1 {
		t.Fatalf("a: in flight %d, requests %d, failures %d", ps.Inflight(), ps.Requests(), ps.Failures())
	}
	clk.Advance(cfg.FreshFor + time.Millisecond)
	if _, fresh, ok := tr.Latency("a"); fresh || !ok {
		t.Fatalf("estimate still fresh after FreshFor (fresh %v ok %v)", fresh, ok)
	}
	if _, _, ok := tr.Latency("b"); ok {
		t.Fatal("latency for a peer without samples")
	}
	tr.Forget("a")
	if tr.Inflight("a") != 0 {
		t.Fatal("Forget kept a")
	}
}

func TestTrackerConcurrent(t *testing.T) {
	tr, _ := NewTracker(DefaultTrackerConfig(), nil)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				name := []string{"a", "b", "c"}[i%3]
				tr.Begin(name)
				tr.End(name, time.Millisecond, nil)
			}
		}()
	}
	wg.Wait()
	for _, n := range []string{"a", "b", "c"} {
		if tr.Inflight(n) != 0 {
			t.Fatalf("%s: %d left in flight", n, tr.Inflight(n))
		}
	}
}

// The merged figures are what policies compare: gossip and local figures
// combined by Peer.Inflight and Peer.Latency.
func TestPeerMergesGossipAndLocalFigures(t *testing.T) {
	s, clk := testScheduler(t, func(c *Config) { c.Breaker.CapacityFactor = 0 })
	gossiped := Load{Version: 1, Healthy: true, Inflight: 5, LatencyEWMA: 40 * time.Millisecond}
	tests := []struct {
		name         string
		load         Load
		loadAge      time.Duration
		local        int           // requests this node has in flight to it
		sample       time.Duration // latency this node measured (0: none)
		sampleAge    time.Duration
		wantInflight int
		wantLatency  time.Duration
		wantKnown    bool
	}{
		{"nothing known", Load{}, 0, 0, 0, 0, 0, 0, false},
		{"gossip only", gossiped, time.Second, 0, 0, 0, 5, 40 * time.Millisecond, true},
		{"local in flight above gossip", gossiped, time.Second, 8, 0, 0, 8, 40 * time.Millisecond, true},
		{"gossip in flight above local", gossiped, time.Second, 2, 0, 0, 5, 40 * time.Millisecond, true},
		{"stale gossip in flight ignored", gossiped, time.Minute, 2, 0, 0, 2, 40 * time.Millisecond, true},
		{"fresh local latency wins", gossiped, time.Second, 0, 10 * time.Millisecond, time.Second, 5, 9048 * time.Microsecond, true},
		{"stale local latency loses to gossip", gossiped, time.Second, 0, 10 * time.Millisecond, time.Minute, 5, 40 * time.Millisecond, true},
		{"stale local latency beats nothing", Load{}, 0, 0, 10 * time.Millisecond, 10 * time.Second, 0, 3679 * time.Microsecond, true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := string(rune('a' + i))
			p := active(name)
			p.Load, p.LoadAge = tt.load, tt.loadAge
			stats := s.tracker.Peer(name)
			if tt.sample > 0 {
				stats.Begin()
				stats.End(tt.sample, nil)
				clk.Advance(tt.sampleAge)
			}
			for range tt.local {
				stats.Begin()
			}
			s.SetPeers([]Peer{p})
			got := s.snap.Load().all[0]
			if n := got.Inflight(); n != tt.wantInflight {
				t.Errorf("Inflight() = %d, want %d", n, tt.wantInflight)
			}
			d, ok := got.Latency(clk.Now())
			if ok != tt.wantKnown || !within(d, tt.wantLatency, 0.001) {
				t.Errorf("Latency() = %v, %v; want %v, %v", d, ok, tt.wantLatency, tt.wantKnown)
			}
		})
	}
}

func TestBreaker(t *testing.T) {
	b := NewBreaker(2)
	if !b.Acquire() || !b.Acquire() {
		t.Fatal("could not take the first two slots")
	}
	if !b.Full() || b.Acquire() {
		t.Fatal("third slot granted over the cap")
	}
	if b.Rejected() != 1 || b.Inflight() != 2 {
		t.Fatalf("rejected %d in flight %d", b.Rejected(), b.Inflight())
	}
	b.Release()
	if b.Full() || !b.Acquire() {
		t.Fatal("slot not returned")
	}
	b.SetMax(0)
	for range 100 {
		if !b.Acquire() {
			t.Fatal("no cap should never refuse")
		}
	}
	if b.Max() != 0 || b.Full() {
		t.Fatal("uncapped breaker reports full")
	}
	// Too many releases do not drive the count below zero.
	nb := NewBreaker(1)
	nb.Release()
	if nb.Inflight() != 0 || !nb.Acquire() || nb.Acquire() {
		t.Fatalf("after a stray Release: in flight %d", nb.Inflight())
	}
}

func TestBreakerNeverExceedsCapConcurrently(t *testing.T) {
	const limit = 5
	b := NewBreaker(limit)
	var wg sync.WaitGroup
	var mu sync.Mutex
	peak := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2000 {
				if b.Acquire() {
					n := b.Inflight()
					mu.Lock()
					peak = max(peak, n)
					mu.Unlock()
					b.Release()
				}
			}
		}()
	}
	wg.Wait()
	if peak > limit || b.Inflight() != 0 {
		t.Fatalf("peak %d over cap %d, or %d left in flight", peak, limit, b.Inflight())
	}
}
