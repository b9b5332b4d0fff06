package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// phase is one stretch of constant-rate load. It lasts at least min and at
// most max; in between it ends as soon as until (if set) returns true.
type phase struct {
	name     string
	rate     float64 // requests/s, over all targets
	min, max time.Duration
	until    func() bool
}

// rec is one request as the load generator saw it; times are offsets from
// the run's t0.
type rec struct {
	start, end time.Duration
	phase      int
	node       string // X-Loadmesh-Node of the answer
	status     int    // 0 on a transport error
	err        string // error kind; "" for an answer
}

func (r rec) failed() bool { return r.err != "" || r.status < 200 || r.status > 299 }

// failKind names a failed request's kind: its HTTP status or error class.
func (r rec) failKind() string {
	if r.err != "" {
		return r.err
	}
	return fmt.Sprintf("HTTP %d", r.status)
}

// loadGen is an open-loop generator: requests leave on a fixed schedule
// (rate per phase) whatever the answers do, round-robin over the targets,
// each in its own goroutine. It is bounded in time (the phases' max), in
// requests (maxRequests) and in concurrency (maxInflight: a request that
// would exceed it is not sent and counted as such, so the schedule is
// never delayed).
type loadGen struct {
	targets     []string // base URLs
	path        string   // path and query of every request
	timeout     time.Duration
	maxInflight int
	maxRequests int
}

// loadResult is what one run of the generator produced.
type loadResult struct {
	recs        []rec
	notSent     int             // over maxInflight or maxRequests
	phaseStarts []time.Duration // offsets from t0
	end         time.Duration
}

func (g loadGen) run(ctx context.Context, t0 time.Time, phases []phase) loadResult {
	tr := &http.Transport{
		Proxy:               nil,
		MaxIdleConns:        4 * g.maxInflight,
		MaxIdleConnsPerHost: g.maxInflight,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: g.timeout}
	var (
		mu      sync.Mutex
		res     loadResult
		wg      sync.WaitGroup
		sent    int
		rr      int
		inflght atomic.Int64
	)
	res.recs = make([]rec, 0, 32768)
	send := func(pi int) {
		if sent >= g.maxRequests || inflght.Load() >= int64(g.maxInflight) {
			res.notSent++
			return
		}
		sent++
		url := g.targets[rr%len(g.targets)] + g.path
		rr++
		inflght.Add(1)
		wg.Go(func() {
			defer inflght.Add(-1)
			r := rec{start: time.Since(t0), phase: pi}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			resp, err := client.Do(req)
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				r.status = resp.StatusCode
				r.node = resp.Header.Get("X-Loadmesh-Node")
			}
			r.end = time.Since(t0)
			if err != nil {
				if ctx.Err() != nil {
					return // interrupted by the user: no outcome
				}
				r.err = errKind(err)
			}
			mu.Lock()
			res.recs = append(res.recs, r)
			mu.Unlock()
		})
	}
	for pi, ph := range phases {
		start := time.Now()
		res.phaseStarts = append(res.phaseStarts, start.Sub(t0))
		n := 0
		for ctx.Err() == nil {
			el := time.Since(start)
			if el >= ph.max || (el >= ph.min && (ph.until == nil || ph.until())) {
				break
			}
			for due := int(el.Seconds()*ph.rate) + 1; n < due; n++ {
				send(pi)
			}
			next := start.Add(time.Duration(float64(n) / ph.rate * float64(time.Second)))
			time.Sleep(min(max(time.Until(next), 0), 5*time.Millisecond))
		}
	}
	res.end = time.Since(t0)
	wg.Wait()
	return res
}

// errKind classifies a transport error.
func errKind(err error) string {
	var te interface{ Timeout() bool }
	switch {
	case errors.As(err, &te) && te.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "EOF"
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	if len(s) > 60 {
		s = s[:60]
	}
	return s
}
