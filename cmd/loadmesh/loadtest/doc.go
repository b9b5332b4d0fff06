// Package loadtest is the engine behind `loadmesh loadtest`: an open-loop
// HTTP load generator that sends requests at a given rate (optionally
// ramped), and a report of what came back — latency percentiles and a
// histogram, errors grouped by kind, and how the answers were spread over
// loadmesh nodes according to their X-Loadmesh-Node header.
//
// The pacing and the worker pool are github.com/tsenart/vegeta/v12's
// Attacker: it keeps the rate independent of the target's latency (a slow
// target gets more concurrent requests, up to Config.MaxWorkers, instead
// of fewer requests, so latency is not hidden by coordinated omission),
// which is what an operator validating a known peak needs. This package
// adds a piecewise-linear pacer for ramps, its own HTTP transport (to
// bound connections, time each request out and classify failures with
// errors.Is rather than by message), and a streaming aggregator: results
// are folded into counters and a t-digest as they arrive and never kept,
// so memory stays flat however long the run.
//
// It owns no global state. Run starts vegeta's goroutines and its own
// aggregation and progress goroutines, and waits for all of them before it
// returns; cancelling Run's context stops the attack early and still
// returns the report of what was sent (Report.Interrupted).
//
//	cfg := loadtest.DefaultConfig()
//	cfg.URL = "http://127.0.0.1:8080/"
//	cfg.Rate, cfg.Duration = 200, 10*time.Second
//	rep, err := loadtest.Run(ctx, cfg, nil)
//	rep.WriteText(os.Stdout)
package loadtest
