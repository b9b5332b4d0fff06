package autoscale

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/loadmesh/loadmesh/scheduler"
)

// Observation is what the leader knows at one control interval: every node
// of the capacity plan with its latest gossiped figures, and the cluster's
// demand.
type Observation struct {
	// Nodes lists every node in the plan (any state). Order does not matter.
	Nodes []NodeObservation `json:"nodes"`
	// DemandRPS is the requests/s arriving at the cluster (the sum over all
	// ingresses, forwarded requests counted once). 0 means unknown: the sum
	// of the ready active nodes' RPS is used instead.
	DemandRPS float64 `json:"demand_rps"`
}

// NodeObservation is one node's plan entry and load figures.
type NodeObservation struct {
	Name  string              `json:"name"`
	State scheduler.NodeState `json:"state"`
	Zone  string              `json:"zone"`
	// Healthy is false when the node is failing its health checks or has
	// left gossip. Unhealthy nodes are never activated, and unhealthy
	// active nodes count for nothing and are eventually replaced.
	Healthy bool `json:"healthy"`
	// Ready is true when an active node has finished starting up and
	// reports load figures. Active nodes that are healthy but not ready
	// count towards the active total (capacity on its way) but their
	// figures are ignored.
	Ready bool `json:"ready"`
	// Inflight is requests in flight; Capacity is the node's in-flight
	// capacity (its --capacity flag). Capacity 0 leaves the node out of
	// the in-flight utilisation metric.
	Inflight float64 `json:"inflight"`
	Capacity float64 `json:"capacity"`
	// P95 is the node's p95 latency over the recent window.
	P95 time.Duration `json:"p95"`
	// CPU and Mem are utilisation ratios in [0, 1].
	CPU float64 `json:"cpu"`
	Mem float64 `json:"mem"`
	// RPS is the requests/s the node serves.
	RPS float64 `json:"rps"`
	// Since is when the node entered State.
	Since time.Time `json:"since"`
	// Tags are the node's selection tags from the plan.
	Tags NodeTags `json:"tags"`
}

// NodeTags are the node-level facts node selection uses. In the capacity
// plan they are PlanNode.Tags; ParseNodeTags reads them.
type NodeTags struct {
	// CostPerHour is what the node costs per hour while running, in the
	// operator's currency. Tag cost_per_hour.
	CostPerHour float64 `json:"cost_per_hour,omitempty"`
	// Spot marks preemptible capacity, drained first. Tag spot=true.
	Spot bool `json:"spot,omitempty"`
	// CarbonRegion keys Selection.CarbonIntensity. Tag carbon_region.
	CarbonRegion string `json:"carbon_region,omitempty"`
	// PowerWatts is the node's typical draw; 0 means
	// Selection.DefaultPowerWatts. Tag power_watts.
	PowerWatts float64 `json:"power_watts,omitempty"`
}

// Tag keys read by ParseNodeTags.
const (
	TagCostPerHour  = "cost_per_hour"
	TagSpot         = "spot"
	TagCarbonRegion = "carbon_region"
	TagPowerWatts   = "power_watts"
)

