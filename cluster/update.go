package cluster

import "time"

// updateNode pushes this node's metadata (memberlist UpdateNode), one
// call at a time: memberlist v0.6 reads and writes its local node state in
// UpdateNode without a lock, so two concurrent calls (the load publisher
// and the cluster ID adoption, say) race.
func (c *Cluster) updateNode(timeout time.Duration) error {
	c.updateMu.Lock()
	defer c.updateMu.Unlock()
	return c.ml.UpdateNode(timeout)
}
