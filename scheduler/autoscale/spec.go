package autoscale

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"sort"
	"strings"
	"time"
	"unicode"

	"go.yaml.in/yaml/v3"

	"github.com/loadmesh/loadmesh/scheduler"
)

// Mode says whether the autoscaler acts.
type Mode string

const (
	// ModeAuto computes decisions and expects the leader to apply them.
	ModeAuto Mode = "auto"
	// ModeManual turns the autoscaler off: Step still records history,
	// forecasts and reports the metrics, but decides nothing.
	ModeManual Mode = "manual"
	// ModeDryRun computes full decisions marked DryRun: the leader records
	// them (audit log, API, metrics) without applying them.
	ModeDryRun Mode = "dry-run"
)

// Limits on the plan's active nodes and on spec sizes.
const (
	// MaxSchedules bounds len(Spec.Schedules).
	MaxSchedules = 64
	// MaxZones bounds len(Limits.Zones).
	MaxZones = 64
	// MaxNodes bounds every node count in a Spec.
	MaxNodes = 100000
	// MaxScheduleLength bounds a schedule's duration (and the gap between
	// its start and its end).
	MaxScheduleLength = 366 * 24 * time.Hour
	// MaxSpecSize bounds the bytes ParseSpec accepts.
	MaxSpecSize = 1 << 20
)

// Spec is the autoscaling part of the plan file: policy, limits, targets,
// schedules, forecasting, hooks and rollback. It is plain data; node-level
// facts (zone, cost per hour, spot, carbon region, power) come from the
// capacity plan's nodes (see NodeTags), not from here.
//
// Start from DefaultSpec or ParseSpec; both fill defaults. The YAML field
// names are the snake_case names in the struct tags; deploy/plan.example.yaml
// documents every field with a commented example.
type Spec struct {
	// Mode is auto, manual or dry-run. Default auto.
	Mode Mode `yaml:"mode" json:"mode"`
	// Interval is the control interval: how often the leader calls Step.
	// Default 15s; 1s to 10m.
	Interval Duration `yaml:"interval" json:"interval"`
	// Limits bound the number of active nodes, overall and per zone.
	Limits Limits `yaml:"limits" json:"limits"`
	// Targets are the per-metric targets; the largest demand wins.
	Targets Targets `yaml:"targets" json:"targets"`
	// Tolerance is the relative band around each target inside which no
	// change is recommended (HPA's 10 %). Default 0.1; 0 to 0.5.
	Tolerance float64 `yaml:"tolerance" json:"tolerance"`
	// ScaleOut tunes growth. Default: no stabilisation, at most
	// max(4 nodes, 100 %) per interval.
	ScaleOut Behavior `yaml:"scale_out" json:"scale_out"`
	// ScaleIn tunes shrinking. Default: 5m stabilisation, at most
	// max(1 node, 10 %) per interval.
	ScaleIn Behavior `yaml:"scale_in" json:"scale_in"`
	// NewNodeState is the state the leader gives nodes that join after a
	// scale_out hook: standby (default; the autoscaler activates them when
	// needed) or active.
	NewNodeState scheduler.NodeState `yaml:"new_node_state" json:"new_node_state"`
	// Standby tunes the pool of running standby nodes.
	Standby StandbyPolicy `yaml:"standby" json:"standby"`
	// Predictive tunes forecasting and scaling ahead of predicted demand.
	Predictive Predictive `yaml:"predictive" json:"predictive"`
	// Schedules raise or lower the limits for periods. At most MaxSchedules.
	Schedules []Schedule `yaml:"schedules" json:"schedules,omitempty"`
	// Hooks are run by the leader to provision, release or replace nodes.
	Hooks Hooks `yaml:"hooks" json:"hooks"`
	// Rollback restores capacity when a scale-in breaks the SLO.
	Rollback Rollback `yaml:"rollback" json:"rollback"`
	// Selection tunes which nodes are activated and drained.
	Selection Selection `yaml:"selection" json:"selection"`
	// Budget is the monthly spending budget cost accounting projects
	// against (loadmesh cost, loadmesh_cost_budget_monthly).
	Budget Budget `yaml:"budget" json:"budget"`
}

