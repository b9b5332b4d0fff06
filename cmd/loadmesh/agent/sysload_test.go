package agent

import (
	"runtime"
	"testing"
)

func TestSysLoadReadsSaneFigures(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads Linux /proc")
	}
	s := newSysLoad()
	// Burn a little CPU so the second sample has something to see.
	x := 0
	for i := range 20_000_000 {
		x += i % 7
	}
	_ = x
	cpu, mem := s.sample()
	if cpu < 0 || cpu > 1 || mem <= 0 || mem > 1 {
		t.Fatalf("cpu %.3f mem %.3f: want cpu in [0,1] and mem in (0,1]", cpu, mem)
	}
}
