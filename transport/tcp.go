package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go/http3"
)

// TCPServiceConfig describes one TCP passthrough service of this node. A
// node with Listen accepts the service's connections and places each on a
// node offering it; a node with Backend offers it: it relays connections
// placed on it (by itself or by peers) to that backend, byte for byte,
// TLS included, so the backend's own certificates and client
// authentication work end to end.
type TCPServiceConfig struct {
	// Name identifies the service across the cluster: connections are
	// placed only on nodes offering a service of that name. Lower-case
	// letters, digits and '-', 1 to 24 characters; "http" is the HTTP
	// ingress's.
	Name string
	// Listen is the TCP host:port accepting the service's clients; empty:
	// this node takes no connections for it.
	Listen string
	// Backend is the TCP host:port of this node's instance of the
	// service; empty: this node does not offer it.
	Backend string
	// Health is the backend's health check: an http(s):// URL (2xx or
	// 3xx passes) or tcp://host:port (a connect passes). Default: a TCP
	// connect to Backend. "none" turns checks off.
	Health string
	// ProxyProtocol sends a PROXY protocol v2 header with the client's
	// address to the backend before the connection's first byte.
	ProxyProtocol bool
	// Balance is the placement policy: least-conn (default: fewest open
	// connections, for long-lived connections), consistent-hash (on the
	// client's IP address, so a client keeps its node), round-robin or
	// random.
	Balance string
	// ConnectTimeout bounds placing a connection: reaching the chosen
	// node and its backend connecting. Default 5s.
	ConnectTimeout time.Duration
	// IdleTimeout closes a connection on which no byte moved either way
	// for this long. Default 10m; 0 is not allowed (use a large value).
	IdleTimeout time.Duration
	// Limits bound the connections this node's listener holds open, in
	// total and per client IP.
	Limits ConnLimitConfig
	// Rate limits new connections per second per client IP (0: none);
	// Burst is the bucket (default ceil(Rate)).
	Rate  float64
	Burst int
}

// Balance policies of TCP services.
const (
	BalanceLeastConn      = "least-conn"
	BalanceConsistentHash = "consistent-hash"
	BalanceRoundRobin     = "round-robin"
	BalanceRandom         = "random"
)

var serviceNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,22}[a-z0-9])?$`)

// ValidateServiceName checks a service name.
func ValidateServiceName(name string) error {
	if !serviceNameRE.MatchString(name) {
		return fmt.Errorf("service name %q: use 1 to 24 lower-case letters, digits and '-', starting and ending with a letter or digit", name)
	}
	if name == "http" {
		return errors.New(`service name "http" is the HTTP ingress's`)
	}
	return nil
}

// withDefaults fills the zero fields.
func (c TCPServiceConfig) withDefaults() TCPServiceConfig {
	if c.Balance == "" {
		c.Balance = BalanceLeastConn
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 5 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 10 * time.Minute
	}
	if c.Health == "" && c.Backend != "" {
		c.Health = "tcp://" + c.Backend
	}
	return c
}

