package transport

import (
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// GuardConfig are the limits a Guard applies to every client request.
type GuardConfig struct {
	// MaxBodyBytes caps a request body: a larger declared Content-Length is
	// answered 413 at once, and a streamed body that grows past the cap
	// fails the request with 413 (and closes the connection). It holds on
	// every path, local or forwarded to a peer, since the forwarded body is
	// read through the same cap. 0: no limit.
	MaxBodyBytes int64
	// BodyTimeout bounds how long a client may take to send its whole
	// request body, counted from when the request's headers were read. A
	// client too slow answers 408 (slowloris with bodies). 0: none.
	//
	// Why not http.Server.ReadTimeout: net/http keeps reading a connection
	// in the background once a body is done (to notice the client going
	// away) under the same deadline, and cancels the request's context
	// when it expires, so ReadTimeout also cuts requests whose backend is
	// merely slow. This deadline is removed as soon as the body ends.
	BodyTimeout time.Duration
}

// GuardDeps are a Guard's collaborators; all optional.
type GuardDeps struct {
	// Limiter, when set, limits the request rate of each client key.
	Limiter *RateLimiter
	// Key names a request's client for Limiter. Default ClientIPKey.
	Key func(*http.Request) ClientKey
	// Registerer receives the guard's metrics.
	Registerer prometheus.Registerer
}

// Guard is the ingress's first handler: it refuses a client over its rate
// limit with 429 and Retry-After, a body over the size limit with 413, and
// a body sent too slowly with 408, and passes everything else on. Limits
// on headers, connections and the other timeouts belong to the server and
// listener (http.Server, ConnLimiter).
type Guard struct {
	limits  atomic.Pointer[guardLimits]
	lim     *RateLimiter
	key     func(*http.Request) ClientKey
	next    http.Handler
	metrics *guardMetrics
}

// guardLimits are a Guard's current limits.
type guardLimits struct {
	cfg    GuardConfig
	tooBig string // the 413 message
}

// NewGuard returns a Guard in front of next.
func NewGuard(cfg GuardConfig, deps GuardDeps, next http.Handler) *Guard {
	g := &Guard{lim: deps.Limiter, key: deps.Key, next: next, metrics: newGuardMetrics(deps.Registerer)}
	if g.key == nil {
		g.key = ClientIPKey
	}
	g.SetLimits(cfg)
	return g
}

// SetLimits replaces the body limits; requests that arrive from now on get
// them. Safe for concurrent use.
func (g *Guard) SetLimits(cfg GuardConfig) {
	g.limits.Store(&guardLimits{cfg: cfg,
		tooBig: "loadmesh: request body larger than " + strconv.FormatInt(cfg.MaxBodyBytes, 10) + " bytes"})
}

// ServeHTTP implements http.Handler.
func (g *Guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	lims := g.limits.Load()
	cfg := &lims.cfg
	if g.lim != nil {
		if ok, wait := g.lim.Allow(g.key(r)); !ok {
			secs := strconv.FormatInt(int64(max(1, math.Ceil(wait.Seconds()))), 10)
			w.Header().Set("Retry-After", secs)
			writePlain(w, http.StatusTooManyRequests, "loadmesh: too many requests from this client; retry in "+secs+" s")
			return
		}
	}
	if r.Body != nil && r.Body != http.NoBody && (cfg.MaxBodyBytes > 0 || cfg.BodyTimeout > 0) {
		if cfg.MaxBodyBytes > 0 && r.ContentLength > cfg.MaxBodyBytes {
			g.metrics.tooLarge.Inc()
			w.Header().Set("Connection", "close")
			writePlain(w, http.StatusRequestEntityTooLarge, lims.tooBig)
			return
		}
		gb := &guardedBody{rc: r.Body, metrics: g.metrics}
		if cfg.MaxBodyBytes > 0 {
			// MaxBytesReader also makes the server close the connection
			// after answering, rather than read the rest of the body.
			gb.rc = http.MaxBytesReader(w, r.Body, cfg.MaxBodyBytes)
		}
		if cfg.BodyTimeout > 0 {
			ctl := http.NewResponseController(w)
			deadline := time.Now().Add(cfg.BodyTimeout)
			if ctl.SetReadDeadline(deadline) == nil {
				gb.ctl, gb.deadline = ctl, deadline
			}
		}
		r = r.WithContext(context.WithValue(r.Context(), guardedBodyKey{}, gb))
		r.Body = gb
	}
	g.next.ServeHTTP(w, r)
}

// guardedBody enforces the body limits and remembers when the client broke
// one, so that the failure is answered as the client's (413, 408) and not
// blamed on the backend or peer that was receiving the body.
type guardedBody struct {
	rc       io.ReadCloser
	ctl      *http.ResponseController // nil: no deadline set
	deadline time.Time
	ended    bool // the body returned an error or EOF; Read's
	fault    atomic.Int32
	metrics  *guardMetrics
}

// errBodyTimeout replaces the read error of a body not sent in time.
var errBodyTimeout = errors.New("client did not send the request body in time")

func (b *guardedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && !b.ended {
		b.ended = true
		if b.ctl != nil {
			// The body is done: the connection's reads after it (net/http's
			// background read) must not be cut by this deadline.
			b.ctl.SetReadDeadline(time.Time{})
		}
		var tooLarge *http.MaxBytesError
		switch {
		case errors.As(err, &tooLarge):
			b.fault.Store(http.StatusRequestEntityTooLarge)
			b.metrics.tooLarge.Inc()
		case err != io.EOF && b.ctl != nil && !time.Now().Before(b.deadline):
			b.fault.Store(http.StatusRequestTimeout)
			b.metrics.timeouts.Inc()
			err = errBodyTimeout
		}
	}
	return n, err
}

func (b *guardedBody) Close() error { return b.rc.Close() }

// bodyFault is the status owed to a request whose client broke a body
// limit of its Guard (413 too large, 408 too slow), else 0.
func bodyFault(r *http.Request) int {
	if g, ok := r.Context().Value(guardedBodyKey{}).(*guardedBody); ok {
		return int(g.fault.Load())
	}
	return 0
}

// guardedBodyKey carries a request's guardedBody in its context, where the
// error paths find it whatever wraps the body on the way (the Ingress, a
// ReverseProxy).
type guardedBodyKey struct{}

// bodyFaultText is the message for a bodyFault status.
func bodyFaultText(status int) string {
	if status == http.StatusRequestTimeout {
		return "loadmesh: request body not received in time"
	}
	return "loadmesh: request body too large"
}

// bodyFaultError fails a forwarding attempt whose client broke a body
// limit.
type bodyFaultError struct{ status int }

func (e *bodyFaultError) Error() string { return bodyFaultText(e.status) }
