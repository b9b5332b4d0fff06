package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// never marks an event that did not happen.
const never = time.Duration(-1)

// runResult is one run's measurements. Times are offsets from the start of
// the load (t0); never when the event was not seen.
type runResult struct {
	n             int
	leader        string
	leaderRole    string // active or standby at the start
	leaderChanged bool
	base, standby []string // active and standby nodes at the start

	highAt, dropAt time.Duration // start of the load step and of the fall
	lowUtil        float64       // mean of the leader's view of the base nodes' utilisation, first phase
	lowMax         float64       // its highest sample
	breachUtil     float64       // the first breaching sample's mean utilisation
	outUtil        float64       // mean utilisation over every active node after the scale-out, high phase

	visible  time.Duration // last sample before the leader's view showed the breach
	seenAt   time.Duration // first sample that showed it
	decided  time.Duration // first autoscaler decision with ratio > 1+tolerance
	activate time.Duration // first standby node active in the plan (Since)
	serve    time.Duration // first answer (received) from a formerly standby node
	serveAll time.Duration // every formerly standby node has answered
	maxAct   int           // most active nodes seen in the plan

	drain1, drainAll time.Duration // first and last autoscaler drain after the fall (plan Since)
	lastKeep         time.Duration // last decision before drain1 recommending every active node (more than len(base))
	standbyAll       time.Duration // every drained node back to standby
	premature        []string      // plan changes at odd times

	requests, failed, notSent int
	fails                     map[string]int
	byNode                    map[string]int
	standbyEarly              int // answers from a standby node before its activation
}

// valid reports whether the run measured a reaction: no standby node was
// activated before the step (a noise spike in the low phase can do that).
func (r runResult) valid() bool { return r.activate != never && r.activate >= r.highAt }

func (r runResult) reaction() time.Duration {
	if !r.valid() {
		return never
	}
	return diff(r.serve, r.visible)
}

func (r runResult) scaleIn() time.Duration {
	if r.drain1 == never {
		return never
	}
	return r.drain1 - r.dropAt
}

// planYAML is the plan file applied to the cluster.
func planYAML(cfg config, mode string) []byte {
	return fmt.Appendf(nil, `mode: %s
interval: %s
limits: {min_active: 2, max_active: 4}
targets: {inflight_utilisation: %g}
tolerance: %g
scale_out: {stabilisation: 0s, max_step_nodes: 4, max_step_percent: 100}
scale_in: {stabilisation: %s, max_step_nodes: 1, max_step_percent: 10}
`, mode, cfg.interval, cfg.target, cfg.tolerance, cfg.stabilisation)
}

func (cfg config) rate(util float64, nodes int) float64 {
	return util * float64(cfg.capacity*nodes) / cfg.sleep.Seconds()
}