// Validate reports every problem with c (after defaults).
func (c TCPServiceConfig) Validate() error {
	c = c.withDefaults()
	var errs []error
	if err := ValidateServiceName(c.Name); err != nil {
		errs = append(errs, err)
	}
	if c.Listen == "" && c.Backend == "" {
		errs = append(errs, fmt.Errorf("service %q has neither listen nor backend", c.Name))
	}
	for _, a := range []struct{ what, addr string }{{"listen", c.Listen}, {"backend", c.Backend}} {
		if a.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			errs = append(errs, fmt.Errorf("service %q: %s %q is not host:port", c.Name, a.what, a.addr))
		}
	}
	if c.Backend == "" && c.Health != "" && c.Health != "none" {
		errs = append(errs, fmt.Errorf("service %q: a health check needs a backend", c.Name))
	}
	if c.Health != "" && c.Health != "none" {
		hc := DefaultHealthConfig()
		hc.URL = c.Health
		if err := hc.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("service %q: %w", c.Name, err))
		}
	}
	switch c.Balance {
	case BalanceLeastConn, BalanceConsistentHash, BalanceRoundRobin, BalanceRandom:
	default:
		errs = append(errs, fmt.Errorf("service %q: balance %q is not one of least-conn, consistent-hash, round-robin, random", c.Name, c.Balance))
	}
	if c.ConnectTimeout < 10*time.Millisecond || c.ConnectTimeout > 5*time.Minute {
		errs = append(errs, fmt.Errorf("service %q: connect_timeout %s is outside [10ms, 5m]", c.Name, c.ConnectTimeout))
	}
	if c.IdleTimeout < 100*time.Millisecond || c.IdleTimeout > 7*24*time.Hour {
		errs = append(errs, fmt.Errorf("service %q: idle_timeout %s is outside [100ms, 168h]", c.Name, c.IdleTimeout))
	}
	if err := c.Limits.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("service %q: %w", c.Name, err))
	}
	if c.Rate < 0 || c.Burst < 0 {
		errs = append(errs, fmt.Errorf("service %q: rate %v and burst %d must not be negative", c.Name, c.Rate, c.Burst))
	}
	return errors.Join(errs...)
}

// TCPPicker places new connections of TCP services. The agent implements
// it with the scheduler, over the nodes that offer the service and are
// healthy for it.
type TCPPicker interface {
	// PickConn chooses the node for a new connection of service from
	// client, leaving out the nodes in tried. done must be called once
	// the connection is over (nil) or its set-up failed (the error).
	PickConn(service string, client netip.Addr, tried []string) (t PeerTarget, done func(setupErr error), err error)
}

// TCPServicesDeps are the collaborators of TCPServices.
type TCPServicesDeps struct {
	// Picker places connections; required when a service listens.
	Picker TCPPicker
	// Peers carries connections to other nodes; nil: only local
	// placements work (a pick of a peer fails the attempt).
	Peers *PeerClient
	// Logger and Registerer are optional.
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// OnHealthChange is called when a service's backend health flips.
	OnHealthChange func(service string, healthy bool)
}

// TCPServices runs this node's TCP passthrough services: their listeners,
// the relay of each connection to the node it was placed on, and (as the
// peer mesh's CONNECT handler, ServeTunnel) the connections peers place
// here.
type TCPServices struct {
	deps    TCPServicesDeps
	log     *slog.Logger
	metrics *tcpMetrics
	list    []*tcpService // in configuration order
	byName  map[string]*tcpService

	draining atomic.Bool
	killCtx  context.Context // cancelled to abort every open connection
	killAll  context.CancelFunc
	kill     <-chan struct{} // killCtx.Done()
	wg       sync.WaitGroup  // accept loops and connections

	mu      sync.Mutex
	started bool
	stopped bool
}

// tcpService is one service and its live figures.
type tcpService struct {
	cfg    TCPServiceConfig
	ln     net.Listener
	health *HealthChecker
	limits *ConnLimiter
	rate   *RateLimiter

	openIngress atomic.Int64 // connections accepted by the listener, open
	openBackend atomic.Int64 // connections to the local backend, open
	accepted    atomic.Uint64
	up, down    atomic.Uint64 // for clients of this node's listener
	// relayed counts connections to this node's backend placed here by
	// peers; beUp and beDown the bytes through this node's backend
	// connections, whoever accepted the client.
	relayed      atomic.Uint64
	beUp, beDown atomic.Uint64
	// m are this service's metric children, resolved once: bytes are
	// counted per copied chunk.
	m      serviceMetrics
	mu     sync.Mutex
	errs   map[string]uint64 // by reason
	placed map[string]uint64 // by node
}

