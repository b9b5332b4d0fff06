package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// PeerConfig holds the tunables of the QUIC peer channel, shared by the
// PeerServer and its PeerClient. Build it with DefaultPeerConfig and
// change what you need; NewPeerServer validates it.
type PeerConfig struct {
	// Addr is the UDP host:port the peer channel binds, for accepting
	// forwarded requests and for dialling peers. Port 0 picks a free port
	// (see PeerServer.Addr). Default ":7443".
	Addr string

	// DialTimeout bounds establishing a connection, QUIC and TLS
	// handshake included, in both directions. A peer that does not answer
	// within it yields a DialError. Default 5s; range 100ms to 1m.
	DialTimeout time.Duration

	// MaxIdleTimeout closes a connection after this long without any
	// packet from the peer. Keep-alives prevent it on a healthy idle
	// connection, so it is effectively how long a silently dead peer goes
	// unnoticed at this layer. The smaller of both ends' values applies.
	// Default 60s; range 1s to 10m.
	MaxIdleTimeout time.Duration

	// KeepAlivePeriod is the interval of keep-alive packets on otherwise
	// idle connections, so that connections stay open and NAT and
	// firewall state stays fresh. Zero disables keep-alives. Default 10s;
	// range 0 or 100ms up to (not including) MaxIdleTimeout.
	KeepAlivePeriod time.Duration

	// MaxConcurrentStreams is the number of requests a peer may have in
	// flight on one connection; further requests queue on the sending
	// side. Default 4096; range 100 to 1<<20.
	MaxConcurrentStreams int64

	// StreamReceiveWindow is the largest flow-control window, in bytes,
	// of a single request or response body. Flow-control windows start
	// small and grow automatically up to this limit while the reader keeps
	// up; it caps the unread bytes buffered per stream. Default 8 MiB;
	// range 64 KiB to 256 MiB.
	StreamReceiveWindow uint64

	// ConnectionReceiveWindow is the largest flow-control window, in
	// bytes, of a whole connection: the bound on unread body bytes
	// buffered for one peer, whatever the number of streams. Default
	// 32 MiB; range StreamReceiveWindow to 1 GiB.
	ConnectionReceiveWindow uint64

	// MaxHeaderBytes limits the size of the request and response headers
	// of a forwarded request. Default 1 MiB; range 4 KiB to 16 MiB.
	MaxHeaderBytes int
}

// DefaultPeerConfig returns the production defaults.
func DefaultPeerConfig() PeerConfig {
	return PeerConfig{
		Addr:                    ":7443",
		DialTimeout:             5 * time.Second,
		MaxIdleTimeout:          60 * time.Second,
		KeepAlivePeriod:         10 * time.Second,
		MaxConcurrentStreams:    4096,
		StreamReceiveWindow:     8 << 20,
		ConnectionReceiveWindow: 32 << 20,
		MaxHeaderBytes:          1 << 20,
	}
}

// Validate reports every invalid field of c.
func (c PeerConfig) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		errs = append(errs, fmt.Errorf("Addr %q: %w", c.Addr, err))
	}
	if c.DialTimeout < 100*time.Millisecond || c.DialTimeout > time.Minute {
		errs = append(errs, fmt.Errorf("DialTimeout %s is outside [100ms, 1m]", c.DialTimeout))
	}
	if c.MaxIdleTimeout < time.Second || c.MaxIdleTimeout > 10*time.Minute {
		errs = append(errs, fmt.Errorf("MaxIdleTimeout %s is outside [1s, 10m]", c.MaxIdleTimeout))
	}
	if c.KeepAlivePeriod != 0 && (c.KeepAlivePeriod < 100*time.Millisecond || c.KeepAlivePeriod >= c.MaxIdleTimeout) {
		errs = append(errs, fmt.Errorf("KeepAlivePeriod %s must be 0 or in [100ms, MaxIdleTimeout %s)", c.KeepAlivePeriod, c.MaxIdleTimeout))
	}
	if c.MaxConcurrentStreams < 100 || c.MaxConcurrentStreams > 1<<20 {
		errs = append(errs, fmt.Errorf("MaxConcurrentStreams %d is outside [100, %d]", c.MaxConcurrentStreams, 1<<20))
	}
	if c.StreamReceiveWindow < 64<<10 || c.StreamReceiveWindow > 256<<20 {
		errs = append(errs, fmt.Errorf("StreamReceiveWindow %d is outside [64 KiB, 256 MiB]", c.StreamReceiveWindow))
	}
	if c.ConnectionReceiveWindow < c.StreamReceiveWindow || c.ConnectionReceiveWindow > 1<<30 {
		errs = append(errs, fmt.Errorf("ConnectionReceiveWindow %d is outside [StreamReceiveWindow %d, 1 GiB]", c.ConnectionReceiveWindow, c.StreamReceiveWindow))
	}
	if c.MaxHeaderBytes < 4<<10 || c.MaxHeaderBytes > 16<<20 {
		errs = append(errs, fmt.Errorf("MaxHeaderBytes %d is outside [4 KiB, 16 MiB]", c.MaxHeaderBytes))
	}
	return errors.Join(errs...)
}

