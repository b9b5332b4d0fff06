package autoscale

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

func threeZones() *fakeCluster {
	return newFake(map[string]int{"a": 10, "b": 10, "c": 10}, nil)
}

func TestScaleOutFastScaleInSlow(t *testing.T) {
	a := mustNew(t, testSpec())
	c := threeZones()
	c.activate("a", 1)
	c.activate("b", 1)
	c.activate("c", 1)
	// 15 minutes at 900 req/s (9 nodes at 100/node), then 300 req/s.
	ds := run(a, c, t0, 120, func(i int) float64 {
		if i < 60 {
			return 900
		}
		return 300
	})
	if ds[0].Desired != 7 || ds[1].Desired != 9 {
		t.Fatalf("scale-out 3→7→9 expected (step limit max(4, 100%% of 3)), got %d then %d: %s", ds[0].Desired, ds[1].Desired, ds[0].Reason)
	}
	// No scale-in until 20 low recommendations (5 minutes' worth) fill the
	// window: the first drain is at step 79.
	for i := 60; i < 79; i++ {
		if len(ds[i].Drain) > 0 {
			t.Fatalf("step %d drained within the scale-in stabilisation window: %s", i, ds[i].Reason)
		}
	}
	// Then at most one node per step (max(1, 10% of 9)).
	for i := 79; i < 120; i++ {
		if len(ds[i].Drain) > 1 {
			t.Fatalf("step %d drained %d nodes", i, len(ds[i].Drain))
		}
	}
	if got := c.active(); got != 3 {
		t.Fatalf("active after the drop = %d, want 3", got)
	}
	if len(ds[79].Drain) != 1 || !strings.Contains(ds[79].Reason, "scale in 9→") {
		t.Fatalf("step 79: %d drains, reason %q", len(ds[79].Drain), ds[79].Reason)
	}
}

func TestFlappingInputDoesNotFlap(t *testing.T) {
	a := mustNew(t, testSpec())
	c := threeZones()
	c.activate("a", 2)
	c.activate("b", 2)
	c.activate("c", 2)
	// Demand alternates between 350 and 850 req/s every interval for an
	// hour: the plan grows once and then holds.
	ds := run(a, c, t0, 240, func(i int) float64 {
		if i%2 == 0 {
			return 850
		}
		return 350
	})
	changes := 0
	for _, d := range ds {
		if len(d.Activate)+len(d.Drain) > 0 {
			changes++
		}
		if len(d.Drain) > 0 {
			t.Fatalf("drained under flapping input at %s: %s", d.Time, d.Reason)
		}
	}
	if changes > 1 || c.active() != 9 {
		t.Fatalf("%d plan changes, %d active; want 1 change to 9", changes, c.active())
	}
}

func TestToleranceBand(t *testing.T) {
	a := mustNew(t, testSpec())
	c := threeZones()
	c.activate("a", 2)
	c.activate("b", 2)
	c.activate("c", 2)
	// 6 nodes at 100/node: demand 545–655 is within ±10 %.
	ds := run(a, c, t0, 100, func(i int) float64 { return 600 + 50*math.Sin(float64(i)) })
	for _, d := range ds {
		if d.Changes() {
			t.Fatalf("change inside the tolerance band: %s", d.Reason)
		}
	}
}

