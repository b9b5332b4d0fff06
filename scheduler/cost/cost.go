// Package cost integrates what the cluster's nodes cost over time: node
// hours by state, money (the node tag cost_per_hour), energy (power_watts)
// and carbon (energy × the intensity of the node's carbon_region, from the
// scaling spec's selection.carbon_intensity). It is plain data and
// arithmetic: the leader feeds it samples of the capacity plan, writes the
// resulting Records through Raft, and every replica summarises them.
//
// Which states cost money. A node in the plan as active, draining,
// standby or cordoned runs a server and is billed at its cost_per_hour and
// draws power; a node that has left the cluster (PlanNode.Left set) is not
// billed and draws nothing, whatever its state. A standby node draws its
// standby_power_watts tag, or StandbyPowerRatio × power_watts when it has
// none. A node without a cost_per_hour tag costs nothing and one without a
// power_watts tag uses no energy (and emits no carbon): the accounting
// counts what the operator declared, never a default.
package cost

import (
	"maps"
	"strconv"
	"strings"
	"time"

	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/scheduler/autoscale"
)

// StateLeft is the accounting state of a node that has left the cluster;
// it is not a plan state.
const StateLeft = "left"

// StandbyPowerRatio is the share of power_watts a standby node draws when
// it has no standby_power_watts tag: an idle server draws roughly half its
// typical load (SPECpower's idle-to-loaded ratio for current servers).
const StandbyPowerRatio = 0.5

// TagStandbyPowerWatts is the optional tag giving a standby node's draw.
const TagStandbyPowerWatts = "standby_power_watts"

// Billed reports whether a node in accounting state st runs a server: every
// plan state does, a node that left does not.
func Billed(st string) bool {
	switch scheduler.NodeState(st) {
	case scheduler.StateActive, scheduler.StateStandby, scheduler.StateDraining, scheduler.StateCordoned:
		return true
	}
	return false
}

// Rates are one node's prices and draws.
type Rates struct {
	CostPerHour float64
	// PowerWatts is the draw while active, draining or cordoned;
	// StandbyWatts while standby.
	PowerWatts   float64
	StandbyWatts float64
	// CarbonIntensity is g CO2e per kWh of the node's carbon region.
	CarbonIntensity float64
}

// RatesFor reads a node's rates from its plan tags and the spec's carbon
// intensities. Malformed numeric tags count as absent (the agent refuses
// them at start-up; the plan may still hold an old one).
func RatesFor(tags map[string]string, sel autoscale.Selection) Rates {
	nt, _ := autoscale.ParseNodeTags(tags)
	r := Rates{CostPerHour: nt.CostPerHour, PowerWatts: nt.PowerWatts}
	r.StandbyWatts = r.PowerWatts * StandbyPowerRatio
	if v, ok := tags[TagStandbyPowerWatts]; ok {
		if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && f >= 0 && f <= 1e9 {
			r.StandbyWatts = f
		}
	}
	r.CarbonIntensity = sel.DefaultCarbonIntensity
	if v, ok := sel.CarbonIntensity[nt.CarbonRegion]; ok && nt.CarbonRegion != "" {
		r.CarbonIntensity = v
	}
	return r
}

// PerHour is what the node costs per hour in accounting state st.
func (r Rates) PerHour(st string) float64 {
	if !Billed(st) {
		return 0
	}
	return r.CostPerHour
}

// Watts is the node's draw in accounting state st.
func (r Rates) Watts(st string) float64 {
	switch {
	case !Billed(st):
		return 0
	case st == string(scheduler.StateStandby):
		return r.StandbyWatts
	}
	return r.PowerWatts
}

// Totals are integrated figures: node-hours by accounting state, money in
// the spec's currency, energy in kWh and carbon in g CO2e.
type Totals struct {
	NodeHours   map[string]float64 `json:"node_hours,omitempty"`
	Cost        float64            `json:"cost"`
	EnergyKWh   float64            `json:"energy_kwh"`
	CarbonGrams float64            `json:"carbon_grams"`
}

// Add adds o to t.
func (t *Totals) Add(o Totals) {
	if len(o.NodeHours) > 0 && t.NodeHours == nil {
		t.NodeHours = map[string]float64{}
	}
	for st, h := range o.NodeHours {
		t.NodeHours[st] += h
	}
	t.Cost += o.Cost
	t.EnergyKWh += o.EnergyKWh
	t.CarbonGrams += o.CarbonGrams
}

// BilledHours is the node-hours of the billed states.
func (t Totals) BilledHours() float64 {
	var h float64
	for st, v := range t.NodeHours {
		if Billed(st) {
			h += v
		}
	}
	return h
}

// Integrate returns the figures of a node in state st with rates r for d.
func Integrate(st string, r Rates, d time.Duration) Totals {
	if d <= 0 {
		return Totals{}
	}
	h := d.Hours()
	kwh := r.Watts(st) * h / 1000
	return Totals{
		NodeHours:   map[string]float64{st: h},
		Cost:        r.PerHour(st) * h,
		EnergyKWh:   kwh,
		CarbonGrams: kwh * r.CarbonIntensity,
	}
}

