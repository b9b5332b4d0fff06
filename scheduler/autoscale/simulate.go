package autoscale

import (
	"fmt"
	"math"
	"sort"
	"time"
)

// NodeModel is the simulator's model of a node: a fixed rate it serves
// within the SLO, how long it takes to start and to drain, and the pools
// of nodes that exist at the start.
type NodeModel struct {
	// Capacity is requests/s one node serves at the SLO. Demand above
	// ready nodes × Capacity is an SLO violation. Default 100.
	Capacity float64 `json:"capacity"`
	// InflightCapacity is the node's --capacity (in-flight requests at
	// full load); in-flight is modelled as utilisation × InflightCapacity.
	// Default 64.
	InflightCapacity float64 `json:"inflight_capacity"`
	// StartupDelay is standby → ready. Default 60s.
	StartupDelay Duration `json:"startup_delay"`
	// ProvisionDelay is from a scale_out hook to the new node joining
	// (then in Spec.NewNodeState; an active one still needs StartupDelay).
	// Default 5m.
	ProvisionDelay Duration `json:"provision_delay"`
	// DrainTime is draining → standby. Default 30s.
	DrainTime Duration `json:"drain_time"`
	// SLO is the p95 latency at full capacity, for the latency model
	// p95 = SLO × (0.4 + 0.6·u³) for utilisation u ≤ 1 and SLO × u⁴
	// above. Default the spec's p95 target, else 250ms.
	SLO Duration `json:"slo"`
	// Pools are the nodes that exist at the start, all standby (the
	// simulator activates some so that the first interval is served).
	Pools []Pool `json:"pools"`
}

// Pool is a group of identical nodes in one zone.
type Pool struct {
	Zone  string   `json:"zone"`
	Count int      `json:"count"`
	Tags  NodeTags `json:"tags"`
}

// DefaultNodeModel returns the simulator's default model for spec: in each
// zone of the spec (or zones a, b, c when it names none) enough nodes for
// max_active spread evenly (the zone's max when it has one), two thirds
// on-demand (0.12 per hour) and one third spot (0.05 per hour), 250 W
// each, carbon region = zone name.
func DefaultNodeModel(spec Spec) NodeModel {
	m := NodeModel{
		Capacity: 100, InflightCapacity: 64,
		StartupDelay: Duration(60 * time.Second), ProvisionDelay: Duration(5 * time.Minute), DrainTime: Duration(30 * time.Second),
		SLO: spec.Targets.P95Latency,
	}
	if m.SLO == 0 {
		m.SLO = Duration(250 * time.Millisecond)
	}
	zones := spec.zoneNames()
	if len(zones) == 0 {
		zones = []string{"a", "b", "c"}
	}
	per := (spec.Limits.MaxActive + len(zones) - 1) / len(zones)
	for _, z := range zones {
		n := per
		if zl := spec.Limits.Zones[z]; zl.Max > 0 {
			n = zl.Max
		}
		spot := n / 3
		m.Pools = append(m.Pools,
			Pool{Zone: z, Count: n - spot, Tags: NodeTags{CostPerHour: 0.12, CarbonRegion: z, PowerWatts: 250}},
			Pool{Zone: z, Count: spot, Tags: NodeTags{CostPerHour: 0.05, Spot: true, CarbonRegion: z, PowerWatts: 250}})
	}
	return m
}

// SimOptions tune Simulate.
type SimOptions struct {
	// Scale multiplies the trace's rates. 0 means automatic: the trace's
	// peak becomes PeakNodes × Capacity.
	Scale float64
	// PeakNodes is the number of nodes the peak needs at 100 % of
	// Capacity when Scale is automatic. Default 20.
	PeakNodes float64
	// Interpolate replays the trace linearly between interval midpoints
	// instead of holding each rate over its interval. Default (nil):
	// interpolate when the trace's step is over 5 minutes (hourly and
	// weekly traces), hold otherwise.
	Interpolate *bool
	// ReportEvery is the row length of the report. 0 picks 1h for up to
	// two days, 1d up to 35 days, 1w up to 182 days, else 28d.
	ReportEvery time.Duration
	// ChartPoints bounds the series kept for charts. Default 1500.
	ChartPoints int
}

