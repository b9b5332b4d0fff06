package scheduler

import "github.com/prometheus/client_golang/prometheus"

// collector exports a Scheduler's Stats and Status at scrape time, so the
// request path pays nothing for metrics beyond its atomic counters.
type collector struct{ s *Scheduler }

var (
	descSelections = prometheus.NewDesc("loadmesh_scheduler_selections_total",
		"Peer selections by result: local, peer, none (no usable peer), saturated (all at their in-flight cap), budget (retry budget exhausted).",
		[]string{"result"}, nil)
	descRetries = prometheus.NewDesc("loadmesh_scheduler_retries_total",
		"Retries allowed by the retry budget.", nil, nil)
	descRetryAvailable = prometheus.NewDesc("loadmesh_scheduler_retry_budget_available",
		"Retries the retry budget allows now.", nil, nil)
	descEjections = prometheus.NewDesc("loadmesh_scheduler_outlier_ejections_total",
		"Peers ejected by outlier detection.", nil, nil)
	descEjectionsSkipped = prometheus.NewDesc("loadmesh_scheduler_outlier_ejections_skipped_total",
		"Ejections not made because the maximum share of peers was ejected already.", nil, nil)
	descEjected = prometheus.NewDesc("loadmesh_scheduler_outlier_ejected_peers",
		"Peers ejected now.", nil, nil)
	descHolds = prometheus.NewDesc("loadmesh_scheduler_retry_after_holds_total",
		"429 or 503 answers with Retry-After that put a peer on hold.", nil, nil)
	descBreaker = prometheus.NewDesc("loadmesh_scheduler_breaker_rejections_total",
		"In-flight slot acquisitions refused at a peer's cap.", nil, nil)
	descSpills = prometheus.NewDesc("loadmesh_scheduler_zone_spills_total",
		"Selections that left this node's zone.", nil, nil)
	descPeerInflight = prometheus.NewDesc("loadmesh_scheduler_peer_inflight",
		"Requests this node has in flight to a peer.", []string{"peer"}, nil)
	descPeerLatency = prometheus.NewDesc("loadmesh_scheduler_peer_latency_seconds",
		"Effective latency estimate of a peer (peak-EWMA).", []string{"peer"}, nil)
	descPeerEjected = prometheus.NewDesc("loadmesh_scheduler_peer_ejected",
		"1 while a peer is ejected by outlier detection.", []string{"peer"}, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descSelections, descRetries, descRetryAvailable, descEjections, descEjectionsSkipped,
		descEjected, descHolds, descBreaker, descSpills, descPeerInflight, descPeerLatency, descPeerEjected,
	} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter(descSelections, st.PickedLocal, "local")
	counter(descSelections, st.PickedPeer, "peer")
	counter(descSelections, st.NoPeer, "none")
	counter(descSelections, st.Saturated, "saturated")
	counter(descSelections, st.BudgetExhausted, "budget")
	counter(descRetries, st.RetryBudget.Granted)
	gauge(descRetryAvailable, st.RetryBudget.Available)
	counter(descEjections, st.Outliers.Ejections)
	counter(descEjectionsSkipped, st.Outliers.Skipped)
	gauge(descEjected, float64(st.Outliers.Ejected))
	counter(descHolds, st.RetryAfterHolds)
	counter(descBreaker, st.BreakerRejections)
	counter(descSpills, st.ZoneSpills)
	for _, p := range c.s.Status() {
		gauge(descPeerInflight, float64(p.LocalInflight), p.Name)
		gauge(descPeerLatency, p.Latency.Seconds(), p.Name)
		ejected := 0.0
		if !p.EjectedUntil.IsZero() {
			ejected = 1
		}
		gauge(descPeerEjected, ejected, p.Name)
	}
}
