package transport

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ErrShed is returned by Admission.Acquire for a request shed to protect
// the backend; it is answered 503 with Retry-After: 1.
var ErrShed = errors.New("backend overloaded: request shed")

// AdmissionConfig tunes the admission queue in front of a backend.
type AdmissionConfig struct {
	// MaxInflight is how many requests may be served at once. Required,
	// at least 1.
	MaxInflight int
	// MaxQueue is how many more requests may wait for a slot; further ones
	// are shed at once. 0: none wait.
	MaxQueue int
	// Target is the longest wait for a slot while the queue stands (has not
	// been empty for Interval): CoDel's target delay. Default 5ms.
	Target time.Duration
	// Interval is the longest wait for a slot otherwise, and how long the
	// queue must stay non-empty to count as standing. Default 100ms.
	Interval time.Duration
}

// Validate reports every problem with c.
func (c AdmissionConfig) Validate() error {
	var errs []error
	if c.MaxInflight < 1 {
		errs = append(errs, fmt.Errorf("max in-flight %d must be at least 1", c.MaxInflight))
	}
	if c.MaxQueue < 0 {
		errs = append(errs, fmt.Errorf("max queue %d is negative", c.MaxQueue))
	}
	if c.Target < 0 || c.Interval < 0 || (c.Target > 0 && c.Interval > 0 && c.Target > c.Interval) {
		errs = append(errs, fmt.Errorf("queue target %s must not be negative or above the interval %s", c.Target, c.Interval))
	}
	return errors.Join(errs...)
}

// Admission bounds the requests a backend serves at once and sheds load
// before latency explodes, after the controlled-delay queue Facebook
// describes for RPC servers ("Fail at Scale", 2015):
//
//   - A request finds a free slot and goes in, or waits in a queue of at
//     most MaxQueue; a full queue sheds it at once.
//   - While the queue empties now and then, a request may wait up to
//     Interval (bursts are absorbed). Once the queue has not been empty
//     for Interval, it is a standing queue, which only adds latency: a
//     request then waits at most Target before it is shed, so the queue
//     drains and the requests served see little queueing delay.
//   - A standing queue is served newest first (adaptive LIFO): the oldest
//     waiters are the likeliest to have been given up by their clients,
//     and they are the ones shed by their Target.
//
// Shed requests get 503 with Retry-After: 1. A forwarding node takes that
// as deliberate shedding, not as a failure of this node (scheduler
// Result.Failed), and tries another node.
//
// Safe for concurrent use. Admitting a request with a free slot and an
// empty queue takes one uncontended lock.
type Admission struct {
	cfg     AdmissionConfig
	metrics *shedMetrics

	mu        sync.Mutex
	inflight  int
	waiters   []*admitWaiter
	busySince time.Time // when the queue last became non-empty
}

type admitWaiter struct {
	ready   chan struct{} // closed when granted a slot
	granted bool          // under Admission.mu
}