// Report is a simulation's outcome.
type Report struct {
	Trace string `json:"trace"`
	// Mode is the spec's mode, plus whether predictive scaling was on and
	// how many schedules there were.
	Mode       string    `json:"mode"`
	Predictive bool      `json:"predictive"`
	Schedules  int       `json:"schedules"`
	Start      time.Time `json:"start"`
	End        time.Time `json:"end"`
	Step       Duration  `json:"trace_step"`
	Tick       Duration  `json:"tick"`
	// Scale is the factor applied to the trace's rates.
	Scale       float64     `json:"scale"`
	Interpolate bool        `json:"interpolated"`
	Model       NodeModel   `json:"model"`
	Rows        []ReportRow `json:"rows"`
	Total       ReportRow   `json:"total"`
	// Counts of what the autoscaler did.
	Activations int `json:"activations"`
	Drains      int `json:"drains"`
	Rollbacks   int `json:"rollbacks"`
	ScaleOuts   int `json:"scale_out_hooks"`
	Provisioned int `json:"provisioned"`
	Released    int `json:"released"`
	// ForecastMAPE and ForecastMAE are the forecaster's tracked error at
	// the end (0 when it never started); ForecastUsed counts the steps the
	// forecast drove the recommendation.
	ForecastMAPE float64 `json:"forecast_mape"`
	ForecastMAE  float64 `json:"forecast_mae"`
	ForecastUsed int     `json:"forecast_used_steps"`
	// Series is demand against capacity for charts.
	Series []SeriesPoint `json:"series,omitempty"`
}

// ReportRow aggregates one report interval (or the whole run for Total).
type ReportRow struct {
	Start time.Time `json:"start"`
	// DemandMean and DemandPeak are requests/s (after scaling).
	DemandMean float64 `json:"demand_mean_rps"`
	DemandPeak float64 `json:"demand_peak_rps"`
	// CapacityMean is the mean served capacity (ready nodes × Capacity).
	CapacityMean float64 `json:"capacity_mean_rps"`
	// ActiveMean is the mean number of active nodes (including those still
	// starting).
	ActiveMean float64 `json:"active_mean"`
	// SLOMinutes is the time demand exceeded served capacity, in minutes.
	SLOMinutes float64 `json:"slo_violating_minutes"`
	// NodeHours counts active (starting included) and draining nodes.
	NodeHours float64 `json:"node_hours"`
	// Cost is NodeHours weighted by each node's cost_per_hour.
	Cost float64 `json:"cost"`
	// CarbonKg is kg CO2e of those nodes (power × regional intensity).
	CarbonKg float64 `json:"carbon_kg"`

	dur time.Duration
}

// SeriesPoint is one chart point: means over the point's span.
type SeriesPoint struct {
	Time     time.Time `json:"t"`
	Demand   float64   `json:"demand"`
	Capacity float64   `json:"capacity"`
	Active   float64   `json:"active"`
}

type simNode struct {
	NodeObservation
	readyAt    time.Time // active: serves from then
	drainUntil time.Time // draining: standby from then
}

