package autoscale

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/loadmesh/loadmesh/scheduler"
)

const (
	stateActive   = scheduler.StateActive
	stateStandby  = scheduler.StateStandby
	stateDraining = scheduler.StateDraining
)

// Autoscaler decides, once per control interval, how many nodes should be
// active and which. It is a pure state machine driven from outside: Step
// takes the time and an Observation and returns a Decision; it reads no
// clock, starts no goroutine and does no I/O. It is not safe for concurrent
// use: the leader loop owns it.
type Autoscaler struct {
	spec  Spec
	sched *scheduleSet
	fc    *Forecaster
	hist  *History
	st    State
}

// State is the Autoscaler's memory between steps, exported so that a new
// leader continues where the old one stopped (with Restore). It is small
// (a few hundred bytes to a few KiB) and JSON-encodable; the demand
// history travels separately, as the MinutePoints of Decision.History.
type State struct {
	// Version is the encoding version, StateVersion.
	Version int `json:"version"`
	// LastStep is the time of the last Step.
	LastStep time.Time `json:"last_step"`
	// Recommendations are the raw recommendations inside the longer
	// stabilisation window, oldest first.
	Recommendations []Recommendation `json:"recommendations,omitempty"`
	// ScaleIn is the scale-in being watched for rollback, if any.
	ScaleIn *ScaleInWatch `json:"scale_in,omitempty"`
	// HoldUntil blocks scale-in after a rollback.
	HoldUntil time.Time `json:"hold_until,omitzero"`
	// Pending are scale_out requests whose nodes have not all joined.
	Pending []PendingProvision `json:"pending,omitempty"`
	// Unhealthy is when each unhealthy active node was first seen so.
	Unhealthy map[string]time.Time `json:"unhealthy,omitempty"`
	// Requested is when a replace or release hook was last requested per
	// node, so it is not requested again before ProvisionTimeout.
	Requested map[string]time.Time `json:"requested,omitempty"`
	// Minute is the demand minute being accumulated.
	Minute minuteAgg `json:"minute"`
}

// StateVersion is the State encoding version.
const StateVersion = 1

// Recommendation is one raw recommendation.
type Recommendation struct {
	Time  time.Time `json:"time"`
	Nodes int       `json:"nodes"`
}

// ScaleInWatch is a scale-in under watch.
type ScaleInWatch struct {
	// At is the latest scale-in; the watch ends at At + Rollback.Watch.
	At time.Time `json:"at"`
	// From is the active count before the first scale-in of this watch,
	// To the count after the latest.
	From int `json:"from"`
	To   int `json:"to"`
}

// PendingProvision is a scale_out request in progress.
type PendingProvision struct {
	Zone  string    `json:"zone"`
	Count int       `json:"count"`
	At    time.Time `json:"at"`
	// Base is how many nodes the zone had (any state) when requested;
	// nodes beyond it count as arrived.
	Base int `json:"base"`
}

// New returns an Autoscaler for spec, which must be valid (ParseSpec
// validates; so does New).
func New(spec Spec) (*Autoscaler, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	sched, err := newScheduleSet(spec)
	if err != nil {
		return nil, err
	}
	return &Autoscaler{
		spec:  spec,
		sched: sched,
		fc:    NewForecaster(spec.Predictive),
		hist:  NewHistory(spec.Predictive.HistoryLength.D()),
		st:    State{Version: StateVersion},
	}, nil
}

// Spec returns the spec in force.
func (a *Autoscaler) Spec() Spec { return a.spec }

// SetSpec replaces the spec (the plan file changed) and keeps the state.
// When the forecaster's settings change it is rebuilt from the history.
func (a *Autoscaler) SetSpec(spec Spec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	sched, err := newScheduleSet(spec)
	if err != nil {
		return err
	}
	old := a.spec
	a.spec, a.sched = spec, sched
	if spec.Predictive.HistoryLength != old.Predictive.HistoryLength {
		pts := a.hist.Points()
		a.hist = NewHistory(spec.Predictive.HistoryLength.D())
		for _, p := range pts {
			_ = a.hist.Add(p)
		}
	}
	if spec.Predictive != old.Predictive {
		a.refit()
	}
	return nil
}