// runOnce starts a fresh cluster, makes two nodes standby, applies the
// plan, runs low → high → low load and measures.
func runOnce(ctx context.Context, cfg config, n int) (res runResult, err error) {
	res = runResult{n: n}
	c, err := startCluster(ctx, cfg, filepath.Join(cfg.workDir, fmt.Sprintf("run%d", n)))
	if err != nil {
		return res, err
	}
	defer c.stop()
	// A manual-mode plan first, so that the leader's autoscaler loop runs
	// at the plan's interval (with no plan it looks every 15 s) but
	// decides nothing while two nodes are drained by hand.
	if err := c.post(ctx, "a", "/v1/plan?reason=reactbench+setup", "application/yaml", planYAML(cfg, "manual")); err != nil {
		return res, err
	}
	res.standby = []string{"c", "d"}
	for _, s := range res.standby {
		if err := c.post(ctx, "a", "/v1/nodes/"+s+"/drain", "application/json", []byte(`{"reason":"reactbench: standby pool"}`)); err != nil {
			return res, err
		}
	}
	err = c.waitFor(ctx, 45*time.Second, "c and d standby", func() (bool, error) {
		p, err := c.plan("a")
		return err == nil && slices.Equal(p.inState("standby"), res.standby) && len(p.active()) == 2, nil
	})
	if err != nil {
		return res, err
	}
	res.base = []string{"a", "b"}
	if err := c.post(ctx, "a", "/v1/plan?reason=reactbench", "application/yaml", planYAML(cfg, "auto")); err != nil {
		return res, err
	}
	applied := time.Now() // committed: every later decision is under this plan
	err = c.waitFor(ctx, 30*time.Second, "an autoscaler decision under the auto plan", func() (bool, error) {
		res.leader = c.leader()
		if res.leader == "" {
			return false, nil
		}
		d, ok := c.decision(res.leader)
		return ok && d.Time.After(applied) && d.Active == 2, nil
	})
	if err != nil {
		return res, err
	}
	res.leaderRole = "active"
	if slices.Contains(res.standby, res.leader) {
		res.leaderRole = "standby"
	}

	lowRate, highRate := cfg.rate(cfg.lowUtil, len(res.base)), cfg.rate(cfg.highUtil, len(res.base))
	gen := loadGen{path: "/?sleep=" + cfg.sleep.String(), timeout: cfg.reqTimeout, maxInflight: 2000, maxRequests: 400_000}
	for _, b := range res.base {
		gen.targets = append(gen.targets, c.agents[b].ingressURL())
	}
	t0 := time.Now()
	mon := newMonitor(c, res.leader, t0, res.base)
	mctx, mcancel := context.WithCancel(ctx)
	mon.start(mctx)
	// The run started just after a decision; a random extra part of an
	// interval puts the step at a random phase of the control loop, as a
	// real load step would be.
	low := cfg.low + rand.N(cfg.interval)
	lr := gen.run(ctx, t0, []phase{
		{name: "low", rate: lowRate, min: low, max: low},
		{name: "high", rate: highRate, min: cfg.high, max: cfg.high},
		{name: "low again", rate: lowRate, min: time.Second, max: cfg.stabilisation + 30*time.Second,
			until: func() bool { return mon.settledFor(cfg.tail) }},
	})
	mcancel()
	mon.stop()
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	if l := c.leader(); l != res.leader {
		res.leaderChanged = true
	}
	analyze(cfg, &res, t0, lr, mon)
	return res, nil
}

