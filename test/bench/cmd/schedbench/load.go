package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// rec is one request as the load generator saw it. Times are offsets from
// the run's start.
type rec struct {
	start, end time.Duration
	node       string // X-Backend of the answer ("" if none)
	lmNode     string // X-Loadmesh-Node of the answer
	status     int    // 0 on a transport error or timeout
	err        string
}

func (r rec) ok() bool { return r.status == http.StatusOK && r.err == "" }

// loadRun is one closed-loop run.
type loadRun struct {
	t0      time.Time
	seconds float64
	recs    []rec
	capped  bool // the request cap was reached
}

// loadConfig bounds a closed-loop run: conns workers, each sending its
// next GET as soon as the previous answer is read, starting no request
// after duration, each request bounded by timeout, and at most maxRequests
// in all.
type loadConfig struct {
	url         string
	conns       int
	duration    time.Duration
	timeout     time.Duration
	maxRequests int64
}

// runLoad is the load generator used for every row, loadmesh and HAProxy
// alike: a fixed number of workers in a closed loop over HTTP/1.1
// keep-alive connections (one per worker), recording for every request its
// start, end, status and the backend that answered (X-Backend).
// Requests in flight when the duration ends are waited for (each is bounded
// by its timeout), so that every request sent has an outcome.
func runLoad(ctx context.Context, lc loadConfig) loadRun {
	tr := &http.Transport{
		MaxIdleConnsPerHost: lc.conns,
		MaxConnsPerHost:     lc.conns,
		DisableCompression:  true,
		Proxy:               nil,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: lc.timeout}
	if lc.maxRequests <= 0 {
		lc.maxRequests = 5_000_000
	}
	var (
		sent atomic.Int64
		mu   sync.Mutex
		all  []rec
		wg   sync.WaitGroup
	)
	t0 := time.Now()
	stopAt := t0.Add(lc.duration)
	for range lc.conns {
		wg.Go(func() {
			local := make([]rec, 0, 4096)
			for ctx.Err() == nil && time.Now().Before(stopAt) && sent.Add(1) <= lc.maxRequests {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, lc.url, nil)
				r := rec{start: time.Since(t0)}
				resp, err := client.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					r.status = resp.StatusCode
					r.node = resp.Header.Get("X-Backend")
					r.lmNode = resp.Header.Get("X-Loadmesh-Node")
				}
				r.end = time.Since(t0)
				if err != nil {
					if ctx.Err() != nil {
						break // interrupted: not an outcome
					}
					r.err = errText(err)
				}
				local = append(local, r)
			}
			mu.Lock()
			all = append(all, local...)
			mu.Unlock()
		})
	}
	wg.Wait()
	run := loadRun{t0: t0, seconds: time.Since(t0).Seconds(), recs: all, capped: sent.Load() > lc.maxRequests}
	slices.SortFunc(all, func(a, b rec) int { return int(a.start - b.start) })
	return run
}

func errText(err error) string {
	var te interface{ Timeout() bool }
	if errors.As(err, &te) && te.Timeout() {
		return "timeout"
	}
	s := err.Error()
	if len(s) > 160 {
		s = s[:160]
	}
	return s
}

// stats summarises a run: requests answered with 200, failures (anything
// else), requests/s over the run, p50/p99 latency of all requests, and
// answers per backend.
type stats struct {
	requests, failed int64
	rps              float64
	p50, p99         time.Duration
	p99Fast          time.Duration // p99 of the answers not from c (the slow backend)
	byNode           map[string]int64
	mismatch         int64 // X-Loadmesh-Node present and different from X-Backend
	// estimates is the ingress's median latency estimate per serving
	// agent during the run (loadmesh rows only).
	estimates map[string]time.Duration
	// gossiped is the median latency each agent gossiped about its own
	// backend during the run (loadmesh rows only).
	gossiped map[string]time.Duration
}

func summarize(run loadRun) stats {
	s := stats{byNode: map[string]int64{}}
	lat := make([]time.Duration, 0, len(run.recs))
	var fast []time.Duration
	for _, r := range run.recs {
		lat = append(lat, r.end-r.start)
		if !r.ok() {
			s.failed++
			continue
		}
		if r.node != "c" {
			fast = append(fast, r.end-r.start)
		}
		s.requests++
		s.byNode[r.node]++
		if r.lmNode != "" && r.lmNode != r.node {
			s.mismatch++
		}
	}
	if run.seconds > 0 {
		s.rps = float64(s.requests) / run.seconds
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		s.p50, s.p99 = pct(lat, 0.50), pct(lat, 0.99)
	}
	slices.Sort(fast)
	s.p99Fast = pct(fast, 0.99)
	return s
}

// pct is the nearest-rank percentile of sorted latencies.
func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(len(sorted)-1, i))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func fmtDur(d time.Duration) string { return fmt.Sprintf("%.3f", ms(d)) }