// History returns the demand history held (oldest first).
func (a *Autoscaler) History() []MinutePoint { return a.hist.Points() }

// State returns a deep copy of the autoscaler's state.
func (a *Autoscaler) State() State {
	b, _ := json.Marshal(a.st)
	var out State
	_ = json.Unmarshal(b, &out)
	return out
}

// Restore continues from st (from State on the old leader) and the
// replicated demand history (oldest first; points outside the history
// length are dropped). The forecaster is rebuilt from the history.
func (a *Autoscaler) Restore(st State, history []MinutePoint) error {
	if st.Version != 0 && st.Version != StateVersion {
		return fmt.Errorf("autoscaler state version %d: want %d", st.Version, StateVersion)
	}
	st.Version = StateVersion
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("copy state: %w", err)
	}
	var cp State
	if err := json.Unmarshal(b, &cp); err != nil {
		return fmt.Errorf("copy state: %w", err)
	}
	a.st = cp
	a.hist = NewHistory(a.spec.Predictive.HistoryLength.D())
	for _, p := range history {
		_ = a.hist.Add(p) // out-of-order points are skipped
	}
	a.refit()
	return nil
}

func (a *Autoscaler) refit() {
	a.fc = NewForecaster(a.spec.Predictive)
	for _, p := range a.hist.Points() {
		a.fc.Add(p)
	}
}

// recordDemand folds one demand reading into the minute aggregate and
// returns the minute points it completed.
func (a *Autoscaler) recordDemand(now time.Time, demand float64) []MinutePoint {
	if math.IsNaN(demand) || math.IsInf(demand, 0) || demand < 0 {
		demand = 0
	}
	m := now.UTC().Truncate(time.Minute)
	agg := &a.st.Minute
	var done []MinutePoint
	if agg.N > 0 && !m.Equal(agg.Minute) {
		if m.After(agg.Minute) {
			p := agg.point()
			if a.hist.Add(p) == nil {
				a.fc.Add(p)
				done = append(done, p)
			}
		}
		*agg = minuteAgg{}
	}
	if agg.N == 0 {
		agg.Minute = m
	}
	agg.Sum += demand
	agg.N++
	if demand > agg.Max {
		agg.Max = demand
	}
	return done
}

