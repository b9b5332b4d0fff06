package transport

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type ingressMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inflight prometheus.Gauge
	retries  prometheus.Counter
	// Body bytes of forwarded requests: sent to peers, and received from
	// them (relayed to clients).
	fwdSent, fwdReceived prometheus.Counter

	// Resolved series of the routes the ingress and Backend use, filled
	// on first use: WithLabelValues hashes its labels on every call.
	counters  [len(knownRoutes)][len(outcomes)]atomic.Pointer[prometheus.Counter]
	observers [len(knownRoutes)]atomic.Pointer[prometheus.Observer]
}

var (
	knownRoutes = [...]string{"local", "forwarded", "none"}
	outcomes    = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx", "canceled"}
)

func newIngressMetrics(reg prometheus.Registerer) *ingressMetrics {
	m := &ingressMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "loadmesh_transport_requests_total",
			Help: "Requests served, by route (local, forwarded, none) and outcome (2xx, 3xx, 4xx, 5xx, canceled).",
		}, []string{"route", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "loadmesh_transport_request_duration_seconds",
			Help:    "Time to serve a request, by route.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "loadmesh_transport_backend_inflight_requests",
			Help: "Requests being served by this node's backend.",
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "loadmesh_transport_retries_total",
			Help: "Requests tried again on another node after a failed forward.",
		}),
		fwdSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "loadmesh_transport_forwarded_sent_bytes_total",
			Help: "Request body bytes this ingress forwarded to peers.",
		}),
		fwdReceived: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "loadmesh_transport_forwarded_received_bytes_total",
			Help: "Response body bytes this ingress received from peers and relayed to clients.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.inflight, m.retries, m.fwdSent, m.fwdReceived)
	}
	return m
}

func (m *ingressMetrics) observe(route string, status int, d time.Duration) {
	o := outcomeIndex(status)
	ri := -1
	for i, r := range knownRoutes {
		if r == route {
			ri = i
			break
		}
	}
	if ri < 0 {
		m.requests.WithLabelValues(route, outcomes[o]).Inc()
		m.duration.WithLabelValues(route).Observe(d.Seconds())
		return
	}
	c := m.counters[ri][o].Load()
	if c == nil {
		cc := m.requests.WithLabelValues(route, outcomes[o])
		c = &cc
		m.counters[ri][o].Store(c)
	}
	(*c).Inc()
	h := m.observers[ri].Load()
	if h == nil {
		hh := m.duration.WithLabelValues(route)
		h = &hh
		m.observers[ri].Store(h)
	}
	(*h).Observe(d.Seconds())
}

func outcomeIndex(status int) int {
	switch {
	case status == 499:
		return len(outcomes) - 1 // canceled
	case status >= 100 && status < 600:
		return status/100 - 1
	default:
		return 1 // 2xx
	}
}

// forwardedBytes counts one forwarding attempt's body bytes. body is nil
// for a request without one. A request is retried only while its body is
// untouched (safeToRetry), so nothing is counted twice.
func (m *ingressMetrics) forwardedBytes(body *trackedBody, rec *StatusRecorder) {
	if body != nil {
		if n := body.read.Load(); n > 0 {
			m.fwdSent.Add(float64(n))
		}
	}
	if rec.bytes > 0 {
		m.fwdReceived.Add(float64(rec.bytes))
	}
}
