package cluster

import (
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/scheduler"
)

// A drain ends on the draining node's own version order and the leader's
// clock, whatever the node's clock says: versions far ahead of or behind
// the leader's time change nothing.
func TestDrainMarkIgnoresTheNodesClock(t *testing.T) {
	leaderNow := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for _, skew := range []time.Duration{0, 90 * time.Second, -90 * time.Second, 24 * time.Hour} {
		v := uint64(leaderNow.Add(skew).UnixMilli())
		mark := drainMark{version: v, at: leaderNow}
		cases := []struct {
			load *scheduler.Load
			at   time.Duration
			want bool
			what string
		}{
			{&scheduler.Load{Version: v, Inflight: 0}, 2 * time.Second, false, "the summary noted at the start"},
			{&scheduler.Load{Version: v + 100, Inflight: 0}, 500 * time.Millisecond, false, "a newer summary before the settle time"},
			{&scheduler.Load{Version: v + 100, Inflight: 3}, 2 * time.Second, false, "requests still in flight"},
			{nil, 2 * time.Second, false, "no summary"},
			{&scheduler.Load{Version: v + 100, Inflight: 0}, 2 * time.Second, true, "a newer idle summary after the settle time"},
		}
		for _, c := range cases {
			if got := mark.drained(c.load, leaderNow.Add(c.at)); got != c.want {
				t.Errorf("skew %s, %s: drained %v, want %v", skew, c.what, got, c.want)
			}
		}
	}
}
