package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/loadmesh/loadmesh/test/bench/internal/benchproc"
)

// machineInfo is benchproc.Machine with this report's rendering.
type machineInfo struct{ benchproc.Machine }

func readMachineInfo(bin, version string) machineInfo {
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

// row is the median of one scenario at one connection count.
type row struct {
	s        *scenario
	conns    int
	rps      float64
	p50, p99 time.Duration
	cpu      float64 // µs of proxy CPU per request
	errors   int64
	n        int
	ref      *row
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (b *bench) rows() []*row {
	var out []*row
	idx := map[runKey]*row{}
	for _, c := range b.cfg.conns {
		for _, s := range b.scen {
			smp := b.results[runKey{s.Key, c}]
			if len(smp) == 0 {
				continue
			}
			var rps, p50, p99, cpu []float64
			var errs int64
			for _, x := range smp {
				rps = append(rps, x.RPS)
				p50 = append(p50, float64(x.P50))
				p99 = append(p99, float64(x.P99))
				if s.Procs != nil {
					cpu = append(cpu, cpuPerReq(x))
				}
				errs += x.Errors
			}
			r := &row{s: s, conns: c, rps: median(rps), p50: time.Duration(median(p50)),
				p99: time.Duration(median(p99)), cpu: median(cpu), errors: errs, n: len(smp)}
			idx[runKey{s.Key, c}] = r
			out = append(out, r)
		}
	}
	for _, r := range out {
		r.ref = idx[runKey{r.s.Ref, r.conns}]
	}
	return out
}

// Figures are cut toward the unfavourable side for loadmesh: req/s and
// req/s ratios are truncated, latencies, p99 ratios and RSS rounded up.
func floorTo(x float64, digits int) float64 {
	p := math.Pow10(digits)
	return math.Floor(x*p) / p
}

func ceilTo(x float64, digits int) float64 {
	p := math.Pow10(digits)
	r := math.Ceil(x*p-1e-9) / p
	if r == 0 {
		return 0 // not -0
	}
	return r
}

func fmtRPS(x float64) string { return fmt.Sprintf("%d", int64(math.Floor(x))) }
func fmtMS(d time.Duration) string {
	return fmt.Sprintf("%.2f", ceilTo(ms(d), 2))
}

func (r *row) rpsRatio() (float64, bool) {
	if r.ref == nil || r.ref.rps == 0 {
		return 0, false
	}
	return r.rps / r.ref.rps, true
}

func (r *row) p99Ratio() (float64, bool) {
	if r.ref == nil || r.ref.p99 == 0 {
		return 0, false
	}
	return float64(r.p99) / float64(r.ref.p99), true
}

func (r *row) cells() []string {
	rr, p9 := "n/a", "n/a"
	if v, ok := r.rpsRatio(); ok {
		rr = fmt.Sprintf("%.2f×", floorTo(v, 2))
	}
	if v, ok := r.p99Ratio(); ok {
		p9 = fmt.Sprintf("%.2f×", ceilTo(v, 2))
	}
	cpu := "–"
	if r.s.Procs != nil {
		cpu = fmt.Sprintf("%.0f", math.Ceil(r.cpu))
	}
	ref := "–"
	if r.ref != nil {
		ref = r.ref.s.Key
	}
	errs := ""
	if r.errors > 0 {
		errs = fmt.Sprintf(" (%d errors)", r.errors)
	}
	return []string{r.s.Name + errs, fmt.Sprint(r.conns), fmtRPS(r.rps), fmtMS(r.p50), fmtMS(r.p99), cpu, rr, p9, ref}
}

var header = []string{"path", "conns", "req/s", "p50 ms", "p99 ms", "proxy CPU µs/req", "req/s vs ref", "p99 vs ref", "ref"}

// target is one requirement checked against the run.
type target struct {
	text string
	met  bool
	ok   bool // evaluated at all
}

func (b *bench) targets(rows []*row) []target {
	var ts []target
	find := func(key string, c int) *row {
		for _, r := range rows {
			if r.s.Key == key && r.conns == c {
				return r
			}
		}
		return nil
	}
	for _, c := range b.cfg.conns {
		for _, t := range []struct {
			key, refName string
			min          float64
		}{{"local", "HAProxy", 0.8}, {"twohop", "HAProxy→HAProxy (plain HTTP)", 0.7}} {
			r := find(t.key, c)
			if r == nil || r.ref == nil {
				ts = append(ts, target{text: fmt.Sprintf("%s c=%d: not evaluated (no HAProxy reference)", t.key, c)})
				continue
			}
			v, _ := r.rpsRatio()
			ts = append(ts, target{ok: true, met: v >= t.min && r.errors == 0, text: fmt.Sprintf(
				"%s req/s ≥ %.1f× %s, c=%d: %.2f× (%s vs %s req/s)%s", label(t.key), t.min, t.refName, c,
				floorTo(v, 2), fmtRPS(r.rps), fmtRPS(r.ref.rps), errNote(r))})
			p, _ := r.p99Ratio()
			ts = append(ts, target{ok: true, met: p <= 1.5, text: fmt.Sprintf(
				"%s p99 ≤ 1.5× %s, c=%d: %.2f× (%s vs %s ms)", label(t.key), t.refName, c,
				ceilTo(p, 2), fmtMS(r.p99), fmtMS(r.ref.p99))})
		}
	}
	for _, br := range b.bulk {
		if !strings.HasPrefix(br.Path, "loadmesh") {
			continue
		}
		if br.Err != nil {
			ts = append(ts, target{ok: true, met: false, text: fmt.Sprintf("1 GiB %s through the two-hop path: failed: %v", br.Kind, br.Err)})
			continue
		}
		var parts []string
		met := true
		for i, l := range br.Labels {
			extra := float64(br.Peak[i]-br.Before[i]) / 1024
			if extra >= 64 {
				met = false
			}
			parts = append(parts, fmt.Sprintf("%s +%.1f MiB", l, ceilTo(extra, 1)))
		}
		ts = append(ts, target{ok: true, met: met, text: fmt.Sprintf("1 GiB %s through the two-hop path, extra RSS < 64 MiB: %s",
			br.Kind, strings.Join(parts, ", "))})
	}
	return ts
}

func label(key string) string {
	switch key {
	case "local":
		return "Local path"
	case "twohop":
		return "Two-hop over QUIC"
	}
	return key
}

func errNote(r *row) string {
	if r.errors > 0 {
		return fmt.Sprintf(", %d failed requests", r.errors)
	}
	return ""
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

// extraComparisons are informative ratios beyond the targets.
func (b *bench) extraComparisons(rows []*row) []string {
	var out []string
	for _, c := range b.cfg.conns {
		var th, tls *row
		for _, r := range rows {
			if r.conns != c {
				continue
			}
			switch r.s.Key {
			case "twohop":
				th = r
			case "haproxy2tls":
				tls = r
			}
		}
		if th != nil && tls != nil && tls.rps > 0 && tls.p99 > 0 {
			out = append(out, fmt.Sprintf("Two-hop over QUIC vs HAProxy→HAProxy with mutual TLS 1.3, c=%d: req/s %.2f× (%s vs %s), p99 %.2f× (%s vs %s ms)",
				c, floorTo(th.rps/tls.rps, 2), fmtRPS(th.rps), fmtRPS(tls.rps),
				ceilTo(float64(th.p99)/float64(tls.p99), 2), fmtMS(th.p99), fmtMS(tls.p99)))
		}
	}
	return out
}

func (b *bench) textReport() string {
	var sb strings.Builder
	rows := b.rows()
	fmt.Fprintf(&sb, "medians of %d rounds of %s per row, load generator: %s\n\n", b.cfg.rounds, b.cfg.duration, b.loader.name())
	tbl := [][]string{header}
	for _, r := range rows {
		tbl = append(tbl, r.cells())
	}
	widths := make([]int, len(header))
	for _, r := range tbl {
		for i, c := range r {
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	for _, r := range tbl {
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
	sb.WriteString("\ntargets:\n")
	for _, t := range b.targets(rows) {
		fmt.Fprintf(&sb, "  [%s] %s\n", verdict(t), t.text)
	}
	for _, s := range b.extraComparisons(rows) {
		fmt.Fprintf(&sb, "  [info] %s\n", s)
	}
	if len(b.profiles) > 0 {
		sb.WriteString("\nCPU profiles (perf):\n")
		for _, p := range b.profiles {
			fmt.Fprintf(&sb, "  %s, c=%d, %.0f req/s under perf, %s samples:\n", p.Label, p.Conns, p.RPS, p.Samples)
			for _, c := range p.Categories {
				if c.Pct >= 1 {
					fmt.Fprintf(&sb, "    %5.1f%%  %s\n", c.Pct, c.Name)
				}
			}
			sb.WriteString("    top self:\n")
			for _, e := range p.Self[:min(12, len(p.Self))] {
				fmt.Fprintf(&sb, "    %5.1f%%  %s\n", e.Pct, e.Name)
			}
		}
	}
	fmt.Fprintf(&sb, "\nload avg at end: %s; whole run %s\n", b.info.LoadEnd, b.info.Elapsed.Round(time.Second))
	return sb.String()
}

func mdRow(cells []string) string {
	for i, c := range cells {
		cells[i] = strings.ReplaceAll(c, "|", `\|`)
	}
	return "| " + strings.Join(cells, " | ") + " |\n"
}

func (b *bench) markdown() string {
	var sb strings.Builder
	rows := b.rows()
	m := b.info
	fmt.Fprintf(&sb, "## Results of the last `make bench`\n\n")
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
	sb.WriteString(mdRow([]string{"load generator", b.loader.name()}))
	sb.WriteString(mdRow([]string{"load average (1/5/15 min)", fmt.Sprintf("%s at start, %s at end", m.LoadStart, m.LoadEnd)}))
	sb.WriteString("\n")
	for _, n := range b.notes {
		fmt.Fprintf(&sb, "> Note: %s\n\n", n)
	}

	fmt.Fprintf(&sb, "### Requests per second and latency\n\n")
	fmt.Fprintf(&sb, "Small GET (a %d-byte answer), closed loop, medians of %d interleaved rounds of %s per row. "+
		"\"proxy CPU\" is the user+system CPU of the proxy processes of the path (both hops for two-hop paths, not the backend) "+
		"divided by the requests served. Ratios compare with the HAProxy row named in \"ref\", measured in the same run at the same "+
		"connection count; req/s and req/s ratios are truncated, latencies and p99 ratios rounded up.\n\n",
		len("hello from bench-backend: GET /\n"), b.cfg.rounds, b.cfg.duration)
	sb.WriteString(mdRow(slices.Clone(header)))
	sb.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|---|\n")
	for _, r := range rows {
		sb.WriteString(mdRow(r.cells()))
	}
	sb.WriteString("\n")

	fmt.Fprintf(&sb, "### Targets\n\n")
	for _, t := range b.targets(rows) {
		fmt.Fprintf(&sb, "- **%s** — %s\n", verdict(t), t.text)
	}
	for _, s := range b.extraComparisons(rows) {
		fmt.Fprintf(&sb, "- (for information) %s\n", s)
	}
	sb.WriteString("\n")

	if len(b.bulk) > 0 {
		fmt.Fprintf(&sb, "### Large bodies (%d MiB) through the two-hop paths\n\n", b.cfg.bulkSize>>20)
		sb.WriteString("Extra RSS = highest RSS during the transfer (VmRSS sampled every 20 ms, and VmHWM after resetting it " +
			"through /proc/PID/clear_refs just before) minus VmRSS just before. download = `GET ?size=N`, upload = POST that the " +
			"backend counts and discards, echo = POST `?echo=1` streamed back (N bytes each way).\n\n")
		sb.WriteString(mdRow([]string{"path", "transfer", "MiB/s", "RSS before → peak, extra (hop 1)", "RSS before → peak, extra (hop 2)", "CPU s (hop 1 / hop 2)", "result"}))
		sb.WriteString("|---|---|--:|--:|--:|--:|---|\n")
		for _, r := range b.bulk {
			cells := []string{r.Path, r.Kind, fmt.Sprintf("%.0f", math.Floor(r.MiBps()))}
			for i := range 2 {
				if i < len(r.Labels) {
					cells = append(cells, fmt.Sprintf("%s: %.1f → %.1f MiB, **+%.1f MiB**", r.Labels[i],
						float64(r.Before[i])/1024, ceilTo(float64(r.Peak[i])/1024, 1), ceilTo(float64(r.Peak[i]-r.Before[i])/1024, 1)))
				} else {
					cells = append(cells, "")
				}
			}
			if len(r.CPU) == 2 {
				cells = append(cells, fmt.Sprintf("%.2f / %.2f", r.CPU[0], r.CPU[1]))
			} else {
				cells = append(cells, "")
			}
			res := "ok"
			if r.Err != nil {
				res = "FAILED: " + r.Err.Error()
				cells[2] = "–"
			}
			cells = append(cells, res)
			sb.WriteString(mdRow(cells))
		}
		sb.WriteString("\n")
	}

	if len(b.profiles) > 0 {
		fmt.Fprintf(&sb, "### CPU profiles\n\n")
		fmt.Fprintf(&sb, "`perf record -F 999 -g` (frame pointers) on the agents during one extra run of the two-hop path and one of the "+
			"local path, %s each (not part of the medians). Self time is summed by area first, then the top functions by self "+
			"time and by inclusive time. Kernel symbols are marked [kernel]. perf samples with the "+
			"cpu-clock timer here, which cannot fire while the kernel has interrupts disabled, so kernel time spent with interrupts off "+
			"(context switches, wake-ups, network softirq) is charged to the point where they are re-enabled: on this paravirtualised "+
			"guest that is `pvm_irq_enable`.\n\n", b.cfg.duration)
		for _, p := range b.profiles {
			fmt.Fprintf(&sb, "#### %s — c=%d, %s req/s under perf, %s samples\n\n", p.Label, p.Conns, fmtRPS(p.RPS), p.Samples)
			if p.Err != nil {
				fmt.Fprintf(&sb, "perf failed: %v\n\n", p.Err)
				continue
			}
			sb.WriteString("| self % | area |\n|--:|---|\n")
			for _, c := range p.Categories {
				if c.Pct >= 0.5 {
					sb.WriteString(mdRow([]string{fmt.Sprintf("%.1f", c.Pct), c.Name}))
				}
			}
			sb.WriteString("\n| self % | function |\n|--:|---|\n")
			for _, e := range p.Self[:min(15, len(p.Self))] {
				sb.WriteString(mdRow([]string{fmt.Sprintf("%.1f", e.Pct), "`" + e.Name + "`"}))
			}
			sb.WriteString("\n<details><summary>top functions by inclusive time</summary>\n\n| incl. % | function |\n|--:|---|\n")
			for _, e := range p.Inclusive {
				sb.WriteString(mdRow([]string{fmt.Sprintf("%.1f", e.Pct), "`" + e.Name + "`"}))
			}
			sb.WriteString("\n</details>\n\n")
		}
	}

	sb.WriteString("<details><summary>every run</summary>\n\n")
	sb.WriteString("| path | conns | req/s per round | p99 ms per round | proxy CPU µs/req per round |\n|---|--:|---|---|---|\n")
	for _, c := range b.cfg.conns {
		for _, s := range b.scen {
			var rps, p99, cpu []string
			for _, x := range b.results[runKey{s.Key, c}] {
				rps = append(rps, fmtRPS(x.RPS))
				p99 = append(p99, fmtMS(x.P99))
				cpu = append(cpu, fmt.Sprintf("%.0f", cpuPerReq(x)))
			}
			sb.WriteString(mdRow([]string{s.Key, fmt.Sprint(c), strings.Join(rps, ", "), strings.Join(p99, ", "), strings.Join(cpu, ", ")}))
		}
	}
	sb.WriteString("\n</details>\n")
	return sb.String()
}

const (
	beginMarker = "<!-- BEGIN GENERATED by make bench: do not edit between these markers -->"
	endMarker   = "<!-- END GENERATED by make bench -->"
)

// writeDoc replaces the generated section of path, keeping what is
// written around it; a missing file gets a minimal frame.
func writeDoc(path, generated string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	doc := string(old)
	i, j := strings.Index(doc, beginMarker), strings.Index(doc, endMarker)
	if i < 0 || j < i {
		doc = "# Benchmarks\n\nRun with `make bench` (see test/bench/run.sh).\n\n" + beginMarker + "\n" + endMarker + "\n"
		i, j = strings.Index(doc, beginMarker), strings.Index(doc, endMarker)
	}
	doc = doc[:i+len(beginMarker)] + "\n" + generated + doc[j:]
	return os.WriteFile(path, []byte(doc), 0o644)
}
