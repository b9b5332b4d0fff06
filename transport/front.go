package transport

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ErrNoPeer is returned by a Picker with no peer to offer.
var ErrNoPeer = errors.New("no peer available")

// Picker chooses the peer a request is forwarded to. Pick must not block,
// must be safe for concurrent use, and must not return a peer named in
// tried. It returns ErrNoPeer (or an error wrapping it) when there is none.
type Picker interface {
	Pick(r *http.Request, tried []string) (PeerTarget, error)
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
	local   *Backend // nil on an ingress-only node
	picker  Picker   // nil: never forward
	proxy   *httputil.ReverseProxy
	metrics *ingressMetrics
	log     *slog.Logger
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
	if deps.Picker != nil && deps.Peers != nil {
		in.proxy = &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				t, _ := PeerTargetFromContext(pr.In.Context())
				pr.SetURL(&url.URL{Scheme: "https", Host: t.Addr})
				pr.Out.Host = pr.In.Host
				setIngressHeaders(pr, cfg.NodeName)
			},
			Transport:    deps.Peers,
			BufferPool:   bufferPool{},
			ErrorHandler: recordError,
			ErrorLog:     slog.NewLogLogger(in.log.Handler(), slog.LevelDebug),
		}
	}
	return in
}

// attemptKey carries the outcome of one forwarding attempt out of the
// ReverseProxy's ErrorHandler.
type attemptKey struct{}

type attempt struct{ err error }

func recordError(w http.ResponseWriter, r *http.Request, err error) {
	if a, ok := r.Context().Value(attemptKey{}).(*attempt); ok {
		a.err = err
	}
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
		if in.local != nil && (in.local.HasHeadroom() || in.picker == nil || lastErr != nil) {
			in.local.ServeHTTP(w, r)
			return
		}
		var target PeerTarget
		err := ErrNoPeer
		if in.proxy != nil {
			target, err = in.picker.Pick(r, tried)
		}
		if err != nil {
			if in.local != nil {
				// Over capacity but nobody else can help: serve anyway.
				in.local.ServeHTTP(w, r)
				return
			}
			break
		}
		rec := &statusRecorder{ResponseWriter: w}
		a := &attempt{}
		in.proxy.ServeHTTP(rec, r.WithContext(context.WithValue(WithPeerTarget(ctx, target), attemptKey{}, a)))
		if a.err == nil {
			in.metrics.observe("forwarded", rec.status, time.Since(start))
			return
		}
		tried = append(tried, target.Name)
		lastErr = a.err
		if ctx.Err() != nil || !retryable(a.err, r, body) {
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

// fail answers a request whose forwarding failed for good.
func (in *Ingress) fail(w http.ResponseWriter, r *http.Request, err error, start time.Time) {
	status, msg := http.StatusBadGateway, "loadmesh: peer failed: "+errText(err)
	switch {
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

// retryable reports whether a failed attempt may be sent to another node:
// when it never reached a peer, or when the method is idempotent and no
// body byte has been consumed.
func retryable(err error, r *http.Request, body *trackedBody) bool {
	consumed := body != nil && body.read.Load() > 0
	if consumed {
		return false
	}
	if errors.Is(err, ErrDial) {
		return true
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