func TestLimits(t *testing.T) {
	s := testSpec()
	s.Limits = Limits{MinActive: 4, MaxActive: 12, Zones: map[string]ZoneLimits{"a": {Min: 2, Max: 3}, "b": {Min: 1}}}
	s.ScaleOut.MaxStepNodes, s.ScaleOut.MaxStepPercent = 0, 0
	s.ScaleIn.Stabilisation, s.ScaleIn.MaxStepNodes, s.ScaleIn.MaxStepPercent = 0, 0, 0
	a := mustNew(t, s)
	c := threeZones()
	c.activate("a", 5) // above its zone max

	d := a.Step(t0, c.obs(100))
	c.apply(t0, d)
	if c.activeIn("a") != 3 || c.activeIn("b") < 1 || c.active() < 4 {
		t.Fatalf("zone limits not enforced: a=%d b=%d total=%d (%+v)", c.activeIn("a"), c.activeIn("b"), c.active(), d)
	}
	// Huge demand: never above max overall or in zone a.
	for i := 1; i < 20; i++ {
		now := t0.Add(time.Duration(i) * 15 * time.Second)
		d := a.Step(now, c.obs(1e6))
		c.apply(now, d)
		if c.active() > 12 || c.activeIn("a") > 3 {
			t.Fatalf("limits broken: total %d, zone a %d", c.active(), c.activeIn("a"))
		}
	}
	if c.active() != 12 {
		t.Fatalf("active %d, want max 12", c.active())
	}
	// No demand: down to min 4, never below zone mins.
	for i := 20; i < 60; i++ {
		now := t0.Add(time.Duration(i) * 15 * time.Second)
		d := a.Step(now, c.obs(0))
		c.apply(now, d)
		if c.activeIn("a") < 2 || c.activeIn("b") < 1 {
			t.Fatalf("zone min broken: a=%d b=%d", c.activeIn("a"), c.activeIn("b"))
		}
	}
	if c.active() != 4 {
		t.Fatalf("active %d, want min 4", c.active())
	}
}

func TestScheduleRaisesAndLowersLimits(t *testing.T) {
	s := testSpec()
	s.Schedules = []Schedule{
		// 09:00–17:00 New York on weekdays: at least 8.
		{Name: "office", Start: "0 9 * * 1-5", Duration: Duration(8 * time.Hour), TimeZone: "America/New_York", MinActive: intp(8)},
		// Nights in UTC: at most 3.
		{Name: "night", Start: "0 0 * * *", End: "0 6 * * *", TimeZone: "UTC", MaxActive: intp(3)},
	}
	a := mustNew(t, s)
	tests := []struct {
		at       time.Time
		min, max int
		names    string
	}{
		// 2 March 2026 is a Monday; New York is UTC-5 until 8 March.
		{time.Date(2026, 3, 2, 13, 59, 0, 0, time.UTC), 2, 20, ""},
		{time.Date(2026, 3, 2, 14, 0, 0, 0, time.UTC), 8, 20, "office"},
		{time.Date(2026, 3, 2, 21, 59, 0, 0, time.UTC), 8, 20, "office"},
		{time.Date(2026, 3, 2, 22, 0, 0, 0, time.UTC), 2, 20, ""},
		// After the DST change (UTC-4): 09:00 local is 13:00 UTC.
		{time.Date(2026, 3, 9, 13, 0, 0, 0, time.UTC), 8, 20, "office"},
		{time.Date(2026, 3, 7, 14, 0, 0, 0, time.UTC), 2, 20, ""}, // Saturday
		{time.Date(2026, 3, 3, 3, 0, 0, 0, time.UTC), 2, 3, "night"},
		{time.Date(2026, 3, 3, 6, 0, 0, 0, time.UTC), 2, 20, ""},
	}
	for _, tt := range tests {
		lo, hi, names := a.sched.limits(tt.at, s.Limits)
		if lo != tt.min || hi != tt.max || strings.Join(names, ",") != tt.names {
			t.Errorf("at %s: limits %d..%d %v, want %d..%d %q", tt.at, lo, hi, names, tt.min, tt.max, tt.names)
		}
	}
	// Going back in time recomputes rather than trusting the cache.
	if lo, _, _ := a.sched.limits(time.Date(2026, 3, 2, 15, 0, 0, 0, time.UTC), s.Limits); lo != 8 {
		t.Errorf("after going back in time min = %d", lo)
	}

	// The schedule applies at once, beyond the step limit.
	c := threeZones()
	c.activate("a", 2)
	d := a.Step(time.Date(2026, 3, 2, 14, 0, 0, 0, time.UTC), c.obs(100))
	if d.Desired != 8 || len(d.Activate) != 6 || !strings.Contains(d.Reason, "schedule office") {
		t.Fatalf("schedule not applied: desired %d, %d activations, %q", d.Desired, len(d.Activate), d.Reason)
	}
}

