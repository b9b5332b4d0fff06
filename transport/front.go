package transport

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Ingress is a node's client-facing front door. It serves a request with
// the local backend; a node without a backend answers 503 until peer
// forwarding is wired in.
type Ingress struct {
	node    string
	local   *Backend // nil on an ingress-only node
	metrics *ingressMetrics
}

// NewIngress returns the front door of node. local may be nil. reg is where
// the front door's own counters go (the backend registers its own).
func NewIngress(node string, local *Backend, reg prometheus.Registerer) *Ingress {
	in := &Ingress{node: node, local: local}
	if local != nil {
		in.metrics = local.metrics
	} else {
		in.metrics = newIngressMetrics(reg)
	}
	return in
}

// ServeHTTP implements http.Handler.
func (in *Ingress) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if in.local != nil {
		in.local.ServeHTTP(w, r)
		return
	}
	start := time.Now()
	http.Error(w, "loadmesh: node "+in.node+" has no backend and no peer to forward to", http.StatusServiceUnavailable)
	in.metrics.observe("none", http.StatusServiceUnavailable, time.Since(start))
}
