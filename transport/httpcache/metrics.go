package httpcache

import "github.com/prometheus/client_golang/prometheus"

// Results of loadmesh_cache_requests_total.
const (
	resultHit         = "hit"
	resultMiss        = "miss"
	resultStale       = "stale"
	resultRevalidated = "revalidated"
	resultBypass      = "bypass"
)

type metrics struct {
	requests     *prometheus.CounterVec
	collapsed    prometheus.Counter
	ownerLookups *prometheus.CounterVec
	purged       prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, s *store) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "loadmesh_cache_requests_total",
			Help: "Requests the response cache answered on this node (as owner or alone), by result: hit, miss, stale (served stale), revalidated (304 from upstream), bypass (not cacheable).",
		}, []string{"result"}),
		collapsed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "loadmesh_cache_collapsed_total",
			Help: "Requests answered with the response of a concurrent identical miss instead of their own upstream request.",
		}),
		ownerLookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "loadmesh_cache_owner_lookups_total",
			Help: "Requests this ingress sent to the owner node of their cache key, by result: ok, or error (served without the owner).",
		}, []string{"result"}),
		purged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "loadmesh_cache_purged_total",
			Help: "Stored responses removed by purges and unsafe requests.",
		}),
	}
	for _, r := range []string{resultHit, resultMiss, resultStale, resultRevalidated, resultBypass} {
		m.requests.WithLabelValues(r)
	}
	m.ownerLookups.WithLabelValues("ok")
	m.ownerLookups.WithLabelValues("error")
	if reg != nil {
		reg.MustRegister(m.requests, m.collapsed, m.ownerLookups, m.purged,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "loadmesh_cache_bytes",
				Help: "Bytes the stored responses take (bodies, headers and overhead), bounded by --cache-size.",
			}, func() float64 { return float64(s.bytes()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "loadmesh_cache_entries",
				Help: "Items in the response cache (responses and Vary records).",
			}, func() float64 { return float64(s.entries()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "loadmesh_cache_evictions_total",
				Help: "Stored responses evicted to stay within --cache-size.",
			}, func() float64 { return float64(s.evictions.Load()) }),
		)
	}
	return m
}