func TestScheduleMinAboveMaxWins(t *testing.T) {
	s := testSpec()
	s.Limits.MaxActive = 5
	s.Schedules = []Schedule{{Name: "surge", Start: "@daily", Duration: Duration(time.Hour), MinActive: intp(9)}}
	a := mustNew(t, s)
	lo, hi, _ := a.sched.limits(time.Date(2026, 1, 1, 0, 30, 0, 0, time.UTC), s.Limits)
	if lo != 9 || hi != 9 {
		t.Fatalf("limits %d..%d, want 9..9", lo, hi)
	}
}

func TestSelectionPreferences(t *testing.T) {
	sel := DefaultSpec().Selection
	sel.CarbonIntensity = map[string]float64{"hydro": 20, "coal": 800}
	spec := DefaultSpec()
	spec.Selection = sel
	spec.Limits.Zones = map[string]ZoneLimits{"a": {Min: 1}, "b": {}}
	nodes := []NodeObservation{
		{Name: "a-active", Zone: "a", State: stateActive, Healthy: true, Tags: NodeTags{CostPerHour: 0.1}},
		{Name: "a-cheap", Zone: "a", State: stateStandby, Healthy: true, Tags: NodeTags{CostPerHour: 0.05, CarbonRegion: "hydro"}},
		{Name: "b-dear", Zone: "b", State: stateStandby, Healthy: true, Tags: NodeTags{CostPerHour: 0.20, CarbonRegion: "hydro"}},
		{Name: "b-dirty", Zone: "b", State: stateStandby, Healthy: true, Tags: NodeTags{CostPerHour: 0.10, CarbonRegion: "coal"}},
		{Name: "b-clean", Zone: "b", State: stateStandby, Healthy: true, Tags: NodeTags{CostPerHour: 0.10, CarbonRegion: "hydro"}},
		{Name: "b-sick", Zone: "b", State: stateStandby, Healthy: false},
	}
	// Zone b has no active node, so it comes first (balance), and in it the
	// same-cost node with the lower carbon intensity wins; then zone a's
	// only standby (balance again: 1–1), then b's coal node (0.10 + 0.1 ×
	// 0.2 kW × 0.8 = 0.116) before the 0.20 one.
	zs := zoneTable(spec, nodes)
	picked, short := pickActivations(sel, zs, 5, func(string) bool { return true })
	var names []string
	for _, n := range picked {
		names = append(names, n.Name)
	}
	if got := strings.Join(names, ","); got != "b-clean,a-cheap,b-dirty,b-dear" {
		t.Fatalf("activation order %s", got)
	}
	if short["a"]+short["b"] != 1 {
		t.Fatalf("shortfall %v, want 1 node", short)
	}

	// Draining: spot first, then the most expensive, keeping zones
	// balanced and never below a zone's min.
	active := []NodeObservation{
		{Name: "a1", Zone: "a", State: stateActive, Healthy: true, Tags: NodeTags{CostPerHour: 0.1}},
		{Name: "a2", Zone: "a", State: stateActive, Healthy: true, Tags: NodeTags{CostPerHour: 0.3}},
		{Name: "b1", Zone: "b", State: stateActive, Healthy: true, Tags: NodeTags{CostPerHour: 0.1}},
		{Name: "b2", Zone: "b", State: stateActive, Healthy: true, Tags: NodeTags{CostPerHour: 0.1, Spot: true}},
		{Name: "b3", Zone: "b", State: stateActive, Healthy: true, Tags: NodeTags{CostPerHour: 0.2}},
	}
	zs = zoneTable(spec, active)
	var drained []string
	for _, n := range pickDrains(sel, zs, 10) {
		drained = append(drained, n.Name)
	}
	// b has 3 (most): spot b2; then a and b tie at 2: a2 (0.3) beats b3
	// (0.2); then b (2 vs 1): b3; then b1 (a is at its min 1).
	if got := strings.Join(drained, ","); got != "b2,a2,b3,b1" {
		t.Fatalf("drain order %s", got)
	}
}

