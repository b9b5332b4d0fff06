package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ErrNoPeer is returned by a Picker with no node to offer.
var ErrNoPeer = errors.New("no peer available")

// Picker chooses where a request goes: the local backend (a PeerTarget with
// Local set) or a peer. Pick must not block, must be safe for concurrent
// use, and must not return a peer named in tried. It returns ErrNoPeer (or
// an error wrapping it) when no node can take the request. When the Picker
// also implements Observer, every successful Pick is followed by exactly
// one Done call for that target.
type Picker interface {
	Pick(r *http.Request, tried []string) (PeerTarget, error)
}

// Observer hears the outcome of every attempt: how long it took, the status
// the client would see (0 when there was none), and the error when the
// attempt failed. Done must not block.
type Observer interface {
	Done(target PeerTarget, d time.Duration, status int, err error)
}

// RetryGate, when the Picker implements it, decides whether one more retry
// may be spent (a retry budget). AllowRetry must not block.
type RetryGate interface {
	AllowRetry() bool
}

// StatusError is the failure of an attempt whose peer answered with a
// status worth retrying elsewhere (502, 503 or 504). RetryAfter is the
// peer's Retry-After, if any.
type StatusError struct {
	Peer       string
	Status     int
	RetryAfter time.Duration
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("peer %s answered %d", e.Peer, e.Status)
}

// IngressConfig tunes the front door.
type IngressConfig struct {
	// NodeName is this node's name, used in Via and error messages.
	NodeName string
	// UpstreamTimeout bounds a whole request to a backend or peer,
	// including the response body. 0 means no limit. Default 0.
	UpstreamTimeout time.Duration
	// MaxAttempts bounds how many nodes one request may be tried on.
	// Default 3.
	MaxAttempts int
}

// Ingress is a node's client-facing front door. A request is served by
// the local backend while it has headroom, otherwise forwarded over the
// QUIC peer channel to a peer chosen by the Picker. A request that could
// not reach a peer is tried on another peer (or locally) when that is safe:
// the peer was never reached, or the method is idempotent and no body byte
// was sent.
type Ingress struct {
	cfg      IngressConfig
	local    *Backend // nil on an ingress-only node
	picker   Picker   // nil: never forward
	observer Observer // nil unless the Picker is one
	gate     RetryGate
	proxy    *httputil.ReverseProxy
	metrics  *ingressMetrics
	log      *slog.Logger
}

// IngressDeps are the front door's collaborators; all but Logger optional.
type IngressDeps struct {
	Logger *slog.Logger
	// Local is the node's own backend; nil on an ingress-only node.
	Local *Backend
	// Picker and Peers enable forwarding; Peers is normally a PeerClient.
	Picker Picker
	Peers  http.RoundTripper
	// Registerer is used when Local is nil (the backend registers the
	// shared request metrics otherwise).
	Registerer prometheus.Registerer
}

// NewIngress returns the front door.
func NewIngress(cfg IngressConfig, deps IngressDeps) *Ingress {
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 3
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	in := &Ingress{cfg: cfg, local: deps.Local, picker: deps.Picker, log: log.With("component", "transport")}
	if deps.Local != nil {
		in.metrics = deps.Local.metrics
	} else {
		in.metrics = newIngressMetrics(deps.Registerer)
	}
	in.observer, _ = deps.Picker.(Observer)
	in.gate, _ = deps.Picker.(RetryGate)
	if deps.Picker != nil && deps.Peers != nil {
		in.proxy = &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				t, _ := PeerTargetFromContext(pr.In.Context())
				pr.SetURL(&url.URL{Scheme: "https", Host: t.Addr})
				pr.Out.Host = pr.In.Host
				setIngressHeaders(pr, cfg.NodeName)
			},
			Transport:      deps.Peers,
			BufferPool:     bufferPool{},
			ModifyResponse: retryableStatus,
			ErrorHandler:   recordError,
			ErrorLog:       slog.NewLogLogger(in.log.Handler(), slog.LevelDebug),
		}
	}
	return in
}

// attemptKey carries one forwarding attempt's state in and out of the
// ReverseProxy (its ModifyResponse and ErrorHandler).
type attemptKey struct{}

type attempt struct {
	target PeerTarget
	// mayRetry is set when another node could still be tried.
	mayRetry bool
	err      error
}

func recordError(w http.ResponseWriter, r *http.Request, err error) {
	if a, ok := r.Context().Value(attemptKey{}).(*attempt); ok {
		a.err = err
	}
}

// retryableStatus turns a peer's 502/503/504 into an error (so the request
// is tried elsewhere) when another attempt is allowed; otherwise the answer
// goes to the client as it is.
func retryableStatus(resp *http.Response) error {
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
	default:
		return nil
	}
	a, ok := resp.Request.Context().Value(attemptKey{}).(*attempt)
	if !ok || !a.mayRetry {
		return nil
	}
	return &StatusError{Peer: a.target.Name, Status: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"))}
}

func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, time.Until(t))
	}
	return 0
}

