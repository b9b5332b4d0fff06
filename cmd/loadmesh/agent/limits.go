package agent

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/transport"
)

// rateLimitTopic is the cluster.Broadcast topic of rate limit reports.
const rateLimitTopic byte = 1

// rateLimitPeriod is how often the rate limiter measures demand and, with
// the cluster scope, reports its heaviest keys to the other nodes.
const rateLimitPeriod = 500 * time.Millisecond

// limits are the ingress's abuse protections (README "Abuse protection"):
// per-client rate limits shared through gossip, body limits and timeouts
// (transport.Guard), connection limits on the ingress listeners, and the
// admission queue that sheds load in front of the backend.
type limits struct {
	rate      *transport.RateLimiter // nil: no rate limit
	key       func(*http.Request) transport.ClientKey
	cluster   bool
	conns     *transport.ConnLimiter
	admission *transport.Admission // nil without a backend
	guard     *transport.Guard     // set by ingressHandler
	// reports carries other nodes' rate limit reports from the gossip
	// callback to the loop; full means dropped (the next period resends).
	reports chan rateReport

	stop chan struct{}
	wg   sync.WaitGroup
}

type rateReport struct {
	from    string
	payload []byte
}

// validateLimits checks the abuse protection settings.
func (c Config) validateLimits() []error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if !(c.RateLimit >= 0) {
		add("--rate-limit %v must be 0 (off) or positive", c.RateLimit)
	}
	if c.RateBurst < 0 {
		add("--rate-burst %d is negative", c.RateBurst)
	}
	if _, err := transport.ParseKeySpec(c.RateLimitKey); err != nil {
		add("--rate-limit-key: %v", err)
	}
	if c.RateLimitScope != "node" && c.RateLimitScope != "cluster" {
		add("--rate-limit-scope %q: want node or cluster", c.RateLimitScope)
	}
	if c.RateLimitMaxKeys < 64 {
		add("--rate-limit-max-keys %d must be at least 64", c.RateLimitMaxKeys)
	}
	if c.MaxHeaderBytes < 1024 {
		add("--max-header-bytes %d must be at least 1024", c.MaxHeaderBytes)
	}
	for flag, n := range map[string]int64{"--max-body-bytes": c.MaxBodyBytes, "--max-conns": int64(c.MaxConns),
		"--max-conns-per-client": int64(c.MaxConnsPerClient), "--max-inflight": int64(c.MaxInflight), "--max-queue": int64(c.MaxQueue)} {
		if n < 0 {
			add("%s %d is negative", flag, n)
		}
	}
	if c.ReadTimeout < 0 || c.WriteTimeout < 0 {
		add("--read-timeout %s and --write-timeout %s must not be negative", c.ReadTimeout, c.WriteTimeout)
	}
	if c.WriteTimeout > 0 && c.UpstreamTimeout > 0 && c.WriteTimeout < c.UpstreamTimeout {
		add("--write-timeout %s is below --upstream-timeout %s: answers would be cut before the upstream gives up", c.WriteTimeout, c.UpstreamTimeout)
	}
	if c.QueueTarget <= 0 || c.QueueInterval <= 0 || c.QueueTarget > c.QueueInterval {
		add("--queue-target %s must be positive and at most --queue-interval %s", c.QueueTarget, c.QueueInterval)
	}
	return errs
}

