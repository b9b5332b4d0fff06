package cluster

import (
	"crypto/tls"
	"fmt"
	"net"
	"sync"
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

	// accepted are the connections Accept returned and not yet closed:
	// raft's NetworkTransport closes only the listener on Close, so Close
	// closes these too, ending their handler goroutines.
	mu       sync.Mutex
	accepted map[net.Conn]struct{}
	closed   bool
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func (s *streamLayer) Accept() (net.Conn, error) {
	c, err := s.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if s.serverTLS != nil {
		c = tls.Server(c, s.serverTLS)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	if s.accepted == nil {
		s.accepted = map[net.Conn]struct{}{}
	}
	tc := &trackedConn{Conn: c, s: s}
	s.accepted[tc] = struct{}{}
	return tc, nil
}

// Close closes the listener and every accepted connection still open.
func (s *streamLayer) Close() error {
	err := s.Listener.Close()
	s.mu.Lock()
	s.closed = true
	conns := s.accepted
	s.accepted = nil
	s.mu.Unlock()
	for c := range conns {
		c.(*trackedConn).Conn.Close()
	}
	return err
}

// trackedConn leaves streamLayer.accepted when closed.
type trackedConn struct {
	net.Conn
	s    *streamLayer
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.accepted, c)
		c.s.mu.Unlock()
	})
	return c.Conn.Close()
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