// analyze derives the run's figures from the requests and the monitor's
// samples.
func analyze(cfg config, res *runResult, t0 time.Time, lr loadResult, mon *monitor) {
	res.highAt, res.dropAt = lr.phaseStarts[1], lr.phaseStarts[2]
	thr := cfg.target * (1 + cfg.tolerance)

	// Plan: when each standby node became active, and the drains after the
	// fall.
	activeSince, drainSince, standbySince := map[string]time.Duration{}, map[string]time.Duration{}, map[string]time.Duration{}
	for _, ps := range mon.plans {
		res.maxAct = max(res.maxAct, len(ps.p.active()))
		for name, pn := range ps.p.Nodes {
			since := pn.Since.Sub(t0)
			switch {
			case pn.State == "active" && slices.Contains(res.standby, name):
				if _, ok := activeSince[name]; !ok {
					activeSince[name] = since
				}
			case pn.State == "draining":
				if _, ok := drainSince[name]; !ok {
					drainSince[name] = since
				}
			case pn.State == "standby":
				_, drained := drainSince[name]
				if _, ok := standbySince[name]; drained && !ok {
					standbySince[name] = since
				}
			}
		}
	}
	res.activate = never
	for name, s := range activeSince {
		if s < res.highAt {
			res.premature = append(res.premature, fmt.Sprintf("%s activated %.1fs before the step", name, (res.highAt-s).Seconds()))
		}
		if res.activate == never || s < res.activate {
			res.activate = s
		}
	}
	res.drain1, res.drainAll, res.standbyAll = never, never, never
	allStandby := true
	for name, s := range drainSince {
		if s < res.dropAt {
			res.premature = append(res.premature, fmt.Sprintf("%s drained %.1fs before the fall", name, (res.dropAt-s).Seconds()))
			continue
		}
		if res.drain1 == never || s < res.drain1 {
			res.drain1 = s
		}
		res.drainAll = max(res.drainAll, s)
		st, ok := standbySince[name]
		allStandby = allStandby && ok
		res.standbyAll = max(res.standbyAll, st)
	}
	if !allStandby {
		res.standbyAll = never
	}
	if len(drainSince) < res.maxAct-len(res.base) {
		res.drainAll, res.standbyAll = never, never // not back at the minimum
	}

	// The leader's view: utilisation of the base nodes, and when it first
	// showed the breach.
	var lowSum, lowN, outSum, outN float64
	res.visible, res.seenAt = never, never
	prev := time.Duration(0)
	all := slices.Concat(res.base, res.standby)
	outFrom := never // after every standby node is active, plus a second
	if len(activeSince) == len(res.standby) {
		outFrom = maxOf(activeSince) + time.Second
	}
	for _, s := range mon.members {
		u, ok := s.meanUtil(res.base)
		if !ok {
			continue
		}
		switch {
		case s.at >= 2*time.Second && s.at < res.highAt:
			lowSum, lowN = lowSum+u, lowN+1
			res.lowMax = max(res.lowMax, u)
		case s.at >= res.highAt && res.seenAt == never && u > thr:
			res.visible, res.seenAt, res.breachUtil = max(prev, res.highAt), s.at, u
		}
		if outFrom != never && s.at > outFrom && s.at < res.dropAt {
			if u, ok := s.meanUtil(all); ok {
				outSum, outN = outSum+u, outN+1
			}
		}
		prev = s.at
	}
	res.lowUtil, res.outUtil = lowSum/math.Max(lowN, 1), outSum/math.Max(outN, 1)

	res.decided, res.lastKeep = never, never
	for _, d := range mon.decisions {
		at := d.Time.Sub(t0)
		if res.decided == never && at >= res.highAt && at < res.dropAt && d.ratio() > 1+cfg.tolerance {
			res.decided = at
		}
		if res.drain1 != never && at < res.drain1 && d.Active > len(res.base) && d.Recommended >= d.Active {
			res.lastKeep = at
		}
		if at < res.highAt && len(d.Activate) > 0 {
			res.premature = append(res.premature, fmt.Sprintf("decision %.1fs before the step activated %d node(s): %s",
				(res.highAt-at).Seconds(), len(d.Activate), d.Reason))
		}
	}

	// Requests.
	res.fails, res.byNode = map[string]int{}, map[string]int{}
	res.serve, res.serveAll = never, never
	first := map[string]time.Duration{}
	for _, r := range lr.recs {
		res.requests++
		if r.failed() {
			res.failed++
			res.fails[r.failKind()]++
			continue
		}
		res.byNode[r.node]++
		if !slices.Contains(res.standby, r.node) {
			continue
		}
		if a, ok := activeSince[r.node]; !ok || r.start < a {
			res.standbyEarly++
		}
		if r.end >= res.highAt {
			if f, ok := first[r.node]; !ok || r.end < f {
				first[r.node] = r.end
			}
		}
	}
	res.notSent = lr.notSent
	for _, f := range first {
		if res.serve == never || f < res.serve {
			res.serve = f
		}
	}
	if len(first) == len(res.standby) {
		res.serveAll = maxOf(first)
	}
}

func maxOf(m map[string]time.Duration) time.Duration {
	out := never
	for _, v := range m {
		out = max(out, v)
	}
	return out
}

// line is a one-line summary of a run for the console.
func (r runResult) line(cfg config) string {
	var b strings.Builder
	if !r.valid() {
		b.WriteString("[no reaction measured: activation before the step] ")
	}
	fmt.Fprintf(&b, "run %d: leader %s (%s); util low %.2f (max %.2f), breach %.2f; visible→decision %s, visible→serve %s (%.2f intervals); scale-in %s after the fall (window %s); %d requests, %d failed",
		r.n, r.leader, r.leaderRole, r.lowUtil, r.lowMax, r.breachUtil, msOr(diff(r.decided, r.visible)), msOr(r.reaction()),
		float64(r.reaction())/float64(cfg.interval), sOr(r.scaleIn()), cfg.stabilisation, r.requests, r.failed)
	if r.notSent > 0 {
		fmt.Fprintf(&b, ", %d not sent", r.notSent)
	}
	for _, p := range r.premature {
		b.WriteString("; " + p)
	}
	return b.String()
}

func diff(a, b time.Duration) time.Duration {
	if a == never || b == never {
		return never
	}
	return a - b
}

func msOr(d time.Duration) string {
	if d == never {
		return "never"
	}
	return fmt.Sprintf("%d ms", d.Milliseconds())
}

func sOr(d time.Duration) string {
	if d == never {
		return "never"
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}
