package transport

import "github.com/prometheus/client_golang/prometheus"

// Metrics of the abuse protections (ratelimit.go, guard.go, connlimit.go,
// shed.go). Each component registers its own on the Registerer it is
// given, so that a node may use any of them.

const (
	scopeNode = iota
	scopeCluster
)

type rateLimitMetrics struct {
	rejected [2]prometheus.Counter // by scope
	evicted  prometheus.Counter
}

func newRateLimitMetrics(reg prometheus.Registerer, l *RateLimiter) *rateLimitMetrics {
	rejected := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "loadmesh_transport_ratelimit_rejected_total",
		Help: "Requests (or connections) refused by the per-client rate limit, by scope: node when the key's bucket ran dry on its own, cluster when other nodes' use had lowered this node's share.",
	}, []string{"scope"})
	m := &rateLimitMetrics{
		rejected: [2]prometheus.Counter{rejected.WithLabelValues("node"), rejected.WithLabelValues("cluster")},
		evicted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "loadmesh_transport_ratelimit_evicted_total",
			Help: "Client keys dropped from the rate limiter to make room at its key cap.",
		}),
	}
	if reg != nil {
		reg.MustRegister(rejected, m.evicted, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "loadmesh_transport_ratelimit_keys",
			Help: "Client keys the rate limiter tracks.",
		}, func() float64 { return float64(l.Keys()) }))
	}
	return m
}

type guardMetrics struct {
	tooLarge prometheus.Counter
	timeouts prometheus.Counter
}

func newGuardMetrics(reg prometheus.Registerer) *guardMetrics {
	m := &guardMetrics{
		tooLarge: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "loadmesh_transport_body_too_large_total",
			Help: "Requests answered 413 because their body exceeded the limit.",
		}),
		timeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "loadmesh_transport_body_timeouts_total",
			Help: "Requests whose client did not send the body within the read timeout.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.tooLarge, m.timeouts)
	}
	return m
}

type connLimitMetrics struct {
	rejected [2]prometheus.Counter // total, per client
}

func newConnLimitMetrics(reg prometheus.Registerer, c *ConnLimiter) *connLimitMetrics {
	rejected := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "loadmesh_transport_connections_rejected_total",
		Help: "Client connections closed at once because a connection limit was reached, by limit (total, per_client).",
	}, []string{"limit"})
	m := &connLimitMetrics{rejected: [2]prometheus.Counter{rejected.WithLabelValues("total"), rejected.WithLabelValues("per_client")}}
	if reg != nil {
		reg.MustRegister(rejected, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "loadmesh_transport_connections_open",
			Help: "Client connections open under the connection limits.",
		}, func() float64 { return float64(c.Open()) }))
	}
	return m
}

type shedMetrics struct {
	shed     [2]prometheus.Counter // queue full, queue timeout
	queued   prometheus.Gauge
	inflight prometheus.Gauge
	wait     prometheus.Histogram
}

func newShedMetrics(reg prometheus.Registerer) *shedMetrics {
	shed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "loadmesh_transport_shed_total",
		Help: "Requests refused with 503 by local load shedding, by reason (queue_full, queue_timeout).",
	}, []string{"reason"})
	m := &shedMetrics{
		shed: [2]prometheus.Counter{shed.WithLabelValues("queue_full"), shed.WithLabelValues("queue_timeout")},
		queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "loadmesh_transport_admission_queued_requests",
			Help: "Requests waiting for a backend slot.",
		}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "loadmesh_transport_admission_inflight_requests",
			Help: "Requests holding a backend slot of the admission limit.",
		}),
		wait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "loadmesh_transport_admission_wait_seconds",
			Help:    "Time requests waited for a backend slot (admitted ones only).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
	}
	if reg != nil {
		reg.MustRegister(shed, m.queued, m.inflight, m.wait)
	}
	return m
}