// Step runs one control interval at now with what the leader observes.
// Calls must come in time order, about Spec.Interval apart; a late or
// missed call only delays decisions.
func (a *Autoscaler) Step(now time.Time, obs Observation) Decision {
	spec := a.spec
	d := Decision{Time: now, Mode: spec.Mode, DryRun: spec.Mode == ModeDryRun}

	// Classify nodes.
	var ready []*NodeObservation
	var unhealthySeen map[string]bool
	for i := range obs.Nodes {
		n := &obs.Nodes[i]
		if n.State != stateActive {
			continue
		}
		if !n.Healthy {
			if unhealthySeen == nil {
				unhealthySeen = map[string]bool{}
			}
			unhealthySeen[n.Name] = true
			continue
		}
		d.Active++
		if n.Ready {
			ready = append(ready, n)
		}
	}
	d.Ready = len(ready)

	// Demand and history.
	demand := obs.DemandRPS
	if demand <= 0 {
		demand = 0
		for _, n := range ready {
			demand += n.RPS
		}
	}
	d.History = a.recordDemand(now, demand)

	// Limits, with schedules.
	lo, hi, names := a.sched.limits(now, spec.Limits)
	zoneMinSum := 0
	for _, z := range spec.Limits.Zones {
		zoneMinSum += z.Min
	}
	if lo < zoneMinSum {
		lo = zoneMinSum
	}
	if hi < lo {
		hi = lo
	}
	d.Min, d.Max, d.Schedules = lo, hi, names

	// Target tracking.
	rec, top := a.recommend(&d, ready, demand)

	// Forecast.
	if fc := a.fc.Forecast(now); fc != nil {
		if spec.Targets.RPSPerNode > 0 {
			want := fc.PeakRPS + spec.Predictive.Margin*fc.MAE
			fc.Desired = int(math.Ceil(want/spec.Targets.RPSPerNode - 1e-9))
		}
		if spec.Predictive.Enabled && fc.Ready && spec.Targets.RPSPerNode > 0 {
			d.Metrics = append(d.Metrics, MetricReading{
				Name: "forecast", Value: fc.PeakRPS, Target: spec.Targets.RPSPerNode,
				Ratio: ratioOf(fc.PeakRPS, spec.Targets.RPSPerNode*float64(max(d.Active, 1))), Desired: fc.Desired,
			})
			if fc.Desired > rec {
				rec, top = fc.Desired, "forecast"
				fc.Used = true
			}
		}
		d.Forecast = fc
	}
	if rec < 0 {
		rec = d.Active // nobody has an opinion: hold
	}
	d.Recommended = rec

	// Stabilisation (as HPA): scale out to the lowest recommendation in
	// the scale-out window, scale in to the highest in the scale-in window.
	desired := a.stabilise(now, rec, d.Active)
	why := ""
	switch {
	case desired > d.Active:
		why = fmt.Sprintf("scale out %d→%d: %s", d.Active, desired, top)
	case desired < d.Active:
		why = fmt.Sprintf("scale in %d→%d: %s (highest recommendation over %s)", d.Active, desired, top, spec.ScaleIn.Stabilisation)
	case rec > d.Active:
		why = fmt.Sprintf("hold at %d: %s wants %d, stabilising over %s", d.Active, top, rec, spec.ScaleOut.Stabilisation)
	case rec < d.Active:
		why = fmt.Sprintf("hold at %d: %s wants %d, stabilising over %s", d.Active, top, rec, spec.ScaleIn.Stabilisation)
	default:
		why = fmt.Sprintf("hold at %d: %s", d.Active, top)
	}

	// Step limits.
	if desired > d.Active {
		if lim := stepLimit(spec.ScaleOut, d.Active); lim > 0 && desired-d.Active > lim {
			desired = d.Active + lim
			why += fmt.Sprintf(", limited to +%d per step", lim)
		}
	} else if desired < d.Active {
		if lim := stepLimit(spec.ScaleIn, d.Active); lim > 0 && d.Active-desired > lim {
			desired = d.Active - lim
			why += fmt.Sprintf(", limited to -%d per step", lim)
		}
	}

	// Limits override step limits (as HPA's min/max replicas do).
	if desired < lo {
		desired = lo
		why = fmt.Sprintf("min %d%s: %s", lo, schedNote(names), why)
	}
	if desired > hi {
		desired = hi
		why = fmt.Sprintf("max %d%s: %s", hi, schedNote(names), why)
	}

	// Rollback: a scale-in under watch that broke the SLO is undone.
	if w := a.st.ScaleIn; w != nil {
		if now.Sub(w.At) > spec.Rollback.Watch.D() || !spec.Rollback.Enabled {
			a.st.ScaleIn = nil
		} else if broken, how := a.sloBroken(ready); broken && spec.Mode == ModeAuto {
			restore := min(max(w.From, desired), hi)
			d.Rollback = &RollbackAction{
				ScaleInAt: w.At, From: w.From, To: w.To, Restore: restore,
				Why:       fmt.Sprintf("SLO broken %s after scale-in %d→%d at %s: %s", now.Sub(w.At).Round(time.Second), w.From, w.To, w.At.UTC().Format(time.RFC3339), how),
				HoldUntil: now.Add(spec.Rollback.Hold.D()),
			}
			a.st.HoldUntil = d.Rollback.HoldUntil
			a.st.ScaleIn = nil
			if restore > desired {
				desired = restore
			}
			why = "rollback: " + d.Rollback.Why
		}
	}
	if desired < d.Active && now.Before(a.st.HoldUntil) {
		why = fmt.Sprintf("hold at %d: scale-in blocked until %s after a rollback", d.Active, a.st.HoldUntil.UTC().Format(time.RFC3339))
		desired = d.Active
	}
	d.Desired = desired
	d.Reason = why

	if spec.Mode == ModeManual {
		d.Desired = d.Active
		d.Reason = "manual mode: " + why
		a.st.LastStep = now
		return d
	}

	a.plan(&d, now, obs, unhealthySeen)
	a.st.LastStep = now
	return d
}

