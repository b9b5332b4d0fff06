package autoscale_test

import (
	"fmt"
	"time"

	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/scheduler/autoscale"
)

// The leader's loop: one Step per control interval, the Decision applied
// through Raft (here printed), the completed history minutes and the state
// replicated so that the next leader can Restore.
func Example() {
	spec, err := autoscale.ParseSpec([]byte(`
limits: {min_active: 2, max_active: 10}
targets: {inflight_utilisation: 0.7, rps_per_node: 100}
`))
	if err != nil {
		panic(err)
	}
	a, err := autoscale.New(spec)
	if err != nil {
		panic(err)
	}
	// On becoming leader: a.Restore(stateFromStore, historyFromStore).

	now := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	node := func(name, zone string, st scheduler.NodeState, inflight float64) autoscale.NodeObservation {
		return autoscale.NodeObservation{
			Name: name, Zone: zone, State: st, Healthy: true, Ready: st == scheduler.StateActive,
			Inflight: inflight, Capacity: 64, RPS: 190, P95: 80 * time.Millisecond,
			Tags: autoscale.NodeTags{CostPerHour: 0.12, CarbonRegion: zone},
		}
	}
	obs := autoscale.Observation{
		DemandRPS: 380,
		Nodes: []autoscale.NodeObservation{
			node("a1", "a", scheduler.StateActive, 60),
			node("b1", "b", scheduler.StateActive, 58),
			node("a2", "a", scheduler.StateStandby, 0),
			node("b2", "b", scheduler.StateStandby, 0),
		},
	}
	d := a.Step(now, obs)
	fmt.Println(d.Reason)
	for _, m := range d.Metrics {
		fmt.Printf("  %s %.3g (target %.3g) wants %d\n", m.Name, m.Value, m.Target, m.Desired)
	}
	if !d.DryRun {
		for _, x := range d.Activate {
			fmt.Println("activate", x.Node) // propose standby → active
		}
		for _, x := range d.Drain {
			fmt.Println("drain", x.Node) // propose active → draining
		}
		for _, h := range d.Hooks {
			fmt.Println("hook", h.Kind, h.Zone, h.Count) // run asynchronously
		}
	}
	// Replicate d.History (finished minutes) and a.State() with the changes.

	// Output:
	// scale out 2→4: rps_per_node 190/100
	//   inflight_utilisation 0.922 (target 0.7) wants 3
	//   rps_per_node 190 (target 100) wants 4
	// activate a2
	// activate b2
}
