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
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ErrNoPeer is returned by a Picker with no node to offer.
var ErrNoPeer = errors.New("no peer available")

// Picker chooses where a request goes: the local backend (a PeerTarget with
// Local set) or a peer. Pick must not block, must be safe for concurrent
// use, and must not return a peer named in tried; a Pick with tried peers
// is a retry, which the Picker may refuse (a retry budget). It returns
// ErrNoPeer (or an error wrapping it) when no node can take the request.
// done, when not nil, must be called exactly once with the attempt's
// outcome; the ingress does so.
type Picker interface {
	Pick(r *http.Request, tried []string) (t PeerTarget, done func(Outcome), err error)
}

// Outcome is the result of one attempt.
type Outcome struct {
	// Status the target answered, 0 if none.
	Status int
	// Err is the transport failure, if any.
	Err error
	// RetryAfter is the target's Retry-After header on a 429 or 503.
	RetryAfter string
}

// StatusError is the failure of an attempt whose peer answered with a
// status worth retrying elsewhere (502, 503 or 504). RetryAfter is the
// peer's Retry-After, if any.
type StatusError struct {
	Peer       string
	Status     int
	RetryAfter string
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
	cfg     IngressConfig
	local   http.Handler // nil on an ingress-only node
	picker  Picker       // nil: never forward
	admit   *Admission   // nil: the local backend takes every request
	proxy   *httputil.ReverseProxy
	metrics *ingressMetrics
	log     *slog.Logger
}

// IngressDeps are the front door's collaborators; all but Logger optional.
type IngressDeps struct {
	Logger *slog.Logger
	// Local serves with the node's own backend; nil on an ingress-only
	// node.
	Local http.Handler
	// Metrics, when set, are the request metrics shared with the local
	// Backend (Backend.Metrics); else the front door registers its own.
	Metrics *RequestMetrics
	// Picker and Peers enable forwarding; Peers is normally a PeerClient.
	Picker Picker
	Peers  http.RoundTripper
	// Registerer is used when Local is nil (the backend registers the
	// shared request metrics otherwise).
	Registerer prometheus.Registerer
	// Admission, when set, admits requests to Local; a request it sheds
	// is tried on another node when the Picker offers one, else answered
	// 503 with Retry-After.
	Admission *Admission
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
	in := &Ingress{cfg: cfg, local: deps.Local, picker: deps.Picker, admit: deps.Admission, log: log.With("component", "transport")}
	if deps.Metrics != nil {
		in.metrics = deps.Metrics.m
	} else {
		in.metrics = newIngressMetrics(deps.Registerer)
	}
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
	return &StatusError{Peer: a.target.Name, Status: resp.StatusCode, RetryAfter: resp.Header.Get("Retry-After")}
}

