package scheduler

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestConsistentHashIsStable(t *testing.T) {
	cands := peerList(8, 0)
	c := NewConsistentHash(1.25, 64, seeded(1))
	home := map[string]string{}
	for k := range 200 {
		key := fmt.Sprintf("user-%d", k)
		home[key] = choose(t, c, cands, Request{Key: key, Now: t0})
	}
	// Same key, same peer: again, from another instance (another ingress),
	// and with the peers listed in another order.
	shuffled := slices.Clone(cands)
	rand.New(seeded(9)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	other := NewConsistentHash(1.25, 64, nil)
	for key, want := range home {
		for _, got := range []string{
			choose(t, c, cands, Request{Key: key, Now: t0}),
			choose(t, other, cands, Request{Key: key, Now: t0}),
			choose(t, other, shuffled, Request{Key: key, Now: t0}),
		} {
			if got != want {
				t.Fatalf("key %s went to %s, then %s", key, want, got)
			}
		}
	}
	// Keys spread over all peers.
	per := map[string]int{}
	for _, p := range home {
		per[p]++
	}
	if len(per) != 8 {
		t.Fatalf("200 keys landed on only %d of 8 peers: %v", len(per), per)
	}
	// Removing a peer moves only its keys.
	gone := cands[3].Name
	fewer := slices.Delete(slices.Clone(cands), 3, 4)
	for key, was := range home {
		now := choose(t, c, fewer, Request{Key: key, Now: t0})
		if was != gone && now != was {
			t.Fatalf("key %s moved from %s to %s when %s left", key, was, now, gone)
		}
	}
}

func TestConsistentHashBoundedLoads(t *testing.T) {
	tests := []struct {
		name   string
		peers  int
		c      float64
		keys   int
		hotKey float64 // share of requests with the same key
	}{
		{"uniform keys", 10, 1.25, 50, 0},
		{"one hot key", 10, 1.25, 50, 0.5},
		{"all the same key", 5, 1.1, 1, 1},
		{"tight factor", 7, 1.01, 1000, 0.2},
		{"loose factor", 4, 3, 20, 0.3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cands := peerList(tt.peers, 0)
			c := NewConsistentHash(tt.c, 32, seeded(1))
			rng := rand.New(seeded(4))
			total := 0 // requests in flight
			for step := 0; step < 3000; step++ {
				key := "hot"
				if rng.Float64() >= tt.hotKey {
					key = fmt.Sprint("k", rng.IntN(tt.keys))
				}
				i := c.Choose(cands, Request{Key: key, Now: t0})
				cands[i].Load.Inflight++ // the request stays in flight
				total++
				bound := int(math.Ceil(tt.c * float64(total) / float64(tt.peers)))
				if n := cands[i].Load.Inflight; n > bound {
					t.Fatalf("with %d in flight %s carries %d, over ceil(c × average) = %d", total, cands[i].Name, n, bound)
				}
				// A third of the time a request finishes somewhere.
				if step%3 == 0 {
					if j := rng.IntN(len(cands)); cands[j].Load.Inflight > 0 {
						cands[j].Load.Inflight--
						total--
					}
				}
			}
		})
	}
}

func TestConsistentHashOverflowIsPredictable(t *testing.T) {
	cands := peerList(6, 0)
	c := NewConsistentHash(1.25, 16, nil)
	home := choose(t, c, cands, Request{Key: "hot", Now: t0})
	// Fill home to the bound: with everyone else idle the bound is
	// ceil(1.25 × (total+1) / 6), so home takes 1, then overflows.
	idx := slices.IndexFunc(cands, func(p Peer) bool { return p.Name == home })
	cands[idx].Load.Inflight = 1
	next := choose(t, c, cands, Request{Key: "hot", Now: t0})
	if next == home {
		t.Fatalf("home %s over its bound still chosen", home)
	}
	for range 10 {
		if got := choose(t, c, cands, Request{Key: "hot", Now: t0}); got != next {
			t.Fatalf("overflow went to %s, then %s", next, got)
		}
	}
	// A tried home is skipped the same way.
	cands[idx].Load.Inflight = 0
	if got := choose(t, c, cands, Request{Key: "hot", Tried: []string{home}, Now: t0}); got != next {
		t.Fatalf("with home tried chose %s, want the next peer %s", got, next)
	}
}

func TestConsistentHashRingCache(t *testing.T) {
	cands := peerList(20, 0)
	c := NewConsistentHash(1.25, 64, nil)
	for k := range 50 {
		c.Choose(cands, Request{Key: fmt.Sprint(k), Now: t0})
	}
	if b := c.builds.Load(); b != 1 {
		t.Fatalf("%d ring builds for one member set", b)
	}
	// A new snapshot of the same members reuses the ring.
	c.Choose(slices.Clone(cands), Request{Key: "x", Now: t0})
	if b := c.builds.Load(); b != 1 {
		t.Fatalf("rebuilt for an identical member set (%d builds)", b)
	}
	// Load changes do not rebuild it either.
	cands[3].Load.Inflight = 7
	c.Choose(cands, Request{Key: "x", Now: t0})
	if b := c.builds.Load(); b != 1 {
		t.Fatalf("rebuilt on a load change (%d builds)", b)
	}
	// A member change does.
	c.Choose(cands[:19], Request{Key: "x", Now: t0})
	if b := c.builds.Load(); b != 2 {
		t.Fatalf("%d builds after a member left, want 2", b)
	}
	// And both rings stay cached (a zone subset and the whole list).
	c.Choose(cands, Request{Key: "y", Now: t0})
	c.Choose(cands[:19], Request{Key: "y", Now: t0})
	if b := c.builds.Load(); b != 2 {
		t.Fatalf("%d builds switching between cached rings", b)
	}
}

func TestConsistentHashWithoutKeySpreads(t *testing.T) {
	cands := peerList(4, 0)
	c := NewConsistentHash(1.25, 64, seeded(2))
	seen := map[string]int{}
	for range 400 {
		seen[choose(t, c, cands, Request{Now: t0})]++
	}
	if len(seen) != 4 {
		t.Fatalf("requests without a key went to %v", seen)
	}
	if i := c.Choose(cands, Request{Key: "k", Tried: names(cands), Now: t0}); i != -1 {
		t.Fatal("chose a tried peer")
	}
}