// NewTCPServices validates the services and prepares them; Start binds
// the listeners.
func NewTCPServices(cfgs []TCPServiceConfig, deps TCPServicesDeps) (*TCPServices, error) {
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &TCPServices{deps: deps, log: log.With("component", "tcp"), byName: map[string]*tcpService{}}
	s.killCtx, s.killAll = context.WithCancel(context.Background())
	s.kill = s.killCtx.Done()
	var errs []error
	for _, c := range cfgs {
		if err := c.Validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		c = c.withDefaults()
		if s.byName[c.Name] != nil {
			errs = append(errs, fmt.Errorf("service %q is declared twice", c.Name))
			continue
		}
		if c.Listen != "" && deps.Picker == nil {
			errs = append(errs, fmt.Errorf("service %q listens but no picker is set", c.Name))
			continue
		}
		svc := &tcpService{cfg: c, errs: map[string]uint64{}, placed: map[string]uint64{}}
		var err error
		if svc.limits, err = NewConnLimiter(c.Limits, nil); err != nil {
			errs = append(errs, err)
			continue
		}
		if c.Rate > 0 {
			if svc.rate, err = NewRateLimiter(RateLimitConfig{Rate: c.Rate, Burst: c.Burst}, RateLimitDeps{}); err != nil {
				errs = append(errs, fmt.Errorf("service %q: %w", c.Name, err))
				continue
			}
		}
		if c.Backend != "" && c.Health != "none" {
			hc := DefaultHealthConfig()
			hc.URL = c.Health
			hc.Interval, hc.Timeout = 2*time.Second, time.Second
			hc.SendProxy = c.ProxyProtocol
			name := c.Name
			svc.health, err = NewHealthChecker(hc, s.log.With("service", name), func(ok bool) {
				if deps.OnHealthChange != nil {
					deps.OnHealthChange(name, ok)
				}
			})
			if err != nil {
				errs = append(errs, fmt.Errorf("service %q: %w", c.Name, err))
				continue
			}
		}
		s.list = append(s.list, svc)
		s.byName[c.Name] = svc
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var err error
	if s.metrics, err = newTCPMetrics(deps.Registerer, s); err != nil {
		return nil, err
	}
	return s, nil
}

// Start binds every listener and starts the health checks. On failure
// nothing stays bound.
func (s *TCPServices) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.stopped {
		return errors.New("tcp services: already started or stopped")
	}
	var lc net.ListenConfig
	for _, svc := range s.list {
		if svc.cfg.Listen == "" {
			continue
		}
		ln, err := lc.Listen(context.Background(), "tcp", svc.cfg.Listen)
		if err != nil {
			for _, o := range s.list {
				if o.ln != nil {
					o.ln.Close()
					o.ln = nil
				}
			}
			return fmt.Errorf("service %q: %w", svc.cfg.Name, err)
		}
		svc.ln = ln
	}
	for _, svc := range s.list {
		if svc.health != nil {
			svc.health.Start()
		}
		if svc.ln != nil {
			s.log.Info("tcp service listening", "service", svc.cfg.Name, "addr", svc.ln.Addr().String(), "backend", svc.cfg.Backend)
			s.wg.Go(func() { s.acceptLoop(svc) })
		}
	}
	s.started = true
	return nil
}

// Addr is the bound address of service name's listener, or nil.
func (s *TCPServices) Addr(name string) net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if svc := s.byName[name]; svc != nil && svc.ln != nil {
		return svc.ln.Addr()
	}
	return nil
}

// Offered returns the health of each service this node offers (has a
// backend for), keyed by name.
func (s *TCPServices) Offered() map[string]ServiceState {
	out := map[string]ServiceState{}
	for _, svc := range s.list {
		if svc.cfg.Backend == "" {
			continue
		}
		out[svc.cfg.Name] = ServiceState{Healthy: svc.healthy() && !s.draining.Load(), Open: int(svc.openBackend.Load())}
	}
	return out
}

// ServiceState is what a node gossips about a service it offers.
type ServiceState struct {
	Healthy bool
	// Open is the connections open to its backend.
	Open int
}

func (svc *tcpService) healthy() bool { return svc.health == nil || svc.health.Healthy() }

