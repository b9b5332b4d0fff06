package autoscale

import (
	"fmt"
	"testing"
	"time"
)

// t0 is the fake clock's start: Monday 2 March 2026, 09:00 UTC.
var t0 = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

// testSpec is DefaultSpec with rps_per_node 100, min 2, max 20, and
// rollback keyed on the in-flight target.
func testSpec() Spec {
	s := DefaultSpec()
	s.Limits = Limits{MinActive: 2, MaxActive: 20}
	s.Targets = Targets{InflightUtilisation: 0.7, RPSPerNode: 100}
	return s
}

// fakeCluster is a set of nodes driven by the simulator's node model, with
// decisions applied at once (activated nodes ready immediately unless
// startup is set).
type fakeCluster struct {
	nodes   []*simNode
	model   NodeModel
	startup time.Duration
}

// newFake makes standby nodes: zones maps zone → count; tags by zone.
func newFake(zones map[string]int, tags map[string]NodeTags) *fakeCluster {
	c := &fakeCluster{model: NodeModel{Capacity: 100 / 0.7, InflightCapacity: 64, SLO: Duration(250 * time.Millisecond)}}
	for _, z := range sortedKeys(zones) {
		for i := 0; i < zones[z]; i++ {
			n := &simNode{}
			n.Name = fmt.Sprintf("%s-%02d", z, i+1)
			n.Zone, n.State, n.Healthy, n.Tags, n.Since = z, stateStandby, true, tags[z], t0.Add(-time.Hour)
			c.nodes = append(c.nodes, n)
		}
	}
	return c
}

func (c *fakeCluster) node(name string) *simNode {
	for _, n := range c.nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// activate makes the first k standby nodes of zone active and ready.
func (c *fakeCluster) activate(zone string, k int) {
	for _, n := range c.nodes {
		if k > 0 && n.Zone == zone && n.State == stateStandby {
			n.State, n.Ready = stateActive, true
			k--
		}
	}
}

func (c *fakeCluster) obs(demand float64) Observation {
	return simObservation(c.nodes, demand, c.model)
}

// apply carries out a decision: activations (ready after startup, checked
// at the next call with now), drains straight to standby.
func (c *fakeCluster) apply(now time.Time, d Decision) {
	for _, n := range c.nodes {
		if n.State == stateActive && !n.Ready && !now.Before(n.readyAt) {
			n.Ready = true
		}
	}
	for _, x := range d.Activate {
		n := c.node(x.Node)
		n.State, n.Since, n.readyAt = stateActive, now, now.Add(c.startup)
		n.Ready = c.startup == 0
	}
	for _, x := range d.Drain {
		n := c.node(x.Node)
		n.State, n.Since, n.Ready = stateStandby, now, false
	}
}

func (c *fakeCluster) active() (n int) {
	for _, x := range c.nodes {
		if x.State == stateActive && x.Healthy {
			n++
		}
	}
	return n
}

func (c *fakeCluster) activeIn(zone string) (n int) {
	for _, x := range c.nodes {
		if x.State == stateActive && x.Healthy && x.Zone == zone {
			n++
		}
	}
	return n
}

func mustNew(t *testing.T, s Spec) *Autoscaler {
	t.Helper()
	a, err := New(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// run steps the autoscaler every interval from start for n steps with
// demand(i), applying each decision, and returns the decisions.
func run(a *Autoscaler, c *fakeCluster, start time.Time, n int, demand func(i int) float64) []Decision {
	var out []Decision
	iv := a.Spec().Interval.D()
	for i := 0; i < n; i++ {
		now := start.Add(time.Duration(i) * iv)
		d := a.Step(now, c.obs(demand(i)))
		c.apply(now, d)
		out = append(out, d)
	}
	return out
}

func intp(v int) *int { return &v }
