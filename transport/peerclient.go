package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// ErrDial is matched (errors.Is) by every error that means a forwarded
// request was not delivered because no usable connection to the peer
// could be established (address resolution, a timeout, a refusal by the
// shutting-down peer, a failed TLS handshake on either side), or because
// the peer rejected it unprocessed while shutting down. Such a request
// never reached the peer's backend, so it is safe to retry it on another
// peer whatever its method. PeerClient returns it as a *DialError. As
// RoundTrip closes the request body, a retry with a body needs a body the
// caller kept (or Request.GetBody).
var ErrDial = errors.New("peer not reachable")

// errPeerClientClosed is returned by a PeerClient after Close.
var errPeerClientClosed = fmt.Errorf("peer client: %w", net.ErrClosed)

// DialError reports that a request could not be delivered to a peer
// because no connection to it could be established. It matches ErrDial.
type DialError struct {
	Peer string // node name of the peer
	Addr string // address that was dialled
	Err  error  // the underlying cause
}

func (e *DialError) Error() string {
	return fmt.Sprintf("dial peer %s at %s: %v", e.Peer, e.Addr, e.Err)
}

// Unwrap returns the cause.
func (e *DialError) Unwrap() error { return e.Err }

// Is reports whether target is ErrDial.
func (e *DialError) Is(target error) bool { return target == ErrDial }

// PeerTarget names the peer a request is forwarded to.
type PeerTarget struct {
	// Name is the peer's node name. The peer's certificate must name
	// exactly this node, and the PeerClient keeps one connection per name.
	Name string
	// Addr is the UDP host:port of the peer's PeerServer.
	Addr string
	// Local, in a Picker's answer, means "serve with this node's own
	// backend"; Name is then this node's name and Addr is empty.
	Local bool
}

type peerTargetCtxKey struct{}

// WithPeerTarget returns a copy of ctx that tells PeerClient.RoundTrip
// where to send a request.
func WithPeerTarget(ctx context.Context, t PeerTarget) context.Context {
	return context.WithValue(ctx, peerTargetCtxKey{}, t)
}

// PeerTargetFromContext returns the target set by WithPeerTarget.
func PeerTargetFromContext(ctx context.Context) (PeerTarget, bool) {
	t, ok := ctx.Value(peerTargetCtxKey{}).(PeerTarget)
	return t, ok
}

// PeerClient forwards HTTP requests to peers over the QUIC peer channel.
// It keeps one long-lived, multiplexed connection per peer (keyed by node
// name), dialled from its PeerServer's UDP socket when the first request
// needs it, and redialled by the next request after it is lost. Each
// connection verifies that the peer's certificate chains to the cluster
// CA and names the expected node, and presents this node's certificate.
//
// PeerClient is an http.RoundTripper, meant as the Transport of an
// httputil.ReverseProxy: the proxy's Rewrite picks the peer and attaches
// it with WithPeerTarget. Request and response bodies are streamed in both
// directions with bounded buffering; cancelling a request's context
// resets its stream, which cancels the handler's context on the peer.
//
// A PeerClient is safe for concurrent use. Get it from PeerServer.Client.
type PeerClient struct {
	srv *PeerServer

	mu     sync.Mutex
	closed bool
	peers  map[string]*peerConn
	wg     sync.WaitGroup // background closes of replaced connections
}

// peerConn is the connection to one peer: at most one QUIC connection at
// a time, dialled by the first request that needs it (concurrent requests
// share the dial) and replaced by the next request once it is lost.
type peerConn struct {
	c       *PeerClient
	target  PeerTarget
	factory *http3.Transport // the HTTP/3 client settings; makes ClientConns

	cur    atomic.Pointer[h3Conn] // the connection in use, or nil
	mu     sync.Mutex             // serialises replacing cur and closing
	closed bool
}

// h3Conn is one QUIC connection to a peer, being dialled or established.
type h3Conn struct {
	ready    chan struct{} // closed once the dial ended
	err      error         // the dial's error (a *DialError)
	conn     *quic.Conn
	cc       *http3.ClientConn
	tls      *tls.ConnectionState // shared by every response on conn
	cancel   context.CancelFunc   // aborts the dial
	unusable atomic.Bool          // refused a new request stream (GOAWAY)
}