// Budget is a monthly spending budget in the currency of the nodes'
// cost_per_hour tags.
type Budget struct {
	// Monthly is the budget per calendar month (UTC). Default 0: none.
	Monthly float64 `yaml:"monthly" json:"monthly,omitempty"`
	// Currency labels the figures, e.g. EUR; 1 to 8 letters, or empty.
	Currency string `yaml:"currency" json:"currency,omitempty"`
}

// Limits bound the number of active nodes.
type Limits struct {
	// MinActive is the fewest active nodes. Default 1; 0 to MaxNodes.
	MinActive int `yaml:"min_active" json:"min_active"`
	// MaxActive is the most active nodes. Default 100; at least MinActive
	// and at least the sum of the zones' minimums.
	MaxActive int `yaml:"max_active" json:"max_active"`
	// Zones holds per-zone limits, by zone name. A zone not listed has
	// min 0 and no max.
	Zones map[string]ZoneLimits `yaml:"zones" json:"zones,omitempty"`
}

// ZoneLimits bound the active nodes of one zone.
type ZoneLimits struct {
	// Min is the fewest active nodes in the zone; nothing drains below it.
	Min int `yaml:"min" json:"min"`
	// Max is the most active nodes in the zone; 0 means no limit.
	Max int `yaml:"max" json:"max"`
}

// Targets are the values each metric should have on average over the
// active, ready nodes. A zero target is off. At least one must be set.
type Targets struct {
	// InflightUtilisation is requests in flight ÷ the node's --capacity.
	// Default 0.7; 0 (off) or in (0, 1].
	InflightUtilisation float64 `yaml:"inflight_utilisation" json:"inflight_utilisation"`
	// P95Latency is the latency SLO: the mean of the ready nodes' p95.
	// Above it (beyond the tolerance) the autoscaler scales out in
	// proportion; it never scales in because latency is low. It also
	// defines "SLO broken" for rollback. Default 0 (off); 1ms to 1m.
	P95Latency Duration `yaml:"p95_latency" json:"p95_latency"`
	// CPU is the mean CPU utilisation, 0 (off) or in (0, 1].
	CPU float64 `yaml:"cpu" json:"cpu"`
	// Memory is the mean memory utilisation, 0 (off) or in (0, 1].
	Memory float64 `yaml:"memory" json:"memory"`
	// RPSPerNode is requests/s per active node (cluster demand ÷ active
	// nodes). Required by predictive scaling, which turns forecast
	// requests/s into nodes with it. 0 (off) or positive.
	RPSPerNode float64 `yaml:"rps_per_node" json:"rps_per_node"`
}

// Behavior tunes one direction of scaling, like HPA's behavior.scaleUp
// and behavior.scaleDown.
type Behavior struct {
	// Stabilisation is the window over which recommendations are
	// remembered: scale-out goes to the lowest recommendation in its
	// window, scale-in to the highest in its window. 0 to 1h.
	Stabilisation Duration `yaml:"stabilisation" json:"stabilisation"`
	// MaxStepNodes and MaxStepPercent limit one step (one interval): the
	// change is at most max(MaxStepNodes, ceil(MaxStepPercent % of the
	// active nodes)). Both 0 means unlimited.
	MaxStepNodes   int     `yaml:"max_step_nodes" json:"max_step_nodes"`
	MaxStepPercent float64 `yaml:"max_step_percent" json:"max_step_percent"`
}

// StandbyPolicy tunes the standby pool.
type StandbyPolicy struct {
	// Keep is how many healthy standby nodes to keep running beyond what
	// is active. Extra standby nodes idle for longer than ReleaseAfter are
	// released with the scale_in hook. Default 2.
	Keep int `yaml:"keep" json:"keep"`
	// ReleaseAfter is how long a standby node must have been idle before
	// it is released. Default 0: never release.
	ReleaseAfter Duration `yaml:"release_after" json:"release_after"`
}

