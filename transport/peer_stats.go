package transport

import (
	"github.com/prometheus/client_golang/prometheus"
)

// peerConnCollector reports, at scrape time, the state of this node's
// outbound QUIC connection to each peer it has forwarded to, and the RTT
// QUIC measures on it. Peers are bounded by the cluster's size.
type peerConnCollector struct{ c *PeerClient }

var (
	peerConnStateDesc = prometheus.NewDesc("loadmesh_transport_peer_connection_state",
		"1 for the state of this node's QUIC connection to the peer: idle (none yet or lost, dialled on the next request), dialing, open, closing (refused new streams after a GOAWAY).",
		[]string{"peer", "state"}, nil)
	peerRTTDesc = prometheus.NewDesc("loadmesh_transport_peer_rtt_seconds",
		"Smoothed round-trip time QUIC measures on the open connection to the peer.", []string{"peer"}, nil)
	peerLostDesc = prometheus.NewDesc("loadmesh_transport_peer_lost_packets",
		"Packets declared lost on the current connection to the peer (restarts at 0 with a new connection).", []string{"peer"}, nil)
)

var peerConnStates = [...]string{"idle", "dialing", "open", "closing"}

func registerPeerStats(reg prometheus.Registerer, c *PeerClient) error {
	if reg == nil {
		return nil
	}
	return reg.Register(peerConnCollector{c})
}

func (p peerConnCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- peerConnStateDesc
	ch <- peerRTTDesc
	ch <- peerLostDesc
}

func (p peerConnCollector) Collect(ch chan<- prometheus.Metric) {
	p.c.mu.Lock()
	peers := make([]*peerConn, 0, len(p.c.peers))
	for _, pc := range p.c.peers {
		peers = append(peers, pc)
	}
	p.c.mu.Unlock()
	for _, pc := range peers {
		name := pc.target.Name
		state := "idle"
		h := pc.cur.Load()
		if h != nil {
			select {
			case <-h.ready:
				switch {
				case h.err != nil || h.conn.Context().Err() != nil:
					h = nil
				case h.unusable.Load():
					state = "closing"
				default:
					state = "open"
				}
			default:
				state = "dialing"
				h = nil
			}
		}
		for _, s := range peerConnStates {
			ch <- prometheus.MustNewConstMetric(peerConnStateDesc, prometheus.GaugeValue, b2f(s == state), name, s)
		}
		if h != nil {
			st := h.conn.ConnectionStats()
			ch <- prometheus.MustNewConstMetric(peerRTTDesc, prometheus.GaugeValue, st.SmoothedRTT.Seconds(), name)
			ch <- prometheus.MustNewConstMetric(peerLostDesc, prometheus.GaugeValue, float64(st.PacketsLost), name)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