func schedNote(names []string) string {
	if len(names) == 0 {
		return ""
	}
	return " (schedule " + strings.Join(names, ", ") + ")"
}

func ratioOf(v, target float64) float64 {
	if target <= 0 {
		return 0
	}
	return v / target
}

// stepLimit is the most nodes one step may add or remove; 0 is no limit.
func stepLimit(b Behavior, active int) int {
	if b.MaxStepNodes == 0 && b.MaxStepPercent == 0 {
		return 0
	}
	lim := b.MaxStepNodes
	if p := int(math.Ceil(b.MaxStepPercent / 100 * float64(active))); p > lim {
		lim = p
	}
	return max(lim, 1)
}

// recommend computes each metric's recommendation (HPA's
// desired = ceil(current × value / target) with a tolerance band) and
// returns the largest and its description; -1 when no metric has an
// opinion.
func (a *Autoscaler) recommend(d *Decision, ready []*NodeObservation, demand float64) (int, string) {
	t := a.spec.Targets
	tol := a.spec.Tolerance
	active := d.Active
	warming := d.Active > len(ready)
	best, top := -1, "no metric"
	consider := func(m MetricReading, desc string) {
		d.Metrics = append(d.Metrics, m)
		if m.Desired > best {
			best, top = m.Desired, desc
		}
	}
	// usage is the total over the ready nodes in target units; the
	// recommendation is ceil(usage / target). Nodes still starting count
	// as zero usage, so they are capacity on its way.
	track := func(name string, usage, mean, target float64, unit string) {
		ratio := 0.0
		if active > 0 {
			ratio = usage / (target * float64(active))
		}
		want := int(math.Ceil(usage/target - 1e-9))
		switch {
		case active > 0 && math.Abs(ratio-1) <= tol:
			want = active
		case active > 0 && ratio < 1 && warming:
			want = active // no scale-in on figures from a partly started set
		}
		consider(MetricReading{Name: name, Value: mean, Target: target, Ratio: ratio, Desired: want},
			fmt.Sprintf("%s %.3g%s/%.3g%s", name, mean, unit, target, unit))
	}
	mean := func(f func(*NodeObservation) (float64, bool)) (sum float64, n int) {
		for _, x := range ready {
			if v, ok := f(x); ok {
				sum += v
				n++
			}
		}
		return sum, n
	}
	if t.InflightUtilisation > 0 {
		if s, n := mean(func(x *NodeObservation) (float64, bool) {
			return x.Inflight / x.Capacity, x.Capacity > 0
		}); n > 0 {
			m := s / float64(n)
			track("inflight_utilisation", m*float64(len(ready)), m, t.InflightUtilisation, "")
		}
	}
	if t.CPU > 0 {
		if s, n := mean(func(x *NodeObservation) (float64, bool) { return x.CPU, true }); n > 0 {
			m := s / float64(n)
			track("cpu", m*float64(len(ready)), m, t.CPU, "")
		}
	}
	if t.Memory > 0 {
		if s, n := mean(func(x *NodeObservation) (float64, bool) { return x.Mem, true }); n > 0 {
			m := s / float64(n)
			track("memory", m*float64(len(ready)), m, t.Memory, "")
		}
	}
	if t.RPSPerNode > 0 && (demand > 0 || len(ready) > 0) {
		per := 0.0
		if active > 0 {
			per = demand / float64(active)
		}
		track("rps_per_node", demand, per, t.RPSPerNode, "")
	}
	if t.P95Latency > 0 {
		if s, n := mean(func(x *NodeObservation) (float64, bool) { return x.P95.Seconds(), x.P95 > 0 }); n > 0 {
			m := s / float64(n)
			target := t.P95Latency.D().Seconds()
			r := m / target
			want := -1 // latency below its SLO says nothing about scaling in
			switch {
			case r > 1+tol:
				want = int(math.Ceil(float64(active) * math.Min(r, 2)))
			case r >= 1-tol:
				want = active
			}
			d.Metrics = append(d.Metrics, MetricReading{Name: "p95_latency", Value: m, Target: target, Ratio: r, Desired: want})
			if want > best {
				best, top = want, fmt.Sprintf("p95_latency %s/%s", time.Duration(m*1e9).Round(time.Millisecond), t.P95Latency)
			}
		}
	}
	return best, top
}