func TestScaleOutHookWhenNoStandby(t *testing.T) {
	s := testSpec()
	s.Hooks.ScaleOut = &Hook{Command: []string{"provision"}, Timeout: Duration(time.Minute)}
	a := mustNew(t, s)
	c := newFake(map[string]int{"a": 2, "b": 2}, nil)
	c.activate("a", 1)
	c.activate("b", 1)
	d := a.Step(t0, c.obs(600)) // wants 6, has 2 + 2 standby
	c.apply(t0, d)
	if len(d.Activate) != 2 || len(d.Hooks) != 2 || d.Shortfall["a"]+d.Shortfall["b"] != 2 {
		t.Fatalf("want 2 activations and scale_out for 2 nodes, got %+v", d)
	}
	for _, h := range d.Hooks {
		if h.Kind != HookScaleOut || h.Count != 1 || h.Hook.Command[0] != "provision" {
			t.Fatalf("hook %+v", h)
		}
	}
	// Next step: still short, but the request is pending.
	now := t0.Add(15 * time.Second)
	d = a.Step(now, c.obs(600))
	if len(d.Hooks) != 0 || d.Shortfall["a"]+d.Shortfall["b"] != 2 {
		t.Fatalf("re-requested while pending: %+v", d.Hooks)
	}
	// One node arrives in zone a: it is activated; b is still pending.
	n := &simNode{}
	n.Name, n.Zone, n.State, n.Healthy = "a-new", "a", stateStandby, true
	c.nodes = append(c.nodes, n)
	now = now.Add(15 * time.Second)
	d = a.Step(now, c.obs(600))
	if len(d.Activate) != 1 || d.Activate[0].Node != "a-new" || len(d.Hooks) != 0 {
		t.Fatalf("arrival: %+v", d)
	}
	c.apply(now, d)
	// After the provision timeout, b is asked for again.
	now = t0.Add(s.Hooks.ProvisionTimeout.D() + time.Minute)
	d = a.Step(now, c.obs(600))
	if len(d.Hooks) != 1 || d.Hooks[0].Zone != "b" || d.Hooks[0].Count != 1 {
		t.Fatalf("after timeout: %+v", d.Hooks)
	}
}

func TestFailedHookIsAskedAgainAfterAMinute(t *testing.T) {
	s := testSpec()
	s.Hooks.ScaleOut = &Hook{Command: []string{"provision"}, Timeout: Duration(time.Minute)}
	a := mustNew(t, s)
	c := newFake(map[string]int{"a": 1}, nil)
	c.activate("a", 1)
	d := a.Step(t0, c.obs(600))
	if len(d.Hooks) != 1 {
		t.Fatalf("want one scale_out, got %+v", d.Hooks)
	}
	a.HookFailed(d.Hooks[0], t0.Add(5*time.Second))
	// Still held back within the minute after the failure ...
	if d = a.Step(t0.Add(30*time.Second), c.obs(600)); len(d.Hooks) != 0 {
		t.Fatalf("re-asked within a minute of the failure: %+v", d.Hooks)
	}
	// ... asked again after it, long before the provision timeout.
	if d = a.Step(t0.Add(70*time.Second), c.obs(600)); len(d.Hooks) != 1 || d.Hooks[0].Zone != "a" {
		t.Fatalf("not re-asked a minute after the failure: %+v", d.Hooks)
	}
}

func TestReplaceAndRelease(t *testing.T) {
	s := testSpec()
	s.Hooks.Replace = &Hook{URL: "https://infra/replace", Timeout: Duration(time.Minute)}
	s.Hooks.ScaleIn = &Hook{URL: "https://infra/release", Timeout: Duration(time.Minute)}
	s.Standby = StandbyPolicy{Keep: 1, ReleaseAfter: Duration(time.Hour)}
	a := mustNew(t, s)
	c := newFake(map[string]int{"a": 6}, nil)
	c.activate("a", 3)
	c.node("a-01").Healthy = false
	c.node("a-05").Since = t0.Add(-2 * time.Hour)
	c.node("a-06").Since = t0.Add(-2 * time.Hour)
	c.node("a-06").Tags.Spot = true
	d := a.Step(t0, c.obs(150))
	var release *HookRequest
	for i, h := range d.Hooks {
		if h.Kind == HookReplace {
			t.Fatalf("replace requested before replace_after: %+v", h)
		}
		if h.Kind == HookScaleIn {
			release = &d.Hooks[i]
		}
	}
	// Standby: a-04 (recent, since t0-1h... exactly 1h: idle enough too),
	// a-05, a-06; keep 1, so 2 are released, spot first.
	if release == nil || strings.Join(release.Nodes, ",") != "a-06,a-04" && strings.Join(release.Nodes, ",") != "a-06,a-05" {
		t.Fatalf("release %+v", release)
	}
	now := t0.Add(3 * time.Minute)
	d = a.Step(now, c.obs(150))
	var replace *HookRequest
	for i, h := range d.Hooks {
		if h.Kind == HookReplace {
			replace = &d.Hooks[i]
		}
		if h.Kind == HookScaleIn {
			t.Fatalf("release requested twice: %+v", h)
		}
	}
	if replace == nil || replace.Nodes[0] != "a-01" {
		t.Fatalf("replace %+v", d.Hooks)
	}
	drained := false
	for _, x := range d.Drain {
		drained = drained || x.Node == "a-01"
	}
	if !drained {
		t.Fatalf("unhealthy node not drained: %+v", d.Drain)
	}
}