// Draining reports whether Drain has begun.
func (s *TCPServices) Draining() bool { return s.draining.Load() }

// Drain stops accepting connections (listeners close, peers' new
// connections are refused so they go elsewhere) and waits until the open
// ones have ended, or ctx ends: then they are closed. Idempotent.
func (s *TCPServices) Drain(ctx context.Context) error {
	s.mu.Lock()
	first := !s.draining.Swap(true)
	if first {
		for _, svc := range s.list {
			if svc.ln != nil {
				svc.ln.Close()
			}
		}
	}
	s.mu.Unlock()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for s.open() > 0 {
		select {
		case <-ctx.Done():
			n := s.open()
			s.killAll()
			return fmt.Errorf("drain tcp services: %d connections still open at the deadline were closed: %w", n, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

func (s *TCPServices) open() int64 {
	var n int64
	for _, svc := range s.list {
		n += svc.openIngress.Load() + svc.openBackend.Load()
	}
	return n
}

// Shutdown drains (bounded by ctx), closes what is left, stops the health
// checks and waits for every goroutine. Idempotent.
func (s *TCPServices) Shutdown(ctx context.Context) error {
	err := s.Drain(ctx)
	s.killAll()
	s.wg.Wait()
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	for _, svc := range s.list {
		if svc.health != nil {
			svc.health.Shutdown()
		}
	}
	return err
}

func (s *TCPServices) acceptLoop(svc *tcpService) {
	var delay time.Duration
	for {
		conn, err := svc.ln.Accept()
		if err != nil {
			if s.draining.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, as
			// net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("tcp service accept failed", "service", svc.cfg.Name, "error", err, "retry_in", delay)
			select {
			case <-time.After(delay):
			case <-s.kill:
				return
			}
			continue
		}
		delay = 0
		tc, ok := conn.(*net.TCPConn)
		if !ok {
			conn.Close()
			continue
		}
		svc.accepted.Add(1)
		s.wg.Go(func() { s.serveClient(svc, tc) })
	}
}

// serveClient admits, places and relays one client connection.
func (s *TCPServices) serveClient(svc *tcpService, conn *net.TCPConn) {
	name := svc.cfg.Name
	clientAP := addrPort(conn.RemoteAddr())
	key := KeyFromAddr(clientAP.Addr())
	if svc.rate != nil {
		if ok, _ := svc.rate.Allow(key); !ok {
			s.fail(svc, "rate_limited")
			tcpSide{conn}.Abort()
			return
		}
	}
	if !svc.limits.Acquire(key) {
		s.fail(svc, "conn_limit")
		tcpSide{conn}.Abort()
		return
	}
	defer svc.limits.Release(key)
	svc.openIngress.Add(1)
	svc.m.openIngress.Inc()
	defer func() {
		svc.openIngress.Add(-1)
		svc.m.openIngress.Dec()
	}()
	_ = conn.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second, Interval: 10 * time.Second, Count: 3})

	start := time.Now()
	ctx, cancel := context.WithTimeout(s.killCtx, svc.cfg.ConnectTimeout)
	defer cancel()
	var (
		upstream duplex
		target   PeerTarget
		done     func(error)
		tried    []string
		lastErr  error
	)
	for attempt := 0; attempt < 3 && upstream == nil; attempt++ {
		var err error
		target, done, err = s.deps.Picker.PickConn(name, clientAP.Addr(), tried)
		if err != nil {
			if lastErr == nil {
				lastErr = err
			}
			break
		}
		tried = append(tried, target.Name)
		if target.Local {
			upstream, err = s.dialBackend(ctx, svc, clientAP, addrPort(conn.LocalAddr()))
		} else if s.deps.Peers == nil {
			err = errors.New("no peer mesh to reach " + target.Name)
		} else {
			upstream, err = s.deps.Peers.openTunnel(ctx, target, name, clientAP.String(), conn.LocalAddr().String())
		}
		if err != nil {
			lastErr = err
			done(err)
			s.fail(svc, setupReason(err))
			s.log.Debug("tcp connection not placed", "service", name, "node", target.Name, "attempt", attempt+1, "error", err)
			if ctx.Err() != nil {
				break
			}
			continue
		}
	}
	cancel()
	if upstream == nil {
		if lastErr == nil {
			lastErr = errors.New("no node offers the service")
		}
		if errors.Is(lastErr, ErrNoPeer) {
			s.fail(svc, "no_node")
		}
		s.log.Debug("tcp connection refused", "service", name, "client", clientAP.String(), "error", lastErr)
		s.metrics.conns.WithLabelValues(name, "failed").Inc()
		tcpSide{conn}.Abort()
		return
	}
	route := "forwarded"
	if target.Local {
		route = "local"
	}
	s.metrics.conns.WithLabelValues(name, route).Inc()
	s.metrics.setup.WithLabelValues(name, route).Observe(time.Since(start).Seconds())
	svc.mu.Lock()
	svc.placed[target.Name]++
	svc.mu.Unlock()
	local := target.Local
	res := relay(tcpSide{conn}, upstream, svc.cfg.IdleTimeout, s.kill, func(up bool, n int) {
		s.count(svc, up, n)
		if local {
			s.countBackend(svc, up, n)
		}
	})
	done(nil)
	if res.Err != nil {
		reason := "relay"
		if res.Idle {
			reason = "idle_timeout"
		}
		s.fail(svc, reason)
		s.log.Debug("tcp connection ended with an error", "service", name, "node", target.Name, "client", clientAP.String(), "error", res.Err, "up", res.Up, "down", res.Down)
	}
}

// dialBackend connects to the local backend, sending the PROXY header if
// the service asks for one. client and local describe the client's
// connection to the accepting node (possibly another node).
func (s *TCPServices) dialBackend(ctx context.Context, svc *tcpService, client, local netip.AddrPort) (duplex, error) {
	if svc.cfg.Backend == "" {
		return nil, &TunnelRefusedError{Status: http.StatusNotFound, Reason: "service not offered here"}
	}
	d := net.Dialer{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second, Interval: 10 * time.Second, Count: 3}}
	c, err := d.DialContext(ctx, "tcp", svc.cfg.Backend)
	if err != nil {
		return nil, fmt.Errorf("connect to backend %s: %w", svc.cfg.Backend, err)
	}
	tc := c.(*net.TCPConn)
	if svc.cfg.ProxyProtocol {
		h := proxyHeader(client, local)
		if _, err := h.WriteTo(tc); err != nil {
			tc.Close()
			return nil, fmt.Errorf("send PROXY header to %s: %w", svc.cfg.Backend, err)
		}
	}
	b := &backendSide{tcpSide: tcpSide{tc}, svc: svc, s: s}
	b.opened()
	return b, nil
}

// backendSide counts the open connections to a local backend.
type backendSide struct {
	tcpSide
	svc  *tcpService
	s    *TCPServices
	once sync.Once
}

func (b *backendSide) opened() {
	b.svc.openBackend.Add(1)
	b.svc.m.openBackend.Inc()
}

func (b *backendSide) closed() {
	b.once.Do(func() {
		b.svc.openBackend.Add(-1)
		b.svc.m.openBackend.Dec()
	})
}

func (b *backendSide) Close() error { defer b.closed(); return b.tcpSide.Close() }
func (b *backendSide) Abort()       { defer b.closed(); b.tcpSide.Abort() }

// proxyHeader is the PROXY protocol v2 header of a TCP connection from
// client to local. An address that is not known (or mixes families) makes
// a LOCAL header, which tells the backend to use the connection's own
// addresses.
func proxyHeader(client, local netip.AddrPort) *proxyproto.Header {
	src := net.TCPAddrFromAddrPort(netip.AddrPortFrom(client.Addr().Unmap(), client.Port()))
	dst := net.TCPAddrFromAddrPort(netip.AddrPortFrom(local.Addr().Unmap(), local.Port()))
	if !client.IsValid() || !local.IsValid() || client.Addr().Unmap().Is4() != local.Addr().Unmap().Is4() {
		return &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}
	}
	return proxyproto.HeaderProxyFromAddrs(2, src, dst)
}

