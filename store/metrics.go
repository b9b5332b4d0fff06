package store

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	planVersion prometheus.Gauge
	applyErrors prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		planVersion: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "loadmesh_store_plan_version",
			Help: "Version of the capacity plan in this node's replica.",
		}),
		applyErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "loadmesh_store_apply_errors_total",
			Help: "Plan commands this replica could not decode or apply.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.planVersion, m.applyErrors)
	}
	return m
}
