package agent

import (
	"fmt"
	"math"
	"net/url"
	"time"

	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/transport"
)

// setupScheduling builds the load meter, the scheduler, the health checker
// and the peer view. It starts nothing.
func (a *Agent) setupScheduling(backendURL string) error {
	meter, err := scheduler.NewMeter(scheduler.DefaultMeterConfig(), a.now)
	if err != nil {
		return err
	}
	scfg := scheduler.DefaultConfig()
	scfg.Policy = a.cfg.Policy
	scfg.Balance.Zone = a.cfg.Zone
	sched, err := scheduler.New(scfg, scheduler.Deps{Registerer: a.reg, LocalInflight: meter.Inflight})
	if err != nil {
		return err
	}
	a.sys = newSysLoad()
	a.healthCh = make(chan struct{}, 1)
	health := func() bool { return true }
	if a.backend != nil {
		a.local = meteredHandler{next: a.backend, meter: meter}
		if a.cfg.HealthPath != "" {
			u, _ := url.Parse(backendURL)
			u = u.JoinPath(a.cfg.HealthPath)
			hc := transport.DefaultHealthConfig()
			hc.URL = u.String()
			hc.Interval, hc.Timeout, hc.Rise, hc.Fall = a.cfg.HealthInterval, a.cfg.HealthTimeout, a.cfg.HealthRise, a.cfg.HealthFall
			a.health, err = transport.NewHealthChecker(hc, a.log, func(bool) {
				// Announce a change at once rather than at the next round.
				select {
				case a.healthCh <- struct{}{}:
				default:
				}
			})
			if err != nil {
				return fmt.Errorf("health check: %w", err)
			}
			health = a.health.Healthy
		}
	}
	a.peers = &peerView{
		self: a.cfg.Name, zone: a.cfg.Zone, capacity: a.cfg.Capacity, serving: a.backend != nil,
		sched: sched, loads: scheduler.NewLoadTable(a.now), meter: meter, health: health, log: a.log,
	}
	if a.cfg.HashHeader != "" || a.cfg.HashCookie != "" {
		a.peers.hashKey = hashKeyFunc(a.cfg.HashHeader, a.cfg.HashCookie)
	}
	return nil
}

// publishServices gossips the state of the TCP services this node
// offers when it changed (or when force).
func (a *Agent) publishServices(force bool) {
	if a.tcp == nil || a.cluster == nil {
		return
	}
	if m := a.services.gossipState(force); m != nil {
		if err := a.cluster.SetServices(m, a.cfg.LoadInterval); err != nil {
			a.log.Debug("publish tcp service state", "error", err)
		}
	}
}

// startLoadPublisher gossips this node's load summary every LoadInterval
// (and at once when backend health flips), skipping rounds in which
// nothing changed beyond quantisation, but at least every 4 intervals so
// peers can tell how fresh the figures are.
func (a *Agent) startLoadPublisher() {
	a.pubStop = make(chan struct{})
	a.pubWG.Add(1)
	go func() {
		defer a.pubWG.Done()
		t := time.NewTicker(a.cfg.LoadInterval)
		defer t.Stop()
		var last scheduler.Load
		var lastAt time.Time
		for {
			select {
			case <-a.pubStop:
				return
			case <-t.C:
			case <-a.healthCh:
				lastAt = time.Time{}
			}
			a.publishServices(lastAt.IsZero())
			cpu, mem := a.sys.sample()
			l := a.peers.meter.Load(a.cfg.Capacity, a.peers.health(), cpu, mem)
			q := l.Quantize()
			if unchanged(q, last) && time.Since(lastAt) < 4*a.cfg.LoadInterval {
				continue
			}
			if err := a.cluster.SetLoad(scheduler.EncodeLoad(l), a.cfg.LoadInterval); err != nil {
				a.log.Debug("publish load", "error", err)
				continue
			}
			last, lastAt = q, time.Now()
		}
	}()
}

// unchanged reports whether summary q says nothing new against last: the
// same figures, CPU and memory within one percentage point. (Their
// 0.0001 steps change every sample, which made every node republish
// every interval and spend its gossip budget on noise.)
func unchanged(q, last scheduler.Load) bool {
	near := func(a, b float64) bool { return math.Abs(a-b) < 0.01 }
	if !near(q.CPU, last.CPU) || !near(q.Mem, last.Mem) {
		return false
	}
	q.Version, q.CPU, q.Mem = last.Version, last.CPU, last.Mem
	return q == last
}