// Usage is one node's use over a Record's period.
type Usage struct {
	Node string            `json:"node"`
	Zone string            `json:"zone,omitempty"`
	Tags map[string]string `json:"tags,omitempty"`
	Totals
	// InflightMax is the most requests in flight seen in the period's
	// samples, InflightMean their mean; Samples how many readings there
	// were (0: no load summary, the figures mean nothing). Capacity is the
	// node's --capacity at the last reading.
	InflightMax  float64 `json:"inflight_max,omitempty"`
	InflightMean float64 `json:"inflight_mean,omitempty"`
	Samples      int     `json:"samples,omitempty"`
	Capacity     int     `json:"capacity,omitempty"`
	// Active is true when the node was active at some sample.
	Active bool `json:"active,omitempty"`
}

// Record is what the leader writes through Raft once per period (a
// minute by default): every plan node's use over [Start, End).
type Record struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// RPS is the mean cluster requests/s over the period's samples (the
	// demand the counterfactual replays).
	RPS   float64 `json:"rps"`
	Nodes []Usage `json:"nodes,omitempty"`
}

// Totals adds up the record's nodes.
func (r Record) Totals() Totals {
	var t Totals
	for _, u := range r.Nodes {
		t.Add(u.Totals)
	}
	return t
}

// Sample is one plan node as the leader sees it at one instant.
type Sample struct {
	Node  string
	State scheduler.NodeState
	// Since is when the node entered State; Left when it left (zero while
	// it is a member).
	Since time.Time
	Left  time.Time
	Zone  string
	Tags  map[string]string
	// HasLoad is set when the leader has the node's load summary;
	// Inflight and Capacity come from it.
	HasLoad  bool
	Inflight float64
	Capacity int
}

func (s Sample) state() (string, time.Time) {
	if !s.Left.IsZero() {
		return StateLeft, s.Left
	}
	return string(s.State), s.Since
}

// Accumulator integrates samples into one open Record. It is not safe for
// concurrent use.
type Accumulator struct {
	start, last time.Time
	prev        map[string]string
	nodes       map[string]*usageAcc
	rpsSum      float64
	rpsN        int
}

type usageAcc struct {
	u   Usage
	sum float64
}

// NewAccumulator starts an empty period at start.
func NewAccumulator(start time.Time) *Accumulator {
	return &Accumulator{start: start, last: start, prev: map[string]string{}, nodes: map[string]*usageAcc{}}
}

// Start is the start of the open period.
func (a *Accumulator) Start() time.Time { return a.start }

// Observe integrates [last observation, now] for every sampled node. A
// node that changed state inside the span (its Since or Left falls in it)
// is counted in its previous state up to the change and in the new one
// after; a node seen for the first time is counted in its current state
// for the whole span (except one that left inside it: its plan state
// until then). Only the last change between two observations is placed
// exactly; with the leader's 10 s sampling two changes of one node inside
// one interval are rare. Nodes not sampled (removed from the plan) count
// nothing. rps is the cluster's requests/s now. A now before the last
// observation only records the readings.
func (a *Accumulator) Observe(now time.Time, samples []Sample, rps float64, sel autoscale.Selection) {
	from := a.last
	if now.After(a.last) {
		a.last = now
	}
	a.rpsSum += rps
	a.rpsN++
	for _, s := range samples {
		acc := a.nodes[s.Node]
		if acc == nil {
			acc = &usageAcc{u: Usage{Node: s.Node}}
			a.nodes[s.Node] = acc
		}
		acc.u.Zone, acc.u.Tags = s.Zone, maps.Clone(s.Tags)
		r := RatesFor(s.Tags, sel)
		st, since := s.state()
		if now.After(from) {
			prev, known := a.prev[s.Node]
			if !known && st == StateLeft {
				// A node that left was in its plan state before (a new
				// leader filling the gap since the last record).
				prev, known = string(s.State), true
			}
			if known && prev != st && since.After(from) && !since.After(now) {
				acc.u.Add(Integrate(prev, r, since.Sub(from)))
				acc.u.Add(Integrate(st, r, now.Sub(since)))
			} else {
				acc.u.Add(Integrate(st, r, now.Sub(from)))
			}
		}
		a.prev[s.Node] = st
		if st == string(scheduler.StateActive) {
			acc.u.Active = true
		}
		if s.HasLoad {
			acc.u.Samples++
			acc.sum += s.Inflight
			acc.u.InflightMax = max(acc.u.InflightMax, s.Inflight)
			acc.u.Capacity = s.Capacity
		}
	}
}

// Record returns the open period as a Record ending at the last
// observation, leaving it open.
func (a *Accumulator) Record() Record {
	rec := Record{Start: a.start.UTC(), End: a.last.UTC()}
	if a.rpsN > 0 {
		rec.RPS = a.rpsSum / float64(a.rpsN)
	}
	for _, name := range sortedKeys(a.nodes) {
		acc := a.nodes[name]
		u := acc.u
		u.Tags = maps.Clone(u.Tags)
		u.NodeHours = maps.Clone(u.NodeHours)
		if u.Samples > 0 {
			u.InflightMean = acc.sum / float64(u.Samples)
		}
		rec.Nodes = append(rec.Nodes, u)
	}
	return rec
}

// Reset starts the next period at the last observation (once Record's
// result is safely written). Node states carry over.
func (a *Accumulator) Reset() {
	a.start = a.last
	a.nodes = map[string]*usageAcc{}
	a.rpsSum, a.rpsN = 0, 0
}

// Flush is Record then Reset.
func (a *Accumulator) Flush() Record {
	rec := a.Record()
	a.Reset()
	return rec
}
