package transport

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Label values of the peer channel metrics. Every label takes only these
// values, so series are bounded and all exist (at zero) from the start.
const (
	directionInbound  = "inbound"
	directionOutbound = "outbound"

	dialSuccess  = "success"
	dialTimeout  = "timeout"
	dialRefused  = "refused"  // the peer answered CONNECTION_REFUSED (shutting down)
	dialTLS      = "tls"      // a certificate or name did not verify, on either side
	dialCanceled = "canceled" // the client or peer was closed while dialling
	dialError    = "error"

	refusedCertificate  = "certificate"   // the peer's certificate did not verify
	refusedUnauthorized = "unauthorized"  // PeerDeps.Authorize refused the node
	refusedShuttingDown = "shutting_down" // the server was shutting down
)

// peerMetrics are the collectors of the QUIC peer channel.
type peerMetrics struct {
	conns   *prometheus.GaugeVec
	dials   *prometheus.CounterVec
	refused *prometheus.CounterVec
}

func newPeerMetrics(reg prometheus.Registerer) (*peerMetrics, error) {
	m := &peerMetrics{
		conns: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "loadmesh_transport_peer_connections",
			Help: "Open QUIC peer connections, by direction (inbound: accepted from peers; outbound: dialled to peers).",
		}, []string{"direction"}),
		dials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "loadmesh_transport_peer_dials_total",
			Help: "QUIC connection attempts to peers, by result (success, timeout, refused, tls, canceled, error).",
		}, []string{"result"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "loadmesh_transport_peer_refused_total",
			Help: "Incoming peer connections refused, by reason (certificate, unauthorized, shutting_down).",
		}, []string{"reason"}),
	}
	for _, d := range []string{directionInbound, directionOutbound} {
		m.conns.WithLabelValues(d)
	}
	for _, r := range []string{dialSuccess, dialTimeout, dialRefused, dialTLS, dialCanceled, dialError} {
		m.dials.WithLabelValues(r)
	}
	for _, r := range []string{refusedCertificate, refusedUnauthorized, refusedShuttingDown} {
		m.refused.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	collectors := []prometheus.Collector{m.conns, m.dials, m.refused}
	for i, c := range collectors {
		if err := reg.Register(c); err != nil {
			for _, done := range collectors[:i] {
				reg.Unregister(done)
			}
			return nil, fmt.Errorf("register peer metrics: %w", err)
		}
	}
	return m, nil
}
