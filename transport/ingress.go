package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// HeaderNode names the node whose backend served a response.
const HeaderNode = "X-Loadmesh-Node"

// BackendConfig describes the local service a node fronts.
type BackendConfig struct {
	// NodeName is written into HeaderNode on every response.
	NodeName string
	// URL of the backend (http or https). Required.
	URL string
	// Capacity is the number of concurrent requests the backend is sized
	// for. Default 64.
	Capacity int
	// DialTimeout bounds connecting to the backend. Default 5s.
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for the backend's response
	// headers. Default 60s.
	ResponseHeaderTimeout time.Duration
	// IdleConnTimeout closes idle backend connections. Default 90s.
	IdleConnTimeout time.Duration
}

// Validate reports every problem with c.
func (c BackendConfig) Validate() error {
	var errs []error
	u, err := url.Parse(c.URL)
	switch {
	case c.URL == "":
		errs = append(errs, errors.New("backend URL is empty"))
	case err != nil:
		errs = append(errs, fmt.Errorf("backend URL %q: %v", c.URL, err))
	case u.Scheme != "http" && u.Scheme != "https":
		errs = append(errs, fmt.Errorf("backend URL %q: scheme must be http or https", c.URL))
	case u.Host == "":
		errs = append(errs, fmt.Errorf("backend URL %q: missing host", c.URL))
	}
	if c.Capacity < 1 {
		errs = append(errs, fmt.Errorf("capacity %d must be at least 1", c.Capacity))
	}
	if c.NodeName == "" {
		errs = append(errs, errors.New("node name is empty"))
	}
	return errors.Join(errs...)
}

func (c *BackendConfig) setDefaults() {
	if c.Capacity == 0 {
		c.Capacity = 64
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.ResponseHeaderTimeout == 0 {
		c.ResponseHeaderTimeout = 60 * time.Second
	}
	if c.IdleConnTimeout == 0 {
		c.IdleConnTimeout = 90 * time.Second
	}
}

// Backend is a streaming reverse proxy to the node's own service. It is an
// http.Handler; in-flight requests are counted so the ingress can tell
// whether the backend has headroom.
//
// For a plain-HTTP backend most requests take a fast path (h1Proxy) that
// serves them on the handler's goroutine over pooled keep-alive
// connections; the rest, and every request to an https backend, go
// through an httputil.ReverseProxy. Both behave the same: hop-by-hop
// headers are removed, X-Forwarded-For/Proto/Host and Via are set by the
// ingress node (and kept as they are on requests forwarded by a peer),
// bodies stream both ways with bounded buffering, HeaderNode names this
// node on every answer, a client that goes away cancels the backend
// request, and failures answer 502 (504 on a timeout, 499 when the client
// went away).
type Backend struct {
	cfg      BackendConfig
	proxy    *httputil.ReverseProxy
	fast     *h1Proxy // nil for an https backend
	inflight atomic.Int64
	metrics  *ingressMetrics
	log      *slog.Logger
}

// NewBackend builds the proxy to cfg.URL.
func NewBackend(cfg BackendConfig, log *slog.Logger, reg prometheus.Registerer) (*Backend, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	target, _ := url.Parse(cfg.URL)
	b := &Backend{cfg: cfg, log: log.With("component", "transport"), metrics: newIngressMetrics(reg)}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          4 * cfg.Capacity,
		MaxIdleConnsPerHost:   2 * cfg.Capacity,
		IdleConnTimeout:       cfg.IdleConnTimeout,
		ResponseHeaderTimeout: cfg.ResponseHeaderTimeout,
		ExpectContinueTimeout: h1ExpectTimeout,
		ForceAttemptHTTP2:     target.Scheme == "https",
		// A proxy passes content encodings through untouched (the fast
		// path and the peer channel do too).
		DisableCompression: true,
	}
	nodeHeader := []string{cfg.NodeName}
	b.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
			if _, forwarded := PeerNameFromContext(pr.In.Context()); forwarded {
				// A request forwarded by an authenticated peer already
				// carries what its ingress node set; keep it as it is.
				copyHeaders(pr.Out.Header, pr.In.Header, forwardedHeaders...)
				return
			}
			setIngressHeaders(pr, cfg.NodeName)
		},
		Transport:  tr,
		BufferPool: h1BufferPool{},
		ModifyResponse: func(r *http.Response) error {
			r.Header[HeaderNode] = nodeHeader
			return nil
		},
		ErrorHandler: b.fail,
		ErrorLog:     slog.NewLogLogger(b.log.Handler(), slog.LevelDebug),
	}
	if target.Scheme == "http" && target.User == nil && (target.Path == "" || target.Path == "/") &&
		target.RawPath == "" && target.RawQuery == "" && !target.ForceQuery {
		b.fast = newH1Proxy(target.Host, cfg, b.fail, b.log.Debug)
	}
	return b, nil
}