// ServeTunnel is the peer mesh's handler for relay streams (CONNECT with
// the service name as :authority): it connects to this node's backend of
// the service and relays the stream to it. A node that does not offer the
// service, is unhealthy or draining for it, or whose backend refuses,
// answers an error status before any byte is relayed, so the placing node
// can try another.
func (s *TCPServices) ServeTunnel(w http.ResponseWriter, r *http.Request) {
	refuse := func(status int, reason string) {
		w.Header().Set(tunnelReasonHeader, reason)
		http.Error(w, reason, status)
	}
	svc := s.byName[r.Host]
	switch {
	case svc == nil || svc.cfg.Backend == "":
		refuse(http.StatusNotFound, fmt.Sprintf("service %q is not offered here", r.Host))
		return
	case s.draining.Load():
		refuse(http.StatusServiceUnavailable, "draining")
		return
	case !svc.healthy():
		refuse(http.StatusServiceUnavailable, "backend unhealthy")
		return
	}
	streamer, ok := w.(http3.HTTPStreamer)
	if !ok {
		refuse(http.StatusInternalServerError, "not an HTTP/3 stream")
		return
	}
	client, _ := netip.ParseAddrPort(r.Header.Get(tunnelClientHeader))
	local, _ := netip.ParseAddrPort(r.Header.Get(tunnelLocalHeader))
	ctx, cancel := context.WithTimeout(r.Context(), svc.cfg.ConnectTimeout)
	b, err := s.dialBackend(ctx, svc, client, local)
	cancel()
	if err != nil {
		s.fail(svc, "backend_connect")
		refuse(http.StatusBadGateway, err.Error())
		return
	}
	be := b.(*backendSide)
	w.WriteHeader(http.StatusOK)
	str, err := streamer.HTTPStream()
	if err != nil {
		be.Abort()
		s.fail(svc, "relay")
		return
	}
	// The placing node, which holds the client, times idle connections
	// out; this side's timer, a little longer, only catches a placing
	// node that went away without a word.
	svc.relayed.Add(1)
	res := relay(serverTunnel{str}, be, svc.cfg.IdleTimeout+time.Second, s.kill, func(up bool, n int) { s.countBackend(svc, up, n) })
	if res.Err != nil {
		reason := "relay"
		if res.Idle {
			reason = "idle_timeout"
		}
		s.fail(svc, reason)
		peer, _ := PeerNameFromContext(r.Context())
		s.log.Debug("relayed tcp connection ended with an error", "service", svc.cfg.Name, "peer", peer, "client", client.String(), "error", res.Err)
	}
}

