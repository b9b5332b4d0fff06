package scheduler

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// fakeClock is a manually advanced clock, safe for concurrent use.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// seeded returns a deterministic random source.
func seeded(seed uint64) rand.Source { return rand.NewPCG(seed, seed^0x5eed) }

// active returns an eligible remote peer.
func active(name string) Peer {
	return Peer{Name: name, Addr: name + ":7443", State: StateActive, Serving: true}
}

// peerList returns n eligible peers named p000, p001, … with capacity c.
func peerList(n, capacity int) []Peer {
	ps := make([]Peer, n)
	for i := range ps {
		ps[i] = active(fmt.Sprintf("p%03d", i))
		ps[i].Capacity = capacity
	}
	return ps
}

func names(ps []Peer) []string {
	out := make([]string, len(ps))
	for i := range ps {
		out[i] = ps[i].Name
	}
	return out
}

// testScheduler returns a scheduler on a fake clock with cfg adjusted by
// mod.
func testScheduler(t testing.TB, mod func(*Config)) (*Scheduler, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	cfg := DefaultConfig()
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg, Deps{Now: clk.Now, Rand: LockedSource(seeded(1))})
	if err != nil {
		t.Fatal(err)
	}
	return s, clk
}

func choose(t *testing.T, p Policy, cands []Peer, r Request) string {
	t.Helper()
	i := p.Choose(cands, r)
	if i < 0 {
		t.Fatalf("no choice among %v", names(cands))
	}
	if !r.Usable(&cands[i]) {
		t.Fatalf("chose unusable %s", cands[i].Name)
	}
	return cands[i].Name
}