// Predictive tunes the forecaster and predictive scaling.
type Predictive struct {
	// Enabled turns predictive scaling on. Default false. Even when on,
	// it acts only once MinHistory of demand history exists; the forecast
	// is computed and reported either way.
	Enabled bool `yaml:"enabled" json:"enabled"`
	// Method names the forecaster. Only "holt-winters" (additive,
	// double-seasonal: daily, and weekly once two weeks of history exist,
	// with damped trend; Taylor 2003).
	Method string `yaml:"method" json:"method"`
	// MinHistory is the history needed before forecasts are used.
	// Default 24h; 1 day to 14 days.
	MinHistory Duration `yaml:"min_history" json:"min_history"`
	// Horizon is how far ahead to look: the autoscaler provisions for the
	// highest forecast over [now, now+Horizon]. It should exceed the node
	// start-up time. Default 10m; 1m to 2h.
	Horizon Duration `yaml:"horizon" json:"horizon"`
	// Bucket is the forecaster's time step; the series it models is the
	// busiest minute of each bucket. Default 5m; 1m to 1h, dividing 24h.
	Bucket Duration `yaml:"bucket" json:"bucket"`
	// Alpha, Beta, Gamma and Omega are the smoothing factors of the
	// level, trend, daily and weekly components. Defaults 0.2, 0.002,
	// 0.25, 0.15; each in (0, 1).
	Alpha float64 `yaml:"alpha" json:"alpha"`
	Beta  float64 `yaml:"beta" json:"beta"`
	Gamma float64 `yaml:"gamma" json:"gamma"`
	Omega float64 `yaml:"omega" json:"omega"`
	// Damping (phi) damps the trend per bucket. Default 0.9; (0, 1].
	Damping float64 `yaml:"damping" json:"damping"`
	// Margin scales the tracked mean absolute error that is added to the
	// forecast before converting it to nodes. Default 0.5; 0 to 5.
	Margin float64 `yaml:"margin" json:"margin"`
	// HistoryLength is the length of the demand history ring, at one
	// point per minute. Default 14d; 1d to 60d.
	HistoryLength Duration `yaml:"history_length" json:"history_length"`
}

// Schedule raises or lowers the limits for a period that starts at each
// activation of a cron expression and lasts Duration (or until End).
type Schedule struct {
	// Name identifies the schedule in decisions and diffs; unique.
	Name string `yaml:"name" json:"name"`
	// Start is a standard 5-field cron expression (minute hour
	// day-of-month month day-of-week) or @yearly, @monthly, @weekly,
	// @daily, @hourly.
	Start string `yaml:"start" json:"start"`
	// Duration is how long each period lasts. Exactly one of Duration and
	// End is set.
	Duration Duration `yaml:"duration" json:"duration,omitempty"`
	// End is a cron expression ending each period.
	End string `yaml:"end" json:"end,omitempty"`
	// TimeZone is an IANA zone name for Start and End. Default UTC.
	TimeZone string `yaml:"time_zone" json:"time_zone,omitempty"`
	// MinActive and MaxActive replace the overall limits while the
	// schedule is active; nil keeps the base value. When several
	// schedules are active the highest min and the highest max win.
	MinActive *int `yaml:"min_active" json:"min_active,omitempty"`
	MaxActive *int `yaml:"max_active" json:"max_active,omitempty"`
}

// Hooks are the leader's calls to provision, release or replace nodes.
type Hooks struct {
	// ScaleOut is called with a zone and a count when the autoscaler
	// wants more active nodes than there are healthy standby nodes.
	ScaleOut *Hook `yaml:"scale_out" json:"scale_out,omitempty"`
	// ScaleIn is called with the names of idle standby nodes to release.
	ScaleIn *Hook `yaml:"scale_in" json:"scale_in,omitempty"`
	// Replace is called with the name of an active node that has been
	// unhealthy for ReplaceAfter.
	Replace *Hook `yaml:"replace" json:"replace,omitempty"`
	// ProvisionTimeout is how long a scale_out request counts as capacity
	// on its way before it is asked for again. Default 10m; 1m to 2h.
	ProvisionTimeout Duration `yaml:"provision_timeout" json:"provision_timeout"`
	// ReplaceAfter is how long an active node must be unhealthy before
	// the replace hook is requested. Default 2m.
	ReplaceAfter Duration `yaml:"replace_after" json:"replace_after"`
}

