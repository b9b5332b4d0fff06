package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// monitor polls the leader's API during a run: its view of every member's
// gossiped load (GET /v1/members) and its last autoscaler decision (GET
// /v1/autoscaler) every 50 ms, and the plan (GET /v1/plan) every 100 ms.
type monitor struct {
	c      *cluster
	leader string
	t0     time.Time
	base   []string // active nodes at the start of the run

	mu        sync.Mutex
	members   []loadSample
	decisions []decision // distinct decisions, in order
	plans     []planSample

	scaledOut atomic.Bool  // the plan had more than len(base) active nodes
	settledAt atomic.Int64 // since scaledOut: ns after t0 when the plan was back at base size with none draining; 0 if not
	wg        sync.WaitGroup
}

// loadSample is the leader's view of the members' in-flight utilisation.
type loadSample struct {
	at   time.Duration      // response received, after t0
	util map[string]float64 // inflight ÷ capacity per member
}

type planSample struct {
	at time.Duration
	p  planView
}

func newMonitor(c *cluster, leader string, t0 time.Time, base []string) *monitor {
	return &monitor{c: c, leader: leader, t0: t0, base: base}
}

func (m *monitor) start(ctx context.Context) {
	every := func(d time.Duration, f func()) {
		m.wg.Go(func() {
			t := time.NewTicker(d)
			defer t.Stop()
			for {
				f()
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		})
	}
	every(50*time.Millisecond, func() {
		ms, ok := m.c.members(m.leader)
		if !ok {
			return
		}
		s := loadSample{at: time.Since(m.t0), util: map[string]float64{}}
		for _, x := range ms {
			if x.Load != nil && x.Load.Capacity > 0 {
				s.util[x.Name] = float64(x.Load.Inflight) / float64(x.Load.Capacity)
			}
		}
		m.mu.Lock()
		m.members = append(m.members, s)
		m.mu.Unlock()
	})
	every(50*time.Millisecond, func() {
		d, ok := m.c.decision(m.leader)
		if !ok {
			return
		}
		m.mu.Lock()
		if n := len(m.decisions); n == 0 || !m.decisions[n-1].Time.Equal(d.Time) {
			m.decisions = append(m.decisions, d)
		}
		m.mu.Unlock()
	})
	every(100*time.Millisecond, func() {
		p, err := m.c.plan(m.leader)
		if err != nil {
			return
		}
		at := time.Since(m.t0)
		act, drn := len(p.active()), len(p.inState("draining"))
		if act > len(m.base) {
			m.scaledOut.Store(true)
		}
		if m.scaledOut.Load() && m.settledAt.Load() == 0 && act == len(m.base) && drn == 0 {
			m.settledAt.Store(int64(at))
		}
		m.mu.Lock()
		m.plans = append(m.plans, planSample{at: at, p: p})
		m.mu.Unlock()
	})
}

func (m *monitor) stop() { m.wg.Wait() }

// settledFor reports whether the plan has been back at its starting size,
// nothing draining, for at least d since it scaled out.
func (m *monitor) settledFor(d time.Duration) bool {
	at := m.settledAt.Load()
	return at > 0 && time.Since(m.t0) >= time.Duration(at)+d
}

// meanUtil is the mean utilisation of the given nodes in one sample, and
// false if the sample lacks any of them.
func (s loadSample) meanUtil(nodes []string) (float64, bool) {
	sum := 0.0
	for _, n := range nodes {
		u, ok := s.util[n]
		if !ok {
			return 0, false
		}
		sum += u
	}
	return sum / float64(len(nodes)), len(nodes) > 0
}