// ServeHTTP implements http.Handler.
func (in *Ingress) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ctx := r.Context()
	if in.cfg.UpstreamTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, in.cfg.UpstreamTimeout)
		defer cancel()
		r = r.WithContext(ctx)
	}
	var body *trackedBody
	if r.Body != nil && r.Body != http.NoBody {
		// Let a response stream back while the request body still
		// streams in (HTTP/1.1 is half duplex in net/http by default).
		http.NewResponseController(w).EnableFullDuplex()
		body = &trackedBody{rc: r.Body}
		r.Body = body
	}
	var tried []string
	var lastErr error
	for n := 0; n < in.cfg.MaxAttempts; n++ {
		target, err := in.pick(r, tried)
		if err != nil {
			if in.local != nil && !slices.Contains(tried, in.cfg.NodeName) {
				// Nobody else can help: serve locally even over capacity
				// or when its health check fails (a panic mode, as Envoy's).
				in.local.ServeHTTP(w, r)
				return
			}
			break
		}
		if target.Local {
			t0 := time.Now()
			rec := &statusRecorder{ResponseWriter: w}
			in.local.ServeHTTP(rec, r)
			in.done(target, time.Since(t0), rec.status, nil)
			return
		}
		a := &attempt{target: target, mayRetry: n+1 < in.cfg.MaxAttempts && safeToRetry(r, body)}
		rec := &statusRecorder{ResponseWriter: w}
		t0 := time.Now()
		in.proxy.ServeHTTP(rec, r.WithContext(context.WithValue(WithPeerTarget(ctx, target), attemptKey{}, a)))
		in.done(target, time.Since(t0), rec.status, a.err)
		if a.err == nil {
			in.metrics.observe("forwarded", rec.status, time.Since(start))
			return
		}
		tried = append(tried, target.Name)
		lastErr = a.err
		// A request that never reached a peer may always go elsewhere; one
		// that did, only when it is safe (idempotent, body untouched). Either
		// way a retry must fit the retry budget.
		neverSent := errors.Is(a.err, ErrDial) && (body == nil || body.read.Load() == 0)
		if ctx.Err() != nil || !(neverSent || a.mayRetry) || n+1 >= in.cfg.MaxAttempts || !in.retryAllowed() {
			in.fail(w, r, a.err, start)
			return
		}
		in.metrics.retries.Inc()
		in.log.Debug("forward failed; trying elsewhere", "peer", target.Name, "error", a.err)
	}
	if lastErr != nil {
		in.fail(w, r, lastErr, start)
		return
	}
	msg := "loadmesh: no node can serve this request (node " + in.cfg.NodeName + " has no backend and no peer is available)"
	writePlain(w, http.StatusServiceUnavailable, msg)
	in.metrics.observe("none", http.StatusServiceUnavailable, time.Since(start))
}

// pick asks the Picker, or, without one, chooses the local backend.
func (in *Ingress) pick(r *http.Request, tried []string) (PeerTarget, error) {
	if in.picker == nil || in.proxy == nil {
		if in.local != nil && !slices.Contains(tried, in.cfg.NodeName) {
			return PeerTarget{Name: in.cfg.NodeName, Local: true}, nil
		}
		return PeerTarget{}, ErrNoPeer
	}
	t, err := in.picker.Pick(r, tried)
	if err == nil && t.Local && in.local == nil {
		in.done(t, 0, 0, ErrNoPeer)
		return PeerTarget{}, fmt.Errorf("%w: picker chose the local node, which has no backend", ErrNoPeer)
	}
	return t, err
}

func (in *Ingress) done(t PeerTarget, d time.Duration, status int, err error) {
	if in.observer != nil {
		in.observer.Done(t, d, status, err)
	}
}

func (in *Ingress) retryAllowed() bool { return in.gate == nil || in.gate.AllowRetry() }

// fail answers a request whose forwarding failed for good.
func (in *Ingress) fail(w http.ResponseWriter, r *http.Request, err error, start time.Time) {
	status, msg := http.StatusBadGateway, "loadmesh: peer failed: "+errText(err)
	var se *StatusError
	switch {
	case errors.As(err, &se):
		status, msg = se.Status, "loadmesh: "+se.Error()+" and no other node could take the request"
	case r.Context().Err() != nil && errors.Is(r.Context().Err(), context.DeadlineExceeded):
		status, msg = http.StatusGatewayTimeout, "loadmesh: upstream timed out"
	case r.Context().Err() != nil:
		status = 499 // the client went away; nobody reads this
	case errors.Is(err, ErrDial):
		status, msg = http.StatusServiceUnavailable, "loadmesh: no node can serve this request: "+errText(err)
	}
	in.metrics.observe("forwarded", status, time.Since(start))
	if status != 499 {
		writePlain(w, status, msg)
	}
}

func writePlain(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	io.WriteString(w, msg+"\n")
}

// safeToRetry: an idempotent method (RFC 9110) whose body, if any, has not
// been read from at all.
func safeToRetry(r *http.Request, body *trackedBody) bool {
	if body != nil && body.read.Load() > 0 {
		return false
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// trackedBody counts what was read from a request body and ignores Close,
// so that a failed attempt (whose transport closes the body) leaves it
// usable for a retry when nothing was read.
type trackedBody struct {
	rc   io.ReadCloser
	read atomic.Int64
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.read.Add(int64(n))
	return n, err
}

func (b *trackedBody) Close() error { return nil }

// bufferPool recycles the 32 KiB copy buffers of the forward path.
type bufferPool struct{}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *(copyBuffers.Get().(*[]byte)) }
func (bufferPool) Put(b []byte) { copyBuffers.Put(&b) }

// PeerHandler serves requests forwarded by peers: always with the local
// backend, never forwarding again, whatever the cluster view says.
func PeerHandler(node string, local *Backend) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if local == nil {
			w.Header().Set(HeaderNode, node)
			writePlain(w, http.StatusServiceUnavailable, "loadmesh: node "+node+" has no backend")
			return
		}
		local.ServeHTTP(w, r)
	})
}
