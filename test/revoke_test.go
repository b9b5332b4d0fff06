package test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/test/harness"
	"github.com/loadmesh/loadmesh/test/retry"
	"github.com/loadmesh/loadmesh/transport"
)

// quicRefused dials n's peer channel as id: true when the handshake fails
// or the connection is closed at once.
func quicRefused(id *transport.MutualTLS, n *harness.Node) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, n.PeerAddr(), id.ClientConfig(n.Name(), http3.NextProtoH3), &quic.Config{})
	if err != nil {
		return true
	}
	defer conn.CloseWithError(0, "")
	select {
	case <-conn.Context().Done():
		return true
	case <-time.After(300 * time.Millisecond):
		return false
	}
}

// raftRefused opens a TLS connection to n's Raft port as id: true when the
// handshake fails or the server ends the connection (TLS 1.3 reports a
// refused client certificate on the first read).
func raftRefused(id *transport.MutualTLS, n *harness.Node) bool {
	d := &net.Dialer{Timeout: 2 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", n.Cluster().RaftAddr(), id.ClientConfig(n.Name(), "loadmesh-raft/1"))
	if err != nil {
		return true
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err = conn.Read(make([]byte, 1))
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// TestNodeRevocation revokes a serving node of a four-node cluster (the
// fourth node has no backend and forwards everything) through a
// follower's API: within a short window every other node refuses its QUIC
// and Raft handshakes and has closed its peer connections, it is out of
// the Raft configuration, every replica holds the revocation, and no
// request is forwarded to it any more. It then revokes the leader itself
// (leadership is handed over first), and an unknown name gets 404.
func TestNodeRevocation(t *testing.T) {
	skipShort(t)
	c := harness.Start(t, 4, harness.Options{Backends: true, IngressOnly: []int{3}})
	c.WaitForMembers(t)
	leader := c.WaitForLeader(t)
	ingress := c.Nodes[3]
	waitServingPeers(t, c, ingress, 3)
	var victim *harness.Node
	for _, n := range c.Nodes[:3] {
		if n != leader {
			victim = n
			break
		}
	}
	others := slices.DeleteFunc(slices.Clone(c.Live()), func(n *harness.Node) bool { return n == victim })
	id, err := transport.DevMutualTLS(victim.Name(), c.CA) // its certificate, as a thief would hold it
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range others {
		if quicRefused(id, n) || raftRefused(id, n) {
			t.Fatalf("%s refuses %s before the revocation", n.Name(), victim.Name())
		}
	}
	// The ingress has a connection to the victim (it forwarded to it).
	retry.Run(t, func(r *retry.R) {
		if victim.InboundPeerConns()[ingress.Name()] == 0 {
			r.Fatalf("%s has no connection from %s yet", victim.Name(), ingress.Name())
		}
	})

	// 503 means "no leader right now; try again" (elections happen on a
	// busy machine).
	retry.Run(t, func(r *retry.R) {
		if st := apiCall(t, ingress, http.MethodPost, "/v1/nodes/"+victim.Name()+"/revoke", map[string]string{"reason": "test"}, nil); st != http.StatusOK {
			r.Fatalf("revoke: %d", st)
		}
	})
	revoked := time.Now()
	var enforced time.Duration
	deadline := revoked.Add(retry.Scale(10 * time.Second))
	for {
		pending := ""
		for _, n := range others {
			switch {
			case victim.InboundPeerConns()[n.Name()] > 0:
				pending = n.Name() + " still has a connection to the victim"
			case n.InboundPeerConns()[victim.Name()] > 0:
				pending = n.Name() + " still has a connection from the victim"
			case !quicRefused(id, n):
				pending = n.Name() + " accepts the victim's QUIC handshake"
			case !raftRefused(id, n):
				pending = n.Name() + " accepts the victim's Raft connection"
			}
			if pending != "" {
				break
			}
		}
		if pending == "" {
			enforced = time.Since(revoked)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("revocation not enforced after %s: %s", time.Since(revoked), pending)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("revocation of %s enforced by all %d other nodes %s after the API call returned (gossip interval in tests: 50ms)",
		victim.Name(), len(others), enforced.Round(time.Millisecond))

	retry.Run(t, func(r *retry.R) {
		for _, n := range others {
			if _, ok := n.Plan().NodeRevoked(victim.Name()); !ok {
				r.Fatalf("%s does not hold the revocation", n.Name())
			}
			if n.Cluster().InRaft(victim.Name()) {
				r.Fatalf("%s still has %s in its Raft configuration", n.Name(), victim.Name())
			}
		}
	})
	// Nothing is forwarded to it any more.
	hc := client(t)
	served := map[string]int{}
	for i := range 100 {
		via := others[i%len(others)]
		resp, err := hc.Get(fmt.Sprintf("http://%s/after/%d", via.HTTPAddr(), i))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d via %s: %s", i, via.Name(), resp.Status)
		}
		served[resp.Header.Get(transport.HeaderNode)]++
	}
	t.Logf("100 requests after the revocation served by %v", served)
	if served[victim.Name()] > 0 {
		t.Errorf("%d requests reached the revoked %s", served[victim.Name()], victim.Name())
	}

	// Unknown names: 404.
	if st := apiCall(t, ingress, http.MethodPost, "/v1/nodes/no-such-node/revoke", nil, nil); st != http.StatusNotFound {
		t.Errorf("revoking an unknown node: %d, want 404", st)
	}

	// The leader itself: it hands leadership over, and the new leader
	// revokes it. (The revoked node, out of Raft, knows no leader: stop it
	// so that WaitForLeader asks only the others.)
	c.Kill(t, victim)
	leader = c.WaitForLeader(t)
	retry.Run(t, func(r *retry.R) {
		if st := apiCall(t, leader, http.MethodPost, "/v1/nodes/"+leader.Name()+"/revoke", nil, nil); st != http.StatusOK {
			r.Fatalf("revoke the leader: %d", st)
		}
	})
	rest := slices.DeleteFunc(slices.Clone(others), func(n *harness.Node) bool { return n == leader })
	retry.Run(t, func(r *retry.R) {
		for _, n := range rest {
			if _, ok := n.Plan().NodeRevoked(leader.Name()); !ok {
				r.Fatalf("%s does not hold the revocation of %s", n.Name(), leader.Name())
			}
			if n.Cluster().InRaft(leader.Name()) {
				r.Fatalf("%s still has the former leader %s in Raft", n.Name(), leader.Name())
			}
			if l := n.Cluster().Leader(); l == "" || l == leader.Name() {
				r.Fatalf("%s sees leader %q", n.Name(), l)
			}
		}
	})

	// Gossip does not take the first revoked node back: once the others
	// have found it dead, it is restarted (same name, certificate and
	// data dir) and joins; for several gossip rounds nobody lists it alive.
	retry.Run(t, func(r *retry.R) {
		for _, n := range rest {
			if m, ok := n.Cluster().Member(victim.Name()); ok && (m.Status == cluster.StatusAlive || m.Status == cluster.StatusSuspect) {
				r.Fatalf("%s still sees the killed %s as %s", n.Name(), victim.Name(), m.Status)
			}
		}
	})
	back := c.Restart(t, victim)
	for end := time.Now().Add(retry.Scale(3 * time.Second)); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		for _, n := range rest {
			if m, ok := n.Cluster().Member(back.Name()); ok && m.Status == cluster.StatusAlive {
				t.Fatalf("%s took the revoked %s back as alive", n.Name(), back.Name())
			}
		}
	}
}
