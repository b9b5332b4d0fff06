package agent

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/loadmesh/loadmesh/cluster"
)

// Failed receives at most one error when the node finds, after Start, that
// it cannot be part of the cluster it was pointed at: its gossip key does
// not match the seeds' (cluster.ErrGossipKey), or its data dir holds
// another cluster's state (cluster.ErrForeignCluster). The owner should
// then stop it with Kill (it must hand nothing over) and report the
// error. Nil before Start; never closed.
func (a *Agent) Failed() <-chan error {
	if c := a.liveCluster.Load(); c != nil {
		return c.Failed()
	}
	return nil
}

// ShutdownGrace is the --shutdown-grace in force (a reload may change it).
func (a *Agent) ShutdownGrace() time.Duration { return a.live.Load().ShutdownGrace }

// Draining reports whether a graceful shutdown has begun.
func (a *Agent) Draining() bool { return a.draining.Load() }

// drainAndLeave is the graceful part of Shutdown:
//
//  1. announce: the node flags itself as leaving in gossip at once; peers
//     stop choosing it for new requests within a gossip round or two
//     (their scheduler view refreshes every peerRefresh), and /readyz
//     answers 503 so that a load balancer stops too;
//  2. grace: it keeps accepting for --shutdown-grace, so that clients and
//     peers that picked it before they heard are still served (skipped
//     when it has no peer);
//  3. drain: it stops accepting (ingress listeners close, HTTP keep-alive
//     connections get "Connection: close" on their next answer, HTTP/2
//     and HTTP/3 clients and peers get GOAWAY; new peer connections are
//     refused) and waits, at most --drain-timeout, for the requests in
//     flight: its clients' (which it may still forward to peers: the
//     peer client stays open) and those peers forwarded to it;
//  4. leave: a leader hands leadership over, and the node leaves gossip.
//
// Raft and the rest stop in close. When ctx ends (a second signal),
// every remaining wait is cut short and leaving is skipped: peers already
// know the node as leaving, so its silence reads as a departure.
func (a *Agent) drainAndLeave(ctx context.Context) []error {
	var errs []error
	a.draining.Store(true)
	log := a.log.With("step", "shutdown")
	if c := a.cluster; c != nil {
		start := time.Now()
		if err := c.AnnounceLeaving(time.Second); err != nil {
			errs = append(errs, err)
		}
		log.Info("draining: announced to the cluster that this node leaves", "duration", time.Since(start).Round(time.Millisecond))
	}

	grace := a.live.Load().ShutdownGrace
	if !a.hasPeers() {
		grace = 0
	}
	if grace > 0 {
		log.Info("draining: still accepting during the shutdown grace", "grace", grace)
		t := time.NewTimer(grace)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}

	start := time.Now()
	inflight, conns := a.inflight()
	log.Info("draining: no longer accepting; waiting for requests in flight",
		"inflight", inflight, "client_conns", conns, "drain_timeout", a.cfg.DrainTimeout)
	dctx, cancel := context.WithTimeout(ctx, a.cfg.DrainTimeout)
	var wg sync.WaitGroup
	var mu sync.Mutex
	drain := func(what string, f func(context.Context) error) {
		wg.Go(func() {
			if err := f(dctx); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("drain %s: %w", what, err))
				mu.Unlock()
			}
		})
	}
	if a.httpSrv != nil {
		a.httpSrv.SetKeepAlivesEnabled(false)
		drain("ingress", a.httpSrv.Shutdown)
	}
	if a.h3Srv != nil {
		drain("http/3 ingress", a.h3Srv.Shutdown)
	}
	if a.peer != nil {
		drain("peer channel", a.peer.Drain)
	}
	if a.tcp != nil {
		drain("tcp services", a.tcp.Drain)
	}
	wg.Wait()
	timedOut := dctx.Err() != nil
	cancel()
	switch inflight, conns := a.inflight(); {
	case ctx.Err() != nil:
		log.Warn("draining cut short: stopping now", "duration", time.Since(start).Round(time.Millisecond), "inflight", inflight)
		return errs
	case timedOut:
		log.Warn("drain timeout reached; cutting the requests still in flight", "duration", time.Since(start).Round(time.Millisecond),
			"inflight", inflight, "client_conns", conns)
	default:
		log.Info("draining: requests in flight finished", "duration", time.Since(start).Round(time.Millisecond))
	}

	// No more load updates: one after leaving would announce the node
	// alive again.
	a.stopPublisher()
	if c := a.cluster; c != nil {
		if err := c.Leave(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// hasPeers reports whether another member is alive: only then can anyone
// else take this node's traffic, and is a grace worth waiting.
func (a *Agent) hasPeers() bool {
	if a.cluster == nil {
		return false
	}
	for _, m := range a.cluster.Members() {
		if m.Name != a.cfg.Name && (m.Status == cluster.StatusAlive || m.Status == cluster.StatusSuspect) {
			return true
		}
	}
	return false
}

// inflight is the number of requests the local backend serves (for this
// node's clients and for peers) and of open client connections.
func (a *Agent) inflight() (requests, conns int) {
	if a.peers != nil && a.peers.meter != nil {
		requests = a.peers.meter.Inflight()
	}
	if a.limits != nil && a.limits.conns != nil {
		conns = a.limits.conns.Open()
	}
	return requests, conns
}