// stabilise applies HPA's stabilisation windows and records rec.
func (a *Autoscaler) stabilise(now time.Time, rec, current int) int {
	upCut := now.Add(-a.spec.ScaleOut.Stabilisation.D())
	downCut := now.Add(-a.spec.ScaleIn.Stabilisation.D())
	up, down := rec, rec
	keep := a.st.Recommendations[:0]
	oldest := upCut
	if downCut.Before(oldest) {
		oldest = downCut
	}
	for _, r := range a.st.Recommendations {
		if r.Time.After(now) {
			continue // from a clock that went backwards; forget it
		}
		if r.Time.After(upCut) {
			up = min(up, r.Nodes)
		}
		if r.Time.After(downCut) {
			down = max(down, r.Nodes)
		}
		if r.Time.After(oldest) {
			keep = append(keep, r)
		}
	}
	a.st.Recommendations = append(keep, Recommendation{Time: now, Nodes: rec})
	out := current
	if out < up {
		out = up
	}
	if out > down {
		out = down
	}
	return out
}

// sloBroken reports whether the ready nodes break the SLO: mean p95 above
// its target, or mean in-flight utilisation at or above capacity.
func (a *Autoscaler) sloBroken(ready []*NodeObservation) (bool, string) {
	t := a.spec.Targets
	if len(ready) == 0 {
		return false, ""
	}
	if t.P95Latency > 0 {
		sum, n := 0.0, 0
		for _, x := range ready {
			if x.P95 > 0 {
				sum += x.P95.Seconds()
				n++
			}
		}
		if n > 0 && sum/float64(n) > t.P95Latency.D().Seconds() {
			return true, fmt.Sprintf("p95 %s above the %s SLO", time.Duration(sum/float64(n)*1e9).Round(time.Millisecond), t.P95Latency)
		}
	}
	if t.InflightUtilisation > 0 {
		sum, n := 0.0, 0
		for _, x := range ready {
			if x.Capacity > 0 {
				sum += x.Inflight / x.Capacity
				n++
			}
		}
		if n > 0 && sum/float64(n) >= 1 {
			return true, fmt.Sprintf("in-flight utilisation %.2f at capacity", sum/float64(n))
		}
	}
	return false, ""
}

