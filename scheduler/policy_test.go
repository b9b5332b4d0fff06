package scheduler

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func withLoad(p Peer, inflight int, lat time.Duration) Peer {
	p.Load = Load{Version: 1, Healthy: true, Inflight: inflight, LatencyEWMA: lat}
	return p
}

func TestP2CNeverPicksTheClearlyWorseOfTwo(t *testing.T) {
	good, bad := active("good"), active("bad")
	tests := []struct {
		name      string
		good, bad Peer
	}{
		{"fewer in flight", withLoad(good, 1, 10*time.Millisecond), withLoad(bad, 9, 10*time.Millisecond)},
		{"lower latency", withLoad(good, 3, 5*time.Millisecond), withLoad(bad, 3, 50*time.Millisecond)},
		{"more capacity", func() Peer { p := withLoad(good, 4, 10*time.Millisecond); p.Capacity = 100; return p }(),
			func() Peer { p := withLoad(bad, 4, 10*time.Millisecond); p.Capacity = 10; return p }()},
		{"known latency beats a busy unknown", withLoad(good, 0, time.Millisecond), withLoad(bad, 1, 0)},
		{"an idle unknown peer is probed", withLoad(good, 0, 0), withLoad(bad, 0, time.Millisecond)},
		{"an idle unknown peer beats a busy one", withLoad(good, 0, 0), withLoad(bad, 5, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewP2C(10*time.Millisecond, seeded(7))
			for _, cands := range [][]Peer{{tt.good, tt.bad}, {tt.bad, tt.good}} {
				for range 500 {
					if got := choose(t, p, cands, Request{Now: t0}); got != "good" {
						t.Fatalf("chose %s", got)
					}
				}
			}
		})
	}
}

func TestP2COverMany(t *testing.T) {
	// Costs rise with the index: p000 best, p009 worst.
	cands := peerList(10, 0)
	for i := range cands {
		cands[i] = withLoad(cands[i], i, 10*time.Millisecond)
	}
	p := NewP2C(10*time.Millisecond, seeded(3))
	counts := map[string]int{}
	const n = 45000
	for range n {
		counts[choose(t, p, cands, Request{Now: t0})]++
	}
	if counts["p009"] != 0 {
		t.Fatalf("worst candidate chosen %d times", counts["p009"])
	}
	// Candidate i wins when drawn with a worse one: P = 2(n-1-i)/(n(n-1)).
	for i := range 9 {
		want := float64(n) * 2 * float64(9-i) / 90
		if got := float64(counts[fmt.Sprintf("p%03d", i)]); math.Abs(got-want) > 4*math.Sqrt(want) {
			t.Errorf("p%03d chosen %v times, want about %v", i, got, want)
		}
	}
}

func TestP2CSkipsUnusable(t *testing.T) {
	cands := peerList(50, 0)
	cands[10].State = StateDraining
	var tried []string
	for i := range cands {
		if i != 10 && i != 33 && i != 41 {
			tried = append(tried, cands[i].Name)
		}
	}
	p := NewP2C(0, seeded(5))
	seen := map[string]int{}
	for range 300 {
		seen[choose(t, p, cands, Request{Tried: tried, Now: t0})]++
	}
	if len(seen) != 2 || seen["p033"] == 0 || seen["p041"] == 0 {
		t.Fatalf("chose %v, want only p033 and p041", seen)
	}
	if i := p.Choose(cands, Request{Tried: append(tried, "p033", "p041"), Now: t0}); i != -1 {
		t.Fatalf("chose %d with nothing usable", i)
	}
	if i := p.Choose(nil, Request{}); i != -1 {
		t.Fatal("chose from nothing")
	}
}

func TestLocalFirst(t *testing.T) {
	local := active("self")
	local.Local, local.Addr, local.Capacity = true, "", 4
	remote := withLoad(active("remote"), 0, time.Microsecond) // far cheaper than local
	tests := []struct {
		name      string
		inflight  int
		capacity  int
		tried     []string
		wantLocal bool
	}{
		{"idle local is chosen", 0, 4, nil, true},
		{"local below capacity is chosen", 3, 4, nil, true},
		{"local at capacity competes and loses", 4, 4, nil, false},
		{"local of unknown capacity competes", 0, 0, nil, false},
		{"local already tried", 0, 4, []string{"self"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := withLoad(local, tt.inflight, 50*time.Millisecond)
			l.Capacity = tt.capacity
			p := NewLocalFirst(NewP2C(0, seeded(1)))
			for range 50 {
				got := choose(t, p, []Peer{remote, l}, Request{Tried: tt.tried, Now: t0})
				if (got == "self") != tt.wantLocal {
					t.Fatalf("chose %s", got)
				}
			}
		})
	}
}