// Hook is one command (argv, no shell) or one HTTP webhook.
type Hook struct {
	// Command is the program and its arguments. Exactly one of Command and
	// URL is set.
	Command []string `yaml:"command" json:"command,omitempty"`
	// URL is an http or https webhook receiving a JSON POST.
	URL string `yaml:"url" json:"url,omitempty"`
	// Timeout bounds one attempt. Default 30s; 1s to 1h.
	Timeout Duration `yaml:"timeout" json:"timeout"`
	// Retries is how many times a failed attempt is retried. Default 2;
	// 0 to 10.
	Retries int `yaml:"retries" json:"retries"`
	// Backoff is the wait before the first retry; each further retry
	// waits twice as long (with jitter), at most a minute. Default 2s
	// (also when 0); 10ms to 1m.
	Backoff Duration `yaml:"backoff" json:"backoff,omitempty"`
}

// FirstBackoff is the wait before the first retry: Backoff, or its default.
func (h Hook) FirstBackoff() time.Duration {
	if h.Backoff <= 0 {
		return 2 * time.Second
	}
	return h.Backoff.D()
}

// Rollback tunes automatic rollback after scale-in.
type Rollback struct {
	// Enabled turns rollback on. Default true.
	Enabled bool `yaml:"enabled" json:"enabled"`
	// Watch is how long after a scale-in the SLO is watched. Default 10m.
	Watch Duration `yaml:"watch" json:"watch"`
	// Hold is how long scale-in stays blocked after a rollback. Default 30m.
	Hold Duration `yaml:"hold" json:"hold"`
}

// Selection tunes which nodes are activated and drained.
type Selection struct {
	// CarbonIntensity is grams CO2e per kWh by carbon region (the node tag
	// carbon_region). A region not listed counts as
	// DefaultCarbonIntensity.
	CarbonIntensity map[string]float64 `yaml:"carbon_intensity" json:"carbon_intensity,omitempty"`
	// DefaultCarbonIntensity is used for unlisted regions. Default 300.
	DefaultCarbonIntensity float64 `yaml:"default_carbon_intensity" json:"default_carbon_intensity"`
	// CarbonPrice converts emissions to money, per kg CO2e, so that cost
	// and carbon rank together: score = cost_per_hour + CarbonPrice × kg
	// per hour. Default 0.1; 0 to 100.
	CarbonPrice float64 `yaml:"carbon_price" json:"carbon_price"`
	// DefaultPowerWatts is a node's draw when it has no power_watts tag.
	// Default 200.
	DefaultPowerWatts float64 `yaml:"default_power_watts" json:"default_power_watts"`
}

// DefaultSpec returns the defaults every parsed Spec starts from.
func DefaultSpec() Spec {
	return Spec{
		Mode:         ModeAuto,
		Interval:     Duration(15 * time.Second),
		Limits:       Limits{MinActive: 1, MaxActive: 100},
		Targets:      Targets{InflightUtilisation: 0.7},
		Tolerance:    0.1,
		ScaleOut:     Behavior{Stabilisation: 0, MaxStepNodes: 4, MaxStepPercent: 100},
		ScaleIn:      Behavior{Stabilisation: Duration(5 * time.Minute), MaxStepNodes: 1, MaxStepPercent: 10},
		NewNodeState: scheduler.StateStandby,
		Standby:      StandbyPolicy{Keep: 2},
		Predictive: Predictive{
			Method:        MethodHoltWinters,
			MinHistory:    Duration(24 * time.Hour),
			Horizon:       Duration(10 * time.Minute),
			Bucket:        Duration(5 * time.Minute),
			Alpha:         0.2,
			Beta:          0.002,
			Gamma:         0.25,
			Omega:         0.15,
			Damping:       0.9,
			Margin:        0.5,
			HistoryLength: Duration(14 * 24 * time.Hour),
		},
		Hooks:     Hooks{ProvisionTimeout: Duration(10 * time.Minute), ReplaceAfter: Duration(2 * time.Minute)},
		Rollback:  Rollback{Enabled: true, Watch: Duration(10 * time.Minute), Hold: Duration(30 * time.Minute)},
		Selection: Selection{DefaultCarbonIntensity: 300, CarbonPrice: 0.1, DefaultPowerWatts: 200},
	}
}

