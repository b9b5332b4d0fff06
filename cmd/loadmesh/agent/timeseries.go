package agent

import (
	"net/http"
	"sync"
	"time"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/store"
)

// seriesWindow is how much history GET /v1/timeseries covers: the
// dashboard's "last hour" chart.
const seriesWindow = time.Hour

// maxSeriesPoints bounds the ring whatever the sample interval.
const maxSeriesPoints = 3600

// SeriesPoint is one sample of the cluster's figures as this node sees
// them: gossiped load of the live members and the node count of its plan
// replica.
type SeriesPoint struct {
	Time time.Time `json:"t"`
	// RPS is the sum of the live members' gossiped requests/s.
	RPS float64 `json:"rps"`
	// P95Max and P95Mean are the worst and the mean p95 latency (seconds)
	// of the members that served requests; null when none did.
	P95Max  *float64 `json:"p95_max_seconds"`
	P95Mean *float64 `json:"p95_mean_seconds"`
	// Active is the number of nodes the plan lists as active (and not left).
	Active int `json:"active"`
	// Capacity is the sum of --capacity over active members whose load
	// summary this node has; Inflight their requests in flight.
	Capacity int `json:"capacity"`
	Inflight int `json:"inflight"`
	// Source is "history" for a point taken from the replicated per-minute
	// demand history (which has no capacity or in-flight figures), empty
	// for this node's own samples.
	Source string `json:"source,omitempty"`
}

// Series is the body of GET /v1/timeseries.
type Series struct {
	// Node is the node that took the samples.
	Node            string        `json:"node"`
	IntervalSeconds float64       `json:"interval_seconds"`
	WindowSeconds   float64       `json:"window_seconds"`
	Points          []SeriesPoint `json:"points"`
}

// seriesRing keeps the newest samples, oldest overwritten first. It is not
// safe for concurrent use; seriesSampler guards it.
type seriesRing struct {
	buf  []SeriesPoint
	next int
	full bool
}

func newSeriesRing(n int) *seriesRing { return &seriesRing{buf: make([]SeriesPoint, n)} }

func (r *seriesRing) add(p SeriesPoint) {
	r.buf[r.next] = p
	r.next++
	if r.next == len(r.buf) {
		r.next, r.full = 0, true
	}
}

// points returns a copy of the samples, oldest first.
func (r *seriesRing) points() []SeriesPoint {
	if !r.full {
		return append([]SeriesPoint(nil), r.buf[:r.next]...)
	}
	out := make([]SeriesPoint, 0, len(r.buf))
	out = append(out, r.buf[r.next:]...)
	return append(out, r.buf[:r.next]...)
}

// seriesSampler takes a sample every interval on one goroutine of its own,
// started by start and ended (and waited for) by stop. points may be
// called from any goroutine. sample returns false when there is nothing to
// record yet.
type seriesSampler struct {
	interval time.Duration
	sample   func(now time.Time) (SeriesPoint, bool)

	mu   sync.Mutex
	ring *seriesRing

	stopCh chan struct{}
	wg     sync.WaitGroup
}

func newSeriesSampler(interval time.Duration, sample func(time.Time) (SeriesPoint, bool)) *seriesSampler {
	n := int(seriesWindow / interval)
	n = min(max(n, 2), maxSeriesPoints)
	return &seriesSampler{interval: interval, sample: sample, ring: newSeriesRing(n)}
}

func (s *seriesSampler) record(now time.Time) {
	p, ok := s.sample(now)
	if !ok {
		return
	}
	s.mu.Lock()
	s.ring.add(p)
	s.mu.Unlock()
}

func (s *seriesSampler) points() []SeriesPoint {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ring.points()
}

func (s *seriesSampler) start() {
	s.stopCh = make(chan struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.record(time.Now())
		t := time.NewTicker(s.interval)
		defer t.Stop()
		for {
			select {
			case <-s.stopCh:
				return
			case now := <-t.C:
				s.record(now)
			}
		}
	}()
}

// stop ends the goroutine and waits for it. Safe to call more than once
// and without start.
func (s *seriesSampler) stop() {
	if s == nil || s.stopCh == nil {
		return
	}
	close(s.stopCh)
	s.wg.Wait()
	s.stopCh = nil
}

