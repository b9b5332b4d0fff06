package cluster

import (
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// streamLayer is a raft.StreamLayer over TCP, optionally wrapped in mutual
// TLS. The listener is bound by the caller so port 0 works and conflicts are
// reported before anything else starts.
type streamLayer struct {
	net.Listener
	advertise net.Addr
	// serverTLS wraps accepted connections; nil means plain TCP.
	serverTLS *tls.Config
	// clientTLS returns the config for dialling the raft peer at address;
	// nil means plain TCP.
	clientTLS func(address raft.ServerAddress) *tls.Config
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func (s *streamLayer) Accept() (net.Conn, error) {
	c, err := s.Listener.Accept()
	if err != nil || s.serverTLS == nil {
		return c, err
	}
	return tls.Server(c, s.serverTLS), nil
}

func (s *streamLayer) Addr() net.Addr { return s.advertise }

func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	if s.clientTLS == nil {
		return d.Dial("tcp", string(address))
	}
	c, err := tls.DialWithDialer(d, "tcp", string(address), s.clientTLS(address))
	if err != nil {
		return nil, fmt.Errorf("raft tls dial %s: %w", address, err)
	}
	return c, nil
}
