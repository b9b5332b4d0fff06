package scheduler

import (
	"testing"
	"time"
)

func zonedPeers(zones ...string) []Peer {
	ps := make([]Peer, len(zones))
	for i, z := range zones {
		ps[i] = withLoad(active(string(rune('a'+i))+"-"+z), 0, 10*time.Millisecond)
		ps[i].Zone, ps[i].Capacity = z, 10
	}
	return ps
}

func TestZoneAware(t *testing.T) {
	tests := []struct {
		name      string
		zones     []string
		inflight  []int
		tried     []string
		wantZone  bool // all choices in z1
		wantSpill bool
	}{
		{"prefers its zone", []string{"z1", "z2", "z1", "z2"}, []int{0, 0, 0, 0}, nil, true, false},
		{"prefers its zone even when busier", []string{"z1", "z2", "z1", "z2"}, []int{7, 0, 7, 0}, nil, true, false},
		{"spills when the zone is at 80%", []string{"z1", "z2", "z1", "z2"}, []int{8, 0, 8, 0}, nil, false, true},
		{"spills when its zone was tried", []string{"z1", "z2", "z1", "z2"}, []int{0, 0, 0, 0}, []string{"a-z1", "c-z1"}, false, true},
		{"no candidate in its zone", []string{"z2", "z3"}, []int{0, 0}, nil, false, false},
		{"contiguous zone in sorted snapshot", []string{"z0", "z1", "z1", "z2"}, []int{0, 0, 0, 0}, nil, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cands := zonedPeers(tt.zones...)
			for i, n := range tt.inflight {
				cands[i].Load.Inflight = n
			}
			z := NewZoneAware(NewP2C(0, seeded(3)), "z1", 0.8, 0)
			inZone, out := 0, 0
			for range 200 {
				i := z.Choose(cands, Request{Tried: tt.tried, Now: t0})
				if i < 0 || !(&Request{Tried: tt.tried}).Usable(&cands[i]) {
					t.Fatalf("bad choice %d", i)
				}
				if cands[i].Zone == "z1" {
					inZone++
				} else {
					out++
				}
			}
			if tt.wantZone && out != 0 {
				t.Fatalf("%d of 200 left the zone", out)
			}
			if !tt.wantZone && out == 0 {
				t.Fatal("never left the zone")
			}
			if got := z.Spills() > 0; got != tt.wantSpill {
				t.Fatalf("spills %d, want spill %v", z.Spills(), tt.wantSpill)
			}
		})
	}
}

func TestZoneAwareRecheck(t *testing.T) {
	cands := zonedPeers("z1", "z2")
	z := NewZoneAware(NewRandom(seeded(1)), "z1", 0.5, 10*time.Millisecond)
	now := t0
	pick := func() { z.Choose(cands, Request{Now: now}) }
	pick()
	if z.Spills() != 0 {
		t.Fatal("did not prefer its zone")
	}
	cands[0].Load.Inflight = 9 // zone now over 50%
	pick()
	if z.Spills() != 0 {
		t.Fatal("verdict recomputed before ZoneRecheck")
	}
	now = now.Add(10 * time.Millisecond)
	pick()
	if z.Spills() != 1 {
		t.Fatal("verdict not recomputed after ZoneRecheck")
	}
}
