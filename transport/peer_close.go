package transport

import (
	"crypto/tls"
	"sync"

	"github.com/quic-go/quic-go"
)

// inboundConns tracks the accepted peer connections by authenticated node
// name, so that a revoked node's connections can be closed at once.
type inboundConns struct {
	mu sync.Mutex
	m  map[string]map[*quic.Conn]struct{}
}

func (c *inboundConns) add(name string, conn *quic.Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]map[*quic.Conn]struct{}{}
	}
	if c.m[name] == nil {
		c.m[name] = map[*quic.Conn]struct{}{}
	}
	c.m[name][conn] = struct{}{}
}

func (c *inboundConns) remove(name string, conn *quic.Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m[name], conn)
	if len(c.m[name]) == 0 {
		delete(c.m, name)
	}
}

func (c *inboundConns) take(name string) []*quic.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*quic.Conn
	for conn := range c.m[name] {
		out = append(out, conn)
	}
	delete(c.m, name)
	return out
}

// errCodePeerRevoked closes the connections of a node no longer admitted.
const errCodePeerRevoked quic.ApplicationErrorCode = 0x1f0

// ClosePeerConns closes every peer-channel connection with the node called
// name, both ways: those it opened to this node (their requests in flight
// are aborted) and this node's to it (ClosePeer). It returns how many
// inbound connections were closed. New connections from the node are up
// to PeerDeps.Authorize / AuthorizeCert to refuse.
func (s *PeerServer) ClosePeerConns(name string) int {
	s.client.ClosePeer(name)
	conns := s.inbound.take(name)
	for _, conn := range conns {
		_ = conn.CloseWithError(errCodePeerRevoked, "peer revoked")
	}
	if len(conns) > 0 {
		s.logger.Info("closed peer connections", "peer", name, "inbound", len(conns))
	}
	return len(conns)
}

// InboundPeers returns how many accepted connections each peer has open.
func (s *PeerServer) InboundPeers() map[string]int {
	s.inbound.mu.Lock()
	defer s.inbound.mu.Unlock()
	out := make(map[string]int, len(s.inbound.m))
	for name, conns := range s.inbound.m {
		out[name] = len(conns)
	}
	return out
}

// authorizeServer makes a client config also ask PeerDeps.AuthorizeCert
// about the server's certificate, so that a node does not dial a revoked
// peer either (the dial fails as a DialError and the request goes to
// another peer).
func (s *PeerServer) authorizeServer(conf *tls.Config) *tls.Config {
	if s.authorizeCert == nil {
		return conf
	}
	verify := conf.VerifyConnection
	conf.VerifyConnection = func(cs tls.ConnectionState) error {
		if verify != nil {
			if err := verify(cs); err != nil {
				return err
			}
		}
		return s.authorizeCert(peerLeaf(cs))
	}
	return conf
}
