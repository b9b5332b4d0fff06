package store

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/loadmesh/loadmesh/scheduler"
)

// planNodesCollector counts the plan's nodes by state at scrape time.
type planNodesCollector struct{ f *FSM }

var planNodesDesc = prometheus.NewDesc("loadmesh_store_plan_nodes",
	"Nodes in this replica's capacity plan by state (active, standby, draining, cordoned; left for departed nodes kept for --left-node-retention).",
	[]string{"state"}, nil)

func (c planNodesCollector) Describe(ch chan<- *prometheus.Desc) { ch <- planNodesDesc }

func (c planNodesCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[string]int{
		string(scheduler.StateActive): 0, string(scheduler.StateStandby): 0,
		string(scheduler.StateDraining): 0, string(scheduler.StateCordoned): 0, "left": 0,
	}
	c.f.mu.RLock()
	for _, n := range c.f.st.Plan.Nodes {
		if !n.Left.IsZero() {
			counts["left"]++
		} else {
			counts[string(n.State)]++
		}
	}
	c.f.mu.RUnlock()
	for st, n := range counts {
		ch <- prometheus.MustNewConstMetric(planNodesDesc, prometheus.GaugeValue, float64(n), st)
	}
}