// setupLimits builds the protections; a.local must be set. It starts
// nothing.
func (a *Agent) setupLimits() error {
	l := &limits{stop: make(chan struct{})}
	var err error
	if a.cfg.RateLimit > 0 {
		l.key, _ = transport.ParseKeySpec(a.cfg.RateLimitKey)
		l.cluster = a.cfg.RateLimitScope == "cluster"
		l.rate, err = transport.NewRateLimiter(transport.RateLimitConfig{
			Rate: a.cfg.RateLimit, Burst: a.cfg.RateBurst, MaxKeys: a.cfg.RateLimitMaxKeys,
			Cluster: l.cluster, Period: rateLimitPeriod,
		}, transport.RateLimitDeps{Registerer: a.reg, Now: a.now})
		if err != nil {
			return fmt.Errorf("rate limit: %w", err)
		}
		l.reports = make(chan rateReport, 64)
	}
	if l.conns, err = transport.NewConnLimiter(transport.ConnLimitConfig{
		MaxConns: a.cfg.MaxConns, MaxConnsPerClient: a.cfg.MaxConnsPerClient,
	}, a.reg); err != nil {
		return err
	}
	if a.local != nil {
		if l.admission, err = transport.NewAdmission(a.admissionConfig(a.cfg), a.reg); err != nil {
			return err
		}
	}
	a.limits = l
	return nil
}

// admittedLocal is the local backend under the admission limit, for
// requests forwarded by peers; nil on an ingress-only node.
func (a *Agent) admittedLocal() http.Handler {
	if a.local == nil {
		return nil
	}
	return a.limits.admission.Handler(a.local)
}

// ingressHandler puts the Guard in front of the client ingress.
func (a *Agent) ingressHandler(next http.Handler) http.Handler {
	a.limits.guard = transport.NewGuard(transport.GuardConfig{
		MaxBodyBytes: a.cfg.MaxBodyBytes, BodyTimeout: a.cfg.ReadTimeout,
	}, transport.GuardDeps{Limiter: a.limits.rate, Key: a.limits.key, Registerer: a.reg}, next)
	return a.limits.guard
}

// limitListener applies the connection limits to the TCP ingress.
func (a *Agent) limitListener(ln net.Listener) net.Listener { return a.limits.conns.Listener(ln) }

// h3ConnContext applies the connection limits to the HTTP/3 ingress: a
// QUIC connection over a limit is closed with H3_EXCESSIVE_LOAD.
func (a *Agent) h3ConnContext(ctx context.Context, c *quic.Conn) context.Context {
	k := transport.KeyFromRemoteAddr(c.RemoteAddr().String())
	if !a.limits.conns.Acquire(k) {
		c.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeExcessiveLoad), "too many connections")
		return ctx
	}
	context.AfterFunc(c.Context(), func() { a.limits.conns.Release(k) })
	return ctx
}

// messages are the gossip message handlers the limits need.
func (a *Agent) limitMessages() map[byte]cluster.MessageHandler {
	l := a.limits
	if l.rate == nil || !l.cluster {
		return nil
	}
	return map[byte]cluster.MessageHandler{rateLimitTopic: func(from string, payload []byte) {
		// A memberlist callback: copy, hand over, never block.
		select {
		case l.reports <- rateReport{from: from, payload: append([]byte(nil), payload...)}:
		default:
		}
	}}
}

// startLimits runs the rate limiter's loop: every period it measures
// demand and, with the cluster scope, sends this node's report to the
// others and takes in theirs.
func (a *Agent) startLimits() {
	l := a.limits
	if l.rate == nil {
		return
	}
	c := a.cluster
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		t := time.NewTicker(rateLimitPeriod)
		defer t.Stop()
		for {
			select {
			case <-l.stop:
				return
			case r := <-l.reports:
				if err := l.rate.Merge(r.from, r.payload); err != nil {
					a.log.Debug("ignoring rate limit report", "peer", r.from, "error", err)
				}
			case <-t.C:
				if !l.cluster {
					l.rate.Tick()
					continue
				}
				n := 0
				for _, m := range c.Members() {
					if m.Status == cluster.StatusAlive || m.Status == cluster.StatusSuspect {
						n++
					}
				}
				l.rate.SetClusterSize(n)
				if report := l.rate.Tick(); report != nil {
					if err := c.Broadcast(rateLimitTopic, report); err != nil {
						a.log.Debug("rate limit report not sent to every peer", "error", err)
					}
				}
			}
		}
	}()
}

// stopLimits stops the loop and waits for it. Idempotent.
func (a *Agent) stopLimits() {
	l := a.limits
	if l == nil {
		return
	}
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}
