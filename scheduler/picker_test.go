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