func gcd(a, b time.Duration) time.Duration {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// Simulate replays trace against spec with a virtual clock: every
// control interval it builds an Observation from the node model, calls
// the real Autoscaler.Step and applies the Decision (activations take
// StartupDelay, drains DrainTime, scale_out hooks ProvisionDelay, scale_in
// hooks remove the named standby nodes; replace hooks are not modelled).
// Between steps it advances in ticks of gcd(interval, trace step), at
// least 1s, counting SLO-violating time, node-hours, cost and carbon.
func Simulate(spec Spec, trace Trace, model NodeModel, opts SimOptions) (Report, error) {
	a, err := New(spec)
	if err != nil {
		return Report{}, err
	}
	if len(trace.Samples) < 2 || trace.Step <= 0 {
		return Report{}, fmt.Errorf("trace %s: want at least 2 samples", trace.Name)
	}
	if model.Capacity <= 0 || model.InflightCapacity <= 0 {
		return Report{}, fmt.Errorf("node model: capacity and inflight capacity must be positive")
	}
	if opts.PeakNodes <= 0 {
		opts.PeakNodes = 20
	}
	if opts.ChartPoints <= 0 {
		opts.ChartPoints = 1500
	}
	scale := opts.Scale
	if scale <= 0 {
		peak := trace.Peak()
		if peak <= 0 {
			return Report{}, fmt.Errorf("trace %s: all zero", trace.Name)
		}
		scale = opts.PeakNodes * model.Capacity / peak
	}
	interp := trace.Step > 5*time.Minute
	if opts.Interpolate != nil {
		interp = *opts.Interpolate
	}
	start, end := trace.Span()
	interval := spec.Interval.D()
	tick := gcd(interval, trace.Step)
	if tick < time.Second {
		tick = time.Second
	}
	if opts.ReportEvery <= 0 {
		span := end.Sub(start)
		switch {
		case span <= 48*time.Hour:
			opts.ReportEvery = time.Hour
		case span <= 35*24*time.Hour:
			opts.ReportEvery = 24 * time.Hour
		case span <= 182*24*time.Hour:
			opts.ReportEvery = 7 * 24 * time.Hour
		default:
			opts.ReportEvery = 28 * 24 * time.Hour
		}
	}
	demandAt := trace.demandFunc(scale, interp)

	rep := Report{
		Trace: trace.Name, Mode: string(spec.Mode), Predictive: spec.Predictive.Enabled, Schedules: len(spec.Schedules),
		Start: start, End: end, Step: Duration(trace.Step), Tick: Duration(tick), Scale: scale, Interpolate: interp, Model: model,
	}

	// Nodes, all standby; then activate enough for the first interval.
	var nodes []*simNode
	seq := map[string]int{}
	newNode := func(p Pool, state NodeObservation) *simNode {
		seq[p.Zone]++
		n := &simNode{NodeObservation: state}
		n.Name = fmt.Sprintf("%s-%03d", p.Zone, seq[p.Zone])
		n.Zone, n.Tags, n.Healthy = p.Zone, p.Tags, true
		nodes = append(nodes, n)
		return n
	}
	for _, p := range model.Pools {
		for i := 0; i < p.Count; i++ {
			newNode(p, NodeObservation{State: stateStandby, Since: start})
		}
	}
	{
		d0 := demandAt(start)
		want := spec.Limits.MinActive
		if spec.Targets.RPSPerNode > 0 {
			want = max(want, int(math.Ceil(d0/spec.Targets.RPSPerNode)))
		} else if spec.Targets.InflightUtilisation > 0 {
			want = max(want, int(math.Ceil(d0/(model.Capacity*spec.Targets.InflightUtilisation))))
		}
		lo, hi, _ := a.sched.limits(start, spec.Limits)
		want = min(max(want, lo), hi)
		obs := simObservation(nodes, 0, model)
		zs := zoneTable(spec, obs.Nodes)
		picked, _ := pickActivations(spec.Selection, zs, want, func(string) bool { return true })
		for _, p := range picked {
			for _, n := range nodes {
				if n.Name == p.Name {
					n.State, n.Ready, n.readyAt = stateActive, true, start
				}
			}
		}
	}

	type arrival struct {
		at   time.Time
		pool Pool
	}
	var arrivals []arrival
	zonePool := map[string]Pool{}
	for _, p := range model.Pools {
		if _, ok := zonePool[p.Zone]; !ok || (zonePool[p.Zone].Tags.Spot && !p.Tags.Spot) {
			zonePool[p.Zone] = p
		}
	}

	// Report rows and chart series.
	row := ReportRow{Start: start}
	var total ReportRow
	chartEvery := end.Sub(start) / time.Duration(opts.ChartPoints)
	if chartEvery < tick {
		chartEvery = tick
	}
	if r := chartEvery % tick; r != 0 {
		chartEvery += tick - r
	}
	var cp SeriesPoint
	var cpDur time.Duration
	cp.Time = start

	flushRow := func(r *ReportRow) {
		if r.dur <= 0 {
			return
		}
		h := r.dur.Hours()
		r.DemandMean /= h
		r.CapacityMean /= h
		r.ActiveMean /= h
	}
	account := func(r *ReportRow, dem, capRPS float64, active int, nh, cost, kg float64, viol time.Duration) {
		h := tick.Hours()
		r.DemandMean += dem * h
		r.DemandPeak = math.Max(r.DemandPeak, dem)
		r.CapacityMean += capRPS * h
		r.ActiveMean += float64(active) * h
		r.SLOMinutes += viol.Minutes()
		r.NodeHours += nh
		r.Cost += cost
		r.CarbonKg += kg
		r.dur += tick
	}

	sel := spec.Selection
	var obsBuf []NodeObservation
	for t := start; t.Before(end); t = t.Add(tick) {
		// Node transitions.
		for _, n := range nodes {
			switch {
			case n.State == stateActive && !n.Ready && !t.Before(n.readyAt):
				n.Ready = true
			case n.State == stateDraining && !t.Before(n.drainUntil):
				n.State, n.Since = stateStandby, t
			}
		}
		for len(arrivals) > 0 && !t.Before(arrivals[0].at) {
			n := newNode(arrivals[0].pool, NodeObservation{State: spec.NewNodeState, Since: t})
			if n.State == stateActive {
				n.readyAt = t.Add(model.StartupDelay.D())
			}
			arrivals = arrivals[1:]
			rep.Provisioned++
		}

		dem := demandAt(t)
		// Control step.
		if t.Sub(start)%interval == 0 {
			obs := simObservationInto(obsBuf, nodes, dem, model)
			obsBuf = obs.Nodes
			d := a.Step(t, obs)
			if d.Forecast != nil && d.Forecast.Used {
				rep.ForecastUsed++
			}
			if d.Rollback != nil {
				rep.Rollbacks++
			}
			if !d.DryRun && d.Mode == ModeAuto && d.Changes() {
				byName := make(map[string]*simNode, len(nodes))
				for _, n := range nodes {
					byName[n.Name] = n
				}
				for _, x := range d.Activate {
					if n := byName[x.Node]; n != nil && n.State == stateStandby {
						n.State, n.Since, n.Ready, n.readyAt = stateActive, t, false, t.Add(model.StartupDelay.D())
						rep.Activations++
					}
				}
				for _, x := range d.Drain {
					if n := byName[x.Node]; n != nil && n.State == stateActive {
						n.State, n.Since, n.Ready, n.drainUntil = stateDraining, t, false, t.Add(model.DrainTime.D())
						rep.Drains++
					}
				}
				for _, h := range d.Hooks {
					switch h.Kind {
					case HookScaleOut:
						rep.ScaleOuts++
						p, ok := zonePool[h.Zone]
						if !ok {
							p = Pool{Zone: h.Zone}
						}
						for i := 0; i < h.Count; i++ {
							arrivals = append(arrivals, arrival{at: t.Add(model.ProvisionDelay.D()), pool: p})
						}
						sort.SliceStable(arrivals, func(i, j int) bool { return arrivals[i].at.Before(arrivals[j].at) })
					case HookScaleIn:
						gone := map[string]bool{}
						for _, name := range h.Nodes {
							if n := byName[name]; n != nil && n.State == stateStandby {
								gone[name] = true
							}
						}
						kept := nodes[:0]
						for _, n := range nodes {
							if !gone[n.Name] {
								kept = append(kept, n)
							}
						}
						nodes = kept
						rep.Released += len(gone)
					}
				}
			}
		}

		// Accounting for this tick.
		ready, active := 0, 0
		var nh, cost, kg float64
		h := tick.Hours()
		for _, n := range nodes {
			if n.State == stateActive || n.State == stateDraining {
				nh += h
				cost += n.Tags.CostPerHour * h
				kg += sel.KgPerHour(n.Tags) * h
			}
			if n.State == stateActive {
				active++
				if n.Ready {
					ready++
				}
			}
		}
		capRPS := float64(ready) * model.Capacity
		var viol time.Duration
		if dem > capRPS+1e-9 {
			viol = tick
		}
		if !t.Before(row.Start.Add(opts.ReportEvery)) {
			flushRow(&row)
			rep.Rows = append(rep.Rows, row)
			row = ReportRow{Start: row.Start.Add(opts.ReportEvery)}
		}
		account(&row, dem, capRPS, active, nh, cost, kg, viol)
		account(&total, dem, capRPS, active, nh, cost, kg, viol)

		if t.Sub(cp.Time) >= chartEvery {
			if cpDur > 0 {
				f := float64(cpDur / tick)
				cp.Demand /= f
				cp.Capacity /= f
				cp.Active /= f
				rep.Series = append(rep.Series, cp)
			}
			cp, cpDur = SeriesPoint{Time: t}, 0
		}
		cp.Demand += dem
		cp.Capacity += capRPS
		cp.Active += float64(active)
		cpDur += tick
	}
	if row.dur > 0 {
		flushRow(&row)
		rep.Rows = append(rep.Rows, row)
	}
	if cpDur > 0 {
		f := float64(cpDur / tick)
		cp.Demand /= f
		cp.Capacity /= f
		cp.Active /= f
		rep.Series = append(rep.Series, cp)
	}
	flushRow(&total)
	total.Start = start
	rep.Total = total
	if a.fc.started {
		rep.ForecastMAPE, rep.ForecastMAE = a.fc.mape, a.fc.mae
	}
	return rep, nil
}

// simObservation builds what the leader would see: demand split evenly
// over the ready active nodes, in-flight by Little's law at the modelled
// utilisation, p95 from the latency model, CPU and memory rising with
// load.
func simObservation(nodes []*simNode, demand float64, m NodeModel) Observation {
	return simObservationInto(nil, nodes, demand, m)
}

// simObservationInto is simObservation reusing buf for the nodes.
func simObservationInto(buf []NodeObservation, nodes []*simNode, demand float64, m NodeModel) Observation {
	ready := 0
	for _, n := range nodes {
		if n.State == stateActive && n.Ready {
			ready++
		}
	}
	u := 0.0
	per := 0.0
	if ready > 0 {
		per = demand / float64(ready)
		u = per / m.Capacity
	}
	if cap(buf) < len(nodes) {
		buf = make([]NodeObservation, len(nodes))
	}
	obs := Observation{DemandRPS: demand, Nodes: buf[:len(nodes)]}
	for i, n := range nodes {
		o := n.NodeObservation
		if o.State == stateActive && o.Ready {
			o.RPS = math.Min(per, m.Capacity*1.2)
			o.Inflight = u * m.InflightCapacity
			o.Capacity = m.InflightCapacity
			o.P95 = latencyModel(m.SLO.D(), u)
			o.CPU = math.Min(1, 0.05+0.8*u)
			o.Mem = math.Min(1, 0.35+0.15*u)
		} else {
			o.Ready = false
		}
		obs.Nodes[i] = o
	}
	return obs
}

func latencyModel(slo time.Duration, u float64) time.Duration {
	var f float64
	if u <= 1 {
		f = 0.4 + 0.6*u*u*u
	} else {
		f = math.Min(u*u*u*u, 100)
	}
	return time.Duration(float64(slo) * f)
}