// NewAdmission returns an admission queue; reg (optional) receives its
// metrics.
func NewAdmission(cfg AdmissionConfig, reg prometheus.Registerer) (*Admission, error) {
	if cfg.Target == 0 {
		cfg.Target = 5 * time.Millisecond
	}
	if cfg.Interval == 0 {
		cfg.Interval = 100 * time.Millisecond
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Admission{cfg: cfg, metrics: newShedMetrics(reg)}, nil
}

// SetConfig replaces the limits (zero Target and Interval take the
// defaults). Requests in flight keep their slots; a higher MaxInflight
// admits waiting requests at once. Safe for concurrent use.
func (a *Admission) SetConfig(cfg AdmissionConfig) error {
	if cfg.Target == 0 {
		cfg.Target = 5 * time.Millisecond
	}
	if cfg.Interval == 0 {
		cfg.Interval = 100 * time.Millisecond
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.cfg = cfg
	for a.inflight < a.cfg.MaxInflight && len(a.waiters) > 0 {
		w := a.waiters[0]
		a.waiters = slices.Delete(a.waiters, 0, 1)
		w.granted = true
		close(w.ready)
		a.inflight++
		a.metrics.queued.Dec()
		a.metrics.inflight.Inc()
	}
	return nil
}

// Acquire takes a slot, waiting in the queue if needed. It returns ErrShed
// when the request is shed, or ctx's error when ctx ends first. After a
// nil error, call release exactly once when the request is over.
func (a *Admission) Acquire(ctx context.Context) (release func(), err error) {
	a.mu.Lock()
	if a.inflight < a.cfg.MaxInflight && len(a.waiters) == 0 {
		a.inflight++
		a.mu.Unlock()
		a.metrics.inflight.Inc()
		return a.release, nil
	}
	if len(a.waiters) >= a.cfg.MaxQueue {
		a.mu.Unlock()
		a.metrics.shed[0].Inc()
		return nil, ErrShed
	}
	now := time.Now()
	wait := a.cfg.Interval
	if len(a.waiters) == 0 {
		a.busySince = now
	} else if now.Sub(a.busySince) > a.cfg.Interval {
		wait = a.cfg.Target
	}
	w := &admitWaiter{ready: make(chan struct{})}
	a.waiters = append(a.waiters, w)
	a.metrics.queued.Inc()
	a.mu.Unlock()

	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-w.ready:
		a.metrics.wait.Observe(time.Since(now).Seconds())
		return a.release, nil
	case <-t.C:
		err = ErrShed
	case <-ctx.Done():
		err = ctx.Err()
	}
	a.mu.Lock()
	if w.granted {
		// The slot came as the wait ended: keep it unless ctx ended.
		a.mu.Unlock()
		if ctx.Err() != nil {
			a.release()
			return nil, ctx.Err()
		}
		a.metrics.wait.Observe(time.Since(now).Seconds())
		return a.release, nil
	}
	if i := slices.Index(a.waiters, w); i >= 0 {
		a.waiters = slices.Delete(a.waiters, i, i+1)
		a.metrics.queued.Dec()
	}
	a.mu.Unlock()
	if errors.Is(err, ErrShed) {
		a.metrics.shed[1].Inc()
	}
	return nil, err
}

// release frees a slot, or hands it to a waiter: the oldest, or the newest
// when the queue stands.
func (a *Admission) release() {
	a.mu.Lock()
	if n := len(a.waiters); n > 0 {
		i := 0
		if time.Since(a.busySince) > a.cfg.Interval {
			i = n - 1
		}
		w := a.waiters[i]
		a.waiters = slices.Delete(a.waiters, i, i+1)
		w.granted = true
		close(w.ready)
		a.mu.Unlock()
		a.metrics.queued.Dec()
		return
	}
	a.inflight--
	a.mu.Unlock()
	a.metrics.inflight.Dec()
}

// Load is the number of requests holding a slot and waiting for one.
func (a *Admission) Load() (inflight, queued int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.inflight, len(a.waiters)
}

// Handler serves next under the admission limit; shed requests are
// answered 503 with Retry-After: 1, and a request whose client went away
// while it waited is dropped unanswered.
func (a *Admission) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		release, err := a.Acquire(r.Context())
		if err != nil {
			if errors.Is(err, ErrShed) {
				writeShed(w)
			}
			return
		}
		defer release()
		next.ServeHTTP(w, r)
	})
}

// writeShed answers a request shed by this node.
func writeShed(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "1")
	writePlain(w, http.StatusServiceUnavailable, "loadmesh: overloaded; request shed, retry shortly")
}

// errShedRetry tells Ingress.ServeHTTP that the local backend shed the
// request, which may still go to another node.
var errShedRetry = fmt.Errorf("local %w", ErrShed)

// noRelease is the release of a request admitted without Admission.
func noRelease() {}

// admitLocal takes an admission slot to serve r with the local backend.
// When r is not admitted: for an attempt of the Picker (attempt true) it
// reports the outcome with done and returns the error (errShedRetry when
// shed, so that another node is tried); otherwise it answers r itself
// (503 when shed, nothing when the client left).
func (in *Ingress) admitLocal(w http.ResponseWriter, r *http.Request, attempt bool, done func(Outcome)) (func(), error) {
	if in.admit == nil {
		return noRelease, nil
	}
	release, err := in.admit.Acquire(r.Context())
	switch {
	case err == nil:
		return release, nil
	case !attempt:
		if errors.Is(err, ErrShed) {
			writeShed(w)
		}
		return nil, err
	case errors.Is(err, ErrShed):
		// Deliberate shedding, not a failure of this node (with
		// Retry-After, see scheduler Result.Failed).
		finish(done, Outcome{Status: http.StatusServiceUnavailable, RetryAfter: "1"})
		return nil, errShedRetry
	}
	finish(done, Outcome{Err: err})
	return nil, err
}