// ServeHTTP implements http.Handler.
func (in *Ingress) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	switch r.Method {
	case http.MethodConnect:
		// Not a tunnel: relaying a backend's 200 would tell the client its
		// tunnel is open when none is.
		w.Header().Set("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
		writePlain(w, http.StatusMethodNotAllowed, "loadmesh: CONNECT is not supported")
		in.metrics.observe("none", http.StatusMethodNotAllowed, time.Since(start))
		return
	case "PRI":
		// An HTTP/2 connection preface sent to an HTTP/1 listener.
		writePlain(w, http.StatusBadRequest, "loadmesh: HTTP/2 preface on an HTTP/1.1 connection; use h2c prior knowledge only where supported")
		in.metrics.observe("none", http.StatusBadRequest, time.Since(start))
		return
	}
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
		target, done, err := in.pick(r, tried)
		if err != nil {
			// Nobody else can help (no other peer, or the retry budget
			// refuses another try): serve locally, even over capacity or
			// when its health check fails (a panic mode, as Envoy's),
			// unless the local backend already had its turn. A retry only
			// gets here when retrying was safe.
			if in.local != nil && !slices.Contains(tried, in.cfg.NodeName) {
				if release, err := in.admitLocal(w, r, false, nil); err == nil {
					defer release()
					in.local.ServeHTTP(w, r)
				}
				return
			}
			break
		}
		if target.Local {
			release, err := in.admitLocal(w, r, true, done)
			if errors.Is(err, errShedRetry) {
				tried, lastErr = append(tried, target.Name), ErrShed
				continue
			}
			if err != nil {
				return
			}
			defer release()
			rec := &StatusRecorder{ResponseWriter: w}
			// Deferred: a handler may abort a cut-off response with a panic
			// (http.ErrAbortHandler), and the slot must still be released.
			defer func() { finish(done, Outcome{Status: rec.status}) }()
			in.local.ServeHTTP(rec, r)
			return
		}
		a := &attempt{target: target, mayRetry: n+1 < in.cfg.MaxAttempts && safeToRetry(r, body)}
		rec := &StatusRecorder{ResponseWriter: w}
		in.forward(rec, r.WithContext(context.WithValue(WithPeerTarget(ctx, target), attemptKey{}, a)), done)
		out := Outcome{Status: rec.status, Err: a.err}
		var se *StatusError
		if errors.As(a.err, &se) {
			out = Outcome{Status: se.Status, RetryAfter: se.RetryAfter}
		}
		if st := bodyFault(r); st != 0 {
			// The client broke a body limit: not the peer's failure, and
			// not to be tried again.
			out = Outcome{Status: st}
			if a.err != nil {
				a.err = &bodyFaultError{st}
			}
		}
		finish(done, out)
		in.metrics.forwardedBytes(body, rec)
		if a.err == nil {
			in.metrics.observe("forwarded", rec.status, time.Since(start))
			return
		}
		tried = append(tried, target.Name)
		lastErr = a.err
		// A request that never reached a peer may always go elsewhere; one
		// that did, only when it is safe (idempotent, body untouched). The
		// Picker may still refuse the retry (retry budget).
		neverSent := errors.Is(a.err, ErrDial) && (body == nil || body.read.Load() == 0)
		if ctx.Err() != nil || !(neverSent || a.mayRetry) || n+1 >= in.cfg.MaxAttempts || bodyFault(r) != 0 {
			break
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

// errAborted is the outcome of an attempt whose response was cut off.
var errAborted = errors.New("response aborted")

// forward runs one forwarding attempt. If the proxy aborts a cut-off
// response (it panics with http.ErrAbortHandler), the attempt's outcome is
// still reported before the panic goes on to net/http.
func (in *Ingress) forward(rec *StatusRecorder, r *http.Request, done func(Outcome)) {
	defer func() {
		if p := recover(); p != nil {
			finish(done, Outcome{Status: rec.status, Err: errAborted})
			panic(p)
		}
	}()
	in.proxy.ServeHTTP(rec, r)
}

func finish(done func(Outcome), o Outcome) {
	if done != nil {
		done(o)
	}
}

// pick asks the Picker, or, without one, chooses the local backend.
func (in *Ingress) pick(r *http.Request, tried []string) (PeerTarget, func(Outcome), error) {
	if in.picker == nil || in.proxy == nil {
		if in.local != nil && !slices.Contains(tried, in.cfg.NodeName) {
			return PeerTarget{Name: in.cfg.NodeName, Local: true}, nil, nil
		}
		return PeerTarget{}, nil, ErrNoPeer
	}
	t, done, err := in.picker.Pick(r, tried)
	if err == nil && t.Local && in.local == nil {
		finish(done, Outcome{Err: ErrNoPeer})
		return PeerTarget{}, nil, fmt.Errorf("%w: picker chose the local node, which has no backend", ErrNoPeer)
	}
	return t, done, err
}

// fail answers a request whose forwarding failed for good.
func (in *Ingress) fail(w http.ResponseWriter, r *http.Request, err error, start time.Time) {
	status, msg := http.StatusBadGateway, "loadmesh: peer failed: "+errText(err)
	var se *StatusError
	var bf *bodyFaultError
	switch {
	case errors.As(err, &bf):
		status, msg = bf.status, bodyFaultText(bf.status)
	case errors.Is(err, ErrShed):
		status, msg = http.StatusServiceUnavailable, "loadmesh: overloaded; request shed, retry shortly"
		w.Header().Set("Retry-After", "1")
	case errors.As(err, &se):
		status, msg = se.Status, "loadmesh: "+se.Error()+" and no other node could take the request"
	case r.Context().Err() != nil && errors.Is(r.Context().Err(), context.DeadlineExceeded):
		status, msg = http.StatusGatewayTimeout, "loadmesh: upstream timed out"
	case r.Context().Err() != nil:
		// The client went away or stopped its upload half way. Say so:
		// a client that only half-closed still reads the answer, and
		// writing nothing would let net/http send 200.
		status, msg = 499, "loadmesh: client closed the request"
	case errors.Is(err, ErrDial):
		status, msg = http.StatusServiceUnavailable, "loadmesh: no node can serve this request: "+errText(err)
	}
	in.metrics.observe("forwarded", status, time.Since(start))
	writePlain(w, status, msg)
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
func PeerHandler(node string, local http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if local == nil {
			w.Header().Set(HeaderNode, node)
			writePlain(w, http.StatusServiceUnavailable, "loadmesh: node "+node+" has no backend")
			return
		}
		local.ServeHTTP(w, r)
	})
}

// RequestMetrics are the request counters and histograms a Backend
// registers; hand them to NewIngress so both count into the same series.
type RequestMetrics struct{ m *ingressMetrics }

// RequestMetrics returns the Backend's request metrics.
func (b *Backend) RequestMetrics() *RequestMetrics { return &RequestMetrics{m: b.metrics} }
