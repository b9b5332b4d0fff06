package agent

// joinGossipKeys returns the gossip encryption keys a joining node
// receives, primary first: the replicated keyring (keyring.go), or, before
// the first leader has seeded it, the key this node gossips with (--encrypt,
// or the keys it received when it joined itself).
func (a *Agent) joinGossipKeys() [][]byte {
	if kr := a.fsm.Keyring(); len(kr.Keys) > 0 {
		primary := kr.PrimaryKey()
		out := [][]byte{primary}
		for _, g := range kr.Keys {
			if string(g.Key) != string(primary) {
				out = append(out, g.Key)
			}
		}
		return out
	}
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

// nodeRevoked reports whether the node called name was revoked (loadmesh
// node revoke), so that it gets no certificate, neither by joining nor by
// renewal. A name revoked once stays refused here: a new machine needs a
// new name.
func (a *Agent) nodeRevoked(name string) bool {
	_, revoked := a.fsm.NodeRevoked(name)
	return revoked
}