// MethodHoltWinters names the forecasting method.
const MethodHoltWinters = "holt-winters"

// ParseSpec reads a YAML plan file's policy. Fields missing from the file
// keep DefaultSpec's values; unknown fields, duplicate keys, trailing
// documents and files over MaxSpecSize are errors. The result is
// validated: a nil error means the Spec is ready for New.
func ParseSpec(data []byte) (Spec, error) {
	if len(data) > MaxSpecSize {
		return Spec{}, fmt.Errorf("plan file is %d bytes, over the %d-byte limit", len(data), MaxSpecSize)
	}
	spec := DefaultSpec()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&spec); err != nil {
		if errors.Is(err, io.EOF) {
			return Spec{}, fmt.Errorf("plan file is empty")
		}
		return Spec{}, fmt.Errorf("plan file: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return Spec{}, fmt.Errorf("plan file: want one YAML document")
	}
	for i := range spec.Schedules {
		if spec.Schedules[i].TimeZone == "" {
			spec.Schedules[i].TimeZone = "UTC"
		}
	}
	if err := spec.Validate(); err != nil {
		return Spec{}, err
	}
	return spec, nil
}

// UnmarshalYAML starts a hook from DefaultHook, so that a hook in the file
// without timeout or retries gets the defaults, and refuses unknown keys
// (yaml.Node.Decode does not inherit the decoder's KnownFields).
func (h *Hook) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: want a mapping with command or url, timeout, retries, backoff", n.Line)
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		switch k := n.Content[i].Value; k {
		case "command", "url", "timeout", "retries", "backoff":
		default:
			return fmt.Errorf("line %d: field %s not found in type autoscale.Hook", n.Content[i].Line, k)
		}
	}
	type plain Hook
	p := plain(DefaultHook())
	if err := n.Decode(&p); err != nil {
		return err
	}
	*h = Hook(p)
	return nil
}

// DefaultHook returns a hook with the default timeout and retries.
func DefaultHook() Hook {
	return Hook{Timeout: Duration(30 * time.Second), Retries: 2, Backoff: Duration(2 * time.Second)}
}

