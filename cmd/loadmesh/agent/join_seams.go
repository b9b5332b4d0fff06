package agent

// Merge seams of the join feature. Each is one small function so that the
// features built alongside (the replicated gossip keyring, node
// revocation) can be wired in at one place.

// joinGossipKeys returns the gossip encryption keys a joining node
// receives, primary first: for now the one key this node uses (--encrypt,
// or the key it received when it joined). To be rewired to the
// replicated keyring.
func (a *Agent) joinGossipKeys() [][]byte {
	if a.cfg.Encrypt != "" {
		if k, err := DecodeGossipKey(a.cfg.Encrypt); err == nil {
			return [][]byte{k}
		}
	}
	if a.joined != nil && len(a.joined.gossipKeys) > 0 {
		return a.joined.gossipKeys
	}
	return nil
}

// nodeRevoked reports whether the node called name was revoked, so that
// it gets no certificate, neither by joining nor by renewal. For now no
// node is revoked; to be wired to the FSM's NodeRevoked(name).
func (a *Agent) nodeRevoked(name string) bool {
	_ = name
	return false
}
