package agent

import (
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/store"
)

// TestCostAccess: the cost report is a read, open on loopback like the
// other reads.
func TestCostAccess(t *testing.T) {
	if got, want := accessFor("GET", "/v1/cost"), (access{need: store.RoleRead, loopbackOpen: true}); got != want {
		t.Fatalf("accessFor(GET /v1/cost) = %+v, want %+v", got, want)
	}
}

func TestCostIntervals(t *testing.T) {
	h := &costHook{a: &Agent{cfg: Config{}}}
	if s, r := h.intervals(); s != defaultCostInterval || r != defaultCostRecordEvery {
		t.Fatalf("defaults %s %s", s, r)
	}
	h.a.cfg.CostInterval, h.a.cfg.CostRecordEvery = time.Second, time.Millisecond
	if s, r := h.intervals(); s != time.Second || r != time.Second {
		t.Fatalf("a record period below the sample interval: %s %s, want both 1s", s, r)
	}
}
