package cost

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/scheduler/autoscale"
)

var t0 = time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)

func sel() autoscale.Selection {
	s := autoscale.DefaultSpec().Selection
	s.CarbonIntensity = map[string]float64{"eu-north": 30, "eu-west": 250}
	return s
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*max(1, math.Abs(a), math.Abs(b)) }

func TestIntegrateHandComputed(t *testing.T) {
	r := RatesFor(map[string]string{"cost_per_hour": "0.5", "power_watts": "200", "carbon_region": "eu-north"}, sel())
	got := Integrate("active", r, 90*time.Minute)
	// 1.5 h × 0.5 = 0.75; 1.5 h × 200 W = 0.3 kWh; × 30 g/kWh = 9 g.
	if !near(got.Cost, 0.75) || !near(got.EnergyKWh, 0.3) || !near(got.CarbonGrams, 9) || !near(got.NodeHours["active"], 1.5) {
		t.Fatalf("active 90m = %+v", got)
	}
	got = Integrate("standby", r, time.Hour)
	// Standby: billed in full, half the power (StandbyPowerRatio).
	if !near(got.Cost, 0.5) || !near(got.EnergyKWh, 0.1) || !near(got.CarbonGrams, 3) {
		t.Fatalf("standby 1h = %+v", got)
	}
	got = Integrate(StateLeft, r, time.Hour)
	if got.Cost != 0 || got.EnergyKWh != 0 || got.CarbonGrams != 0 || !near(got.NodeHours[StateLeft], 1) {
		t.Fatalf("left 1h = %+v", got)
	}
	r2 := RatesFor(map[string]string{"power_watts": "300", "standby_power_watts": "40", "carbon_region": "mars"}, sel())
	got = Integrate("standby", r2, time.Hour)
	// Unlisted region: default intensity 300.
	if got.Cost != 0 || !near(got.EnergyKWh, 0.04) || !near(got.CarbonGrams, 12) {
		t.Fatalf("standby with standby_power_watts = %+v", got)
	}
}

func TestBilledStates(t *testing.T) {
	for _, st := range []string{"active", "standby", "draining", "cordoned"} {
		if !Billed(st) {
			t.Errorf("%s not billed", st)
		}
	}
	if Billed(StateLeft) || Billed("") {
		t.Error("left or empty state billed")
	}
}

// genRates draws rates of a tagged node.
func genRates(t *rapid.T) Rates {
	return Rates{
		CostPerHour: rapid.Float64Range(0, 100).Draw(t, "cost"), PowerWatts: rapid.Float64Range(0, 2000).Draw(t, "watts"),
		StandbyWatts: rapid.Float64Range(0, 2000).Draw(t, "standby"), CarbonIntensity: rapid.Float64Range(0, 1000).Draw(t, "ci"),
	}
}

var states = []string{"active", "standby", "draining", "cordoned", StateLeft}

func TestIntegrateAdditiveOverSplits(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r := genRates(t)
		st := rapid.SampledFrom(states).Draw(t, "state")
		a := time.Duration(rapid.Int64Range(0, int64(48*time.Hour)).Draw(t, "a"))
		b := time.Duration(rapid.Int64Range(0, int64(48*time.Hour)).Draw(t, "b"))
		whole := Integrate(st, r, a+b)
		var parts Totals
		parts.Add(Integrate(st, r, a))
		parts.Add(Integrate(st, r, b))
		if !near(whole.Cost, parts.Cost) || !near(whole.EnergyKWh, parts.EnergyKWh) || !near(whole.CarbonGrams, parts.CarbonGrams) ||
			!near(whole.NodeHours[st], parts.NodeHours[st]) {
			t.Fatalf("whole %+v != parts %+v", whole, parts)
		}
	})
}

func TestUntaggedNodesCostNothing(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		st := rapid.SampledFrom(states).Draw(t, "state")
		d := time.Duration(rapid.Int64Range(0, int64(1000*time.Hour)).Draw(t, "d"))
		got := Integrate(st, RatesFor(map[string]string{"carbon_region": "eu-west", "other": "x"}, sel()), d)
		if got.Cost != 0 || got.EnergyKWh != 0 || got.CarbonGrams != 0 {
			t.Fatalf("untagged node in %s for %s: %+v", st, d, got)
		}
	})
}

