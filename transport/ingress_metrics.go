package transport

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type ingressMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inflight prometheus.Gauge
	retries  prometheus.Counter
}

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
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.inflight, m.retries)
	}
	return m
}

func (m *ingressMetrics) observe(route string, status int, d time.Duration) {
	m.requests.WithLabelValues(route, outcome(status)).Inc()
	m.duration.WithLabelValues(route).Observe(d.Seconds())
}

func outcome(status int) string {
	switch {
	case status == 499:
		return "canceled"
	case status >= 100 && status < 600:
		return strconv.Itoa(status/100) + "xx"
	default:
		return "2xx"
	}
}