// quicConfig returns the QUIC settings for one side of a peer connection.
func (c PeerConfig) quicConfig(server bool) *quic.Config {
	// Windows start at 512 KiB (quic-go's default) or the maximum, if
	// smaller, and auto-tune upwards while the reader keeps up.
	const initialWindow = 512 << 10
	qc := &quic.Config{
		HandshakeIdleTimeout:           c.DialTimeout,
		MaxIdleTimeout:                 c.MaxIdleTimeout,
		KeepAlivePeriod:                c.KeepAlivePeriod,
		InitialStreamReceiveWindow:     min(initialWindow, c.StreamReceiveWindow),
		MaxStreamReceiveWindow:         c.StreamReceiveWindow,
		InitialConnectionReceiveWindow: min(2*initialWindow, c.ConnectionReceiveWindow),
		MaxConnectionReceiveWindow:     c.ConnectionReceiveWindow,
		// Only the dialling side opens request streams (HTTP/3); the
		// server never opens bidirectional streams.
		MaxIncomingStreams: -1,
	}
	if server {
		qc.MaxIncomingStreams = c.MaxConcurrentStreams
	}
	return qc
}

// PeerDeps holds the PeerServer's collaborators.
type PeerDeps struct {
	// TLS is this node's identity and the cluster CA. Required.
	TLS *MutualTLS

	// Handler serves requests forwarded by peers, normally with the local
	// backend. Required. It runs on a goroutine per request and must
	// return once the request's context is cancelled (the peer cancelled
	// the request, the connection died, or Shutdown gave up waiting).
	// PeerNameFromContext(r.Context()) names the authenticated sender.
	Handler http.Handler

	// Authorize, if set, is asked whether the authenticated node peerName
	// may connect, for example to refuse removed or unknown nodes; a
	// non-nil error refuses the connection during its handshake. It runs
	// on a quic-go goroutine and must not block. Connections already
	// established are not re-checked.
	Authorize func(peerName string) error
	// AuthorizeCert, if set, is asked about the peer's verified leaf
	// certificate after Authorize (a revoked node's certificates issued
	// before its revocation are refused this way); same rules.
	AuthorizeCert func(cert *x509.Certificate) error

	// Join, if set, answers requests of the join protocol (JoinALPN) on
	// the peer port: certificate requests of new nodes (with a join token)
	// and renewals (authenticated by the node certificate). Without it the
	// peer port does not speak the protocol.
	Join JoinHandler

	// Logger receives the component's logs. Nil discards them.
	Logger *slog.Logger

	// Registerer receives the component's metrics. Nil leaves them
	// unregistered.
	Registerer prometheus.Registerer
}

// PeerServer is the QUIC peer channel of one node. It binds one UDP
// socket, accepts mutually authenticated HTTP/3 connections from peers
// and serves their forwarded requests with PeerDeps.Handler; its Client
// dials peers from the same socket.
type PeerServer struct {
	cfg       PeerConfig
	tls       *MutualTLS
	handler   http.Handler
	authorize func(string) error
	join      JoinHandler
	logger    *slog.Logger
	metrics   *peerMetrics
	client    *PeerClient
	warnings  *peerLogLimiter

	// authorizeCert is PeerDeps.AuthorizeCert; inbound tracks accepted
	// connections by peer (peer_close.go).
	authorizeCert func(*x509.Certificate) error
	inbound       inboundConns

	mu      sync.Mutex
	started bool
	stopped bool
	udp     *net.UDPConn
	qtr     *quic.Transport
	ln      *quic.Listener
	h3      *http3.Server
	cancel  context.CancelFunc // cancels the lifetime context

	// dialer is the running transport, nil before Start and from the
	// beginning of Shutdown on. The client reads it without taking mu.
	dialer   atomic.Pointer[quic.Transport]
	draining atomic.Bool
	wg       sync.WaitGroup

	shutdownOnce sync.Once
	shutdownErr  error
	drainOnce    sync.Once
	drainErr     error
}

