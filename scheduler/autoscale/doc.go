// Package autoscale decides how many nodes of the capacity plan should be
// active, and which: target tracking on several metrics, scheduled limits,
// predictive scaling from a seasonal forecast, zone-, cost- and
// carbon-aware node selection, and automatic rollback. It also replays
// demand traces against that same code with a virtual clock (Simulate).
//
// # What it owns, and what it does not
//
// It is pure logic, like its parent package scheduler, whose vocabulary
// (NodeState) it uses. An Autoscaler is driven from outside: the Raft
// leader calls Step once per control interval with the time and an
// Observation, and gets a Decision back. It reads no clock, starts no
// goroutine, opens no socket and touches no disk, and it never imports
// memberlist, raft or quic-go (`make deps-check`). Its third-party imports
// are robfig/cron (schedules) and go.yaml.in/yaml (ParseSpec); the chart
// writer lives in the subpackage chart so that gonum/plot is not linked
// into the agent.
//
// It does not apply decisions, run hooks, store history or state, or know
// about the leader: the caller proposes Decision.Activate (standby →
// active) and Decision.Drain (active → draining) through Raft, runs
// Decision.Hooks, appends Decision.History to the replicated history and
// replicates State().
//
// # Concurrency
//
// An Autoscaler, a Forecaster and a History are not safe for concurrent
// use: the leader loop owns them. Spec, Decision, State and the other
// values are plain data, safe to copy and hand to other goroutines.
//
// # Usage
//
//	spec, err := autoscale.ParseSpec(planFile)     // strict YAML, validated
//	a, err := autoscale.New(spec)
//	a.Restore(replicatedState, replicatedHistory)  // on gaining leadership
//	for each tick of spec.Interval:
//	    d := a.Step(now, observation)              // pure; never blocks
//	    if !d.DryRun && d.Changes() { propose d.Activate / d.Drain; run d.Hooks }
//	    append d.History; save a.State()           // for the next leader
//	    record d (API, audit log, metrics: d.Forecast.NextRPS, d.Forecast.MAPE, …)
//
// On a plan-file change, SetSpec swaps the policy and keeps the state.
//
// # The algorithm, per Step
//
//  1. Demand (Observation.DemandRPS, or the ready nodes' RPS) is folded into
//     a per-minute aggregate; finished minutes go to the History ring
//     (14 days by default) and the Forecaster, and out in Decision.History.
//  2. Limits: min/max active, raised or lowered by active Schedules (cron
//     in a time zone), never below the sum of the zones' minimums.
//  3. Target tracking as Kubernetes' HPA: each metric (in-flight
//     utilisation, CPU, memory, requests/s per node) recommends
//     ceil(total usage ÷ target) nodes, with no change inside ±Tolerance;
//     p95 latency above its SLO recommends ceil(active × p95 ÷ SLO); the
//     largest wins. Nodes still starting count as capacity with no usage.
//  4. Predictive (when enabled and MinHistory exists): the Holt-Winters
//     forecast of the busiest minute over the horizon, plus Margin × its
//     tracked mean absolute error, in nodes; taken when larger.
//  5. Stabilisation as HPA: scale out to the lowest recommendation of the
//     scale-out window (default 0s: at once), scale in to the highest of
//     the scale-in window (default 5m); then step limits
//     (max(nodes, percent) per step); then min/max, which override them.
//  6. Rollback: within Rollback.Watch of a scale-in, a broken SLO (mean
//     p95 above target or in-flight utilisation at 100 %) restores the
//     count from before it and blocks scale-in for Rollback.Hold.
//  7. Selection: zones over their max drain, zones under their min fill;
//     activations go to the zone with the fewest active nodes, cheapest
//     score first; drains come from the zone with the most, spot first,
//     then the highest score; score = cost_per_hour + carbon_price × kg
//     CO2e per hour. Wanted nodes with no standby to activate become a
//     per-zone shortfall and, if configured, a scale_out hook request
//     (remembered as pending until its nodes join or it times out).
//     Unhealthy active nodes are drained and replaced after ReplaceAfter;
//     idle standby nodes beyond Standby.Keep are released.
//
// In ModeManual Step only measures; in ModeDryRun it decides but marks
// the Decision DryRun and records nothing it did not do.
//
// docs/autoscaling.md explains each part and gives the simulation results.
package autoscale
