package cluster

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/memberlist"
)

// aliveDelegate ignores alive messages about refused nodes (Deps.Refuse),
// so that gossip does not add them back once they are gone, nor take their
// updates (a new address, metadata) while they linger.
type aliveDelegate struct{ c *Cluster }

var _ memberlist.AliveDelegate = (*aliveDelegate)(nil)

// NotifyAlive runs on memberlist's goroutines and must not block;
// Deps.Refuse reads the replicated state under a read lock.
func (d *aliveDelegate) NotifyAlive(peer *memberlist.Node) error {
	if peer.Name != d.c.cfg.NodeName && d.c.refused(peer.Name) {
		return fmt.Errorf("node %q %s", peer.Name, refusedSuffix)
	}
	return nil
}

// refusedSuffix ends aliveDelegate's error; memberlist logs every refused
// alive message at WARN, which the log adapter turns to DEBUG (the agent
// logs the revocation once).
const refusedSuffix = "is revoked"

func isRefusedAlive(msg string) bool {
	return strings.HasPrefix(msg, "ignoring alive message") && strings.HasSuffix(msg, refusedSuffix)
}

func (c *Cluster) refused(name string) bool {
	return c.deps.Refuse != nil && name != c.cfg.NodeName && c.deps.Refuse(name)
}

// Refused reports whether the node called name is refused (Deps.Refuse).
func (c *Cluster) Refused(name string) bool { return c.refused(name) }

// RemoveServer takes the node called name out of the Raft configuration
// now (leader only) instead of at the next reconciliation. A node that is
// not in the configuration is fine.
func (c *Cluster) RemoveServer(name string) error {
	if !c.IsLeader() {
		return ErrNotLeader
	}
	if name == c.cfg.NodeName {
		return errors.New("the leader cannot remove itself; transfer leadership first")
	}
	f := c.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return fmt.Errorf("read raft configuration: %w", err)
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) != name {
			continue
		}
		if err := c.raft.RemoveServer(s.ID, 0, 0).Error(); err != nil {
			return fmt.Errorf("remove %s from raft: %w", name, err)
		}
		c.log.Info("removed server from raft", "peer", name, "reason", "refused")
		c.metrics.raftChanges.WithLabelValues("remove").Inc()
	}
	return nil
}

// InRaft reports whether the node called name is in this node's latest
// Raft configuration.
func (c *Cluster) InRaft(name string) bool {
	f := c.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == name {
			return true
		}
	}
	return false
}

// TransferLeadership hands leadership to another voter (leader only).
func (c *Cluster) TransferLeadership() error {
	if !c.IsLeader() {
		return ErrNotLeader
	}
	return c.raft.LeadershipTransfer().Error()
}

// CloseRaftConns closes the accepted Raft connections whose TLS state
// match reports true (say, those of a revoked node's certificate) and
// returns how many. Only for a Raft port under TLS.
func (c *Cluster) CloseRaftConns(match func(tls.ConnectionState) bool) int {
	if c.transport == nil {
		return 0
	}
	return c.stream.closeMatching(match)
}

// closeMatching closes the accepted TLS connections match selects.
func (s *streamLayer) closeMatching(match func(tls.ConnectionState) bool) int {
	s.mu.Lock()
	var victims []*trackedConn
	for c := range s.accepted {
		tc := c.(*trackedConn)
		if t, ok := tc.Conn.(*tls.Conn); ok && match(t.ConnectionState()) {
			victims = append(victims, tc)
		}
	}
	s.mu.Unlock()
	for _, tc := range victims {
		tc.Close()
	}
	return len(victims)
}