// plan turns d.Desired into node actions and hook requests.
func (a *Autoscaler) plan(d *Decision, now time.Time, obs Observation, unhealthySeen map[string]bool) {
	spec := a.spec
	nodesPerZone := map[string]int{}
	for i := range obs.Nodes {
		nodesPerZone[obs.Nodes[i].Zone]++
	}
	sel := spec.Selection
	record := d.Mode == ModeAuto // dry-run records nothing it did not do
	zs := zoneTable(spec, obs.Nodes)

	// Pending provisions: drop those whose nodes arrived or that expired.
	pending := map[string]int{}
	keep := a.st.Pending[:0]
	for _, p := range a.st.Pending {
		arrived := nodesPerZone[p.Zone] - p.Base
		left := p.Count - max(arrived, 0)
		if left <= 0 || now.Sub(p.At) > spec.Hooks.ProvisionTimeout.D() || now.Before(p.At) {
			continue
		}
		pending[p.Zone] += left
		keep = append(keep, p)
	}
	a.st.Pending = keep

	act := func(n *NodeObservation, why string) {
		d.Activate = append(d.Activate, NodeAction{Node: n.Name, Zone: n.Zone, Why: why})
	}
	drain := func(n *NodeObservation, why string) {
		d.Drain = append(d.Drain, NodeAction{Node: n.Name, Zone: n.Zone, Why: why})
	}
	short := map[string]int{}
	addShort := func(s map[string]int) {
		for z, v := range s {
			short[z] += v
		}
	}

	// Zone limits first: over-max zones drain, under-min zones fill.
	for _, n := range pickOverMax(sel, zs) {
		drain(n, fmt.Sprintf("zone %s above its max %d", n.Zone, spec.Limits.Zones[n.Zone].Max))
	}
	up, s := pickUnderMin(sel, zs)
	for _, n := range up {
		act(n, fmt.Sprintf("zone %s below its min %d", n.Zone, spec.Limits.Zones[n.Zone].Min))
	}
	addShort(s)

	current := d.Active - len(d.Drain) + len(d.Activate)
	switch {
	case d.Desired > current:
		allowed := func(z string) bool { return len(spec.Limits.Zones) == 0 || spec.hasZone(z) || nodesPerZone[z] > 0 }
		picked, s := pickActivations(sel, zs, d.Desired-current, allowed)
		for _, n := range picked {
			act(n, d.Reason)
		}
		addShort(s)
	case d.Desired < current:
		picked := pickDrains(sel, zs, current-d.Desired)
		for _, n := range picked {
			drain(n, d.Reason)
		}
		if len(picked) > 0 && record && spec.Rollback.Enabled {
			from := d.Active
			if w := a.st.ScaleIn; w != nil {
				from = max(from, w.From)
			}
			a.st.ScaleIn = &ScaleInWatch{At: now, From: from, To: d.Active - len(picked)}
		}
	}

	// Shortfall: ask the scale_out hook for what is not already on its way.
	for _, z := range sortedKeys(short) {
		want := short[z]
		if d.Shortfall == nil {
			d.Shortfall = map[string]int{}
		}
		d.Shortfall[z] = want
		need := want - pending[z]
		if need <= 0 || spec.Hooks.ScaleOut == nil {
			continue
		}
		d.Hooks = append(d.Hooks, HookRequest{
			Kind: HookScaleOut, Zone: z, Count: need, Hook: *spec.Hooks.ScaleOut,
			Why: fmt.Sprintf("%d more active nodes wanted in zone %s than healthy standby nodes (%d already requested)", want, z, pending[z]),
		})
		if record {
			a.st.Pending = append(a.st.Pending, PendingProvision{Zone: z, Count: need, At: now, Base: nodesPerZone[z]})
		}
	}

	// Unhealthy active nodes: drain and replace after ReplaceAfter.
	if a.st.Unhealthy == nil {
		a.st.Unhealthy = map[string]time.Time{}
	}
	for name := range a.st.Unhealthy {
		if !unhealthySeen[name] {
			delete(a.st.Unhealthy, name)
		}
	}
	var replace []string
	for i := range obs.Nodes {
		n := &obs.Nodes[i]
		if !unhealthySeen[n.Name] {
			continue
		}
		since, ok := a.st.Unhealthy[n.Name]
		if !ok {
			a.st.Unhealthy[n.Name] = now
			since = now
		}
		if now.Sub(since) < spec.Hooks.ReplaceAfter.D() {
			continue
		}
		drain(n, fmt.Sprintf("unhealthy since %s", since.UTC().Format(time.RFC3339)))
		if spec.Hooks.Replace != nil && a.canRequest(n.Name, now) {
			replace = append(replace, n.Name)
		}
	}
	if len(replace) > 0 {
		sort.Strings(replace)
		d.Hooks = append(d.Hooks, HookRequest{Kind: HookReplace, Nodes: replace, Hook: *spec.Hooks.Replace,
			Why: fmt.Sprintf("unhealthy for at least %s", spec.Hooks.ReplaceAfter)})
		if record {
			a.markRequested(replace, now)
		}
	}

	// Idle standby nodes beyond Keep: release with the scale_in hook.
	if spec.Standby.ReleaseAfter > 0 && spec.Hooks.ScaleIn != nil {
		activating := map[string]bool{}
		for _, x := range d.Activate {
			activating[x.Node] = true
		}
		var idle []*NodeObservation
		healthyStandby, leaving := 0, 0
		for i := range obs.Nodes {
			n := &obs.Nodes[i]
			if n.State != stateStandby || !n.Healthy || activating[n.Name] {
				continue
			}
			healthyStandby++
			switch {
			case !a.canRequest(n.Name, now):
				leaving++ // release already requested
			case now.Sub(n.Since) >= spec.Standby.ReleaseAfter.D():
				idle = append(idle, n)
			}
		}
		extra := healthyStandby - leaving - spec.Standby.Keep
		if extra > 0 && len(idle) > 0 {
			drainOrder(sel, idle) // release spot and expensive nodes first
			if len(idle) > extra {
				idle = idle[:extra]
			}
			names := make([]string, len(idle))
			for i, n := range idle {
				names[i] = n.Name
			}
			d.Hooks = append(d.Hooks, HookRequest{Kind: HookScaleIn, Nodes: names, Hook: *spec.Hooks.ScaleIn,
				Why: fmt.Sprintf("%d standby nodes idle for %s beyond the %d kept", len(names), spec.Standby.ReleaseAfter, spec.Standby.Keep)})
			if record {
				a.markRequested(names, now)
			}
		}
	}
	if d.Reason == "" {
		d.Reason = "hold"
	}
}