// NewPeerServer validates cfg and deps and returns a PeerServer that is
// not yet listening. It registers the transport's peer metrics on
// deps.Registerer.
func NewPeerServer(cfg PeerConfig, deps PeerDeps) (*PeerServer, error) {
	var errs []error
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if deps.TLS == nil {
		errs = append(errs, errors.New("PeerDeps.TLS is nil"))
	}
	if deps.Handler == nil {
		errs = append(errs, errors.New("PeerDeps.Handler is nil"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("peer server: %w", err)
	}
	logger := deps.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "transport")
	metrics, err := newPeerMetrics(deps.Registerer)
	if err != nil {
		return nil, fmt.Errorf("peer server: %w", err)
	}
	s := &PeerServer{
		cfg:       cfg,
		tls:       deps.TLS,
		handler:   deps.Handler,
		authorize: deps.Authorize,
		join:      deps.Join,
		logger:    logger,
		metrics:   metrics,
		warnings:  newPeerLogLimiter(time.Second),
	}
	s.authorizeCert = deps.AuthorizeCert
	s.client = newPeerClient(s)
	if err := registerPeerStats(deps.Registerer, s.client); err != nil { // peer_stats.go
		return nil, fmt.Errorf("peer server: register peer connection stats: %w", err)
	}
	return s, nil
}

// Start binds the UDP socket and starts accepting peer connections. It
// returns once the server is accepting. ctx only bounds start-up.
func (s *PeerServer) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.stopped:
		return errors.New("start peer server: already shut down")
	case s.started:
		return errors.New("start peer server: already started")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("start peer server: %w", err)
	}

	resetKey, err := s.tls.deriveSecret("quic stateless reset key")
	if err != nil {
		return fmt.Errorf("start peer server: %w", err)
	}
	laddr, err := net.ResolveUDPAddr("udp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("start peer server: resolve %s: %w", s.cfg.Addr, err)
	}
	udp, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return fmt.Errorf("start peer server: %w", err)
	}
	qtr := &quic.Transport{
		Conn: udp,
		// Derived from the node key, so it survives restarts: a restarted
		// node answers packets for connections it has forgotten with a
		// stateless reset, and peers redial at once instead of waiting
		// for MaxIdleTimeout.
		StatelessResetKey: (*quic.StatelessResetKey)(&resetKey),
	}
	ln, err := qtr.Listen(s.serverTLSConfig(), s.serverQUICConfig())
	if err != nil {
		_ = qtr.Close()
		_ = udp.Close()
		return fmt.Errorf("start peer server: listen: %w", err)
	}

	lifetime, cancel := context.WithCancel(context.Background())
	s.udp, s.qtr, s.ln, s.cancel = udp, qtr, ln, cancel
	s.h3 = &http3.Server{
		Handler:        s.handler,
		MaxHeaderBytes: s.cfg.MaxHeaderBytes,
		Logger:         s.logger,
		ConnContext: func(ctx context.Context, conn *quic.Conn) context.Context {
			// The handshake verified the chain; only read the name.
			name, _ := NodeNameFromCert(peerLeaf(conn.ConnectionState().TLS))
			return context.WithValue(ctx, peerNameCtxKey{}, name)
		},
	}
	s.dialer.Store(qtr)
	s.started = true
	s.wg.Go(func() { s.acceptLoop(lifetime) })
	s.logger.Info("peer channel listening", "addr", udp.LocalAddr().String())
	return nil
}

// Addr returns the bound UDP address, or nil before Start.
func (s *PeerServer) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.udp == nil {
		return nil
	}
	return s.udp.LocalAddr()
}

// Client returns the PeerClient that dials peers from this server's UDP
// socket. It can be used once Start has returned; Shutdown closes it.
func (s *PeerServer) Client() *PeerClient { return s.client }