func TestLeastInflight(t *testing.T) {
	tests := []struct {
		name     string
		inflight []int
		capacity []int
		tried    []string
		want     []string // any of these
	}{
		{"the minimum", []int{5, 2, 7, 3}, nil, nil, []string{"p001"}},
		{"ties are shared", []int{1, 4, 1, 4}, nil, nil, []string{"p000", "p002"}},
		{"tried minimum is skipped", []int{5, 2, 7, 3}, nil, []string{"p001"}, []string{"p003"}},
		{"relative to capacity", []int{10, 4}, []int{100, 10}, nil, []string{"p000"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cands := peerList(len(tt.inflight), 0)
			for i, n := range tt.inflight {
				cands[i] = withLoad(cands[i], n, 0)
				if tt.capacity != nil {
					cands[i].Capacity = tt.capacity[i]
				}
			}
			p := NewLeastInflight(seeded(2))
			seen := map[string]int{}
			for range 200 {
				seen[choose(t, p, cands, Request{Tried: tt.tried, Now: t0})]++
			}
			for _, w := range tt.want {
				if seen[w] == 0 {
					t.Fatalf("chose %v, want each of %v", seen, tt.want)
				}
			}
			if len(seen) != len(tt.want) {
				t.Fatalf("chose %v, want only %v", seen, tt.want)
			}
		})
	}
}

func TestWeightedRoundRobinIsSmooth(t *testing.T) {
	cands := []Peer{active("a"), active("b"), active("c")}
	cands[0].Capacity, cands[1].Capacity, cands[2].Capacity = 5, 1, 1
	w := NewWeightedRoundRobin()
	var seq []string
	for range 14 {
		seq = append(seq, choose(t, w, cands, Request{Now: t0}))
	}
	// nginx's example sequence for weights 5, 1, 1, twice.
	if got, want := strings.Join(seq, " "), "a a b a c a a a a b a c a a"; got != want {
		t.Fatalf("sequence %q, want %q", got, want)
	}
}

func TestWeightedRoundRobinDistribution(t *testing.T) {
	weights := []int{3, 2, 1, 4, 0} // 0: unknown capacity, weight 1
	cands := peerList(len(weights), 0)
	total := 0
	for i, wt := range weights {
		cands[i].Capacity = wt
		total += max(wt, 1)
	}
	w := NewWeightedRoundRobin()
	for cycle := range 3 {
		counts := map[string]int{}
		for range total {
			counts[choose(t, w, cands, Request{Now: t0})]++
		}
		for i, wt := range weights {
			if counts[cands[i].Name] != max(wt, 1) {
				t.Fatalf("cycle %d: counts %v, want the weights %v", cycle, counts, weights)
			}
		}
	}
	// The same members in a new slice keep the schedule going; an
	// unusable candidate sits out.
	again := append([]Peer(nil), cands...)
	counts := map[string]int{}
	for range 100 {
		counts[choose(t, w, again, Request{Tried: []string{"p003"}, Now: t0})]++
	}
	if counts["p003"] != 0 || counts["p000"] < 40 {
		t.Fatalf("with p003 tried: %v", counts)
	}
}

func TestRandomIsUniformOverUsable(t *testing.T) {
	cands := peerList(10, 0)
	cands[4].Serving = false
	tried := []string{"p007"}
	p := NewRandom(seeded(11))
	counts := map[string]int{}
	const n = 80000
	for range n {
		counts[choose(t, p, cands, Request{Tried: tried, Now: t0})]++
	}
	if counts["p004"] != 0 || counts["p007"] != 0 || len(counts) != 8 {
		t.Fatalf("counts %v", counts)
	}
	for name, c := range counts {
		if want := n / 8.0; math.Abs(float64(c)-want) > 4*math.Sqrt(want) {
			t.Errorf("%s chosen %d times, want about %v", name, c, want)
		}
	}
}

func TestRoundRobin(t *testing.T) {
	cands := peerList(3, 0)
	var rr RoundRobin
	var seq []string
	for range 6 {
		seq = append(seq, choose(t, &rr, cands, Request{Tried: []string{"p001"}}))
	}
	if got := strings.Join(seq, " "); got != "p000 p002 p002 p000 p002 p002" {
		t.Fatalf("sequence %q", got)
	}
}

func TestNewPolicy(t *testing.T) {
	cfg := DefaultPolicyConfig()
	for _, name := range PolicyNames() {
		t.Run(name, func(t *testing.T) {
			p, err := NewPolicy(name, cfg, seeded(1))
			if err != nil {
				t.Fatal(err)
			}
			cands := peerList(5, 10)
			choose(t, p, cands, Request{Key: "k", Now: t0})
		})
	}
	if PolicyNames()[0] != DefaultPolicy {
		t.Fatal("the default policy is not listed first")
	}
	if _, err := NewPolicy("fastest", cfg, nil); err == nil || !strings.Contains(err.Error(), "p2c-ewma") {
		t.Fatalf("unknown policy: %v", err)
	}
	bad := cfg
	bad.LoadFactor = 1
	if _, err := NewPolicy(PolicyConsistentHash, bad, nil); err == nil {
		t.Fatal("invalid config accepted")
	}
	zoned := cfg
	zoned.Zone = "z1"
	p, _ := NewPolicy(PolicyP2CEWMA, zoned, nil)
	if lf, ok := p.(*LocalFirst); !ok {
		t.Fatalf("p2c-ewma is %T, want *LocalFirst", p)
	} else if _, ok := lf.inner.(*ZoneAware); !ok {
		t.Fatalf("zoned p2c-ewma wraps %T, want *ZoneAware", lf.inner)
	}
	if p, _ := NewPolicy(PolicyRandom, zoned, nil); p == nil {
		t.Fatal("nil policy")
	} else if _, ok := p.(*ZoneAware); !ok {
		t.Fatalf("zoned random is %T", p)
	}
}
