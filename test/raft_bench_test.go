package test

import (
	"fmt"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/store"
	"github.com/loadmesh/loadmesh/test/harness"
	"github.com/loadmesh/loadmesh/test/retry"
)

// BenchmarkPlanApply measures a plan change (a node state change, as
// `loadmesh cordon` makes) applied through Raft on the leader of an
// in-process cluster of 1, 3 and 5 voters on loopback, from Apply to the
// FSM having applied it on the leader (a quorum has written it to disk).
// Sequential: one write at a time, as the API's callers and the
// autoscaler issue them.
func BenchmarkPlanApply(b *testing.B) {
	for _, n := range []int{1, 3, 5} {
		b.Run(fmt.Sprintf("voters=%d", n), func(b *testing.B) {
			c := harness.Start(b, n, harness.Options{})
			leader := c.WaitForLeader(b)
			target := c.Nodes[n-1].Name()
			retry.Run(b, func(r *retry.R) {
				if _, ok := leader.Plan().Plan().Nodes[target]; !ok {
					r.Errorf("%s is not in the plan yet", target)
				}
			})
			states := []scheduler.NodeState{scheduler.StateCordoned, scheduler.StateActive}
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				cmd := store.Command{Op: store.OpNodeState, Node: target, State: states[i%2], Time: time.Now().UTC(), Who: "bench", Why: "benchmark"}
				i++
				buf, err := store.EncodeCommand(cmd)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := leader.Cluster().Apply(buf, 10*time.Second); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/change")
		})
	}
}
