package test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/test/harness"
	"github.com/loadmesh/loadmesh/test/retry"
)

const idleSpec = `mode: auto
interval: 1s
limits:
  min_active: 2
  max_active: 4
targets:
  inflight_utilisation: 0.7
  rps_per_node: 70
scale_in:
  stabilisation: 0s
  max_step_nodes: 4
  max_step_percent: 100
predictive:
  enabled: false
`

func activeNodes(n *harness.Node) (active int, others []string) {
	for name, pn := range n.Plan().Plan().Nodes {
		if pn.State == scheduler.StateActive {
			active++
		} else {
			others = append(others, name+"="+string(pn.State))
		}
	}
	return active, others
}

// waitAllActive waits until the plan holds every node of c as active: a
// node that joins after a spec is applied gets the spec's new_node_state
// (standby by default) instead.
func waitAllActive(t *testing.T, c *harness.Cluster, leader *harness.Node) {
	t.Helper()
	retry.RunFor(t, 30*time.Second, func(r *retry.R) {
		if active, others := activeNodes(leader); active != len(c.Nodes) {
			r.Fatalf("%d of %d nodes active in the plan; others %v", active, len(c.Nodes), others)
		}
	})
}

func TestAutoscalerScalesAnIdleClusterDownToItsMinimum(t *testing.T) {
	skipShort(t)
	c := harness.Start(t, 4, harness.Options{Backends: true})
	leader := c.WaitForLeader(t)
	waitAllActive(t, c, leader)
	// 503 is "no leader right now, try again" (an election on a busy machine).
	retry.Run(t, func(r *retry.R) {
		resp, err := http.Post("http://"+leader.APIAddr()+"/v1/plan", "application/yaml", strings.NewReader(idleSpec))
		r.Check(err)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			r.Fatalf("apply spec: %s", resp.Status)
		}
	})
	// Idle: the autoscaler drains two of the four nodes, which finish
	// their (empty) drains and become standby; never below the minimum.
	retry.RunFor(t, 40*time.Second, func(r *retry.R) {
		active, others := activeNodes(leader)
		if active != 2 || len(others) != 2 || !strings.Contains(strings.Join(others, ","), "standby") {
			r.Fatalf("%d active, others %v; want 2 active and 2 standby", active, others)
		}
	})
	byAutoscaler := 0
	for _, e := range leader.Plan().Events(0) {
		if e.Who == "autoscaler" && e.After != "" && strings.Contains(e.After, "draining") {
			byAutoscaler++
		}
	}
	if byAutoscaler != 2 {
		t.Fatalf("%d drains recorded for the autoscaler, want 2", byAutoscaler)
	}
	// The decision and its reasons are visible through any node.
	resp, err := http.Get("http://" + c.Nodes[0].APIAddr() + "/v1/autoscaler")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /v1/autoscaler: %s", resp.Status)
	}
	// Standby nodes take no forwarded traffic, and the plan stays put.
	if active, _ := activeNodes(leader); active != 2 {
		t.Fatalf("active count moved to %d", active)
	}
}

// TestDryRunRecordsWhatItWouldDoWithoutDoingIt: in dry-run mode an idle
// cluster above its minimum is not scaled in, but the audit log says once
// (not every interval) what the autoscaler would have done.
func TestDryRunRecordsWhatItWouldDoWithoutDoingIt(t *testing.T) {
	skipShort(t)
	c := harness.Start(t, 3, harness.Options{Backends: true})
	leader := c.WaitForLeader(t)
	waitAllActive(t, c, leader)
	spec := strings.Replace(idleSpec, "mode: auto", "mode: dry-run", 1)
	spec = strings.Replace(spec, "min_active: 2", "min_active: 1", 1)
	retry.Run(t, func(r *retry.R) {
		resp, err := http.Post("http://"+leader.APIAddr()+"/v1/plan", "application/yaml", strings.NewReader(spec))
		r.Check(err)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			r.Fatalf("apply spec: %s", resp.Status)
		}
	})
	dryRuns := func() (records []string) {
		for _, e := range leader.Plan().Events(0) {
			if e.Kind == "autoscaler.dry_run" {
				records = append(records, e.After)
			}
		}
		return records
	}
	retry.RunFor(t, 30*time.Second, func(r *retry.R) {
		if len(dryRuns()) == 0 {
			r.Fatalf("no dry-run record yet")
		}
	})
	// Let several more intervals pass (observed through the decisions the
	// autoscaler publishes, not a sleep).
	start := time.Now()
	retry.RunFor(t, 30*time.Second, func(r *retry.R) {
		for _, n := range c.Live() {
			if d := n.AutoscalerDecision(); d != nil && d.Time.After(start.Add(3*time.Second)) {
				return
			}
		}
		r.Fatalf("waiting for decisions 3s on")
	})
	// One record per distinct decision, not one per interval (and not
	// again after a change of leader).
	records := dryRuns()
	for i := 1; i < len(records); i++ {
		if records[i] == records[i-1] {
			t.Fatalf("dry-run record repeated: %q", records)
		}
	}
	if last := records[len(records)-1]; !strings.Contains(last, "would drain") || !strings.Contains(last, "desired 1") {
		t.Fatalf("dry-run records %q; want the last to say it would drain to 1", records)
	}
	if active, others := activeNodes(leader); active != 3 {
		t.Fatalf("dry run changed the plan: %d active, %v", active, others)
	}
}

// TestNodeTagsReachThePlanAndSteerDrains: --tag values travel by gossip
// into the plan, and the autoscaler drains spot and expensive nodes first.
func TestNodeTagsReachThePlanAndSteerDrains(t *testing.T) {
	skipShort(t)
	c := harness.Start(t, 3, harness.Options{Backends: true, Tune: func(i int, cfg *agent.Config) {
		cfg.Tags = []string{"cost_per_hour=1", "carbon_region=eu-north"}
		if i == 1 {
			cfg.Tags = []string{"cost_per_hour=9", "spot=true", "rack=r7"}
		}
	}})
	leader := c.WaitForLeader(t)
	waitAllActive(t, c, leader)
	expensive := c.Nodes[1].Cfg.Name
	retry.Run(t, func(r *retry.R) {
		tags := leader.Plan().Plan().Nodes[expensive].Tags
		if tags["spot"] != "true" || tags["cost_per_hour"] != "9" || tags["rack"] != "r7" {
			r.Fatalf("plan tags of %s: %v", expensive, tags)
		}
	})
	spec := strings.Replace(idleSpec, "min_active: 2", "min_active: 2\n  max_active: 3", 1)
	spec = strings.Replace(spec, "  max_active: 4\n", "", 1)
	retry.Run(t, func(r *retry.R) {
		resp, err := http.Post("http://"+leader.APIAddr()+"/v1/plan", "application/yaml", strings.NewReader(spec))
		r.Check(err)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			r.Fatalf("apply spec: %s", resp.Status)
		}
	})
	retry.RunFor(t, 40*time.Second, func(r *retry.R) {
		if active, others := activeNodes(leader); active != 2 || len(others) != 1 || !strings.HasPrefix(others[0], expensive+"=") {
			r.Fatalf("%d active, others %v; want only %s taken out", active, others, expensive)
		}
	})
}