func TestRollback(t *testing.T) {
	s := testSpec()
	s.Targets.P95Latency = Duration(250 * time.Millisecond)
	s.ScaleIn.Stabilisation, s.ScaleIn.MaxStepNodes, s.ScaleIn.MaxStepPercent = 0, 0, 0
	a := mustNew(t, s)
	c := threeZones()
	c.activate("a", 3)
	c.activate("b", 3)
	c.activate("c", 2)
	now := t0
	d := a.Step(now, c.obs(300)) // 8 → 3
	c.apply(now, d)
	if c.active() != 3 || a.State().ScaleIn == nil || a.State().ScaleIn.From != 8 {
		t.Fatalf("scale-in: %d active, watch %+v", c.active(), a.State().ScaleIn)
	}
	// Demand returns to above capacity (3 nodes × 143 req/s): p95 above
	// the SLO within the watch window: roll back to 8.
	now = now.Add(2 * time.Minute)
	d = a.Step(now, c.obs(500))
	if d.Rollback == nil || d.Rollback.Restore != 8 || d.Desired != 8 || !strings.Contains(d.Rollback.Why, "p95") {
		t.Fatalf("no rollback: %+v", d)
	}
	c.apply(now, d)
	// Scale-in is held for Rollback.Hold even at low demand.
	for i := 1; i < 10; i++ {
		now = now.Add(time.Minute)
		d = a.Step(now, c.obs(50))
		if len(d.Drain) > 0 {
			t.Fatalf("scale-in during hold: %s", d.Reason)
		}
	}
	now = now.Add(s.Rollback.Hold.D())
	d = a.Step(now, c.obs(50))
	if len(d.Drain) == 0 {
		t.Fatalf("no scale-in after the hold: %s", d.Reason)
	}

	// A break after the watch window is not a rollback.
	a = mustNew(t, s)
	c = threeZones()
	c.activate("a", 4)
	d = a.Step(t0, c.obs(200))
	c.apply(t0, d)
	d = a.Step(t0.Add(s.Rollback.Watch.D()+time.Minute), c.obs(2000))
	if d.Rollback != nil {
		t.Fatalf("rollback outside the watch window: %+v", d.Rollback)
	}
}

func TestManualAndDryRun(t *testing.T) {
	for _, mode := range []Mode{ModeManual, ModeDryRun} {
		t.Run(string(mode), func(t *testing.T) {
			s := testSpec()
			s.Mode = mode
			s.Hooks.ScaleOut = &Hook{Command: []string{"p"}, Timeout: Duration(time.Minute)}
			a := mustNew(t, s)
			c := newFake(map[string]int{"a": 3}, nil)
			c.activate("a", 2)
			for i := 0; i < 3; i++ {
				d := a.Step(t0.Add(time.Duration(i)*time.Minute), c.obs(900))
				switch mode {
				case ModeManual:
					if d.Changes() || d.Desired != 2 || !strings.HasPrefix(d.Reason, "manual mode") {
						t.Fatalf("manual decided: %+v", d)
					}
				case ModeDryRun:
					if !d.DryRun || len(d.Activate) != 1 || len(d.Hooks) != 1 || d.Desired != 6 {
						t.Fatalf("dry-run: %+v", d)
					}
				}
			}
			if st := a.State(); len(st.Pending) != 0 || st.ScaleIn != nil {
				t.Fatalf("%s recorded actions: %+v", mode, st)
			}
		})
	}
}

