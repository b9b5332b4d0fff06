package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// loadResult is one load run against one URL.
type loadResult struct {
	Requests int64
	Seconds  float64
	RPS      float64
	P50, P99 time.Duration
	Errors   int64 // non-2xx/3xx answers, socket errors and timeouts
}

// loader runs closed-loop load: conns connections, each sending the next
// request as soon as the previous answer arrived, for d at most.
type loader interface {
	name() string
	run(ctx context.Context, url string, conns int, d time.Duration) (loadResult, error)
}

// wrkLoader drives wrk (https://github.com/wg/wrk), which is bounded by
// its -d duration.
type wrkLoader struct {
	path    string
	threads int
}

func (w wrkLoader) name() string {
	out, _ := exec.Command(w.path, "-v").CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	line, _, _ = strings.Cut(line, " Copyright")
	line, _, _ = strings.Cut(line, " [")
	return fmt.Sprintf("%s (-t%d, --latency)", strings.TrimSpace(line), w.threads)
}

var (
	wrkRPS      = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	wrkTotal    = regexp.MustCompile(`(\d+) requests in ([\d.]+)(us|ms|s|m)`)
	wrkPct      = regexp.MustCompile(`(?m)^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s|m)\s*$`)
	wrkNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses:\s+(\d+)`)
	wrkSockErrs = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

func (w wrkLoader) run(ctx context.Context, url string, conns int, d time.Duration) (loadResult, error) {
	threads := min(w.threads, conns)
	secs := max(1, int(d.Round(time.Second)/time.Second))
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, w.path, "-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns),
		"-d", strconv.Itoa(secs)+"s", "--timeout", "5s", "--latency", url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return loadResult{}, fmt.Errorf("wrk %s: %w: %s", url, err, out)
	}
	return parseWrk(string(out))
}

func parseWrk(out string) (loadResult, error) {
	var r loadResult
	m := wrkRPS.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("wrk output without Requests/sec: %s", out)
	}
	r.RPS, _ = strconv.ParseFloat(m[1], 64)
	if m := wrkTotal.FindStringSubmatch(out); m != nil {
		r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
		r.Seconds = parseDur(m[2], m[3]).Seconds()
	}
	for _, m := range wrkPct.FindAllStringSubmatch(out, -1) {
		v := parseDur(m[2], m[3])
		if m[1] == "50" {
			r.P50 = v
		} else {
			r.P99 = v
		}
	}
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		r.Errors += n
	}
	if m := wrkSockErrs.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.ParseInt(s, 10, 64)
			r.Errors += n
		}
	}
	if r.P50 == 0 || r.P99 == 0 {
		return r, fmt.Errorf("wrk output without latency distribution: %s", out)
	}
	return r, nil
}

func parseDur(num, unit string) time.Duration {
	f, _ := strconv.ParseFloat(num, 64)
	switch unit {
	case "us":
		return time.Duration(f * float64(time.Microsecond))
	case "ms":
		return time.Duration(f * float64(time.Millisecond))
	case "m":
		return time.Duration(f * float64(time.Minute))
	default:
		return time.Duration(f * float64(time.Second))
	}
}

// goLoader is lmbench's own closed-loop load generator (-loadgen go;
// without wrk, auto now picks loadtestLoader). It costs more CPU per request than wrk, which on a
// small machine takes CPU from the system under test, so its absolute
// figures are lower; ratios within one run stay comparable.
type goLoader struct{ maxRequests int64 }

func (goLoader) name() string { return "built-in Go load generator (net/http, keep-alive)" }

func (g goLoader) run(ctx context.Context, url string, conns int, d time.Duration) (loadResult, error) {
	tr := &http.Transport{
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		DisableCompression:  true,
		Proxy:               nil,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var (
		sent   atomic.Int64
		errs   atomic.Int64
		mu     sync.Mutex
		lat    []time.Duration
		wg     sync.WaitGroup
		budget = g.maxRequests
	)
	if budget <= 0 {
		budget = 5_000_000
	}
	start := time.Now()
	for range conns {
		wg.Go(func() {
			local := make([]time.Duration, 0, 4096)
			for ctx.Err() == nil && sent.Add(1) <= budget {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						errs.Add(1)
					}
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode >= 400 {
					errs.Add(1)
				}
				local = append(local, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if len(lat) == 0 {
		return loadResult{}, fmt.Errorf("no request to %s succeeded", url)
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	return loadResult{
		Requests: int64(len(lat)),
		Seconds:  elapsed.Seconds(),
		RPS:      float64(len(lat)) / elapsed.Seconds(),
		P50:      pct(0.50),
		P99:      pct(0.99),
		Errors:   errs.Load(),
	}, nil
}
