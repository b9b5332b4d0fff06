package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/loadmesh/loadmesh/test/bench/internal/benchproc"
)

// machineInfo is benchproc.Machine with this report's rendering.
type machineInfo struct{ benchproc.Machine }

func readMachineInfo(version string) machineInfo {
	return machineInfo{benchproc.ReadMachine(version)}
}

// loadAvg is benchproc.LoadAvg.
func loadAvg() string { return benchproc.LoadAvg() }

func (m machineInfo) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "date:      %s\n", m.Date.Format(time.RFC3339))
	fmt.Fprintf(&b, "cpu:       %s, %d cores%s\n", m.CPU, m.Cores, virt(m.Virtual))
	fmt.Fprintf(&b, "memory:    %s\n", m.MemTotal)
	fmt.Fprintf(&b, "kernel:    %s\n", m.Kernel)
	fmt.Fprintf(&b, "go:        %s\n", m.Go)
	fmt.Fprintf(&b, "loadmesh:  %s\n", m.Loadmesh)
	fmt.Fprintf(&b, "load avg:  %s (1, 5, 15 min) at start\n", m.LoadStart)
	return b.String()
}

func virt(v bool) string {
	if v {
		return " (virtual machine)"
	}
	return ""
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// trunc cuts x to the given decimals: shown figures are never rounded up.
func trunc(x float64, digits int) string {
	p := math.Pow10(digits)
	v := math.Trunc(x*p) / p
	if v == 0 {
		v = 0 // not -0
	}
	return fmt.Sprintf("%.*f", digits, v)
}

func msTrunc(d time.Duration) string { return trunc(ms(d), 3) }

// skewMedian is one row of the skewed-cluster table.
type skewMedian struct {
	row      skewRow
	conns    int
	n        int
	rps      float64
	p50, p99 time.Duration
	p99Fast  time.Duration
	share    float64 // median over rounds of the slow backend's share
	failed   int64
	mismatch int64
	est      map[string]time.Duration // median over rounds of the ingress's estimates
	gossip   map[string]time.Duration // median over rounds of the gossiped backend latencies
}

func (b *bench) skewMedians() []skewMedian {
	var out []skewMedian
	for _, c := range b.cfg.conns {
		for _, r := range b.skewRows {
			ss := b.skew[skewKey{r.key, c}]
			if len(ss) == 0 {
				continue
			}
			m := skewMedian{row: r, conns: c, n: len(ss)}
			var rps, p50, p99, p99f, share []float64
			est, gos := map[string][]float64{}, map[string][]float64{}
			for _, s := range ss {
				for p, d := range s.estimates {
					est[p] = append(est[p], float64(d))
				}
				for p, d := range s.gossiped {
					gos[p] = append(gos[p], float64(d))
				}
				rps = append(rps, s.rps)
				p50 = append(p50, float64(s.p50))
				p99 = append(p99, float64(s.p99))
				p99f = append(p99f, float64(s.p99Fast))
				share = append(share, slowShare(s))
				m.failed += s.failed
				m.mismatch += s.mismatch
			}
			m.rps, m.p50, m.p99, m.share = median(rps), time.Duration(median(p50)), time.Duration(median(p99)), median(share)
			m.p99Fast = time.Duration(median(p99f))
			m.est, m.gossip = medianMap(est), medianMap(gos)
			out = append(out, m)
		}
	}
	return out
}

func medianMap(m map[string][]float64) map[string]time.Duration {
	if len(m) == 0 {
		return nil
	}
	out := map[string]time.Duration{}
	for k, xs := range m {
		out[k] = time.Duration(median(xs))
	}
	return out
}

func fmtABC(m map[string]time.Duration) string {
	if m == nil {
		return "–"
	}
	var parts []string
	for _, p := range []string{"a", "b", "c"} {
		if d, ok := m[p]; ok {
			parts = append(parts, trunc(ms(d), 1))
		} else {
			parts = append(parts, "?")
		}
	}
	return strings.Join(parts, " / ")
}

func findMedian(ms []skewMedian, key string, conns int) *skewMedian {
	for i := range ms {
		if ms[i].row.key == key && ms[i].conns == conns {
			return &ms[i]
		}
	}
	return nil
}

type target struct {
	text string
	met  bool
	ok   bool
}

func verdict(t target) string {
	switch {
	case !t.ok:
		return "NOT EVALUATED"
	case t.met:
		return "MET"
	default:
		return "MISSED"
	}
}

func (b *bench) skewTargets(ms []skewMedian) []target {
	var ts []target
	for _, c := range b.cfg.conns {
		p := findMedian(ms, "p2c", c)
		for _, ref := range []struct{ key, name string }{{"wrr", "loadmesh weighted-round-robin"}, {"hap-leastconn", "HAProxy leastconn"}} {
			r := findMedian(ms, ref.key, c)
			if p == nil || r == nil {
				ts = append(ts, target{text: fmt.Sprintf("p2c-ewma p99 ≤ ½ × %s p99, c=%d: not measured", ref.name, c)})
				continue
			}
			ratio := float64(p.p99) / float64(r.p99)
			met := ratio <= 0.5 && p.failed == 0
			extra := ""
			if p.failed > 0 {
				extra = fmt.Sprintf("; %d failed requests with p2c-ewma", p.failed)
			}
			ts = append(ts, target{ok: true, met: met, text: fmt.Sprintf(
				"p2c-ewma p99 ≤ ½ × %s p99, c=%d: %s ms vs %s ms = %s×%s",
				ref.name, c, msTrunc(p.p99), msTrunc(r.p99), trunc(ratio, 3), extra)})
		}
	}
	return ts
}

// killMedian summarises one kill scenario.
type killMedian struct {
	sc                                        killScenario
	n                                         int
	failed, requests                          int64
	lastPacket, inflight0, removed, dead, lat time.Duration
	lastRise                                  time.Duration
	never                                     int // repetitions with packets to c until the end of the run
}

func medianDur(xs []time.Duration) time.Duration {
	if len(xs) == 0 {
		return -1
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	lo, hi := s[(len(s)-1)/2], s[len(s)/2]
	if hi == never {
		return never
	}
	return lo + (hi-lo)/2
}

func (b *bench) killMedians() []killMedian {
	var out []killMedian
	for _, sc := range killScenarios {
		m := killMedian{sc: sc}
		var lp, i0, rm, dd, lat, lr []time.Duration
		for _, r := range b.kills {
			if r.scenario != sc.key {
				continue
			}
			m.n++
			m.failed += r.failed
			m.requests += r.requests + r.failed
			if r.sniffErr == "" {
				lp = append(lp, max(r.lastPacket, 0))
			}
			i0 = append(i0, orNever(r.inflight0))
			lr = append(lr, max(r.lastRise, 0))
			rm = append(rm, orNever(r.removed))
			dd = append(dd, orNever(r.dead))
			lat = append(lat, r.maxLat)
		}
		if m.n == 0 {
			continue
		}
		m.lastPacket, m.inflight0, m.removed, m.dead, m.lat = -1, medianDur(i0), medianDur(rm), medianDur(dd), medianDur(lat)
		m.lastRise = medianDur(lr)
		if len(lp) > 0 {
			m.lastPacket = medianDur(lp)
		}
		out = append(out, m)
	}
	return out
}

func (b *bench) killTargets(ms []killMedian) []target {
	var ts []target
	for _, m := range ms {
		var perRep, perRise []string
		worst := time.Duration(0)
		measured := true
		for _, r := range b.kills {
			if r.scenario != m.sc.key {
				continue
			}
			if r.sniffErr != "" {
				measured = false
				continue
			}
			perRep = append(perRep, secTrunc(max(r.lastPacket, 0)))
			perRise = append(perRise, secTrunc(r.lastRise))
			worst = max(worst, r.lastPacket)
		}
		ts = append(ts, target{ok: m.n > 0, met: m.failed == 0, text: fmt.Sprintf(
			"0 failed GETs, %s: %d failed of %d requests over %d repetitions", m.sc.name, m.failed, m.requests, m.n)})
		if !measured || len(perRep) == 0 {
			ts = append(ts, target{text: fmt.Sprintf("no request sent to the killed node after 1 s, %s: no packet capture", m.sc.name)})
			continue
		}
		ts = append(ts, target{ok: true, met: worst < time.Second, text: fmt.Sprintf(
			"nothing sent to the killed node from 1 s after the kill on, %s: last packet to it after a median %s s, worst %s s (each: %s); last new request after a median %s s (each: %s)",
			m.sc.name, secTrunc(m.lastPacket), secTrunc(worst), strings.Join(perRep, ", "), secTrunc(m.lastRise), strings.Join(perRise, ", "))})
	}
	return ts
}

// never stands for "not within the run" in medians.
const never = time.Duration(math.MaxInt64)

func orNever(d time.Duration) time.Duration {
	if d < 0 {
		return never
	}
	return d
}

func secTrunc(d time.Duration) string {
	if d < 0 {
		return "none"
	}
	if d == never {
		return "never"
	}
	return trunc(d.Seconds(), 3)
}

// markdown is the generated section of the doc.
func (b *bench) markdown() string {
	var w strings.Builder
	m := b.info
	fmt.Fprintf(&w, "Measured %s UTC by schedbench, %s in all.\n\n", m.Date.Format("2006-01-02 15:04"), m.Elapsed.Round(time.Second))
	fmt.Fprintf(&w, "- Machine: %s, %d cores%s, %s RAM, Linux %s; load average %s at the start, %s at the end (1, 5, 15 min)\n",
		m.CPU, m.Cores, virt(m.Virtual), m.MemTotal, m.Kernel, m.LoadStart, m.LoadEnd)
	fmt.Fprintf(&w, "- loadmesh %s built with %s; %s\n", m.Loadmesh, m.Go, orNone(m.HAProxy, "no HAProxy"))
	fmt.Fprintf(&w, "- Settings: `-rounds %d -duration %s -warmup %s -conns %s -delay %s -capacity %d -policies %s -kills %d -kill-conns %d -pre-kill %s -post-kill %s -request-timeout %s`\n\n",
		b.cfg.rounds, b.cfg.duration, b.cfg.warmup, joinInts(b.cfg.conns), b.cfg.delay, b.cfg.capacity, strings.Join(b.cfg.policies, ","),
		b.cfg.kills, b.cfg.killConns, b.cfg.preKill, b.cfg.postKill, b.cfg.reqTimeout)

	var ts []target
	if len(b.skewRows) > 0 {
		meds := b.skewMedians()
		fmt.Fprintf(&w, "### Skewed cluster: backend c adds %s\n\n", b.cfg.delay)
		fmt.Fprintf(&w, "Medians of %d interleaved rounds of %s per row. \"to c\" is the median over rounds of the share of answers that came from the slow backend c (X-Backend); \"failed\" is the sum over all rounds; "+
			"\"p99 of a and b only\" is the p99 of the answers from the two fast nodes (what the path costs without the slow node); \"ingress estimate\" is the ingress agent's latency estimate of a, b and c (`loadmesh_scheduler_peer_latency_seconds`: the peak-EWMA of the latency it measures to each, hop included, which is what its policy works from), "+
			"\"gossiped\" the latency each serving agent gossips about its own backend (`latency_ewma_seconds` in the ingress's `/v1/members`); both sampled every 250 ms, median per run, then median over rounds.\n\n", b.cfg.rounds, b.cfg.duration)
		w.WriteString("| row | conns | req/s | p50 ms | p99 ms | to c | failed | p99 ms of a and b only | ingress estimate a / b / c ms | gossiped a / b / c ms |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, r := range meds {
			fmt.Fprintf(&w, "| %s | %d | %s | %s | %s | %s%% | %d | %s | %s | %s |\n", r.row.name, r.conns, trunc(r.rps, 0),
				msTrunc(r.p50), msTrunc(r.p99), trunc(100*r.share, 2), r.failed, msTrunc(r.p99Fast), fmtABC(r.est), fmtABC(r.gossip))
		}
		w.WriteString("\nEvery round (p99 ms / share to c):\n\n| row | conns |")
		for i := range b.cfg.rounds {
			fmt.Fprintf(&w, " round %d |", i+1)
		}
		w.WriteString("\n|---|--:|" + strings.Repeat("--:|", b.cfg.rounds) + "\n")
		for _, c := range b.cfg.conns {
			for _, r := range b.skewRows {
				fmt.Fprintf(&w, "| %s | %d |", r.name, c)
				for _, s := range b.skew[skewKey{r.key, c}] {
					fmt.Fprintf(&w, " %s / %s%% |", msTrunc(s.p99), trunc(100*slowShare(s), 2))
				}
				w.WriteString("\n")
			}
		}
		var mism int64
		for _, r := range meds {
			mism += r.mismatch
		}
		if mism > 0 {
			fmt.Fprintf(&w, "\n%d loadmesh answers had an X-Loadmesh-Node different from their X-Backend.\n", mism)
		}
		w.WriteString("\n")
		ts = append(ts, b.skewTargets(meds)...)
	}

	if len(b.kills) > 0 {
		km := b.killMedians()
		fmt.Fprintf(&w, "### Failure: SIGKILL of serving agent c under load\n\n")
		fmt.Fprintf(&w, "%d connections of GET load through the ingress-only agent; SIGKILL %s after the load started, load for %s more. Times are from the SIGKILL, in seconds; \"none\" means never after the kill. "+
			"\"last new request to c\" is the last increase of the ingress's `loadmesh_scheduler_peer_inflight{peer=\"c\"}` (polled every 20 ms; after the kill nothing to c completes until c is dropped, so every increase is a new request sent to c); "+
			"\"last packet to c\" is the last UDP datagram any process sent to c's QUIC port (packet capture: new requests and retransmissions of unanswered ones); \"in flight → 0\" is when the ingress's `loadmesh_scheduler_peer_inflight{peer=\"c\"}` fell to 0 (or vanished) for good; "+
			"\"removed\" is when c vanished from the ingress's scheduler metrics (no longer a candidate); \"dead\" is when the ingress's `/v1/members` first showed c dead (polled every 100 ms); "+
			"\"stuck\" is the highest in-flight gauge for c after the kill; \"max latency\" is the slowest request in flight at or after the kill; \"> 1 s\" counts such requests that took more than 1 s.\n\n",
			b.cfg.killConns, b.cfg.preKill, b.cfg.postKill)
		w.WriteString("| scenario | # | failed / requests | last new request to c | last packet to c | in flight → 0 | removed | dead | stuck | max latency ms | > 1 s | p99 ms, 2 s after kill | req/s before → 1-2 s after | Raft leader |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n")
		for _, r := range b.kills {
			lp := secTrunc(r.lastPacket)
			if r.sniffErr != "" {
				lp = "n/a"
			}
			fmt.Fprintf(&w, "| %s | %d | %d / %d | %s | %s | %s | %s | %s | %d | %s | %d | %s | %s → %s | %s |\n", r.scenario, r.rep, r.failed, r.failed+r.requests,
				secTrunc(r.lastRise), lp, secTrunc(orNever(r.inflight0)), secTrunc(orNever(r.removed)), secTrunc(orNever(r.dead)), r.maxStuck,
				msTrunc(r.maxLat), r.over1s, msTrunc(r.p99After), trunc(r.preRPS, 0), trunc(r.postRPS, 0), orNone(r.leader, "?"))
		}
		w.WriteString("\nMedians:\n\n| scenario | repetitions | failed / requests | last new request to c | last packet to c | in flight → 0 | removed | dead | max latency ms |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, m := range km {
			fmt.Fprintf(&w, "| %s | %d | %d / %d | %s | %s | %s | %s | %s | %s |\n", m.sc.name, m.n, m.failed, m.requests,
				secTrunc(m.lastRise), secTrunc(m.lastPacket), secTrunc(m.inflight0), secTrunc(m.removed), secTrunc(m.dead), msTrunc(m.lat))
		}
		errs := map[string]int{}
		for _, r := range b.kills {
			for e, n := range r.errs {
				errs[e] += n
			}
			if r.sniffErr != "" {
				b.notes = append(b.notes, fmt.Sprintf("%s #%d: no packet figure: %s", r.scenario, r.rep, r.sniffErr))
			}
			if r.servedC > 0 {
				b.notes = append(b.notes, fmt.Sprintf("%s #%d: %d requests sent after the kill were answered by c (a kill that was not immediate?)", r.scenario, r.rep, r.servedC))
			}
		}
		if len(errs) > 0 {
			w.WriteString("\nFailed requests by error, all repetitions:\n\n")
			keys := make([]string, 0, len(errs))
			for e := range errs {
				keys = append(keys, e)
			}
			sort.Strings(keys)
			for _, e := range keys {
				fmt.Fprintf(&w, "- %d × %s\n", errs[e], e)
			}
		}
		w.WriteString("\n")
		ts = append(ts, b.killTargets(km)...)
	}

	if len(ts) > 0 {
		w.WriteString("### Targets\n\nJudged on the unrounded figures; the figures shown are truncated, never rounded up.\n\n")
		for _, t := range ts {
			fmt.Fprintf(&w, "- **%s** — %s\n", verdict(t), t.text)
		}
		w.WriteString("\n")
	}
	if len(b.notes) > 0 {
		w.WriteString("Notes:\n\n")
		for _, n := range b.notes {
			fmt.Fprintf(&w, "- %s\n", n)
		}
		w.WriteString("\n")
	}
	return w.String()
}

func orNone(s, none string) string {
	if s == "" {
		return none
	}
	return s
}

func joinInts(xs []int) string {
	var s []string
	for _, x := range xs {
		s = append(s, fmt.Sprint(x))
	}
	return strings.Join(s, ",")
}

const (
	beginMarker = "<!-- BEGIN GENERATED BY schedbench: everything up to the end marker is rewritten by `make bench` -->"
	endMarker   = "<!-- END GENERATED BY schedbench -->"
)

// writeDoc replaces the generated section of path (between the markers),
// creating the file with a stub if it lacks them.
func writeDoc(path, generated string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	doc := string(old)
	i, j := strings.Index(doc, beginMarker), strings.Index(doc, endMarker)
	if i < 0 || j < i {
		doc = "# Scheduling benchmarks\n\nRun with `make bench` (see test/bench/run.sh and test/bench/cmd/schedbench).\n\n" + beginMarker + "\n" + endMarker + "\n"
		i, j = strings.Index(doc, beginMarker), strings.Index(doc, endMarker)
	}
	doc = doc[:i+len(beginMarker)] + "\n" + generated + doc[j:]
	return os.WriteFile(path, []byte(doc), 0o644)
}
