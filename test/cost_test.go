package test

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/scheduler/autoscale"
	"github.com/loadmesh/loadmesh/scheduler/cost"
	"github.com/loadmesh/loadmesh/test/harness"
	"github.com/loadmesh/loadmesh/test/retry"
)

const costSpec = `mode: manual
interval: 1s
selection:
  carbon_intensity:
    eu-north: 30
    eu-west: 250
budget:
  monthly: 5000
  currency: EUR
`

// costTags are the test nodes' tags: 1 per second for node-0 (3600 per
// hour), 2 per second for node-1, nothing for node-2.
var costTags = [][]string{
	{"cost_per_hour=3600", "power_watts=1000", "carbon_region=eu-north"},
	{"cost_per_hour=7200", "power_watts=2000", "carbon_region=eu-west"},
	nil,
}

func getCost(t testing.TB, n *harness.Node, query string) cost.Report {
	t.Helper()
	var rep cost.Report
	retry.Run(t, func(r *retry.R) {
		resp, err := http.Get("http://" + n.APIAddr() + "/v1/cost?" + query)
		r.Check(err)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			r.Fatalf("GET /v1/cost?%s: %s %s", query, resp.Status, body)
		}
		r.Check(json.Unmarshal(body, &rep))
	})
	return rep
}

func costNear(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

// TestCostAccountingAcrossDrainAndLeaderChange runs a tagged cluster with
// fast accounting (a sample every 100ms, a record every 500ms), drains a
// node and stops the leader, then checks the replicated records against
// figures computed by hand from the tags, the record periods and the plan's
// state-change times.
func TestCostAccountingAcrossDrainAndLeaderChange(t *testing.T) {
	skipShort(t)
	c := harness.Start(t, 3, harness.Options{Backends: true, Tune: func(i int, cfg *agent.Config) {
		cfg.Tags = costTags[i]
		cfg.Zone = []string{"z1", "z2", "z2"}[i]
		cfg.CostInterval, cfg.CostRecordEvery = 100*time.Millisecond, 500*time.Millisecond
	}})
	leader := c.WaitForLeader(t)
	waitAllActive(t, c, leader)
	retry.Run(t, func(r *retry.R) {
		resp, err := http.Post("http://"+leader.APIAddr()+"/v1/plan", "application/yaml", strings.NewReader(costSpec))
		r.Check(err)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			r.Fatalf("apply spec: %s", resp.Status)
		}
	})
	waitRecords := func(n *harness.Node, after time.Time, want int) {
		t.Helper()
		retry.RunFor(t, 30*time.Second, func(r *retry.R) {
			got := 0
			for _, rec := range n.Plan().CostRecords(time.Time{}) {
				if rec.Start.After(after) {
					got++
				}
			}
			if got < want {
				r.Fatalf("%d cost records after %s, want %d", got, after.Format(time.StampMilli), want)
			}
		})
	}
	specAt := time.Now()
	waitRecords(leader, specAt, 3)

	// Drain a tagged node other than the leader.
	var drained *harness.Node
	for i, n := range c.Nodes {
		if n != leader && costTags[i] != nil {
			drained = n
			break
		}
	}
	var drainEv scheduler.Event
	retry.Run(t, func(r *retry.R) {
		resp, err := http.Post("http://"+leader.APIAddr()+"/v1/nodes/"+drained.Name()+"/drain", "application/json", nil)
		r.Check(err)
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			r.Fatalf("drain: %s", resp.Status)
		}
		r.Check(json.NewDecoder(resp.Body).Decode(&drainEv))
	})
	// The drain's event time is the node's Since in the plan.
	drainAt := drainEv.Time
	waitRecords(leader, drainAt, 3)

	// The metrics are the leader's alone. (Retried: on a busy machine an
	// election may move the leadership between the scrapes.)
	retry.Run(t, func(r *retry.R) {
		var exporters []string
		for _, n := range c.Nodes {
			m := costScrape(t, n)
			if strings.Contains(m, "loadmesh_cost_total ") {
				exporters = append(exporters, n.Name())
				if !strings.Contains(m, "loadmesh_cost_budget_monthly 5000") {
					r.Fatalf("%s exports loadmesh_cost_total without the budget", n.Name())
				}
			}
		}
		if l := c.WaitForLeader(t); len(exporters) != 1 || exporters[0] != l.Name() {
			r.Fatalf("loadmesh_cost_total exported by %v, want the leader %s alone", exporters, l.Name())
		}
	})
	leader = c.WaitForLeader(t)

	before, _, _ := leader.Plan().CostTotals()
	stopped := leader.Name()
	stopAt := time.Now()
	c.Stop(t, leader)
	leader = c.WaitForLeader(t)
	waitRecords(leader, stopAt, 4)
	after, _, _ := leader.Plan().CostTotals()
	if after.Cost <= before.Cost {
		t.Fatalf("cost total %v after the leader change, %v before: the new leader did not go on", after.Cost, before.Cost)
	}

	// Every record starts where the one before ended: no gap and no
	// overlap, across the drain and the leader change.
	recs := leader.Plan().CostRecords(time.Time{})
	for i := 1; i < len(recs); i++ {
		if !recs[i].Start.Equal(recs[i-1].End) {
			t.Fatalf("record %d starts at %s, the one before ended at %s", i, recs[i].Start.Format(time.StampMilli), recs[i-1].End.Format(time.StampMilli))
		}
	}
	// Hand computation over the records written once every node was in
	// the plan and the spec (carbon intensities) applied.
	var sum cost.Totals
	for _, rec := range recs {
		sum.Add(rec.Totals())
	}
	recs = slices.DeleteFunc(recs, func(r cost.Record) bool { return !r.Start.After(specAt) })
	first, last := recs[0].Start, recs[len(recs)-1].End
	span := last.Sub(first).Hours()
	plan := leader.Plan().Plan()
	per := map[string]cost.Totals{}
	for _, rec := range recs {
		for _, u := range rec.Nodes {
			x := per[u.Node]
			x.Add(u.Totals)
			per[u.Node] = x
		}
	}
	const hTol = 1e-9 // hours: the split at Since is exact
	for i, n := range c.Nodes {
		name := n.Name()
		got := per[name]
		billed := got.BilledHours()
		if !costNear(billed+got.NodeHours[cost.StateLeft], span, hTol) {
			t.Errorf("%s: %.9f billed + %.9f left hours, want the %.9f covered", name, billed, got.NodeHours[cost.StateLeft], span)
		}
		wantBilled := span
		if name == stopped {
			left := plan.Nodes[name].Left
			if left.IsZero() {
				t.Fatalf("the stopped leader %s is not marked left in the plan", name)
			}
			wantBilled = left.Sub(first).Hours()
		}
		if !costNear(billed, wantBilled, hTol) {
			t.Errorf("%s: %.9f billed hours, want %.9f", name, billed, wantBilled)
		}
		if costTags[i] == nil {
			if got.Cost != 0 || got.EnergyKWh != 0 || got.CarbonGrams != 0 {
				t.Errorf("untagged %s costs %+v", name, got)
			}
			continue
		}
		perSecond := float64(i + 1) // cost_per_hour 3600 × (i+1)
		watts, intensity := 1000*perSecond, []float64{30, 250}[i]
		if !costNear(got.Cost, perSecond*billed*3600, 1e-6) {
			t.Errorf("%s: cost %.6f, want %.6f", name, got.Cost, perSecond*billed*3600)
		}
		standby := got.NodeHours[string(scheduler.StateStandby)]
		wantKWh := (watts*(billed-standby) + watts*cost.StandbyPowerRatio*standby) / 1000
		if !costNear(got.EnergyKWh, wantKWh, 1e-9) || !costNear(got.CarbonGrams, wantKWh*intensity, 1e-6) {
			t.Errorf("%s: %.9f kWh %.6f g, want %.9f kWh %.6f g", name, got.EnergyKWh, got.CarbonGrams, wantKWh, wantKWh*intensity)
		}
		if n == drained {
			active := got.NodeHours[string(scheduler.StateActive)]
			// Draining with nothing in flight moves on to standby at once:
			// two changes inside one 100ms sample, and only the last is
			// placed exactly (scheduler/cost), so allow one sample.
			if !costNear(active, drainAt.Sub(first).Hours(), (100 * time.Millisecond).Hours()) {
				t.Errorf("drained %s: %.9f active hours, want %.9f (until the drain)", name, active, drainAt.Sub(first).Hours())
			}
		}
	}
	if !costNear(after.Cost, sum.Cost, 1e-6) {
		t.Errorf("replicated total %.6f, records add up to %.6f", after.Cost, sum.Cost)
	}

	// The API, from a follower's replica, by zone.
	var follower *harness.Node
	for _, n := range c.Live() {
		if n != leader {
			follower = n
		}
	}
	var rep cost.Report
	retry.Run(t, func(r *retry.R) {
		if rep = getCost(t, follower, "since=1h&by=zone"); rep.Records < len(recs) {
			r.Fatalf("the follower's replica has %d records, the leader had %d", rep.Records, len(recs))
		}
	})
	if rep.Currency != "EUR" || rep.Budget.Monthly != 5000 || rep.Records < len(recs) || len(rep.Groups) != 2 {
		t.Fatalf("report %+v", rep)
	}
	zone := map[string]cost.Group{}
	for _, g := range rep.Groups {
		zone[g.Key] = g
	}
	if zone["z1"].Nodes != 1 || zone["z2"].Nodes != 2 || !costNear(zone["z1"].Cost+zone["z2"].Cost, rep.Totals.Cost, 1e-6) {
		t.Fatalf("zones %+v", rep.Groups)
	}
	if len(rep.Nodes) != 3 || rep.Counterfactual == nil {
		t.Fatalf("sizing %+v counterfactual %+v", rep.Nodes, rep.Counterfactual)
	}
	byTag := getCost(t, follower, "since=1h&by=tag:carbon_region")
	keys := []string{}
	for _, g := range byTag.Groups {
		keys = append(keys, g.Key)
	}
	slices.Sort(keys)
	if fmt.Sprint(keys) != "[(untagged) eu-north eu-west]" {
		t.Fatalf("groups by carbon_region: %v", keys)
	}
	for _, bad := range []string{"since=-1h", "since=40d", "by=region", "node_rps=x"} {
		resp, err := http.Get("http://" + follower.APIAddr() + "/v1/cost?" + bad)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET /v1/cost?%s: %s, want 400", bad, resp.Status)
		}
	}
}

func TestCostSpecValidation(t *testing.T) {
	for _, bad := range []string{"budget:\n  monthly: -1\n", "budget:\n  currency: EU R\n"} {
		if _, err := autoscale.ParseSpec([]byte(bad)); err == nil || !strings.Contains(err.Error(), "budget.") {
			t.Errorf("%q: %v, want a budget error", bad, err)
		}
	}
}

func costScrape(t testing.TB, n *harness.Node) string {
	t.Helper()
	resp, err := http.Get("http://" + n.APIAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestCostAlertsPromtool runs the budget alerts' promtool unit tests.
func TestCostAlertsPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (Debian package prometheus); .ci/run installs it")
	}
	out, err := exec.Command(promtool, "test", "rules", "../deploy/prometheus/cost_alerts_test.yml").CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}
