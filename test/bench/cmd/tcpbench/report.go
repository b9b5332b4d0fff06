package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
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

func firstLine(cmd *exec.Cmd) string {
	out, _ := cmd.CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

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

// measure is one line of the results table: the median of every path,
// and how loadmesh compares with HAProxy.
type measure struct {
	Name   string
	Unit   string
	Goal   *goal              // nil: for information only
	Median map[string]float64 // path key → median (NaN: no successful run)
	Fails  map[string]int     // path key → runs that failed or had errors
	Format func(float64) string
}

func fmtRate(x float64) string { return fmt.Sprintf("%d", int64(math.Floor(x))) }
func fmtMB(x float64) string   { return fmt.Sprintf("%.1f", floorTo(x, 1)) }
func fmtUS(x float64) string   { return fmt.Sprintf("%.0f", ceilTo(x, 0)) }
func fmtKiB(x float64) string  { return fmt.Sprintf("%.1f", ceilTo(x, 1)) }

// ratio of loadmesh to HAProxy for m.
func (b *bench) ratio(m measure) (float64, bool) {
	return ratio(m.Median[pathLoadmesh], m.Median[pathHAProxy])
}

// measures computes the medians of the run.
func (b *bench) measures() []measure {
	var out []measure
	higher, lower := &goal{higherIsBetter: true, min: 0.8}, &goal{higherIsBetter: false, min: 0.8}

	m := measure{Name: "connection set-up rate",
		Unit: "conns/s", Goal: higher, Median: map[string]float64{}, Fails: map[string]int{}, Format: fmtRate}
	for _, p := range b.paths {
		var xs []float64
		for _, s := range b.rate[p.Key] {
			xs = append(xs, s.PerSec())
			if s.Errors+s.Timeouts > 0 {
				m.Fails[p.Key]++
			}
		}
		m.Median[p.Key] = medianOrNaN(xs)
	}
	out = append(out, m)

	if b.cfg.bulkSize > 0 {
		for _, dir := range []string{"upload", "download"} {
			src := b.up
			if dir == "download" {
				src = b.down
			}
			m := measure{Name: fmt.Sprintf("one long %s, %d MiB", dir, b.cfg.bulkSize>>20),
				Unit: "MB/s", Goal: higher, Median: map[string]float64{}, Fails: map[string]int{}, Format: fmtMB}
			for _, p := range b.paths {
				var xs []float64
				for _, s := range src[p.Key] {
					if s.Err != "" {
						m.Fails[p.Key]++
						continue
					}
					xs = append(xs, s.MBps())
				}
				m.Median[p.Key] = medianOrNaN(xs)
			}
			out = append(out, m)
		}
	}

	for _, q := range []struct {
		name string
		get  func(rttResult) time.Duration
		g    *goal
	}{
		{"p50", func(r rttResult) time.Duration { return r.P50 }, nil},
		{"p99", func(r rttResult) time.Duration { return r.P99 }, lower},
	} {
		m := measure{Name: fmt.Sprintf("TLS %d-byte request/response, %s", b.cfg.rttSize, q.name),
			Unit: "µs", Goal: q.g, Median: map[string]float64{}, Fails: map[string]int{}, Format: fmtUS}
		for _, p := range b.paths {
			var xs []float64
			for _, s := range b.rtt[p.Key] {
				if s.Err != "" {
					m.Fails[p.Key]++
					continue
				}
				xs = append(xs, us(q.get(s.rttResult)))
			}
			m.Median[p.Key] = medianOrNaN(xs)
		}
		out = append(out, m)
	}

	if b.cfg.idle > 0 {
		for _, phase := range []string{"idle", "active"} {
			if phase == "active" && b.cfg.idleEcho == 0 {
				continue
			}
			name := "RSS per idle connection, all proxy processes"
			if phase == "active" {
				name = fmt.Sprintf("RSS per connection after %d KiB echoed each, all proxy processes", b.cfg.idleEcho>>10)
			}
			m := measure{Name: name, Unit: "KiB", Median: map[string]float64{}, Fails: map[string]int{}, Format: fmtKiB}
			for _, p := range b.paths {
				if len(p.Procs) == 0 {
					continue
				}
				var xs []float64
				for _, s := range b.mem[p.Key] {
					if v, ok := memPerConn(s, phase, -1); ok {
						xs = append(xs, v)
					} else {
						m.Fails[p.Key]++
					}
				}
				m.Median[p.Key] = medianOrNaN(xs)
			}
			out = append(out, m)
		}
	}
	return out
}

// memPerConn is the RSS growth per connection of one memory run, for one
// proxy process (i) or all of them together (-1).
func memPerConn(s memSample, phase string, i int) (float64, bool) {
	after := s.Idle
	if phase == "active" {
		after = s.Active
	}
	if s.Err != "" || len(after) != len(s.Before) || len(after) == 0 {
		return 0, false
	}
	var before, sum int64
	for j := range after {
		if i < 0 || i == j {
			before += s.Before[j]
			sum += after[j]
		}
	}
	return perConnKiB(before, sum, s.Conns), true
}

func medianOrNaN(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	return median(xs)
}

// target is one requirement checked against the run.
type target struct {
	text string
	met  bool
	ok   bool // evaluated at all
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

func (b *bench) targets(ms []measure) []target {
	var ts []target
	for _, m := range ms {
		if m.Goal == nil {
			continue
		}
		g := *m.Goal
		lim := fmt.Sprintf("≥ %.1f×", g.limit())
		if !g.higherIsBetter {
			lim = fmt.Sprintf("≤ %.2f× (%.1f× the speed)", g.limit(), g.min)
		}
		r, ok := b.ratio(m)
		if b.lm == nil || b.haproxyPath() == nil {
			ts = append(ts, target{text: fmt.Sprintf("%s: loadmesh/HAProxy %s: not evaluated (no %s path)", m.Name, lim, missingPath(b))})
			continue
		}
		if !ok {
			ts = append(ts, target{ok: true, text: fmt.Sprintf("%s: loadmesh/HAProxy %s: no successful loadmesh or HAProxy run (%d and %d failed)",
				m.Name, lim, m.Fails[pathLoadmesh], m.Fails[pathHAProxy])})
			continue
		}
		fails := ""
		if n := m.Fails[pathLoadmesh]; n > 0 {
			fails = fmt.Sprintf("; %d of %d loadmesh runs failed or had errors", n, b.cfg.rounds)
		}
		ts = append(ts, target{ok: true, met: g.met(r) && m.Fails[pathLoadmesh] == 0, text: fmt.Sprintf(
			"%s, loadmesh/HAProxy %s: %.2f× (%s vs %s %s)%s", m.Name, lim, g.roundRatio(r),
			m.Format(m.Median[pathLoadmesh]), m.Format(m.Median[pathHAProxy]), m.Unit, fails)})
	}
	if b.cfg.idle > 0 && b.lm != nil {
		ts = append(ts, b.memTarget())
	}
	return ts
}

func missingPath(b *bench) string {
	if b.lm == nil {
		return "loadmesh"
	}
	return "HAProxy"
}

func (b *bench) haproxyPath() *path {
	for _, p := range b.paths {
		if p.Key == pathHAProxy {
			return p
		}
	}
	return nil
}

// memTarget: the issue asks for memory bounded per connection and gives
// no figure; tcpbench checks that each agent stays under cfg.memLimitKiB
// of RSS per connection, idle and after traffic, in the median run, and
// that every connection is released when its client closes.
func (b *bench) memTarget() target {
	samples := b.mem[pathLoadmesh]
	var parts []string
	met, any := true, false
	for i, l := range b.lm.Labels {
		for _, phase := range []string{"idle", "active"} {
			var xs []float64
			for _, s := range samples {
				if v, ok := memPerConn(s, phase, i); ok {
					xs = append(xs, v)
				}
			}
			if len(xs) == 0 {
				continue
			}
			any = true
			v := median(xs)
			if v > b.cfg.memLimitKiB {
				met = false
			}
			parts = append(parts, fmt.Sprintf("%s %s KiB %s", l, fmtKiB(v), phase))
		}
	}
	failed, left := 0, 0
	for _, s := range samples {
		if s.Err != "" {
			failed++
		}
		if s.OpenAfterClose > 0 {
			left = max(left, s.OpenAfterClose)
		}
	}
	if failed > 0 {
		met = false
		parts = append(parts, fmt.Sprintf("%d of %d runs failed", failed, len(samples)))
	}
	if left > 0 {
		met = false
		parts = append(parts, fmt.Sprintf("up to %d connections still open 10 s after their clients closed", left))
	}
	if b.leakCheck != "" {
		met = false
		parts = append(parts, "at the end: "+b.leakCheck)
	}
	text := fmt.Sprintf("memory bounded per connection (tcpbench's criterion: each agent < %.0f KiB RSS per connection, idle and after %d KiB of traffic each, and every connection released on close): %s",
		b.cfg.memLimitKiB, b.cfg.idleEcho>>10, strings.Join(parts, ", "))
	return target{ok: any, met: met && any, text: text}
}

func (b *bench) cells(m measure) []string {
	c := []string{m.Name + ", " + m.Unit}
	for _, key := range []string{pathLoadmesh, pathHAProxy, pathDirect} {
		v, ok := m.Median[key]
		switch {
		case !ok:
			c = append(c, "–")
		case math.IsNaN(v):
			c = append(c, "failed")
		default:
			s := m.Format(v)
			if n := m.Fails[key]; n > 0 {
				s += fmt.Sprintf(" (%d with errors)", n)
			}
			c = append(c, s)
		}
	}
	rs, tgt := "n/a", "–"
	if r, ok := b.ratio(m); ok {
		if m.Goal != nil {
			rs = fmt.Sprintf("%.2f×", m.Goal.roundRatio(r))
		} else {
			rs = fmt.Sprintf("%.2f×", r)
		}
	}
	if m.Goal != nil {
		if m.Goal.higherIsBetter {
			tgt = fmt.Sprintf("≥ %.2f×", m.Goal.limit())
		} else {
			tgt = fmt.Sprintf("≤ %.2f×", m.Goal.limit())
		}
	}
	return append(c, rs, tgt)
}

var header = []string{"measure", "loadmesh A → B", "HAProxy", "direct", "loadmesh / HAProxy", "target"}

// costRows are the secondary figures: proxy CPU per unit of work, the
// latency of a connection set-up, peak RSS during the long streams.
func (b *bench) costRows() [][]string {
	rows := [][]string{{"figure", "loadmesh A → B", "HAProxy", "direct"}}
	add := func(name string, f func(p *path) string) {
		r := []string{name}
		for _, key := range []string{pathLoadmesh, pathHAProxy, pathDirect} {
			p := b.pathByKey(key)
			if p == nil {
				r = append(r, "–")
				continue
			}
			r = append(r, f(p))
		}
		rows = append(rows, r)
	}
	noProxy := func(p *path) bool { return len(p.Procs) == 0 }
	add("set-up: p50 / p99 of dial+1-byte echo+close, µs", func(p *path) string {
		var p50, p99 []float64
		for _, s := range b.rate[p.Key] {
			p50, p99 = append(p50, us(s.P50)), append(p99, us(s.P99))
		}
		return fmtUS(median(p50)) + " / " + fmtUS(median(p99))
	})
	add("set-up: failed connections (errors + timeouts), all rounds", func(p *path) string {
		var e, t int64
		var first string
		for _, s := range b.rate[p.Key] {
			e, t = e+s.Errors, t+s.Timeouts
			if first == "" {
				first = s.FirstErr
			}
		}
		if first != "" {
			return fmt.Sprintf("%d + %d (first: %s)", e, t, first)
		}
		return fmt.Sprintf("%d + %d", e, t)
	})
	add("set-up: proxy CPU per connection, µs", func(p *path) string {
		if noProxy(p) {
			return "–"
		}
		var xs []float64
		for _, s := range b.rate[p.Key] {
			xs = append(xs, perOp(s.CPU, s.Conns))
		}
		return fmtUS(median(xs))
	})
	if b.cfg.bulkSize > 0 {
		for _, dir := range []string{"upload", "download"} {
			src := b.up
			if dir == "download" {
				src = b.down
			}
			add(dir+": proxy CPU per GB, s", func(p *path) string {
				if noProxy(p) {
					return "–"
				}
				var xs []float64
				for _, s := range src[p.Key] {
					if s.Err == "" {
						xs = append(xs, perGB(s.CPU, s.Bytes))
					}
				}
				return fmt.Sprintf("%.2f", ceilTo(medianOrZero(xs), 2))
			})
			add(dir+": peak extra RSS per proxy process, MiB", func(p *path) string {
				if noProxy(p) {
					return "–"
				}
				var parts []string
				for i, l := range p.Labels {
					var xs []float64
					for _, s := range src[p.Key] {
						if i < len(s.ExtraPeak) {
							xs = append(xs, float64(s.ExtraPeak[i])/1024)
						}
					}
					parts = append(parts, fmt.Sprintf("%s %.1f", l, ceilTo(medianOrZero(xs), 1)))
				}
				return strings.Join(parts, ", ")
			})
		}
	}
	add("TLS round trip: proxy CPU per round trip, µs", func(p *path) string {
		if noProxy(p) {
			return "–"
		}
		var xs []float64
		for _, s := range b.rtt[p.Key] {
			if s.Err == "" {
				xs = append(xs, perOp(s.CPU, int64(s.N+b.cfg.rttWarm)))
			}
		}
		return fmtUS(medianOrZero(xs))
	})
	add("TLS round trip: p99.9 / max, µs; handshake, ms", func(p *path) string {
		var p999, mx, hs []float64
		for _, s := range b.rtt[p.Key] {
			if s.Err == "" {
				p999, mx, hs = append(p999, us(s.P999)), append(mx, us(s.Max)), append(hs, ms(s.Handshake))
			}
		}
		return fmt.Sprintf("%s / %s; %.2f", fmtUS(medianOrZero(p999)), fmtUS(medianOrZero(mx)), ceilTo(medianOrZero(hs), 2))
	})
	if b.cfg.idle > 0 {
		for _, phase := range []string{"idle", "active"} {
			if phase == "active" && b.cfg.idleEcho == 0 {
				continue
			}
			name := "memory: RSS per idle connection, per process, KiB"
			if phase == "active" {
				name = fmt.Sprintf("memory: RSS per connection after %d KiB echoed, per process, KiB", b.cfg.idleEcho>>10)
			}
			add(name, func(p *path) string {
				if noProxy(p) {
					return "–"
				}
				var parts []string
				for i, l := range p.Labels {
					var xs []float64
					for _, s := range b.mem[p.Key] {
						if v, ok := memPerConn(s, phase, i); ok {
							xs = append(xs, v)
						}
					}
					parts = append(parts, fmt.Sprintf("%s %s", l, fmtKiB(medianOrZero(xs))))
				}
				return strings.Join(parts, ", ")
			})
		}
		add("memory: RSS after the connections closed, vs before, per process, MiB", func(p *path) string {
			if noProxy(p) {
				return "–"
			}
			var parts []string
			for i, l := range p.Labels {
				var xs []float64
				for _, s := range b.mem[p.Key] {
					if i < len(s.Closed) && i < len(s.Before) {
						xs = append(xs, float64(s.Closed[i]-s.Before[i])/1024)
					}
				}
				parts = append(parts, fmt.Sprintf("%s %+.1f", l, ceilTo(medianOrZero(xs), 1)))
			}
			return strings.Join(parts, ", ")
		})
	}
	add("half-close (client shuts its side; echoed bytes then EOF come back)", func(p *path) string {
		msg, ok := b.halfClose[p.Key]
		switch {
		case !ok:
			return "not checked"
		case msg == "":
			return "works"
		default:
			return "FAILS: " + msg
		}
	})
	return rows
}

func medianOrZero(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	return median(xs)
}

func (b *bench) pathByKey(key string) *path {
	for _, p := range b.paths {
		if p.Key == key {
			return p
		}
	}
	return nil
}

func table(rows [][]string) string {
	widths := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	var sb strings.Builder
	for _, r := range rows {
		for i, c := range r {
			pad := widths[i] - len([]rune(c))
			if i == 0 {
				sb.WriteString(c + strings.Repeat(" ", pad) + "  ")
			} else {
				sb.WriteString(strings.Repeat(" ", pad) + c + "  ")
			}
		}
		sb.WriteString("\n")
	}
	return sb.String()
}

func (b *bench) textReport() string {
	var sb strings.Builder
	ms := b.measures()
	fmt.Fprintf(&sb, "medians of %d interleaved rounds\n\n", b.cfg.rounds)
	rows := [][]string{header}
	for _, m := range ms {
		rows = append(rows, b.cells(m))
	}
	sb.WriteString(table(rows))
	sb.WriteString("\n")
	sb.WriteString(table(b.costRows()))
	sb.WriteString("\ntargets:\n")
	for _, t := range b.targets(ms) {
		fmt.Fprintf(&sb, "  [%s] %s\n", verdict(t), t.text)
	}
	if b.lm != nil {
		fmt.Fprintf(&sb, "\nagents' service errors during the measures: %s\n", b.errorDelta())
		if by := b.errorsByMeasure(); by != "" {
			fmt.Fprintf(&sb, "  by measure: %s\n", by)
		}
		sb.WriteString("agents' service counters (GET /v1/status) at the end:\n")
		for _, l := range statusLines(b.statusEnd) {
			fmt.Fprintf(&sb, "  %s\n", l)
		}
	}
	fmt.Fprintf(&sb, "\nload avg at end: %s; whole run %s\n", b.info.LoadEnd, b.info.Elapsed.Round(time.Second))
	return sb.String()
}

func mdRow(cells []string) string {
	out := make([]string, len(cells))
	for i, c := range cells {
		out[i] = strings.ReplaceAll(c, "|", `\|`)
	}
	return "| " + strings.Join(out, " | ") + " |\n"
}

func (b *bench) markdown() string {
	var sb strings.Builder
	ms := b.measures()
	m := b.info
	fmt.Fprintf(&sb, "## TCP services: results of the last `make bench-tcp`\n\n")
	fmt.Fprintf(&sb, "Measured %s UTC, whole run %s.\n\n", m.Date.Format("2006-01-02 15:04"), m.Elapsed.Round(time.Second))
	sb.WriteString(mdRow([]string{"machine", ""}))
	sb.WriteString("|---|---|\n")
	sb.WriteString(mdRow([]string{"CPU", fmt.Sprintf("%s, %d cores%s", m.CPU, m.Cores, virt(m.Virtual))}))
	sb.WriteString(mdRow([]string{"memory", m.MemTotal}))
	sb.WriteString(mdRow([]string{"kernel", m.Kernel}))
	sb.WriteString(mdRow([]string{"Go", m.Go}))
	sb.WriteString(mdRow([]string{"loadmesh", m.Loadmesh}))
	hp := m.HAProxy
	if hp == "" {
		hp = "not installed"
	}
	sb.WriteString(mdRow([]string{"HAProxy", hp}))
	sb.WriteString(mdRow([]string{"load average (1/5/15 min)", fmt.Sprintf("%s at start, %s at end", m.LoadStart, m.LoadEnd)}))
	sb.WriteString("\n")
	for _, n := range b.notes {
		fmt.Fprintf(&sb, "> Note: %s\n\n", n)
	}

	fmt.Fprintf(&sb, "### Medians\n\n")
	fmt.Fprintf(&sb, "Medians of %d interleaved rounds (the order of the paths rotates each round). Ratios compare loadmesh with "+
		"the HAProxy path of the same run. Rates and rate ratios are truncated; latencies, latency ratios and memory rounded up. "+
		"Set-up: %d workers for %s per run, each connection a dial, a 1-byte echo and a close. "+
		"Long streams: %d MiB over one connection each way (MB = 10⁶ bytes). "+
		"TLS: one connection per run, %d unmeasured round trips, then %d measured. "+
		"Memory: on fresh proxy processes each round, %d connections, each proven by a 1-byte echo, VmRSS of the proxy processes read %s after they are all open "+
		"(and again after %d KiB went through each), minus VmRSS before.\n\n",
		b.cfg.rounds, b.cfg.workers, b.cfg.duration, b.cfg.bulkSize>>20, b.cfg.rttWarm, b.cfg.rttN, b.cfg.idle, b.cfg.settle, b.cfg.idleEcho>>10)
	sb.WriteString(mdRow(header))
	sb.WriteString("|---|--:|--:|--:|--:|--:|\n")
	for _, x := range ms {
		sb.WriteString(mdRow(b.cells(x)))
	}
	sb.WriteString("\n### Targets\n\n")
	for _, t := range b.targets(ms) {
		fmt.Fprintf(&sb, "- **%s** — %s\n", verdict(t), t.text)
	}
	sb.WriteString("\n### Cost and behaviour\n\n")
	sb.WriteString("Proxy CPU is the user+system CPU of the path's proxy processes (agents A and B together, or HAProxy; never the " +
		"backends or the client) from /proc/PID/stat, divided by the work done.\n\n")
	cr := b.costRows()
	sb.WriteString(mdRow(cr[0]))
	sb.WriteString("|---|--:|--:|--:|\n")
	for _, r := range cr[1:] {
		sb.WriteString(mdRow(r))
	}
	sb.WriteString("\n")
	if b.lm != nil {
		if b.leakCheck != "" {
			fmt.Fprintf(&sb, "After the last round: %s.\n\n", b.leakCheck)
		} else {
			sb.WriteString("After the last round both agents reported no open connection.\n\n")
		}
		fmt.Fprintf(&sb, "Error counters of the agents' services during the measures (GET /v1/status before and after each): %s.\n\n", b.errorDelta())
		if by := b.errorsByMeasure(); by != "" {
			fmt.Fprintf(&sb, "By measure (all rounds): %s.\n\n", by)
		}
		sb.WriteString("<details><summary>the agents' service counters at the end (GET /v1/status)</summary>\n\n")
		for _, l := range statusLines(b.statusEnd) {
			fmt.Fprintf(&sb, "- `%s`\n", l)
		}
		sb.WriteString("\n</details>\n\n")
	}

	sb.WriteString("<details><summary>every round</summary>\n\n")
	sb.WriteString("| path | set-up conns/s | upload MB/s | download MB/s | TLS p99 µs | RSS KiB/conn idle (all proxies) |\n|---|---|---|---|---|---|\n")
	for _, p := range b.paths {
		var r, u, d, t, mm []string
		for _, s := range b.rate[p.Key] {
			x := fmtRate(s.PerSec())
			if s.Errors+s.Timeouts > 0 {
				x += fmt.Sprintf(" (%d failed)", s.Errors+s.Timeouts)
			}
			r = append(r, x)
		}
		for _, s := range b.up[p.Key] {
			u = append(u, bulkCell(s))
		}
		for _, s := range b.down[p.Key] {
			d = append(d, bulkCell(s))
		}
		for _, s := range b.rtt[p.Key] {
			if s.Err != "" {
				t = append(t, "failed")
			} else {
				t = append(t, fmtUS(us(s.P99)))
			}
		}
		for _, s := range b.mem[p.Key] {
			if v, ok := memPerConn(s, "idle", -1); ok {
				mm = append(mm, fmtKiB(v))
			} else {
				mm = append(mm, "failed")
			}
		}
		sb.WriteString(mdRow([]string{p.Key, strings.Join(r, ", "), strings.Join(u, ", "), strings.Join(d, ", "),
			strings.Join(t, ", "), strings.Join(mm, ", ")}))
	}
	sb.WriteString("\n</details>\n")
	if errs := b.runErrors(); len(errs) > 0 {
		sb.WriteString("\n<details><summary>errors</summary>\n\n")
		for _, e := range errs {
			fmt.Fprintf(&sb, "- %s\n", e)
		}
		sb.WriteString("\n</details>\n")
	}
	return sb.String()
}

func bulkCell(s bulkSample) string {
	if s.Err != "" {
		return "failed"
	}
	return fmtMB(s.MBps())
}

// runErrors lists every failed run with its error.
func (b *bench) runErrors() []string {
	var out []string
	for _, p := range b.paths {
		for i, s := range b.rate[p.Key] {
			if s.FirstErr != "" {
				out = append(out, fmt.Sprintf("%s, round %d, set-up: %d errors, %d timeouts, first: %s", p.Key, i+1, s.Errors, s.Timeouts, s.FirstErr))
			}
		}
		for i, s := range b.up[p.Key] {
			if s.Err != "" {
				out = append(out, fmt.Sprintf("%s, round %d, upload: %s", p.Key, i+1, s.Err))
			}
		}
		for i, s := range b.down[p.Key] {
			if s.Err != "" {
				out = append(out, fmt.Sprintf("%s, round %d, download: %s", p.Key, i+1, s.Err))
			}
		}
		for i, s := range b.rtt[p.Key] {
			if s.Err != "" {
				out = append(out, fmt.Sprintf("%s, round %d, TLS round trips: %s", p.Key, i+1, s.Err))
			}
		}
		for i, s := range b.mem[p.Key] {
			if s.Err != "" {
				out = append(out, fmt.Sprintf("%s, round %d, memory: %s", p.Key, i+1, s.Err))
			}
		}
	}
	return out
}

const (
	beginMarker = "<!-- tcpbench:begin — generated by make bench-tcp (test/bench/cmd/tcpbench); do not edit between these markers -->"
	endMarker   = "<!-- tcpbench:end -->"
)

// writeDoc replaces tcpbench's generated section of path, keeping
// everything around it (lmbench's section included). A file without the
// markers gets the section appended; a missing file is created.
func writeDoc(path, generated string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	doc := replaceSection(string(old), generated)
	tmp := path + ".tcpbench.tmp"
	if err := os.WriteFile(tmp, []byte(doc), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// replaceSection puts generated between the tcpbench markers of doc.
func replaceSection(doc, generated string) string {
	begin := strings.Index(doc, "<!-- tcpbench:begin")
	end := strings.Index(doc, endMarker)
	if begin < 0 || end < begin {
		if doc != "" && !strings.HasSuffix(doc, "\n") {
			doc += "\n"
		}
		if doc != "" {
			doc += "\n"
		}
		return doc + beginMarker + "\n" + generated + endMarker + "\n"
	}
	return doc[:begin] + beginMarker + "\n" + generated + doc[end:]
}

// errorDelta names the errors the agents' services counted during the
// measures (each read before and after), by agent and kind, all rounds
// together.
func (b *bench) errorDelta() string {
	total := map[string]float64{}
	for _, kinds := range b.errByMeasure {
		for k, v := range kinds {
			total[k] += v
		}
	}
	var parts []string
	for _, l := range b.lm.Labels {
		var kinds []string
		for k, v := range total {
			if kind, ok := strings.CutPrefix(k, l+": "); ok {
				kinds = append(kinds, fmt.Sprintf("%s %.0f", kind, v))
			}
		}
		sort.Strings(kinds)
		if len(kinds) == 0 {
			kinds = []string{"none"}
		}
		parts = append(parts, l+": "+strings.Join(kinds, ", "))
	}
	return strings.Join(parts, "; ")
}

// errorsByMeasure renders errByMeasure: "set-up: agent A: relay 2; …".
func (b *bench) errorsByMeasure() string {
	var parts []string
	for _, m := range []string{"set-up", "upload", "download", "TLS round trips", "memory"} {
		kinds := b.errByMeasure[m]
		if len(kinds) == 0 {
			continue
		}
		var ks []string
		for k, v := range kinds {
			ks = append(ks, fmt.Sprintf("%s %.0f", k, v))
		}
		sort.Strings(ks)
		parts = append(parts, m+": "+strings.Join(ks, ", "))
	}
	return strings.Join(parts, "; ")
}