// IsTunnel reports whether r, on the peer mesh, is a relay stream for
// ServeTunnel.
func IsTunnel(r *http.Request) bool { return r.Method == http.MethodConnect }

// countBackend counts bytes through a connection to this node's backend.
func (s *TCPServices) countBackend(svc *tcpService, up bool, n int) {
	if up {
		svc.beUp.Add(uint64(n))
		svc.m.beUp.Add(float64(n))
	} else {
		svc.beDown.Add(uint64(n))
		svc.m.beDown.Add(float64(n))
	}
}

func (s *TCPServices) count(svc *tcpService, up bool, n int) {
	if up {
		svc.up.Add(uint64(n))
		svc.m.up.Add(float64(n))
	} else {
		svc.down.Add(uint64(n))
		svc.m.down.Add(float64(n))
	}
}

func (s *TCPServices) fail(svc *tcpService, reason string) {
	svc.mu.Lock()
	svc.errs[reason]++
	svc.mu.Unlock()
	s.metrics.errors.WithLabelValues(svc.cfg.Name, reason).Inc()
}

// setupReason names a failed placement attempt for metrics.
func setupReason(err error) string {
	var tre *TunnelRefusedError
	switch {
	case errors.As(err, &tre):
		return "peer_refused"
	case errors.Is(err, ErrDial):
		return "peer_unreachable"
	case errors.Is(err, context.DeadlineExceeded):
		return "connect_timeout"
	default:
		return "connect"
	}
}