// Validate reports every problem at once, each naming its field (in the
// YAML spelling) and the bad value.
func (s Spec) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	switch s.Mode {
	case ModeAuto, ModeManual, ModeDryRun:
	default:
		bad("mode %q: want auto, manual or dry-run", s.Mode)
	}
	if s.Interval < Duration(time.Second) || s.Interval > Duration(10*time.Minute) {
		bad("interval %s: want 1s to 10m", s.Interval)
	}

	// Limits.
	l := s.Limits
	if l.MinActive < 0 || l.MinActive > MaxNodes {
		bad("limits.min_active %d: want 0 to %d", l.MinActive, MaxNodes)
	}
	if l.MaxActive < 1 || l.MaxActive > MaxNodes {
		bad("limits.max_active %d: want 1 to %d", l.MaxActive, MaxNodes)
	}
	if l.MinActive > l.MaxActive {
		bad("limits.min_active %d is above limits.max_active %d", l.MinActive, l.MaxActive)
	}
	if len(l.Zones) > MaxZones {
		bad("limits.zones: %d zones, at most %d", len(l.Zones), MaxZones)
	}
	zoneMinSum := 0
	for _, z := range sortedKeys(l.Zones) {
		zl := l.Zones[z]
		if z == "" {
			bad("limits.zones: empty zone name")
		}
		if zl.Min < 0 || zl.Min > MaxNodes {
			bad("limits.zones.%s.min %d: want 0 to %d", z, zl.Min, MaxNodes)
		}
		if zl.Max < 0 || zl.Max > MaxNodes {
			bad("limits.zones.%s.max %d: want 0 (no limit) to %d", z, zl.Max, MaxNodes)
		}
		if zl.Max > 0 && zl.Min > zl.Max {
			bad("limits.zones.%s.min %d is above its max %d", z, zl.Min, zl.Max)
		}
		if zl.Min > 0 && zl.Min <= MaxNodes {
			zoneMinSum += zl.Min
		}
	}
	if zoneMinSum > l.MaxActive && l.MaxActive > 0 {
		bad("limits.zones: the zones' minimums add up to %d, above limits.max_active %d", zoneMinSum, l.MaxActive)
	}

	// Targets.
	t := s.Targets
	ratio := func(name string, v float64) {
		if math.IsNaN(v) || v < 0 || v > 1 {
			bad("targets.%s %v: want 0 (off) or a ratio in (0, 1]", name, v)
		}
	}
	ratio("inflight_utilisation", t.InflightUtilisation)
	ratio("cpu", t.CPU)
	ratio("memory", t.Memory)
	if t.P95Latency != 0 && (t.P95Latency < Duration(time.Millisecond) || t.P95Latency > Duration(time.Minute)) {
		bad("targets.p95_latency %s: want 0 (off) or 1ms to 1m", t.P95Latency)
	}
	if math.IsNaN(t.RPSPerNode) || math.IsInf(t.RPSPerNode, 0) || t.RPSPerNode < 0 {
		bad("targets.rps_per_node %v: want 0 (off) or a positive rate", t.RPSPerNode)
	}
	if t.InflightUtilisation == 0 && t.CPU == 0 && t.Memory == 0 && t.RPSPerNode == 0 && t.P95Latency == 0 {
		bad("targets: all off; set at least one of inflight_utilisation, p95_latency, cpu, memory, rps_per_node")
	}
	if math.IsNaN(s.Tolerance) || s.Tolerance < 0 || s.Tolerance > 0.5 {
		bad("tolerance %v: want 0 to 0.5", s.Tolerance)
	}
	errs = append(errs, s.ScaleOut.validate("scale_out")...)
	errs = append(errs, s.ScaleIn.validate("scale_in")...)
	if s.NewNodeState != scheduler.StateStandby && s.NewNodeState != scheduler.StateActive {
		bad("new_node_state %q: want standby or active", s.NewNodeState)
	}
	if s.Standby.Keep < 0 || s.Standby.Keep > MaxNodes {
		bad("standby.keep %d: want 0 to %d", s.Standby.Keep, MaxNodes)
	}
	if s.Standby.ReleaseAfter < 0 || s.Standby.ReleaseAfter > Duration(30*24*time.Hour) {
		bad("standby.release_after %s: want 0 (never) to 30d", s.Standby.ReleaseAfter)
	}

	errs = append(errs, s.Predictive.validate()...)
	if s.Predictive.Enabled && t.RPSPerNode == 0 {
		bad("predictive.enabled needs targets.rps_per_node: forecasts are in requests/s")
	}

	// Schedules.
	if len(s.Schedules) > MaxSchedules {
		bad("schedules: %d entries, at most %d", len(s.Schedules), MaxSchedules)
	}
	seen := map[string]bool{}
	for i, sc := range s.Schedules {
		if i >= MaxSchedules {
			break
		}
		name := fmt.Sprintf("schedules[%d]", i)
		if sc.Name != "" {
			name = fmt.Sprintf("schedules[%d] (%s)", i, sc.Name)
		}
		if sc.Name == "" {
			bad("%s.name: required", name)
		} else if seen[sc.Name] {
			bad("%s.name: duplicate", name)
		}
		seen[sc.Name] = true
		if _, err := compileSchedule(sc); err != nil {
			bad("%s: %v", name, err)
		}
		if sc.MinActive == nil && sc.MaxActive == nil {
			bad("%s: sets neither min_active nor max_active", name)
		}
		if sc.MinActive != nil && (*sc.MinActive < 0 || *sc.MinActive > MaxNodes) {
			bad("%s.min_active %d: want 0 to %d", name, *sc.MinActive, MaxNodes)
		}
		if sc.MaxActive != nil && (*sc.MaxActive < 1 || *sc.MaxActive > MaxNodes) {
			bad("%s.max_active %d: want 1 to %d", name, *sc.MaxActive, MaxNodes)
		}
		if sc.MinActive != nil && sc.MaxActive != nil && *sc.MinActive > *sc.MaxActive {
			bad("%s.min_active %d is above its max_active %d", name, *sc.MinActive, *sc.MaxActive)
		}
	}

	// Hooks.
	for _, h := range []struct {
		name string
		h    *Hook
	}{{"hooks.scale_out", s.Hooks.ScaleOut}, {"hooks.scale_in", s.Hooks.ScaleIn}, {"hooks.replace", s.Hooks.Replace}} {
		if h.h != nil {
			errs = append(errs, h.h.validate(h.name)...)
		}
	}
	if s.Hooks.ProvisionTimeout < Duration(time.Minute) || s.Hooks.ProvisionTimeout > Duration(2*time.Hour) {
		bad("hooks.provision_timeout %s: want 1m to 2h", s.Hooks.ProvisionTimeout)
	}
	if s.Hooks.ReplaceAfter < 0 || s.Hooks.ReplaceAfter > Duration(24*time.Hour) {
		bad("hooks.replace_after %s: want 0 to 24h", s.Hooks.ReplaceAfter)
	}

	// Rollback.
	if s.Rollback.Enabled {
		if s.Rollback.Watch < s.Interval || s.Rollback.Watch > Duration(24*time.Hour) {
			bad("rollback.watch %s: want interval (%s) to 24h", s.Rollback.Watch, s.Interval)
		}
		if s.Rollback.Hold < 0 || s.Rollback.Hold > Duration(24*time.Hour) {
			bad("rollback.hold %s: want 0 to 24h", s.Rollback.Hold)
		}
		if t.P95Latency == 0 && t.InflightUtilisation == 0 {
			bad("rollback.enabled needs targets.p95_latency or targets.inflight_utilisation to tell when the SLO is broken")
		}
	}

	// Selection.
	sel := s.Selection
	for _, r := range sortedKeys(sel.CarbonIntensity) {
		v := sel.CarbonIntensity[r]
		if math.IsNaN(v) || v < 0 || v > 5000 {
			bad("selection.carbon_intensity.%s %v: want 0 to 5000 gCO2e/kWh", r, v)
		}
	}
	if len(sel.CarbonIntensity) > 1024 {
		bad("selection.carbon_intensity: %d regions, at most 1024", len(sel.CarbonIntensity))
	}
	if math.IsNaN(sel.DefaultCarbonIntensity) || sel.DefaultCarbonIntensity < 0 || sel.DefaultCarbonIntensity > 5000 {
		bad("selection.default_carbon_intensity %v: want 0 to 5000", sel.DefaultCarbonIntensity)
	}
	if math.IsNaN(sel.CarbonPrice) || sel.CarbonPrice < 0 || sel.CarbonPrice > 100 {
		bad("selection.carbon_price %v: want 0 to 100 per kg", sel.CarbonPrice)
	}
	if math.IsNaN(sel.DefaultPowerWatts) || sel.DefaultPowerWatts < 0 || sel.DefaultPowerWatts > 100000 {
		bad("selection.default_power_watts %v: want 0 to 100000", sel.DefaultPowerWatts)
	}

	// Budget.
	if b := s.Budget.Monthly; math.IsNaN(b) || math.IsInf(b, 0) || b < 0 || b > 1e12 {
		bad("budget.monthly %v: want 0 (none) to 1e12", b)
	}
	if c := s.Budget.Currency; len(c) > 8 || strings.IndexFunc(c, func(r rune) bool { return !unicode.IsLetter(r) }) >= 0 {
		bad("budget.currency %q: want 1 to 8 letters, e.g. EUR", c)
	}
	return errors.Join(errs...)
}

