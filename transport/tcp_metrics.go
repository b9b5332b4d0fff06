package transport

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// tcpMetrics are the TCP services' Prometheus metrics, labelled by
// service.
type tcpMetrics struct {
	open  *prometheus.GaugeVec   // service, side (ingress, backend)
	conns *prometheus.CounterVec // service, route (local, forwarded, failed)
	bytes *prometheus.CounterVec // service, direction (to_backend, to_client)
	// beBytes counts bytes through this node's backend connections.
	beBytes *prometheus.CounterVec   // service, direction
	errors  *prometheus.CounterVec   // service, reason
	setup   *prometheus.HistogramVec // service, route
}

func newTCPMetrics(reg prometheus.Registerer, s *TCPServices) (*tcpMetrics, error) {
	m := &tcpMetrics{
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "loadmesh_service_connections_open",
			Help: "Open connections of TCP services, by service and side: ingress (clients connected to this node's listener) or backend (connections this node holds to its own backend, for itself and for peers).",
		}, []string{"service", "side"}),
		conns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "loadmesh_service_connections_total",
			Help: "Client connections of TCP services accepted by this node, by service and route: local (this node's backend), forwarded (a peer's, over the mesh) or failed (not placed anywhere).",
		}, []string{"service", "route"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "loadmesh_service_bytes_total",
			Help: "Bytes relayed for clients connected to this node, by service and direction (to_backend, to_client).",
		}, []string{"service", "direction"}),
		beBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "loadmesh_service_backend_bytes_total",
			Help: "Bytes through this node's connections to its own backend of a TCP service, whichever node accepted the client, by service and direction (to_backend, to_client).",
		}, []string{"service", "direction"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "loadmesh_service_connection_errors_total",
			Help: "Failures of TCP service connections, by service and reason: rate_limited, conn_limit, no_node, peer_refused, peer_unreachable, connect_timeout, connect, backend_connect, relay, idle_timeout.",
		}, []string{"service", "reason"}),
		setup: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "loadmesh_service_connect_duration_seconds",
			Help:    "Time from accepting a client connection to its backend connection being ready, by service and route.",
			Buckets: []float64{.0002, .0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"service", "route"}),
	}
	for _, svc := range s.list {
		svc.m = m.forService(svc.cfg.Name, svc.cfg.Backend != "")
		if svc.cfg.Listen != "" {
			for _, r := range []string{"local", "forwarded", "failed"} {
				m.conns.WithLabelValues(svc.cfg.Name, r)
			}
		}
	}
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{m.open, m.conns, m.bytes, m.beBytes, m.errors, m.setup}
	cs = append(cs, &healthCollector{desc: prometheus.NewDesc("loadmesh_service_healthy",
		"1 when this node's backend of a TCP service passes its health check, 0 when not; only for services this node offers.",
		[]string{"service"}, nil), s: s})
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register tcp service metrics: %w", err)
		}
	}
	return m, nil
}

// serviceMetrics are one service's children of the vectors that change
// per connection or per copied chunk.
type serviceMetrics struct {
	up, down, beUp, beDown   prometheus.Counter
	openIngress, openBackend prometheus.Gauge
}

// forService resolves (and so exports) name's children; the backend
// byte counters only for a service this node offers.
func (m *tcpMetrics) forService(name string, backend bool) serviceMetrics {
	sm := serviceMetrics{
		up:          m.bytes.WithLabelValues(name, "to_backend"),
		down:        m.bytes.WithLabelValues(name, "to_client"),
		openIngress: m.open.WithLabelValues(name, "ingress"),
		openBackend: m.open.WithLabelValues(name, "backend"),
	}
	if backend {
		sm.beUp = m.beBytes.WithLabelValues(name, "to_backend")
		sm.beDown = m.beBytes.WithLabelValues(name, "to_client")
	} else { // never counted: only nodes with a backend carry its bytes
		sm.beUp = prometheus.NewCounter(prometheus.CounterOpts{Name: "unused"})
		sm.beDown = sm.beUp
	}
	return sm
}

// healthCollector reports each offered service's health at scrape time.
type healthCollector struct {
	desc *prometheus.Desc
	s    *TCPServices
}

func (c *healthCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *healthCollector) Collect(ch chan<- prometheus.Metric) {
	for _, svc := range c.s.list {
		if svc.cfg.Backend == "" {
			continue
		}
		v := 0.0
		if svc.healthy() {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v, svc.cfg.Name)
	}
}