// usable reports whether requests may go to h: its dial is under way, or
// it succeeded and the connection neither closed nor refused new streams.
func (h *h3Conn) usable() bool {
	select {
	case <-h.ready:
		return h.err == nil && !h.unusable.Load() && h.conn.Context().Err() == nil
	default:
		return true
	}
}

func newPeerClient(s *PeerServer) *PeerClient {
	return &PeerClient{srv: s, peers: map[string]*peerConn{}}
}

// RoundTrip sends req to the peer attached to its context with
// WithPeerTarget; see RoundTripPeer.
func (c *PeerClient) RoundTrip(req *http.Request) (*http.Response, error) {
	t, ok := PeerTargetFromContext(req.Context())
	if !ok {
		closeRequestBody(req)
		return nil, errors.New("forward request: no peer target in request context")
	}
	return c.RoundTripPeer(req, t)
}

// RoundTripPeer sends req to peer t and returns its response, following
// the http.RoundTripper contract: it does not modify req, closes its body
// (also on error), and the caller must close the response body.
//
// The request is sent to t.Addr whatever the scheme and host of req.URL;
// its path and query are kept. The HTTP/3 :authority is req.Host, or
// t.Addr if that is empty, so a proxy preserves the client's Host by
// setting req.Host.
//
// An error matching ErrDial (a *DialError) means the request did not
// reach the peer. Other errors may come after the peer began serving the
// request; a context error means req's context ended.
func (c *PeerClient) RoundTripPeer(req *http.Request, t PeerTarget) (*http.Response, error) {
	if req.URL == nil {
		closeRequestBody(req)
		return nil, errors.New("forward request: nil url")
	}
	pc, err := c.peer(t)
	if err != nil {
		closeRequestBody(req)
		return nil, err
	}
	out := req
	if req.URL.Scheme != "https" || req.URL.Host != t.Addr {
		u := *req.URL
		u.Scheme, u.Host = "https", t.Addr
		r2 := *req // shallow copy: req must not be modified
		r2.URL = &u
		out = &r2
	}
	ctx := req.Context()
	for attempt := 0; ; attempt++ {
		h, err := pc.get(ctx)
		if err != nil {
			closeRequestBody(req)
			return nil, c.classify(t, err)
		}
		resp, unsent, err := h.roundTrip(out)
		if err == nil {
			return resp, nil
		}
		if unsent && attempt == 0 && ctx.Err() == nil {
			// The connection refused the request before it was sent
			// (it was shutting down or closed): try once more on a new
			// connection, as http3.Transport does.
			h.unusable.Store(true)
			continue
		}
		closeRequestBody(req)
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, c.classify(t, err)
	}
}

// roundTrip sends req on h. unsent reports an error that left the
// request unprocessed by the peer, so that it may be sent again.
//
// A request without a body, nearly every forwarded request, is sent and
// its response read on the caller's goroutine, through an HTTP/3 request
// stream: http3.ClientConn.RoundTrip starts a goroutine per request to
// watch its context. A request with a body goes through RoundTrip, which
// streams the body from a goroutine of its own.
func (h *h3Conn) roundTrip(req *http.Request) (resp *http.Response, unsent bool, err error) {
	if req.Body != nil && req.Body != http.NoBody {
		resp, err = h.cc.RoundTrip(req)
		if err != nil {
			// http3 wraps a failure to open the request stream (the
			// connection is closing or got GOAWAY) in an unexported
			// type; nothing was sent then.
			return nil, strings.HasPrefix(err.Error(), "http3: conn unusable"), err
		}
		return resp, false, nil
	}
	ctx := req.Context()
	str, err := h.cc.OpenRequestStream(ctx)
	if err != nil {
		return nil, ctx.Err() == nil, err
	}
	if err := str.SendRequestHeader(req); err != nil {
		str.CancelRead(quic.StreamErrorCode(http3.ErrCodeRequestCanceled))
		str.CancelWrite(quic.StreamErrorCode(http3.ErrCodeRequestCanceled))
		return nil, false, err
	}
	str.Close() // no body
	stop := context.AfterFunc(ctx, func() {
		str.CancelWrite(quic.StreamErrorCode(http3.ErrCodeRequestCanceled))
		str.CancelRead(quic.StreamErrorCode(http3.ErrCodeRequestCanceled))
	})
	trace := httptrace.ContextClientTrace(ctx)
	for n1xx := 0; ; {
		resp, err = str.ReadResponse()
		if err != nil {
			stop()
			// H3_REQUEST_REJECTED: the peer did not process it (RFC 9114,
			// section 8.1); a request without a body can be sent again.
			var he *http3.Error
			rejected := errors.As(err, &he) && he.ErrorCode == http3.ErrCodeRequestRejected
			return nil, rejected, err
		}
		code := resp.StatusCode
		if code < 100 || code > 199 || code == http.StatusSwitchingProtocols {
			break
		}
		if n1xx++; n1xx > maxPeer1xx {
			stop()
			str.CancelRead(quic.StreamErrorCode(http3.ErrCodeExcessiveLoad))
			str.CancelWrite(quic.StreamErrorCode(http3.ErrCodeExcessiveLoad))
			return nil, false, errors.New("http3: too many 1xx informational responses")
		}
		if trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(code, textproto.MIMEHeader(resp.Header)); err != nil {
				stop()
				str.CancelRead(quic.StreamErrorCode(http3.ErrCodeRequestCanceled))
				str.CancelWrite(quic.StreamErrorCode(http3.ErrCodeRequestCanceled))
				return nil, false, err
			}
		}
	}
	resp.Request = req
	resp.TLS = h.tls
	resp.Body = &peerResponseBody{rc: resp.Body, stop: stop}
	return resp, false, nil
}

