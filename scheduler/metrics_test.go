package scheduler

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	clk := newFakeClock()
	s, err := New(DefaultConfig(), Deps{Now: clk.Now, Rand: seeded(1), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	s.SetPeers([]Peer{active("a"), active("b")})
	for range 5 {
		tk, _ := s.Pick("", []string{"a"})
		tk.Done(Result{Status: 502})
	}
	tk, _ := s.Pick("", nil)
	tk.Done(Result{Status: 200})
	want := `
# HELP loadmesh_scheduler_outlier_ejections_total Peers ejected by outlier detection.
# TYPE loadmesh_scheduler_outlier_ejections_total counter
loadmesh_scheduler_outlier_ejections_total 1
# HELP loadmesh_scheduler_peer_ejected 1 while a peer is ejected by outlier detection.
# TYPE loadmesh_scheduler_peer_ejected gauge
loadmesh_scheduler_peer_ejected{peer="a"} 0
loadmesh_scheduler_peer_ejected{peer="b"} 1
# HELP loadmesh_scheduler_selections_total Peer selections by result: local, peer, none (no usable peer), saturated (all at their in-flight cap), budget (retry budget exhausted).
# TYPE loadmesh_scheduler_selections_total counter
loadmesh_scheduler_selections_total{result="budget"} 0
loadmesh_scheduler_selections_total{result="local"} 0
loadmesh_scheduler_selections_total{result="none"} 0
loadmesh_scheduler_selections_total{result="peer"} 6
loadmesh_scheduler_selections_total{result="saturated"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"loadmesh_scheduler_outlier_ejections_total", "loadmesh_scheduler_peer_ejected", "loadmesh_scheduler_selections_total"); err != nil {
		t.Fatal(err)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) != 0 {
		t.Fatalf("lint: %v %+v", err, problems)
	}
	// Registration is per registry: a second scheduler needs its own.
	if _, err := New(DefaultConfig(), Deps{Registerer: reg}); err == nil {
		t.Fatal("duplicate registration accepted")
	}
}
