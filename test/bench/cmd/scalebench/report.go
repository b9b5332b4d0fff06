package main

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// bySize groups results by cluster size, sizes ascending.
func bySize(results []runResult) ([]int, map[int][]runResult) {
	m := map[int][]runResult{}
	for _, r := range results {
		m[r.N] = append(m[r.N], r)
	}
	var sizes []int
	for n := range m {
		sizes = append(sizes, n)
	}
	slices.Sort(sizes)
	return sizes, m
}

// col extracts one figure from each run.
func col(rs []runResult, f func(runResult) float64) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = f(r)
	}
	return out
}

// report renders the tables: timings, costs, and fits of the growth model.
func report(cfg config, results []runResult) string {
	sizes, m := bySize(results)
	if len(sizes) == 0 {
		return "no results\n"
	}
	var b strings.Builder

	b.WriteString("Timings, seconds: median (min–max) over runs. Alive: from the last agent's start until every node lists every node alive. " +
		"Raft: until every node's Raft configuration lists all N (voters/non-voters as shown) and its plan all N nodes. " +
		"Load: until every other node's gossip view of one agent shows its new in-flight figure (held requests, then released). " +
		"Dead: from an abrupt Kill of a non-voter until every other node lists it dead.\n\n")
	var rows [][]string
	for _, n := range sizes {
		rs := m[n]
		voters := "–"
		if agree := col(rs, func(r runResult) float64 { return b2f(r.RaftAgree) }); slices.Min(agree) == 1 {
			voters = fmt.Sprintf("%d / %d", rs[0].Voters, rs[0].Nonvoters)
		} else {
			voters = fmt.Sprintf("%d / %d (not agreed in every run)", rs[0].Voters, rs[0].Nonvoters)
		}
		rows = append(rows, []string{
			strconv.Itoa(n), strconv.Itoa(len(rs)),
			spread(col(rs, func(r runResult) float64 { return r.StartSeconds }), secs),
			spread(col(rs, func(r runResult) float64 { return float64(r.Converge) }), secs),
			spread(col(rs, func(r runResult) float64 { return float64(r.ConvergeP50) }), secs),
			spread(col(rs, func(r runResult) float64 { return float64(r.RaftConverge) }), secs),
			voters,
			spread(col(rs, func(r runResult) float64 { return float64(r.LoadUp) }), secs) + " / " +
				spread(col(rs, func(r runResult) float64 { return float64(r.LoadDown) }), secs),
			spread(append(col(rs, func(r runResult) float64 { return float64(r.LoadUpP50) }),
				col(rs, func(r runResult) float64 { return float64(r.LoadDownP50) })...), secs),
			spread(col(rs, func(r runResult) float64 { return float64(r.KillDetect) }), secs),
			spread(col(rs, func(r runResult) float64 { return float64(r.KillP50) }), secs),
		})
	}
	b.WriteString(table([]string{"N", "runs", "start all", "all alive", "alive, p50 node", "Raft + plan list all",
		"voters / non-voters", "load change seen by all (up / down)", "load change, p50 node", "killed node dead everywhere", "dead, p50 node"}, rows))

	b.WriteString("\nCosts per agent, over the steady window (median over runs). Gossip: memberlist's bytes sent (UDP + TCP payload), " +
		"per node. Alive msgs: new memberlist alive messages (metadata updates) applied per node per second. " +
		"Memory: growth of the process since before the first agent, divided by N.\n\n")
	rows = nil
	for _, n := range sizes {
		rs := m[n]
		med := func(f func(runResult) float64) float64 { return median(col(rs, f)) }
		// Sizes only from runs whose agent had the whole plan.
		converged := slices.DeleteFunc(slices.Clone(rs), func(r runResult) bool { return math.IsNaN(float64(r.RaftConverge)) })
		medc := func(f func(runResult) float64) float64 { return median(col(converged, f)) }
		rows = append(rows, []string{
			strconv.Itoa(n),
			pct(med(func(r runResult) float64 { return r.CPUPerAgent })),
			num(med(func(r runResult) float64 { return r.GossipBytesPerNode })),
			num(med(func(r runResult) float64 { return r.UDPBytesPerNode })) + " / " + num(med(func(r runResult) float64 { return r.TCPBytesPerNode })),
			num(med(func(r runResult) float64 { return r.AliveMsgsPerNode })),
			mib(med(func(r runResult) float64 { return r.RSSPerAgent })),
			mib(med(func(r runResult) float64 { return r.HeapPerAgent })),
			num(med(func(r runResult) float64 { return r.GoroutinesPerAgent })),
			mib(med(func(r runResult) float64 { return r.RSSTotal })),
			dash(medc(func(r runResult) float64 { return float64(r.MetaBytes) })),
			dash(medc(func(r runResult) float64 { return float64(r.PlanJSONBytes) })) + " / " +
				dash(medc(func(r runResult) float64 { return float64(r.PlanJSONBytes) / float64(r.N) })),
			dash(medc(func(r runResult) float64 { return float64(r.SnapshotBytes) })),
		})
	}
	b.WriteString(table([]string{"N", "CPU (of one core)", "gossip B/s sent", "UDP / TCP B/s", "alive msgs/s",
		"RSS MiB", "heap MiB", "goroutines", "process RSS MiB", "meta bytes", "plan JSON bytes / per node", "snapshot bytes"}, rows))

	b.WriteString("\nRaft and the machine (median over runs; elections: times a node became leader, 1 when the first leader kept its seat). " +
		"Leader RPCs: heartbeats and AppendEntries per second from the leader to all followers in the steady window. " +
		"Process CPU: all agents together, in cores; the load average is the machine's at the start of the run.\n\n")
	rows = nil
	for _, n := range sizes {
		rs := m[n]
		med := func(f func(runResult) float64) float64 { return median(col(rs, f)) }
		rows = append(rows, []string{
			strconv.Itoa(n),
			spread(col(rs, func(r runResult) float64 { return float64(r.LeaderElections) }), num),
			num(med(func(r runResult) float64 { return float64(r.SteadyElections) })),
			num(med(func(r runResult) float64 { return r.RaftHeartbeatsPerSec })) + " / " +
				num(med(func(r runResult) float64 { return r.RaftAppendsPerSec })),
			num(med(func(r runResult) float64 { return float64(r.RaftEntries) })),
			num(med(func(r runResult) float64 { return r.RaftWritesPerSec })),
			num(med(func(r runResult) float64 { return r.CPUPerAgent * float64(r.N) })),
			spread(col(rs, func(r runResult) float64 { return r.LoadAvg }), num),
			num(med(func(r runResult) float64 { return float64(r.SuspectMsgs) / r.SteadySeconds / float64(r.N) })),
			num(med(func(r runResult) float64 { return r.MaxStallMs })) + " / " +
				num(med(func(r runResult) float64 { return float64(r.Stalls1s) })),
		})
	}
	b.WriteString(table([]string{"N", "leader elections per run", "in steady window", "leader RPCs/s (heartbeat / append)",
		"Raft entries at convergence", "Raft writes/s, steady", "process CPU (cores)", "load average at start",
		"suspect msgs/s per node, steady", "longest stall ms / stalls over 1 s"}, rows))

	// Fits only over the sizes whose runs all converged: a starved run
	// measures the machine, not the cluster.
	var fitSizes []int
	for _, n := range sizes {
		ok := true
		for _, r := range m[n] {
			ok = ok && !math.IsNaN(float64(r.Converge)) && !math.IsNaN(float64(r.RaftConverge))
		}
		if ok {
			fitSizes = append(fitSizes, n)
		}
	}
	b.WriteString(fmt.Sprintf("\nGrowth model, least-squares fits over the run medians of the sizes that converged (%s; R² is the share of variance explained):\n\n",
		joinInts(fitSizes)))
	sizes = fitSizes
	xs := make([]float64, len(sizes))
	for i, n := range sizes {
		xs[i] = float64(n)
	}
	medOf := func(f func(runResult) float64) []float64 {
		out := make([]float64, len(sizes))
		for i, n := range sizes {
			out[i] = median(col(m[n], f))
		}
		return out
	}
	fits := []struct {
		name string
		x    []float64
		xlab string
		y    []float64
		unit string
	}{
		{"all alive (s)", log2s(xs), "log2 N", medOf(func(r runResult) float64 { return float64(r.Converge) }), "s"},
		{"all alive (s)", xs, "N", medOf(func(r runResult) float64 { return float64(r.Converge) }), "s"},
		{"load change seen by all, up (s)", log2s(xs), "log2 N", medOf(func(r runResult) float64 { return float64(r.LoadUp) }), "s"},
		{"killed node dead everywhere (s)", log2s(xs), "log2 N", medOf(func(r runResult) float64 { return float64(r.KillDetect) }), "s"},
		{"gossip B/s per node", xs, "N", medOf(func(r runResult) float64 { return r.GossipBytesPerNode }), "B/s"},
		{"alive msgs/s per node", xs, "N", medOf(func(r runResult) float64 { return r.AliveMsgsPerNode }), "/s"},
		{"CPU per agent (cores)", xs, "N", medOf(func(r runResult) float64 { return r.CPUPerAgent }), ""},
		{"RSS per agent (MiB)", xs, "N", medOf(func(r runResult) float64 { return r.RSSPerAgent / (1 << 20) }), "MiB"},
		{"plan JSON bytes", xs, "N", medOf(func(r runResult) float64 { return float64(r.PlanJSONBytes) }), "B"},
		{"Raft entries at convergence", xs, "N", medOf(func(r runResult) float64 { return float64(r.RaftEntries) }), ""},
	}
	rows = nil
	for _, f := range fits {
		x, y := pairsFinite(f.x, f.y)
		ft, err := linearFit(x, y)
		if err != nil {
			rows = append(rows, []string{f.name, f.xlab, "–", "–", "–"})
			continue
		}
		rows = append(rows, []string{f.name, f.xlab, num(ft.A), num(ft.B), strconv.FormatFloat(ft.R2, 'f', 3, 64)})
	}
	b.WriteString(table([]string{"figure", "x", "A (intercept)", "B (per unit of x)", "R²"}, rows))
	return b.String()
}

func b2f(v bool) float64 {
	if v {
		return 1
	}
	return 0
}

// pairsFinite drops the points where x or y is not finite.
func pairsFinite(x, y []float64) ([]float64, []float64) {
	var ox, oy []float64
	for i := range x {
		if i < len(y) && !math.IsNaN(x[i]) && !math.IsNaN(y[i]) && !math.IsInf(x[i], 0) && !math.IsInf(y[i], 0) {
			ox = append(ox, x[i])
			oy = append(oy, y[i])
		}
	}
	return ox, oy
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ", ")
}

// dash formats v with num, or "–" when it was not measured (0 or NaN).
func dash(v float64) string {
	if v == 0 || math.IsNaN(v) {
		return "–"
	}
	return num(v)
}