// startSeries starts the dashboard's sampler; stopSeries (from close)
// ends it before the cluster shuts down, since it reads membership.
func (a *Agent) startSeries() {
	a.series = newSeriesSampler(a.seriesInterval(), a.seriesPoint)
	a.series.start()
}

func (a *Agent) stopSeries() { a.series.stop() }

// seriesInterval is Config.SeriesInterval, or its default when unset.
func (a *Agent) seriesInterval() time.Duration {
	if a.cfg.SeriesInterval == 0 {
		return DefaultConfig().SeriesInterval
	}
	return a.cfg.SeriesInterval
}

// seriesPoint samples the cluster's figures now; false until this node's
// replica holds a plan (a joining node would record an empty cluster).
func (a *Agent) seriesPoint(now time.Time) (SeriesPoint, bool) {
	plan := a.fsm.Plan()
	if plan.Version == 0 {
		return SeriesPoint{}, false
	}
	active := map[string]bool{}
	for name, n := range plan.Nodes {
		if n.State == scheduler.StateActive && n.Left.IsZero() {
			active[name] = true
		}
	}
	p := SeriesPoint{Time: now.UTC(), Active: len(active)}
	var p95s []float64
	for _, m := range a.cluster.Members() {
		if m.Status != cluster.StatusAlive && m.Status != cluster.StatusSuspect {
			continue
		}
		var rps, p95 float64
		var inflight, capacity int
		if m.Name == a.cfg.Name {
			if a.backend == nil {
				continue
			}
			st := a.peers.meter.Stats()
			rps, p95, inflight, capacity = st.RPS, st.P95.Seconds(), a.peers.meter.Inflight(), a.cfg.Capacity
		} else {
			l, _, ok := a.peers.loads.Get(m.Name)
			if !ok {
				continue
			}
			rps, p95, inflight, capacity = l.RPS, l.P95.Seconds(), l.Inflight, l.Capacity
		}
		p.RPS += rps
		if rps > 0 && p95 > 0 {
			p95s = append(p95s, p95)
		}
		if active[m.Name] {
			p.Capacity += capacity
			p.Inflight += inflight
		}
	}
	if len(p95s) > 0 {
		worst, sum := 0.0, 0.0
		for _, v := range p95s {
			worst, sum = max(worst, v), sum+v
		}
		mean := sum / float64(len(p95s))
		p.P95Max, p.P95Mean = &worst, &mean
	}
	return p, true
}

// timeseries is the last hour of samples, led by points of the replicated
// per-minute demand history from before this node's first sample (so a
// freshly started agent still shows the cluster's recent past).
func (a *Agent) timeseries(now time.Time) Series {
	from := now.Add(-seriesWindow)
	return Series{
		Node:            a.cfg.Name,
		IntervalSeconds: a.seriesInterval().Seconds(),
		WindowSeconds:   seriesWindow.Seconds(),
		Points:          mergeSeries(a.fsm.History(from), a.series.points(), from, now),
	}
}

// mergeSeries returns the samples taken in [from, now], preceded by the
// history minutes that start at or after from and end before the first
// sample (or before now when there are no samples). hist and samples are
// oldest first; so is the result, which is never nil.
func mergeSeries(hist []store.DemandPoint, samples []SeriesPoint, from, now time.Time) []SeriesPoint {
	until := now
	if len(samples) > 0 {
		until = samples[0].Time
	}
	out := []SeriesPoint{}
	for _, h := range hist {
		if h.Minute.Before(from) {
			continue
		}
		if h.Minute.Add(time.Minute).After(until) {
			break
		}
		sp := SeriesPoint{Time: h.Minute.UTC(), RPS: h.RPS, Active: h.Active, Source: "history"}
		if h.P95 > 0 {
			p95 := h.P95
			sp.P95Max = &p95
		}
		out = append(out, sp)
	}
	for _, p := range samples {
		if !p.Time.Before(from) && !p.Time.After(now) {
			out = append(out, p)
		}
	}
	return out
}

func (a *Agent) registerSeriesAPI(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/timeseries", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.timeseries(time.Now()))
	})
}