// Shutdown stops the peer channel gracefully. New connection attempts are
// refused at once (so peers fail over instead of timing out), peers are
// told to stop sending new requests (HTTP/3 GOAWAY), and requests in
// flight may finish until ctx expires; then the remaining connections are
// closed, which cancels their handlers' contexts. Finally the client and
// the UDP socket are closed. Shutdown waits for every goroutine the
// server started and is idempotent: later calls return the first call's
// result.
func (s *PeerServer) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() { s.shutdownErr = s.shutdown(ctx) })
	return s.shutdownErr
}

func (s *PeerServer) shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.stopped = true
	started := s.started
	s.mu.Unlock()
	if !started {
		return s.client.Close()
	}
	start := time.Now()
	s.logger.Info("peer channel shutting down", "addr", s.udp.LocalAddr().String())

	var errs []error
	if err := s.Drain(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := s.ln.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close listener: %w", err))
	}
	s.cancel()
	if err := s.client.Close(); err != nil {
		errs = append(errs, err)
	}
	s.wg.Wait()
	s.dialer.Store(nil)
	if err := s.qtr.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close quic transport: %w", err))
	}
	if err := s.udp.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close udp socket: %w", err))
	}
	s.logger.Info("peer channel stopped", "duration", time.Since(start))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("shutdown peer server: %w", err)
	}
	return nil
}

// Drain stops taking requests from peers and waits until those under way
// have finished or ctx ends: new connections are refused at once (so
// peers fail over instead of timing out), and peers are told to send no
// new requests on their connections (HTTP/3 GOAWAY); when ctx ends first,
// the remaining inbound connections are closed. The client side keeps
// working, so requests this node forwards to peers are not disturbed.
// Shutdown drains first. Idempotent: later calls return the first call's
// result.
func (s *PeerServer) Drain(ctx context.Context) error {
	s.drainOnce.Do(func() {
		s.mu.Lock()
		started := s.started
		s.mu.Unlock()
		if !started {
			return
		}
		s.draining.Store(true)
		if err := s.h3.Shutdown(ctx); err != nil {
			s.drainErr = fmt.Errorf("drain peer connections: %w", err)
		}
	})
	return s.drainErr
}

// acceptLoop accepts connections until the listener is closed. Each
// connection is served on its own goroutine, tracked by s.wg.
func (s *PeerServer) acceptLoop(ctx context.Context) {
	for {
		conn, err := s.ln.Accept(ctx)
		if err != nil {
			if !errors.Is(err, quic.ErrServerClosed) && ctx.Err() == nil {
				s.logger.Error("peer channel stopped accepting connections", "error", err)
			}
			return
		}
		if s.join != nil && conn.ConnectionState().TLS.NegotiatedProtocol == JoinALPN {
			s.wg.Go(func() { s.serveJoin(ctx, conn) })
			continue
		}
		s.wg.Go(func() { s.serveConn(conn) })
	}
}

// serveConn serves HTTP/3 on one accepted connection until it is closed.
func (s *PeerServer) serveConn(conn *quic.Conn) {
	name, _ := NodeNameFromCert(peerLeaf(conn.ConnectionState().TLS))
	addr := conn.RemoteAddr().String()
	gauge := s.metrics.conns.WithLabelValues(directionInbound)
	gauge.Inc()
	defer gauge.Dec()
	s.inbound.add(name, conn)
	defer s.inbound.remove(name, conn)
	s.logger.Debug("peer connected", "peer", name, "addr", addr)

	err := s.h3.ServeQUICConn(conn)
	// The connection is still open only if ServeQUICConn refused to serve
	// it because Shutdown had begun (a handshake that was under way when
	// draining started); closing it is then up to us. No request on it was
	// processed, and H3_REQUEST_REJECTED tells the dialling PeerClient so,
	// which reports a DialError. On any other connection this is a no-op:
	// the first close wins.
	code := http3.ErrCodeNoError
	if errors.Is(err, http.ErrServerClosed) {
		code = http3.ErrCodeRequestRejected
	}
	_ = conn.CloseWithError(quic.ApplicationErrorCode(code), "shutting down")
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.logger.Debug("peer disconnected", "peer", name, "addr", addr, "error", err)
		return
	}
	s.logger.Debug("peer disconnected", "peer", name, "addr", addr)
}