func (b Behavior) validate(name string) []error {
	var errs []error
	if b.Stabilisation < 0 || b.Stabilisation > Duration(time.Hour) {
		errs = append(errs, fmt.Errorf("%s.stabilisation %s: want 0 to 1h", name, b.Stabilisation))
	}
	if b.MaxStepNodes < 0 || b.MaxStepNodes > MaxNodes {
		errs = append(errs, fmt.Errorf("%s.max_step_nodes %d: want 0 (no limit) to %d", name, b.MaxStepNodes, MaxNodes))
	}
	if math.IsNaN(b.MaxStepPercent) || b.MaxStepPercent < 0 || b.MaxStepPercent > 1000 {
		errs = append(errs, fmt.Errorf("%s.max_step_percent %v: want 0 (no limit) to 1000", name, b.MaxStepPercent))
	}
	return errs
}

func (p Predictive) validate() []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if p.Method != MethodHoltWinters {
		bad("predictive.method %q: want %s", p.Method, MethodHoltWinters)
	}
	if p.Bucket < Duration(time.Minute) || p.Bucket > Duration(time.Hour) || p.Bucket%Duration(time.Minute) != 0 || Duration(24*time.Hour)%p.Bucket != 0 {
		bad("predictive.bucket %s: want whole minutes from 1m to 1h dividing 24h", p.Bucket)
	}
	if p.HistoryLength < Duration(24*time.Hour) || p.HistoryLength > Duration(60*24*time.Hour) {
		bad("predictive.history_length %s: want 1d to 60d", p.HistoryLength)
	}
	if p.MinHistory < Duration(24*time.Hour) || p.MinHistory > Duration(14*24*time.Hour) {
		bad("predictive.min_history %s: want 1d to 14d", p.MinHistory)
	} else if p.MinHistory > p.HistoryLength && p.HistoryLength >= Duration(24*time.Hour) {
		bad("predictive.min_history %s is longer than predictive.history_length %s", p.MinHistory, p.HistoryLength)
	}
	if p.Horizon < Duration(time.Minute) || p.Horizon > Duration(2*time.Hour) {
		bad("predictive.horizon %s: want 1m to 2h", p.Horizon)
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"alpha", p.Alpha}, {"beta", p.Beta}, {"gamma", p.Gamma}, {"omega", p.Omega}} {
		if math.IsNaN(f.v) || f.v <= 0 || f.v >= 1 {
			bad("predictive.%s %v: want a value in (0, 1)", f.name, f.v)
		}
	}
	if math.IsNaN(p.Damping) || p.Damping <= 0 || p.Damping > 1 {
		bad("predictive.damping %v: want a value in (0, 1]", p.Damping)
	}
	if math.IsNaN(p.Margin) || p.Margin < 0 || p.Margin > 5 {
		bad("predictive.margin %v: want 0 to 5", p.Margin)
	}
	return errs
}