// maxPeer1xx bounds the informational responses before the final one, as
// http3.ClientConn does.
const maxPeer1xx = 5

// peerResponseBody stops watching the request's context once the body is
// done with.
type peerResponseBody struct {
	rc   io.ReadCloser
	stop func() bool
}

func (b *peerResponseBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil {
		b.stop()
	}
	return n, err
}

func (b *peerResponseBody) Close() error {
	b.stop()
	return b.rc.Close()
}

// get returns the connection to use, dialling one if needed. It waits
// for a dial under way, until ctx ends.
func (pc *peerConn) get(ctx context.Context) (*h3Conn, error) {
	h := pc.cur.Load()
	if h == nil || !h.usable() {
		pc.mu.Lock()
		if pc.closed {
			pc.mu.Unlock()
			return nil, http3.ErrTransportClosed
		}
		if h = pc.cur.Load(); h == nil || !h.usable() {
			h = pc.dial()
			pc.cur.Store(h)
		}
		pc.mu.Unlock()
	}
	select {
	case <-h.ready:
	default:
		select {
		case <-h.ready:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
	if h.err != nil {
		pc.cur.CompareAndSwap(h, nil) // the next request dials again
		return nil, h.err
	}
	return h, nil
}

// dial starts dialling a new connection; pc.mu is held. The dial is shared
// by every request waiting for it, so no request's context cancels it.
func (pc *peerConn) dial() *h3Conn {
	ctx, cancel := context.WithCancel(context.Background())
	h := &h3Conn{ready: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(h.ready)
		defer cancel()
		conn, err := pc.c.dial(ctx, pc.target, pc.tlsConfig(), pc.factory.QUICConfig)
		if err != nil {
			h.err = err
			return
		}
		state := conn.ConnectionState().TLS
		h.conn, h.tls = conn, &state
		h.cc = pc.factory.NewClientConn(conn)
	}()
	return h
}

// tlsConfig is the TLS client configuration of one dial, completed as
// http3.Transport does: SNI from the address, ALPN h3.
func (pc *peerConn) tlsConfig() *tls.Config {
	conf := pc.factory.TLSClientConfig.Clone()
	if conf.ServerName == "" {
		host, _, err := net.SplitHostPort(pc.target.Addr)
		if err != nil {
			host = pc.target.Addr
		}
		conf.ServerName = host
	}
	conf.NextProtos = []string{http3.NextProtoH3}
	return conf
}

// close closes the connection, aborting a dial and requests in flight;
// later requests fail with http3.ErrTransportClosed.
func (pc *peerConn) close() error {
	pc.mu.Lock()
	pc.closed = true
	h := pc.cur.Swap(nil)
	pc.mu.Unlock()
	if h == nil {
		return nil
	}
	h.cancel()
	<-h.ready
	if h.conn != nil {
		return h.conn.CloseWithError(0, "")
	}
	return nil
}

// ClosePeer closes the connection to the peer called name, aborting its
// requests in flight. Call it when the peer leaves the cluster. A later
// request to the peer dials a new connection.
func (c *PeerClient) ClosePeer(name string) {
	c.mu.Lock()
	pc := c.peers[name]
	delete(c.peers, name)
	c.mu.Unlock()
	if pc != nil {
		_ = pc.close()
		c.srv.logger.Debug("closed peer connection", "peer", name, "addr", pc.target.Addr)
	}
}

// Close closes every peer connection, aborting requests in flight. Later
// requests fail. Close is idempotent; PeerServer.Shutdown calls it.
func (c *PeerClient) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	peers := c.peers
	c.peers = nil
	c.mu.Unlock()

	var errs []error
	for name, pc := range peers {
		if err := pc.close(); err != nil {
			errs = append(errs, fmt.Errorf("close connection to peer %s: %w", name, err))
		}
	}
	c.wg.Wait()
	return errors.Join(errs...)
}

// peer returns the connection to t, creating it if needed. If the peer's
// address changed, the old connection is closed.
func (c *PeerClient) peer(t PeerTarget) (*peerConn, error) {
	if t.Name == "" {
		return nil, &DialError{Peer: t.Name, Addr: t.Addr, Err: errors.New("empty peer name")}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errPeerClientClosed
	}
	pc := c.peers[t.Name]
	if pc != nil && pc.target.Addr == t.Addr {
		return pc, nil
	}
	if _, _, err := net.SplitHostPort(t.Addr); err != nil {
		return nil, &DialError{Peer: t.Name, Addr: t.Addr, Err: err}
	}
	if pc != nil {
		// Closing waits for a dial in progress, so do it in the
		// background; Close waits for it.
		old := pc
		c.wg.Go(func() { _ = old.close() })
		c.srv.logger.Info("peer address changed", "peer", t.Name, "addr", t.Addr, "old_addr", old.target.Addr)
	}
	pc = &peerConn{c: c, target: t, factory: c.newFactory(t)}
	c.peers[t.Name] = pc
	return pc, nil
}

// newFactory holds the HTTP/3 client settings for connections to t.
func (c *PeerClient) newFactory(t PeerTarget) *http3.Transport {
	qc := c.srv.cfg.quicConfig(false)
	// A client dials with one QUIC version (as http3.Transport requires).
	qc.Versions = []quic.Version{quic.SupportedVersions()[0]}
	return &http3.Transport{
		TLSClientConfig: c.srv.authorizeServer(c.srv.tls.ClientConfig(t.Name, http3.NextProtoH3)),
		QUICConfig:      qc,
		// A forwarding proxy passes encodings through untouched.
		DisableCompression:     true,
		MaxResponseHeaderBytes: c.srv.cfg.MaxHeaderBytes,
		Logger:                 c.srv.logger,
	}
}

// dial establishes a connection to t, on a goroutine of its own shared by
// all requests waiting for the connection.
func (c *PeerClient) dial(ctx context.Context, t PeerTarget, tlsConf *tls.Config, qc *quic.Config) (*quic.Conn, error) {
	start := time.Now()
	conn, err := c.handshake(ctx, t, tlsConf, qc)
	result := dialResult(err)
	c.srv.metrics.dials.WithLabelValues(result).Inc()
	if err != nil {
		log := c.srv.logger.Debug
		if result == dialTLS {
			// A peer with the wrong identity is a configuration or
			// security problem, unlike a peer that is merely down.
			if _, ok := c.srv.warnings.allow("dial " + t.Name); ok {
				log = c.srv.logger.Warn
			}
		}
		log("dial peer failed", "peer", t.Name, "addr", t.Addr, "result", result, "error", err)
		return nil, &DialError{Peer: t.Name, Addr: t.Addr, Err: err}
	}
	gauge := c.srv.metrics.conns.WithLabelValues(directionOutbound)
	gauge.Inc()
	context.AfterFunc(conn.Context(), gauge.Dec)
	c.srv.logger.Debug("dialled peer", "peer", t.Name, "addr", t.Addr, "duration", time.Since(start))
	return conn, nil
}

func (c *PeerClient) handshake(ctx context.Context, t PeerTarget, tlsConf *tls.Config, qc *quic.Config) (*quic.Conn, error) {
	qtr := c.srv.dialer.Load()
	if qtr == nil {
		return nil, errors.New("peer channel is not running")
	}
	// The connection inherits the values of the dial context for its
	// whole life, so dial from a fresh context rather than from the
	// request that happened to trigger the dial; only its cancellation is
	// carried over.
	timeout := c.srv.cfg.DialTimeout
	dctx, cancel := context.WithTimeoutCause(context.Background(), timeout,
		fmt.Errorf("no handshake within %s: %w", timeout, context.DeadlineExceeded))
	defer cancel()
	defer context.AfterFunc(ctx, cancel)()

	raddr, err := resolveUDPAddr(dctx, t.Addr)
	if err != nil {
		return nil, err
	}
	// On timeout or cancellation Dial returns context.Cause(dctx).
	return qtr.Dial(dctx, raddr, tlsConf, qc)
}

// classify turns an http3 error into a DialError when the request cannot
// have reached the peer, and otherwise adds the peer to it.
func (c *PeerClient) classify(t PeerTarget, err error) error {
	if errors.Is(err, ErrDial) {
		return err
	}
	if errors.Is(err, http3.ErrTransportClosed) {
		// ClosePeer or Close won the race against this request, which was
		// never sent.
		return &DialError{Peer: t.Name, Addr: t.Addr, Err: err}
	}
	// In TLS 1.3 the client finishes its handshake before the server has
	// verified the client certificate, so a peer that refuses this node's
	// certificate (or Authorize refuses the node) closes the connection
	// just after the dial returned. The server never accepted the
	// connection, so no request on it was served. The same holds for
	// CONNECTION_REFUSED.
	var te *quic.TransportError
	if errors.As(err, &te) && te.Remote && (te.ErrorCode.IsCryptoError() || te.ErrorCode == quic.ConnectionRefused) {
		if te.ErrorCode.IsCryptoError() {
			if _, ok := c.srv.warnings.allow("refused by " + t.Name); ok {
				c.srv.logger.Warn("peer refused this node's certificate", "peer", t.Name, "addr", t.Addr, "error", err)
			}
		}
		return &DialError{Peer: t.Name, Addr: t.Addr, Err: fmt.Errorf("peer refused the connection: %w", err)}
	}
	// H3_REQUEST_REJECTED, on the stream or the whole connection, means
	// that the peer did not process the request (RFC 9114, section 8.1):
	// it was shutting down. http3.Transport retries such requests itself
	// when it can replay the body; otherwise they end up here.
	var he *http3.Error
	if errors.As(err, &he) && he.Remote && he.ErrorCode == http3.ErrCodeRequestRejected {
		return &DialError{Peer: t.Name, Addr: t.Addr, Err: fmt.Errorf("peer rejected the request unprocessed: %w", err)}
	}
	return fmt.Errorf("forward to peer %s at %s: %w", t.Name, t.Addr, err)
}

func dialResult(err error) string {
	if err == nil {
		return dialSuccess
	}
	var te *quic.TransportError
	var timeout interface{ Timeout() bool }
	switch {
	case errors.As(err, &te) && te.ErrorCode.IsCryptoError():
		return dialTLS
	case errors.As(err, &te) && te.ErrorCode == quic.ConnectionRefused:
		return dialRefused
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &timeout) && timeout.Timeout():
		return dialTimeout
	case errors.Is(err, context.Canceled):
		return dialCanceled
	default:
		return dialError
	}
}

// resolveUDPAddr resolves host:port, without a DNS lookup for IP
// literals.
func resolveUDPAddr(ctx context.Context, addr string) (*net.UDPAddr, error) {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		return net.UDPAddrFromAddrPort(ap), nil
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("invalid port %q", portStr)
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ips[0].Unmap(), uint16(port))), nil
}

func closeRequestBody(req *http.Request) {
	if req.Body != nil && req.Body != http.NoBody {
		_ = req.Body.Close()
	}
}

var _ http.RoundTripper = (*PeerClient)(nil)
var _ io.Closer = (*PeerClient)(nil)
