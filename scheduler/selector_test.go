package scheduler

import (
	"errors"
	"testing"
)

type fixedPeers []Peer

func (f fixedPeers) Peers() []Peer { return append([]Peer(nil), f...) }

func TestSelectorSkipsIneligibleAndExcluded(t *testing.T) {
	src := fixedPeers{
		{Name: "a", Addr: "a:1", State: StateActive, Serving: true},
		{Name: "b", Addr: "b:1", State: StateStandby, Serving: true},
		{Name: "c", Addr: "c:1", State: StateActive, Serving: false},
		{Name: "d", Addr: "d:1", State: StateActive, Serving: true},
		{Name: "e", Addr: "", State: StateActive, Serving: true},
		{Name: "f", Addr: "f:1", State: StateActive, Serving: true, Load: Load{Version: 3, Healthy: false}},
	}
	s := &Selector{Source: src, Policy: &RoundRobin{}}
	seen := map[string]int{}
	for range 100 {
		p, err := s.Pick(nil)
		if err != nil {
			t.Fatal(err)
		}
		seen[p.Name]++
	}
	if len(seen) != 2 || seen["a"] != 50 || seen["d"] != 50 {
		t.Fatalf("round robin over eligible peers gave %v, want a and d 50 each", seen)
	}
	for range 10 {
		if p, _ := s.Pick([]string{"a"}); p.Name != "d" {
			t.Fatalf("picked %s with a excluded", p.Name)
		}
	}
	if _, err := s.Pick([]string{"a", "d"}); !errors.Is(err, ErrNoPeers) {
		t.Fatalf("err %v, want ErrNoPeers", err)
	}
}

func TestPeerEligible(t *testing.T) {
	base := active("x")
	tests := []struct {
		name string
		mod  func(*Peer)
		want bool
	}{
		{"active serving with address", func(*Peer) {}, true},
		{"standby", func(p *Peer) { p.State = StateStandby }, false},
		{"draining", func(p *Peer) { p.State = StateDraining }, false},
		{"cordoned", func(p *Peer) { p.State = StateCordoned }, false},
		{"not serving", func(p *Peer) { p.Serving = false }, false},
		{"no address", func(p *Peer) { p.Addr = "" }, false},
		{"local without address", func(p *Peer) { p.Addr, p.Local = "", true }, true},
		{"no load gossiped yet", func(p *Peer) { p.Load = Load{} }, true},
		{"gossiped healthy", func(p *Peer) { p.Load = Load{Version: 1, Healthy: true} }, true},
		{"gossiped unhealthy", func(p *Peer) { p.Load = Load{Version: 1} }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := base
			tt.mod(&p)
			if got := p.Eligible(); got != tt.want {
				t.Fatalf("Eligible() = %v, want %v", got, tt.want)
			}
		})
	}
}