// serverQUICConfig refuses new connections once Shutdown has begun, with
// CONNECTION_REFUSED, so that dialling peers fail fast and pick another
// node instead of timing out on a listener that no longer answers.
func (s *PeerServer) serverQUICConfig() *quic.Config {
	qc := s.cfg.quicConfig(true)
	qc.GetConfigForClient = func(info *quic.ClientInfo) (*quic.Config, error) {
		if s.draining.Load() {
			s.metrics.refused.WithLabelValues(refusedShuttingDown).Inc()
			s.logger.Debug("refused peer connection", "reason", refusedShuttingDown, "addr", info.RemoteAddr.String())
			return nil, errors.New("shutting down")
		}
		return qc, nil
	}
	return qc
}

// serverTLSConfig wraps MutualTLS.ServerConfig so that each refused
// handshake is counted and logged with the remote address, and so that
// Authorize can refuse an authenticated node before the connection is
// accepted.
func (s *PeerServer) serverTLSConfig() *tls.Config {
	base := s.tls.ServerConfig(http3.NextProtoH3)
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			remote := "unknown"
			if hello.Conn != nil { // quic-go provides the addresses
				remote = hello.Conn.RemoteAddr().String()
			}
			cfg := base.Clone()
			cfg.VerifyConnection = func(cs tls.ConnectionState) error {
				if err := base.VerifyConnection(cs); err != nil {
					claimed, _ := NodeNameFromCert(peerLeaf(cs))
					s.refuse(refusedCertificate, claimed, remote, err)
					return err
				}
				if s.authorizeCert != nil {
					if err := s.authorizeCert(peerLeaf(cs)); err != nil {
						claimed, _ := NodeNameFromCert(peerLeaf(cs))
						s.refuse(refusedUnauthorized, claimed, remote, err)
						return fmt.Errorf("node %q is not authorized: %w", claimed, err)
					}
				}
				if s.authorize == nil {
					return nil
				}
				name, _ := NodeNameFromCert(peerLeaf(cs))
				if err := s.authorize(name); err != nil {
					s.refuse(refusedUnauthorized, name, remote, err)
					return fmt.Errorf("node %q is not authorized: %w", name, err)
				}
				return nil
			}
			if s.join != nil && slices.Contains(hello.SupportedProtos, JoinALPN) {
				return s.joinTLSConfig(base, cfg.VerifyConnection), nil
			}
			return cfg, nil
		},
	}
}

// refuse counts and logs a refused handshake. Refusals are logged at Warn
// (a node with the wrong identity, or one that is no longer wanted, keeps
// trying), at most once per second per reason.
func (s *PeerServer) refuse(reason, peer, remote string, err error) {
	s.metrics.refused.WithLabelValues(reason).Inc()
	if suppressed, ok := s.warnings.allow(reason); ok {
		s.logger.Warn("refused peer connection", "reason", reason, "peer", peer, "addr", remote,
			"error", err, "suppressed", suppressed)
	}
}

type peerNameCtxKey struct{}

// PeerNameFromContext returns the authenticated node name of the peer
// that forwarded the request being served, from the context of a request
// served by a PeerServer's handler.
func PeerNameFromContext(ctx context.Context) (string, bool) {
	name, ok := ctx.Value(peerNameCtxKey{}).(string)
	return name, ok && name != ""
}

func peerLeaf(cs tls.ConnectionState) *x509.Certificate {
	if len(cs.PeerCertificates) == 0 {
		return nil
	}
	return cs.PeerCertificates[0]
}

// peerLogLimiter lets through at most one message per key and interval,
// and counts the ones it suppressed in between.
type peerLogLimiter struct {
	interval time.Duration
	mu       sync.Mutex
	last     map[string]time.Time
	dropped  map[string]int
}

func newPeerLogLimiter(interval time.Duration) *peerLogLimiter {
	return &peerLogLimiter{interval: interval, last: map[string]time.Time{}, dropped: map[string]int{}}
}

// allow reports whether a message for key may be logged now and, if so,
// how many were suppressed since the previous one.
func (l *peerLogLimiter) allow(key string) (suppressed int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if last, seen := l.last[key]; seen && now.Sub(last) < l.interval {
		l.dropped[key]++
		return 0, false
	}
	suppressed = l.dropped[key]
	l.last[key] = now
	l.dropped[key] = 0
	return suppressed, true
}