// TestAccumulatorSplitObservations: observing a node at any set of
// instants gives the same totals as integrating its state history
// exactly, since state changes are placed at their Since time.
func TestAccumulatorSplitObservations(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		tags := map[string]string{"cost_per_hour": "3600", "power_watts": "1000", "carbon_region": "eu-north"}
		r := RatesFor(tags, sel())
		// A state history: up to 4 changes at increasing seconds.
		n := rapid.IntRange(0, 4).Draw(t, "changes")
		type change struct {
			at time.Time
			st scheduler.NodeState
		}
		hist := []change{{t0, scheduler.StateActive}}
		at := t0
		for i := 0; i < n; i++ {
			at = at.Add(time.Duration(rapid.IntRange(1, 600).Draw(t, "gap")) * time.Second)
			hist = append(hist, change{at, rapid.SampledFrom([]scheduler.NodeState{"active", "standby", "draining"}).Draw(t, "st")})
		}
		end := at.Add(time.Duration(rapid.IntRange(1, 600).Draw(t, "tail")) * time.Second)
		// Observe at least once between consecutive changes (every change
		// is seen), plus random extra instants.
		var obs []time.Time
		for i := 1; i < len(hist); i++ {
			lo, hi := hist[i].at, end
			if i+1 < len(hist) {
				hi = hist[i+1].at
			}
			obs = append(obs, lo.Add(time.Duration(rapid.Int64Range(0, int64(hi.Sub(lo))-1).Draw(t, "seen"))))
		}
		obs = append(obs, end)
		var want Totals
		for i, c := range hist {
			to := end
			if i+1 < len(hist) {
				to = hist[i+1].at
			}
			want.Add(Integrate(string(c.st), r, to.Sub(c.at)))
		}
		acc := NewAccumulator(t0)
		stateAt := func(x time.Time) change {
			c := hist[0]
			for _, h := range hist {
				if !h.at.After(x) {
					c = h
				}
			}
			return c
		}
		acc.Observe(t0, []Sample{{Node: "n", State: "active", Since: t0, Tags: tags}}, 0, sel())
		var got Totals
		for i, x := range obs {
			c := stateAt(x)
			acc.Observe(x, []Sample{{Node: "n", State: c.st, Since: c.at, Tags: tags}}, 0, sel())
			if rapid.Bool().Draw(t, "flush") || i == len(obs)-1 {
				got.Add(acc.Flush().Totals())
			}
		}
		if !near(got.Cost, want.Cost) || !near(got.EnergyKWh, want.EnergyKWh) || !near(got.CarbonGrams, want.CarbonGrams) {
			t.Fatalf("got %+v want %+v", got, want)
		}
	})
}

func TestAccumulatorLeftNode(t *testing.T) {
	tags := map[string]string{"cost_per_hour": "1"}
	acc := NewAccumulator(t0)
	acc.Observe(t0, []Sample{{Node: "a", State: "active", Since: t0, Tags: tags}}, 0, sel())
	// Left 30 minutes in, observed an hour in.
	acc.Observe(t0.Add(time.Hour), []Sample{{Node: "a", State: "active", Since: t0, Left: t0.Add(30 * time.Minute), Tags: tags}}, 0, sel())
	rec := acc.Flush()
	if len(rec.Nodes) != 1 || !near(rec.Nodes[0].Cost, 0.5) || !near(rec.Nodes[0].NodeHours[StateLeft], 0.5) || !near(rec.Nodes[0].NodeHours["active"], 0.5) {
		t.Fatalf("left node: %+v", rec.Nodes)
	}
}

func TestSizingsAndRecommendations(t *testing.T) {
	mk := func(maxima ...float64) []Record {
		var recs []Record
		for i, m := range maxima {
			recs = append(recs, Record{Start: t0.Add(time.Duration(i) * time.Minute), End: t0.Add(time.Duration(i+1) * time.Minute),
				Nodes: []Usage{{Node: "n", Capacity: 100, Active: true, Samples: 6, InflightMax: m}}})
		}
		return recs
	}
	cases := []struct {
		maxima  []float64
		verdict string
		p95     float64
	}{
		{[]float64{5, 10, 12, 8, 11}, "oversized", 12},
		{[]float64{50, 60, 140, 70}, "undersized", 140},
		{[]float64{40, 60, 70, 65}, "fits", 70},
		{[]float64{40, 60}, "no data", 60},
	}
	for _, c := range cases {
		s := Sizings(mk(c.maxima...))
		if len(s) != 1 || s[0].Verdict != c.verdict || s[0].P95 != c.p95 {
			t.Errorf("maxima %v: %+v, want %s with p95 %v", c.maxima, s, c.verdict, c.p95)
		}
	}
	s := Sizings(mk(5, 10, 12, 8, 11))
	if !strings.Contains(s[0].Recommendation, "p95 uses 12 % of capacity") {
		t.Errorf("recommendation %q", s[0].Recommendation)
	}
}

func TestProject(t *testing.T) {
	now := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC) // 72 h left in November
	b := Project(now, 100, 2, 400)
	if b.Month != "2026-11" || !near(b.Projected, 100+2*72) || !near(b.Ratio, 244.0/400) {
		t.Fatalf("%+v", b)
	}
}