func (h Hook) validate(name string) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch {
	case len(h.Command) > 0 && h.URL != "":
		bad("%s: set command or url, not both", name)
	case len(h.Command) == 0 && h.URL == "":
		bad("%s: set command or url", name)
	case len(h.Command) > 0:
		if h.Command[0] == "" {
			bad("%s.command: empty program name", name)
		}
		if len(h.Command) > 256 {
			bad("%s.command: %d arguments, at most 256", name, len(h.Command))
		}
	default:
		u, err := url.Parse(h.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("%s.url %q: want an absolute http or https URL", name, h.URL)
		}
	}
	if h.Timeout < Duration(time.Second) || h.Timeout > Duration(time.Hour) {
		bad("%s.timeout %s: want 1s to 1h", name, h.Timeout)
	}
	if h.Retries < 0 || h.Retries > 10 {
		bad("%s.retries %d: want 0 to 10", name, h.Retries)
	}
	if h.Backoff != 0 && (h.Backoff < Duration(10*time.Millisecond) || h.Backoff > Duration(time.Minute)) {
		bad("%s.backoff %s: want 10ms to 1m", name, h.Backoff)
	}
	return errs
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// zoneNames returns the zones named in the limits, sorted.
func (s Spec) zoneNames() []string { return sortedKeys(s.Limits.Zones) }

// hasZone reports whether the limits name zone z.
func (s Spec) hasZone(z string) bool {
	_, ok := s.Limits.Zones[z]
	return ok
}