// fail answers a request the backend could not serve.
func (b *Backend) fail(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusBadGateway
	if errors.Is(err, context.DeadlineExceeded) {
		status = http.StatusGatewayTimeout
	}
	if r.Context().Err() != nil {
		// The client went away; nobody reads this answer.
		status = 499
	}
	if st := bodyFault(r); st != 0 {
		// The client broke a body limit (Guard), not the backend.
		w.Header()[HeaderNode] = []string{b.cfg.NodeName}
		http.Error(w, bodyFaultText(st), st)
		return
	}
	b.log.Debug("backend request failed", "error", err, "path", r.URL.Path)
	w.Header()[HeaderNode] = []string{b.cfg.NodeName}
	http.Error(w, "loadmesh: backend of "+b.cfg.NodeName+" failed: "+errText(err), status)
}

// Inflight is the number of requests being served by the backend.
func (b *Backend) Inflight() int { return int(b.inflight.Load()) }

// HasHeadroom reports whether the backend serves fewer requests than its
// capacity.
func (b *Backend) HasHeadroom() bool { return b.Inflight() < b.cfg.Capacity }

// ServeHTTP proxies r to the backend.
func (b *Backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.inflight.Add(1)
	b.metrics.inflight.Inc()
	start := time.Now()
	status := 0
	defer func() {
		b.inflight.Add(-1)
		b.metrics.inflight.Dec()
		b.metrics.observe("local", status, time.Since(start))
	}()
	if b.fast != nil && b.fast.accepts(r) {
		b.fast.serve(w, r, &status)
		return
	}
	rec := &StatusRecorder{ResponseWriter: w}
	b.proxy.ServeHTTP(rec, r)
	status = rec.status
}

// CloseIdleConnections closes the idle connections to the backend.
func (b *Backend) CloseIdleConnections() {
	if b.fast != nil {
		b.fast.closeIdle()
	}
	b.proxy.Transport.(*http.Transport).CloseIdleConnections()
}

// errText keeps error text to one short line for clients.
func errText(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe.Op + " " + oe.Err.Error()
	}
	s := err.Error()
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// StatusRecorder remembers the status code written through it, keeping
// flushing and http.ResponseController working.
type StatusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int64 // body bytes written
}

// Status is the status written so far (0 if none).
func (s *StatusRecorder) Status() int { return s.status }

func (s *StatusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *StatusRecorder) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(p)
	s.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach Flush and deadlines.
func (s *StatusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Flush supports streaming responses through the recorder.
func (s *StatusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// forwardedHeaders are set once, by the ingress node.
var forwardedHeaders = []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Via"}

func copyHeaders(dst, src http.Header, names ...string) {
	for _, n := range names {
		if v, ok := src[n]; ok {
			dst[n] = v
		}
	}
}

// setIngressHeaders adds the client's address to X-Forwarded-For, sets
// X-Forwarded-Proto/Host, and names this node in Via.
func setIngressHeaders(pr *httputil.ProxyRequest, node string) {
	pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
	pr.SetXForwarded()
	proto := "1.1"
	if pr.In.ProtoMajor >= 2 {
		proto = strconv.Itoa(pr.In.ProtoMajor)
	}
	via := proto + " " + node + " (loadmesh)"
	if prior := pr.In.Header.Get("Via"); prior != "" {
		via = prior + ", " + via
	}
	pr.Out.Header.Set("Via", via)
}

// h1BufferPool lends the 32 KiB copy buffers to the Backend's
// ReverseProxy.
type h1BufferPool struct{}

func (h1BufferPool) Get() []byte  { return *(h1Buffers.Get().(*[]byte)) }
func (h1BufferPool) Put(b []byte) { h1Buffers.Put(&b) }