func TestSummariseBreakdownAndCounterfactual(t *testing.T) {
	spec := autoscale.DefaultSpec()
	spec.Selection = sel()
	spec.Budget = autoscale.Budget{Monthly: 1000, Currency: "EUR"}
	plan := scheduler.Plan{Version: 3, Nodes: map[string]scheduler.PlanNode{
		"a": {State: "active", Zone: "z1", Tags: map[string]string{"cost_per_hour": "2", "spot": "true"}},
		"b": {State: "active", Zone: "z2", Tags: map[string]string{"cost_per_hour": "1"}},
		"c": {State: "standby", Zone: "z2", Tags: map[string]string{"cost_per_hour": "1"}},
	}}
	acc := NewAccumulator(t0)
	var recs []Record
	for i := 1; i <= 30; i++ {
		var samples []Sample
		for name, n := range plan.Nodes {
			samples = append(samples, Sample{Node: name, State: n.State, Since: t0, Zone: n.Zone, Tags: n.Tags, HasLoad: true, Inflight: 10, Capacity: 64})
		}
		acc.Observe(t0.Add(time.Duration(i)*time.Minute), samples, 50, spec.Selection)
		recs = append(recs, acc.Flush())
	}
	rep := Summarise(recs, Query{Since: t0, Until: t0.Add(time.Hour), By: "zone", Spec: spec, Plan: plan, Now: t0.Add(30 * time.Minute)})
	// 30 minutes of 2 + 1 + 1 per hour.
	if !near(rep.Totals.Cost, 2) || len(rep.Groups) != 2 || rep.Groups[0].Key != "z2" || !near(rep.Groups[0].Cost, 1) || rep.Groups[0].Nodes != 2 {
		t.Fatalf("totals %+v groups %+v", rep.Totals, rep.Groups)
	}
	if !near(rep.CostPerHour, 4) || rep.Currency != "EUR" || rep.Budget.Monthly != 1000 {
		t.Fatalf("cost per hour %v, budget %+v", rep.CostPerHour, rep.Budget)
	}
	cf := rep.Counterfactual
	if cf == nil || cf.Error != "" || cf.NodeHours <= 0 || !near(cf.ActualNodeHours, 1) || !near(cf.ActualCost, 1.5) {
		t.Fatalf("counterfactual %+v", cf)
	}
	// Little's law: 50 req/s over 20 in flight on active nodes × 64.
	if cf.NodeRPSFrom != "observed (Little's law)" || !near(cf.NodeRPS, 50.0/20*64) {
		t.Fatalf("node rps %v from %s", cf.NodeRPS, cf.NodeRPSFrom)
	}
	byTag := Summarise(recs, Query{Since: t0, Until: t0.Add(time.Hour), By: "tag:spot", Spec: spec, Plan: plan, Now: t0})
	if len(byTag.Groups) != 2 || byTag.Groups[0].Key != "(untagged)" || byTag.Groups[1].Key != "true" || !near(byTag.Groups[1].Cost, 1) {
		t.Fatalf("by tag %+v", byTag.Groups)
	}
	short := Summarise(recs[:1], Query{Since: t0, Until: t0.Add(time.Hour), Spec: spec, Plan: plan, Now: t0})
	if short.Counterfactual.Error == "" {
		t.Fatal("counterfactual over one record should say why it is missing")
	}
}

func TestValidBy(t *testing.T) {
	for _, ok := range []string{"", "zone", "tag:spot"} {
		if ValidBy(ok) != nil {
			t.Errorf("%q refused", ok)
		}
	}
	for _, bad := range []string{"tag:", "region", "tag:" + strings.Repeat("k", 65)} {
		if ValidBy(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// A new leader's first observation of a node that left inside the gap
// counts the node in its plan state until it left.
func TestAccumulatorNewLeaderFillsGapWithLeftNode(t *testing.T) {
	tags := map[string]string{"cost_per_hour": "1"}
	acc := NewAccumulator(t0)
	acc.Observe(t0.Add(time.Hour), []Sample{{Node: "a", State: "active", Since: t0.Add(-time.Hour), Left: t0.Add(15 * time.Minute), Tags: tags}}, 0, sel())
	u := acc.Flush().Nodes[0]
	if !near(u.Cost, 0.25) || !near(u.NodeHours["active"], 0.25) || !near(u.NodeHours[StateLeft], 0.75) {
		t.Fatalf("%+v", u)
	}
}

// TestRecordSize keeps the per-minute Raft entry small: one node with the
// usual tags, all figures set, encodes to under 450 bytes (396 when written).
func TestRecordSize(t *testing.T) {
	tags := map[string]string{"cost_per_hour": "0.384", "power_watts": "350", "standby_power_watts": "90", "carbon_region": "eu-west", "spot": "true"}
	acc := NewAccumulator(t0)
	s := Sample{Node: "node-017", State: "active", Since: t0.Add(-time.Hour), Zone: "eu-west-1a", Tags: tags, HasLoad: true, Inflight: 17, Capacity: 256}
	acc.Observe(t0.Add(30*time.Second), []Sample{s}, 123.4, sel())
	s.State, s.Since = "draining", t0.Add(40*time.Second)
	acc.Observe(t0.Add(time.Minute), []Sample{s}, 123.4, sel())
	b, err := json.Marshal(acc.Flush().Nodes[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("one node's usage: %d bytes: %s", len(b), b)
	if len(b) > 450 {
		t.Fatalf("one node's usage is %d bytes", len(b))
	}
}
