package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"time"
)

// loadtestLoader drives `loadmesh loadtest --rate 0 --json`, loadmesh's
// own load generator (vegeta as the engine), when wrk is not installed.
// With --rate 0 it is a closed loop of --connections workers, each
// sending its next request when the previous answer arrived, like wrk.
// Bounded by --duration and --max-requests, and by a context deadline on
// the process.
type loadtestLoader struct {
	bin         string
	maxRequests int64
}

func (l loadtestLoader) name() string {
	return "loadmesh loadtest --rate 0 (vegeta engine, closed loop)"
}

func (l loadtestLoader) run(ctx context.Context, url string, conns int, d time.Duration) (loadResult, error) {
	maxReq := l.maxRequests
	if maxReq <= 0 {
		maxReq = 5_000_000
	}
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, l.bin, "loadtest", url, "--json", "--rate", "0",
		"--connections", strconv.Itoa(conns), "--duration", d.String(), "--timeout", "5s",
		"--max-requests", strconv.FormatInt(maxReq, 10))
	out, err := cmd.Output()
	if err != nil {
		return loadResult{}, fmt.Errorf("loadmesh loadtest %s: %w", url, err)
	}
	return parseLoadtest(out)
}

// parseLoadtest reads the fields lmbench reports from loadtest's --json
// document.
func parseLoadtest(out []byte) (loadResult, error) {
	var rep struct {
		Requests        int64   `json:"requests"`
		Succeeded       int64   `json:"succeeded"`
		DurationSeconds float64 `json:"duration_seconds"`
		WaitSeconds     float64 `json:"wait_seconds"`
		Latency         struct {
			P50 float64 `json:"p50"`
			P99 float64 `json:"p99"`
		} `json:"latency_seconds"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		return loadResult{}, fmt.Errorf("loadmesh loadtest output: %w", err)
	}
	if rep.Succeeded == 0 {
		return loadResult{}, fmt.Errorf("loadmesh loadtest: none of %d requests succeeded", rep.Requests)
	}
	secs := rep.DurationSeconds + rep.WaitSeconds
	return loadResult{
		Requests: rep.Requests,
		Seconds:  secs,
		RPS:      float64(rep.Requests) / secs,
		P50:      time.Duration(rep.Latency.P50 * 1e9),
		P99:      time.Duration(rep.Latency.P99 * 1e9),
		Errors:   rep.Requests - rep.Succeeded,
	}, nil
}