func TestUnknownDemandUsesNodeRPS(t *testing.T) {
	s := testSpec()
	s.Targets = Targets{RPSPerNode: 100}
	s.Rollback.Enabled = false
	a := mustNew(t, s)
	c := threeZones()
	c.activate("a", 2)
	o := c.obs(300)
	o.DemandRPS = 0
	d := a.Step(t0, o)
	if d.Recommended != 3 {
		t.Fatalf("recommended %d from node RPS, want 3", d.Recommended)
	}
}

func TestWarmingNodesCountAsCapacity(t *testing.T) {
	a := mustNew(t, testSpec())
	c := threeZones()
	c.startup = time.Minute
	c.activate("a", 2)
	ds := run(a, c, t0, 4, func(int) float64 { return 600 })
	// 2 → 6 at once (4 nodes starting); no further scale-out while they
	// start, although the ready nodes are overloaded.
	if ds[0].Desired != 6 || ds[1].Desired != 6 || len(ds[1].Activate) != 0 || len(ds[2].Activate) != 0 {
		t.Fatalf("over-scaled while starting: %d %d %d", ds[0].Desired, ds[1].Desired, ds[2].Desired)
	}
}

func TestStateContinuity(t *testing.T) {
	s := testSpec()
	s.Predictive.Enabled = true
	s.Targets.P95Latency = Duration(250 * time.Millisecond)
	demand := func(i int) float64 {
		h := float64(i%5760) / 240 // hours into the day (15 s steps)
		return 400 + 300*math.Sin(2*math.Pi*h/24) + 40*math.Sin(float64(i))
	}
	a := mustNew(t, s)
	ca := threeZones()
	ca.activate("a", 2)
	ca.activate("b", 2)
	n := 5760 + 2000 // a day and a bit
	var hist []MinutePoint
	for i := 0; i < n; i++ {
		now := t0.Add(time.Duration(i) * 15 * time.Second)
		d := a.Step(now, ca.obs(demand(i)))
		ca.apply(now, d)
		hist = append(hist, d.History...)
	}
	// Hand over through JSON, as through Raft.
	raw, err := json.Marshal(a.State())
	if err != nil {
		t.Fatal(err)
	}
	var st State
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	b := mustNew(t, s)
	if err := b.Restore(st, hist); err != nil {
		t.Fatal(err)
	}
	cb := &fakeCluster{model: ca.model}
	for _, x := range ca.nodes {
		cp := *x
		cb.nodes = append(cb.nodes, &cp)
	}
	for i := n; i < n+3000; i++ {
		now := t0.Add(time.Duration(i) * 15 * time.Second)
		da := a.Step(now, ca.obs(demand(i)))
		db := b.Step(now, cb.obs(demand(i)))
		ja, _ := json.Marshal(da)
		jb, _ := json.Marshal(db)
		if string(ja) != string(jb) {
			t.Fatalf("step %d differs after restore:\nold %s\nnew %s", i, ja, jb)
		}
		ca.apply(now, da)
		cb.apply(now, db)
	}
	if err := b.Restore(State{Version: 99}, nil); err == nil {
		t.Fatal("restored an unknown state version")
	}
}

func TestSetSpecKeepsState(t *testing.T) {
	a := mustNew(t, testSpec())
	c := threeZones()
	c.activate("a", 2)
	run(a, c, t0, 10, func(int) float64 { return 900 })
	before := a.State()
	s2 := testSpec()
	s2.Limits.MaxActive = 7
	if err := a.SetSpec(s2); err != nil {
		t.Fatal(err)
	}
	if len(a.State().Recommendations) != len(before.Recommendations) {
		t.Fatal("SetSpec dropped the state")
	}
	d := a.Step(t0.Add(10*15*time.Second), c.obs(900))
	if d.Desired != 7 {
		t.Fatalf("new max not applied: %d", d.Desired)
	}
	bad := s2
	bad.Limits.MinActive = 50
	if err := a.SetSpec(bad); err == nil {
		t.Fatal("SetSpec accepted an invalid spec")
	}
}