func (a *Autoscaler) canRequest(node string, now time.Time) bool {
	t, ok := a.st.Requested[node]
	return !ok || now.Sub(t) > a.spec.Hooks.ProvisionTimeout.D() || now.Before(t)
}

func (a *Autoscaler) markRequested(nodes []string, now time.Time) {
	if a.st.Requested == nil {
		a.st.Requested = map[string]time.Time{}
	}
	for _, n := range nodes {
		a.st.Requested[n] = now
	}
	for n, t := range a.st.Requested {
		if now.Sub(t) > a.spec.Hooks.ProvisionTimeout.D() {
			delete(a.st.Requested, n)
		}
	}
}

// FailedHookRetry is how soon after a hook failed (all its retries spent)
// the autoscaler may ask for the same capacity again.
const FailedHookRetry = time.Minute

// HookFailed tells the autoscaler that a hook it asked for in an earlier
// Step has failed for good: the capacity (scale_out) or release (scale_in,
// replace) it stood for is not coming. The request may then be made again
// FailedHookRetry after now instead of after the whole provision timeout.
// Like Step, it must not be called concurrently with other methods.
func (a *Autoscaler) HookFailed(req HookRequest, now time.Time) {
	// An entry made at cut expires FailedHookRetry from now.
	cut := now.Add(FailedHookRetry - a.spec.Hooks.ProvisionTimeout.D())
	switch req.Kind {
	case HookScaleOut:
		for i := range a.st.Pending {
			if p := &a.st.Pending[i]; p.Zone == req.Zone && p.At.After(cut) {
				p.At = cut
			}
		}
	default:
		for _, n := range req.Nodes {
			if t, ok := a.st.Requested[n]; ok && t.After(cut) {
				a.st.Requested[n] = cut
			}
		}
	}
}
