package agent

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/provision"
	"github.com/loadmesh/loadmesh/scheduler/autoscale"
)

// autoscalerMetrics are the leader's autoscaling figures. Gauges describe
// the last decision and are exported only while this node leads (and has
// decided); counters count what this node did while it led.
type autoscalerMetrics struct {
	h *autoscalerHook

	changes      *prometheus.CounterVec
	rollbacks    prometheus.Counter
	hookRuns     *prometheus.CounterVec
	hookAttempts *prometheus.CounterVec
	hookDuration *prometheus.HistogramVec
}

var (
	asLeader      = prometheus.NewDesc("loadmesh_autoscaler_leader", "1 while this node runs the autoscaler (it is the Raft leader and a spec is applied).", nil, nil)
	asNodes       = prometheus.NewDesc("loadmesh_autoscaler_nodes", "Active node counts of the last decision: active, ready, recommended, desired, min and max.", []string{"kind"}, nil)
	asMetric      = prometheus.NewDesc("loadmesh_autoscaler_metric_value", "Target-tracking metric's current value (p95 in seconds) in the last decision.", []string{"metric"}, nil)
	asTarget      = prometheus.NewDesc("loadmesh_autoscaler_metric_target", "Target-tracking metric's target in the last decision.", []string{"metric"}, nil)
	asMetricNodes = prometheus.NewDesc("loadmesh_autoscaler_metric_desired_nodes", "Active nodes the metric asks for (-1: no opinion).", []string{"metric"}, nil)
	asShortfall   = prometheus.NewDesc("loadmesh_autoscaler_shortfall_nodes", "Nodes wanted but not available as healthy standby, by zone.", []string{"zone"}, nil)
	asFcRPS       = prometheus.NewDesc("loadmesh_autoscaler_forecast_requests_per_second", "Forecast cluster demand: the next bucket, and the peak over the horizon.", []string{"horizon"}, nil)
	asFcMAE       = prometheus.NewDesc("loadmesh_autoscaler_forecast_mean_absolute_error_requests_per_second", "Tracked mean absolute error of horizon-ahead forecasts.", nil, nil)
	asFcMAPE      = prometheus.NewDesc("loadmesh_autoscaler_forecast_mean_absolute_percentage_error_ratio", "Tracked mean absolute percentage error of horizon-ahead forecasts, as a ratio.", nil, nil)
	asFcReady     = prometheus.NewDesc("loadmesh_autoscaler_forecast_ready", "1 once the forecaster has the minimum history; 2 when it drove the last decision.", nil, nil)
	asFcHistory   = prometheus.NewDesc("loadmesh_autoscaler_forecast_history_seconds", "Demand history the forecaster has seen.", nil, nil)
)

func newAutoscalerMetrics(h *autoscalerHook, reg prometheus.Registerer) *autoscalerMetrics {
	m := &autoscalerMetrics{
		h: h,
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "loadmesh_autoscaler_scaling_events_total",
			Help: "Node state changes made by the autoscaler, by direction (out: activate, in: drain) and the trigger that drove the decision.",
		}, []string{"direction", "trigger"}),
		rollbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "loadmesh_autoscaler_rollbacks_total",
			Help: "Automatic rollbacks after a scale-in broke the SLO.",
		}),
		hookRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "loadmesh_autoscaler_hook_runs_total",
			Help: "Provisioner hook runs (with all their retries) by kind and outcome.",
		}, []string{"kind", "outcome"}),
		hookAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "loadmesh_autoscaler_hook_attempts_total",
			Help: "Provisioner hook attempts by kind and outcome.",
		}, []string{"kind", "outcome"}),
		hookDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "loadmesh_autoscaler_hook_attempt_duration_seconds",
			Help:    "Duration of provisioner hook attempts.",
			Buckets: prometheus.ExponentialBuckets(0.05, 3, 10),
		}, []string{"kind"}),
	}
	reg.MustRegister(m, m.changes, m.rollbacks, m.hookRuns, m.hookAttempts, m.hookDuration)
	return m
}

func (m *autoscalerMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{asLeader, asNodes, asMetric, asTarget, asMetricNodes, asShortfall, asFcRPS, asFcMAE, asFcMAPE, asFcReady, asFcHistory} {
		ch <- d
	}
}

func (m *autoscalerMetrics) Collect(ch chan<- prometheus.Metric) {
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	d := m.h.lastDecision()
	if d == nil {
		g(asLeader, 0)
		return
	}
	g(asLeader, 1)
	for k, v := range map[string]int{"active": d.Active, "ready": d.Ready, "recommended": d.Recommended, "desired": d.Desired, "min": d.Min, "max": d.Max} {
		g(asNodes, float64(v), k)
	}
	for _, r := range d.Metrics {
		g(asMetric, r.Value, r.Name)
		g(asTarget, r.Target, r.Name)
		g(asMetricNodes, float64(r.Desired), r.Name)
	}
	for z, n := range d.Shortfall {
		g(asShortfall, float64(n), z)
	}
	if f := d.Forecast; f != nil {
		g(asFcRPS, f.NextRPS, "next")
		g(asFcRPS, f.PeakRPS, "peak")
		g(asFcMAE, f.MAE)
		g(asFcMAPE, f.MAPE)
		ready := 0.0
		if f.Ready {
			ready = 1
		}
		if f.Used {
			ready = 2
		}
		g(asFcReady, ready)
		g(asFcHistory, f.History.D().Seconds())
	}
}

// scaled counts the node changes of an applied decision.
func (m *autoscalerMetrics) scaled(d autoscale.Decision) {
	if len(d.Activate) == 0 && len(d.Drain) == 0 {
		return
	}
	trigger := decisionTrigger(d)
	m.changes.WithLabelValues("out", trigger).Add(float64(len(d.Activate)))
	m.changes.WithLabelValues("in", trigger).Add(float64(len(d.Drain)))
}

func (m *autoscalerMetrics) hookAttempt(kind string, at provision.Attempt) {
	outcome := "success"
	if at.Err != nil {
		outcome = "failure"
	}
	m.hookAttempts.WithLabelValues(kind, outcome).Inc()
	m.hookDuration.WithLabelValues(kind).Observe(at.Took.Seconds())
}

func (m *autoscalerMetrics) hookRun(kind string, ok bool) {
	outcome := "success"
	if !ok {
		outcome = "failure"
	}
	m.hookRuns.WithLabelValues(kind, outcome).Inc()
}

// decisionTrigger names what drove a decision: rollback, the metric whose
// recommendation won (inflight_utilisation, p95_latency, cpu, memory,
// rps_per_node, forecast), schedule when an active schedule's limit did,
// or limits.
func decisionTrigger(d autoscale.Decision) string {
	if d.Rollback != nil {
		return "rollback"
	}
	best, name := -1, ""
	for _, r := range d.Metrics {
		if r.Desired > best {
			best, name = r.Desired, r.Name
		}
	}
	switch {
	case name != "" && best == d.Recommended && d.Recommended >= d.Min && d.Recommended <= d.Max:
		return name
	case len(d.Schedules) > 0:
		return "schedule"
	default:
		return "limits"
	}
}