// placedCopy returns the placements by node.
func (svc *tcpService) placedCopy() map[string]uint64 {
	svc.mu.Lock()
	defer svc.mu.Unlock()
	out := make(map[string]uint64, len(svc.placed))
	for k, v := range svc.placed {
		out[k] = v
	}
	return out
}

// TCPServiceStatus is a service as /v1/status shows it.
type TCPServiceStatus struct {
	Name          string `json:"name"`
	Mode          string `json:"mode"`
	Listen        string `json:"listen,omitempty"`
	Backend       string `json:"backend,omitempty"`
	Health        string `json:"health,omitempty"`
	Healthy       bool   `json:"healthy"`
	Balance       string `json:"balance"`
	ProxyProtocol bool   `json:"proxy_protocol,omitempty"`
	OpenClients   int64  `json:"open_client_connections"`
	OpenBackend   int64  `json:"open_backend_connections"`
	Accepted      uint64 `json:"accepted_total"`
	BytesUp       uint64 `json:"bytes_to_backend_total"`
	BytesDown     uint64 `json:"bytes_to_client_total"`
	// RelayedForPeers are connections peers placed on this node's
	// backend; BackendBytes* count every connection to this node's
	// backend, whichever node accepted the client.
	RelayedForPeers  uint64            `json:"relayed_for_peers_total"`
	BackendBytesUp   uint64            `json:"backend_bytes_to_backend_total"`
	BackendBytesDown uint64            `json:"backend_bytes_to_client_total"`
	Errors           map[string]uint64 `json:"errors,omitempty"`
	Placed           map[string]uint64 `json:"placed_by_node,omitempty"`
}

// Status lists the services with their figures, in configuration order.
func (s *TCPServices) Status() []TCPServiceStatus {
	out := make([]TCPServiceStatus, 0, len(s.list))
	for _, svc := range s.list {
		st := TCPServiceStatus{
			Name: svc.cfg.Name, Mode: "tcp", Backend: svc.cfg.Backend, Health: svc.cfg.Health,
			Healthy: svc.cfg.Backend != "" && svc.healthy(), Balance: svc.cfg.Balance, ProxyProtocol: svc.cfg.ProxyProtocol,
			OpenClients: svc.openIngress.Load(), OpenBackend: svc.openBackend.Load(),
			Accepted: svc.accepted.Load(), BytesUp: svc.up.Load(), BytesDown: svc.down.Load(),
			RelayedForPeers: svc.relayed.Load(), BackendBytesUp: svc.beUp.Load(), BackendBytesDown: svc.beDown.Load(),
			Placed: svc.placedCopy(),
		}
		if a := s.Addr(svc.cfg.Name); a != nil {
			st.Listen = a.String()
		} else {
			st.Listen = svc.cfg.Listen
		}
		svc.mu.Lock()
		if len(svc.errs) > 0 {
			st.Errors = make(map[string]uint64, len(svc.errs))
			for k, v := range svc.errs {
				st.Errors[k] = v
			}
		}
		svc.mu.Unlock()
		out = append(out, st)
	}
	return out
}

// Names lists the services, sorted.
func (s *TCPServices) Names() []string {
	out := make([]string, 0, len(s.list))
	for _, svc := range s.list {
		out = append(out, svc.cfg.Name)
	}
	sort.Strings(out)
	return out
}

// Config returns service name's configuration (with defaults) and
// whether it exists.
func (s *TCPServices) Config(name string) (TCPServiceConfig, bool) {
	svc := s.byName[name]
	if svc == nil {
		return TCPServiceConfig{}, false
	}
	return svc.cfg, true
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}
