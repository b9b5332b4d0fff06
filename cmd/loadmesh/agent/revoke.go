package agent

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/loadmesh/loadmesh/store"
	"github.com/loadmesh/loadmesh/transport"
)

// revoked reports whether the node called name is revoked (any of its
// certificates). Used where only the name is known: gossip and the picker.
func (a *Agent) revoked(name string) bool {
	if a.fsm == nil || name == a.cfg.Name {
		return false
	}
	_, ok := a.fsm.NodeRevoked(name)
	return ok
}

// certRevoked refuses a certificate of a revoked node issued before its
// revocation; one issued after it belongs to a machine that joined afresh
// under the same name.
func (a *Agent) certRevoked(cert *x509.Certificate) error {
	if cert == nil || a.fsm == nil {
		return nil
	}
	name, err := transport.NodeNameFromCert(cert)
	if err != nil {
		return nil // the name check that follows refuses it
	}
	if at, ok := a.fsm.NodeRevoked(name); ok && !cert.NotBefore.After(at) {
		return fmt.Errorf("node %q was revoked at %s", name, at.UTC().Format(time.RFC3339))
	}
	return nil
}

// revocationEnforcer closes the connections of nodes as they are revoked:
// peer-channel connections both ways and accepted Raft connections. It
// wakes on every revocation the FSM applies (store.FSM.SecurityChanged).
type revocationEnforcer struct {
	stop chan struct{}
	wg   sync.WaitGroup
	done map[string]time.Time // revocations already enforced
}

func (a *Agent) startRevocations() {
	e := &revocationEnforcer{stop: make(chan struct{}), done: map[string]time.Time{}}
	a.revocations = e
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		t := time.NewTicker(keyringResync)
		defer t.Stop()
		for {
			ch := a.fsm.SecurityChanged()
			a.enforceRevocations(e.done)
			select {
			case <-e.stop:
				return
			case <-ch:
			case <-t.C:
			}
		}
	}()
}

func (a *Agent) stopRevocations() {
	if e := a.revocations; e != nil && e.stop != nil {
		close(e.stop)
		e.wg.Wait()
		e.stop = nil
	}
}

func (a *Agent) enforceRevocations(done map[string]time.Time) {
	for name, r := range a.fsm.RevokedNodes() {
		if name == a.cfg.Name || done[name].Equal(r.At) {
			continue
		}
		done[name] = r.At
		inbound := a.peer.ClosePeerConns(name)
		a.peers.loads.Forget(name)
		raftConns := a.cluster.CloseRaftConns(func(cs tls.ConnectionState) bool {
			return len(cs.PeerCertificates) > 0 && a.certRevoked(cs.PeerCertificates[0]) != nil
		})
		a.log.Warn("node revoked: its connections are closed and it is refused from now on", "peer", name,
			"revoked_at", r.At, "peer_conns_closed", inbound, "raft_conns_closed", raftConns)
	}
}

// revokeNode is POST /v1/nodes/{name}/revoke on the leader.
func (a *Agent) revokeNode(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := validateName(name); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxAPIBody+1))
	if err != nil || len(body) > maxAPIBody {
		writeError(w, http.StatusBadRequest, "cannot read the request body")
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	var req nodeActionRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, bodyStatus(err), err.Error())
		return
	}
	_, inPlan := a.fsm.Plan().Nodes[name]
	_, member := a.cluster.Member(name)
	if !inPlan && !member && !a.cluster.InRaft(name) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("node %q is not known to the cluster (not a member, not in the plan)", name))
		return
	}
	if name == a.cfg.Name {
		// The leader cannot take itself out of Raft: hand leadership over,
		// then carry the request to the new leader (even if a follower
		// carried it here: the new leader is another node, so it cannot
		// come back).
		if err := a.cluster.TransferLeadership(); err != nil {
			writeError(w, http.StatusConflict, fmt.Sprintf("node %q leads the cluster and could not hand leadership over: %v", name, err))
			return
		}
		deadline := time.Now().Add(5 * time.Second)
		for a.cluster.Leader() == "" || a.cluster.Leader() == a.cfg.Name {
			if time.Now().After(deadline) {
				writeError(w, http.StatusServiceUnavailable, "leadership was handed over but no new leader is known yet; try again")
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.Header.Del(headerForwardedBy)
		a.leaderOnly(a.revokeNode)(w, r)
		return
	}
	why := req.Reason
	if why == "" {
		why = "operator revoked the node"
	}
	now := a.now().UTC()
	ev, err := a.apply(commandRevoke(name, now, actor(r), why))
	if err != nil {
		writeApplyError(w, err)
		return
	}
	if err := a.cluster.RemoveServer(name); err != nil {
		// The leader's reconciliation keeps trying.
		a.log.Warn("revoked node still in raft", "peer", name, "error", err)
	}
	writeJSON(w, http.StatusOK, ev)
}

func commandRevoke(name string, at time.Time, who, why string) store.Command {
	return store.Command{Op: store.OpNodeRevoke, Node: name, Time: at, Who: who, Why: why}
}

// InboundPeerConns returns how many peer-channel connections each peer
// has open to this node (for tests and diagnostics).
func (a *Agent) InboundPeerConns() map[string]int { return a.peer.InboundPeers() }

// authorizeRaftPeer admits a Raft connection from a live gossip member
// (authorizePeer) or from a server in this node's Raft configuration: a
// node that missed a gossip key rotation while it was down cannot gossip
// until it has caught up with the keyring through Raft, so its leader must
// be able to reach it (and its own gossip does not know the leader yet).
// Revoked nodes are out of the configuration and refused by certRevoked.
func (a *Agent) authorizeRaftPeer(name string) error {
	err := a.authorizePeer(name)
	if err == nil {
		return nil
	}
	if c := a.liveCluster.Load(); c != nil && !a.revoked(name) && c.InRaft(name) {
		return nil
	}
	return err
}
