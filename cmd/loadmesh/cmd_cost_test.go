package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/scheduler/cost"
)

func TestCostCommand(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	rep := cost.Report{
		Since: t0, Until: t0.Add(10 * time.Minute), From: t0, To: t0.Add(10 * time.Minute), Records: 10, Currency: "EUR",
		Totals: cost.Totals{NodeHours: map[string]float64{"active": 0.4, "standby": 0.1}, Cost: 1.25, EnergyKWh: 0.08, CarbonGrams: 12.5},
		By:     "zone",
		Groups: []cost.Group{{Key: "z1", Nodes: 2, Totals: cost.Totals{NodeHours: map[string]float64{"active": 0.3}, Cost: 1}}},
		Budget: cost.Budget{Month: "2026-11", Monthly: 5000, MonthToDate: 100, Projected: 4200, Ratio: 0.84},
		Counterfactual: &cost.Counterfactual{Mode: "reactive", NodeRPS: 160, NodeRPSFrom: "observed (Little's law)",
			NodeHours: 0.5, Cost: 1.5, ActualNodeHours: 0.4, ActualCost: 1.2},
		Nodes: []cost.Sizing{{Node: "n1", Zone: "z1", Capacity: 64, Minutes: 10, Peak: 20, P95: 8, Verdict: "oversized",
			Recommendation: "p95 uses 12 % of capacity; lower --capacity or move to a smaller server"}},
	}
	var gotQuery string
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/cost" {
			http.NotFound(w, r)
			return
		}
		gotQuery = r.URL.RawQuery
		json.NewEncoder(w).Encode(rep)
	}))
	defer ts.Close()

	out, _, err := runCLIErr(t, "cost", "--api", ts.URL, "--since", "10m", "--by", "zone")
	if err != nil {
		t.Fatal(err)
	}
	if gotQuery != "by=zone&since=10m0s" {
		t.Errorf("query %q", gotQuery)
	}
	for _, want := range []string{
		"Spend:   1.2500 EUR, 0.0800 kWh, 12.5 g CO2e",
		"Hours:   active 0.4000, standby 0.1000",
		"Budget:  2026-11: 100.0000 EUR spent, 4200.0000 EUR projected of 5000.0000 EUR (84 %)",
		"ZONE  NODES",
		"reactive-only (simulated)",
		"oversized  p95 uses 12 % of capacity",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	out, _, err = runCLIErr(t, "cost", "--api", ts.URL, "--json")
	if err != nil || !strings.Contains(out, `"counterfactual"`) {
		t.Errorf("--json: %v\n%s", err, out)
	}
	if _, _, err := runCLIErr(t, "cost", "--api", ts.URL, "--by", "region"); err == nil {
		t.Error("--by region accepted")
	}
}