// ParseNodeTags reads the selection tags from a plan node's tags. Unknown
// keys are ignored (tags carry other things too); a known key with a bad
// value is an error naming it, and the other fields are still filled.
func ParseNodeTags(tags map[string]string) (NodeTags, error) {
	var nt NodeTags
	var errs []string
	num := func(key string, dst *float64) {
		v, ok := tags[key]
		if !ok {
			return
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || f < 0 || f != f || f > 1e9 {
			errs = append(errs, fmt.Sprintf("tag %s=%q: want a non-negative number", key, v))
			return
		}
		*dst = f
	}
	num(TagCostPerHour, &nt.CostPerHour)
	num(TagPowerWatts, &nt.PowerWatts)
	if v, ok := tags[TagSpot]; ok {
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			errs = append(errs, fmt.Sprintf("tag %s=%q: want true or false", TagSpot, v))
		}
		nt.Spot = b
	}
	nt.CarbonRegion = tags[TagCarbonRegion]
	if len(errs) > 0 {
		return nt, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nt, nil
}

// Decision is the outcome of one Step. The leader applies it through Raft:
// Activate (standby → active), Drain (active → draining), and runs Hooks.
// In dry-run mode DryRun is true and the leader only records it.
type Decision struct {
	Time time.Time `json:"time"`
	Mode Mode      `json:"mode"`
	// DryRun is true in dry-run mode: record, do not apply.
	DryRun bool `json:"dry_run,omitempty"`
	// Active is the number of healthy active nodes now (including those
	// still starting); Ready of them report figures.
	Active int `json:"active"`
	Ready  int `json:"ready"`
	// Recommended is the raw recommendation this interval: the largest of
	// the metrics', the forecast's and the limits'.
	Recommended int `json:"recommended"`
	// Desired is the active count after stabilisation, step limits,
	// limits and rollback. Len(Activate) - len(Drain) moves Active towards
	// it as far as standby nodes allow.
	Desired int `json:"desired"`
	// Min and Max are the effective limits (schedules applied).
	Min int `json:"min"`
	Max int `json:"max"`
	// Schedules names the active schedules.
	Schedules []string `json:"schedules,omitempty"`
	// Reason summarises why Desired differs from Active, or why not.
	Reason string `json:"reason"`
	// Metrics are the per-metric readings and recommendations.
	Metrics []MetricReading `json:"metrics,omitempty"`
	// Activate and Drain name nodes to change state.
	Activate []NodeAction `json:"activate,omitempty"`
	Drain    []NodeAction `json:"drain,omitempty"`
	// Hooks are hook calls to make.
	Hooks []HookRequest `json:"hooks,omitempty"`
	// Shortfall counts the nodes wanted but not available (no healthy
	// standby), per zone; a scale_out hook is requested for them when one
	// is configured and none is pending.
	Shortfall map[string]int `json:"shortfall,omitempty"`
	// Forecast is the forecaster's view; nil before it has a full day.
	Forecast *Forecast `json:"forecast,omitempty"`
	// Rollback is set when this step restores capacity after a scale-in
	// broke the SLO.
	Rollback *RollbackAction `json:"rollback,omitempty"`
	// History holds the per-minute demand points completed during this
	// step (normally zero or one). The leader appends them to the
	// replicated history so that a new leader can Restore from it.
	History []MinutePoint `json:"history,omitempty"`
}

// Changes reports whether the decision asks for any plan change or hook.
func (d Decision) Changes() bool {
	return len(d.Activate) > 0 || len(d.Drain) > 0 || len(d.Hooks) > 0
}

// MetricReading is one target-tracking input.
type MetricReading struct {
	// Name is inflight_utilisation, p95_latency, cpu, memory, rps_per_node
	// or forecast.
	Name string `json:"name"`
	// Value is the current mean (p95 in seconds; forecast in requests/s).
	Value float64 `json:"value"`
	// Target is the configured target in the same unit.
	Target float64 `json:"target"`
	// Ratio is Value ÷ Target over the active nodes.
	Ratio float64 `json:"ratio"`
	// Desired is this metric's recommendation in nodes; -1 means no
	// opinion (e.g. latency below its SLO).
	Desired int `json:"desired"`
}

// NodeAction names a node and why it changes state.
type NodeAction struct {
	Node string `json:"node"`
	Zone string `json:"zone"`
	// Why is human-readable, e.g. "scale out 6→8: rps_per_node 93.1/70".
	Why string `json:"why"`
}

// HookKind names a hook.
type HookKind string

// Hook kinds.
const (
	HookScaleOut HookKind = "scale_out"
	HookScaleIn  HookKind = "scale_in"
	HookReplace  HookKind = "replace"
)

// HookRequest asks the leader to run a hook.
type HookRequest struct {
	Kind HookKind `json:"kind"`
	// Zone and Count are set for scale_out: provision Count nodes in Zone.
	Zone  string `json:"zone,omitempty"`
	Count int    `json:"count,omitempty"`
	// Nodes names the nodes for scale_in (release) and replace.
	Nodes []string `json:"nodes,omitempty"`
	// Hook is the configured command or URL.
	Hook Hook   `json:"hook"`
	Why  string `json:"why"`
}

// RollbackAction records an automatic rollback.
type RollbackAction struct {
	// ScaleInAt is when the scale-in being undone happened, and From and
	// To its before and after active counts.
	ScaleInAt time.Time `json:"scale_in_at"`
	From      int       `json:"from"`
	To        int       `json:"to"`
	// Restore is the active count being restored (From).
	Restore int    `json:"restore"`
	Why     string `json:"why"`
	// HoldUntil is when scale-in is allowed again.
	HoldUntil time.Time `json:"hold_until"`
}

// Forecast is the forecaster's output at one step.
type Forecast struct {
	// Method names the forecasting method.
	Method string `json:"method"`
	// Ready is true once MinHistory of history exists; only then (and only
	// when predictive scaling is enabled) does it drive scaling.
	Ready bool `json:"ready"`
	// Used is true when it drove this step's recommendation.
	Used bool `json:"used"`
	// History is how much demand history the forecaster has seen.
	History Duration `json:"history"`
	// Weekly is true when the weekly component is in use.
	Weekly bool `json:"weekly"`
	// Horizon is the look-ahead; PeakRPS the highest forecast of the
	// busiest minute over it, and NextRPS the forecast for the next bucket.
	Horizon Duration `json:"horizon"`
	NextRPS float64  `json:"next_rps"`
	PeakRPS float64  `json:"peak_rps"`
	// MAE is the tracked mean absolute error (requests/s) and MAPE the
	// mean absolute percentage error (a ratio) of horizon-ahead forecasts.
	MAE  float64 `json:"mae"`
	MAPE float64 `json:"mape"`
	// Desired is the node count the forecast calls for:
	// ceil((PeakRPS + Margin × MAE) ÷ rps_per_node).
	Desired int `json:"desired"`
}
