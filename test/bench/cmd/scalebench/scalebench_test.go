package main

import (
	"encoding/json"
	"log/slog"
	"math"
	"strings"
	"testing"
)

func TestPercentile(t *testing.T) {
	nan := math.NaN()
	tests := []struct {
		name string
		xs   []float64
		p    float64
		want float64
	}{
		{"odd median", []float64{3, 1, 2}, 50, 2},
		{"even median interpolates", []float64{4, 1, 3, 2}, 50, 2.5},
		{"NaN ignored", []float64{nan, 5, 1, nan}, 50, 3},
		{"min", []float64{7, 3, 9}, 0, 3},
		{"max", []float64{7, 3, 9}, 100, 9},
		{"p90", []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, 90, 10},
		{"single", []float64{4.5}, 10, 4.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.xs, tt.p); math.Abs(got-tt.want) > 1e-12 {
				t.Errorf("percentile(%v, %v) = %v, want %v", tt.xs, tt.p, got, tt.want)
			}
		})
	}
	if got := median([]float64{nan, math.Inf(1)}); !math.IsNaN(got) {
		t.Errorf("median of no finite values = %v, want NaN", got)
	}
	xs := []float64{3, 1, 2}
	median(xs)
	if xs[0] != 3 || xs[1] != 1 || xs[2] != 2 {
		t.Errorf("median modified its input: %v", xs)
	}
}

func TestMaxFiniteAndSpread(t *testing.T) {
	nan := math.NaN()
	if got := maxFinite([]float64{1, nan, 4, 2}); got != 4 {
		t.Errorf("maxFinite = %v, want 4", got)
	}
	if got := maxFinite([]float64{nan}); !math.IsNaN(got) {
		t.Errorf("maxFinite of NaN = %v, want NaN", got)
	}
	if got := spread([]float64{2, 1, 4}, secs); got != "2.00 (1.00–4.00)" {
		t.Errorf("spread = %q", got)
	}
	if got := spread([]float64{nan, 1.5}, secs); got != "1.50" {
		t.Errorf("spread of one value = %q", got)
	}
	if got := spread([]float64{nan}, secs); got != "–" {
		t.Errorf("spread of none = %q", got)
	}
}

func TestLinearFit(t *testing.T) {
	// y = 0.5 + 0.25·log2 N exactly.
	x := log2s([]float64{25, 50, 100, 200})
	y := make([]float64, len(x))
	for i := range x {
		y[i] = 0.5 + 0.25*x[i]
	}
	f, err := linearFit(x, y)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(f.A-0.5) > 1e-9 || math.Abs(f.B-0.25) > 1e-9 || math.Abs(f.R2-1) > 1e-9 {
		t.Errorf("fit = %+v, want A 0.5, B 0.25, R² 1", f)
	}
	// Noise lowers R² below 1 but the slope stays close.
	f, err = linearFit([]float64{1, 2, 3, 4}, []float64{1.1, 1.9, 3.2, 3.8})
	if err != nil {
		t.Fatal(err)
	}
	if f.R2 >= 1 || f.R2 < 0.9 || math.Abs(f.B-0.94) > 0.01 {
		t.Errorf("noisy fit = %+v, want B ≈ 0.94 and 0.9 ≤ R² < 1", f)
	}
	if _, err := linearFit([]float64{2, 2}, []float64{1, 3}); err == nil {
		t.Error("fit over equal x values: want an error")
	}
	if _, err := linearFit([]float64{1}, []float64{1}); err == nil {
		t.Error("fit over one point: want an error")
	}
	px, py := pairsFinite([]float64{1, 2, 3}, []float64{math.NaN(), 5, 6})
	if len(px) != 2 || px[0] != 2 || py[1] != 6 {
		t.Errorf("pairsFinite = %v %v", px, py)
	}
}

func TestParseProc(t *testing.T) {
	if v, err := parseLoadavg("3.82 4.89 3.85 4/118 6464\n"); err != nil || v != 3.82 {
		t.Errorf("parseLoadavg = %v, %v", v, err)
	}
	if _, err := parseLoadavg(""); err == nil {
		t.Error("parseLoadavg of nothing: want an error")
	}
	status := "Name:\tscalebench\nVmPeak:\t  200 kB\nVmRSS:\t   1536 kB\n"
	if v, err := parseStatusKB(status, "VmRSS"); err != nil || v != 1536*1024 {
		t.Errorf("VmRSS = %v, %v", v, err)
	}
	if _, err := parseStatusKB(status, "VmSwap"); err == nil {
		t.Error("missing key: want an error")
	}
	if _, err := parseStatusKB("VmRSS: 12 MB\n", "VmRSS"); err == nil {
		t.Error("unexpected unit: want an error")
	}
}

func TestEstimateRSS(t *testing.T) {
	const mib = 1 << 20
	// 100 agents took 1000 MiB over a 20 MiB base: 10 MiB each.
	if got := estimateRSS(20*mib, 1020*mib, 100, 200, 0); got != 2020*mib {
		t.Errorf("linear estimate = %v MiB, want 2020", got/mib)
	}
	// Growth 0.5: per-agent memory 1.5× at twice the size.
	if got := estimateRSS(20*mib, 1020*mib, 100, 200, 0.5); got != 3020*mib {
		t.Errorf("estimate with growth = %v MiB, want 3020", got/mib)
	}
}

func TestEstimateSeconds(t *testing.T) {
	spent := map[int]float64{25: 40, 50: 60}
	for _, tt := range []struct {
		n    int
		want float64
	}{{50, 60}, {100, 120}, {10, 60}} {
		if got := estimateSeconds(spent, tt.n); got != tt.want {
			t.Errorf("estimateSeconds(%d) = %v, want %v", tt.n, got, tt.want)
		}
	}
}

func TestTable(t *testing.T) {
	got := table([]string{"N", "value"}, [][]string{{"25", "1|2"}, {"50", "3"}})
	want := "| N | value |\n|---|---:|\n| 25 | 1\\|2 |\n| 50 | 3 |\n"
	if got != want {
		t.Errorf("table =\n%s\nwant\n%s", got, want)
	}
}

func TestOptFloatJSON(t *testing.T) {
	in := struct {
		A optFloat `json:"a"`
		B optFloat `json:"b"`
	}{optFloat(math.NaN()), 1.25}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"a":null,"b":1.25}` {
		t.Errorf("marshal = %s", b)
	}
	out := in
	out.A, out.B = 7, 7
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !math.IsNaN(float64(out.A)) || out.B != 1.25 {
		t.Errorf("round trip = %v, %v", out.A, out.B)
	}
}

func TestLogCounts(t *testing.T) {
	c := &logCounts{m: map[string]int{}}
	h := &countHandler{c: c}
	log := slog.New(h).With("node", "n1")
	log.Warn("failed to contact node-001 at 127.0.0.1:7946")
	log.Warn("failed to contact node-002 at 127.0.0.1:7947")
	log.Info("not counted")
	log.Error("boom")
	top := c.top(1)
	if len(top) != 1 || top["WARN failed to contact node-### at ###.#.#.#:####"] != 2 {
		t.Errorf("top = %v", top)
	}
	if all := c.top(10); len(all) != 2 || all["ERROR boom"] != 1 {
		t.Errorf("all = %v", all)
	}
	long := strings.Repeat("x", 300)
	log.Warn(long)
	for k := range c.top(10) {
		if len(k) > 110 {
			t.Errorf("message not truncated: %d bytes", len(k))
		}
	}
}

func TestReport(t *testing.T) {
	run := func(n int, converge float64) runResult {
		return runResult{
			N: n, Converge: optFloat(converge), ConvergeP50: optFloat(converge / 2), RaftConverge: 1,
			LoadUp: optFloat(math.NaN()), LoadDown: 1, KillDetect: 5, RaftAgree: true, Voters: 5, Nonvoters: n - 5,
			CPUPerAgent: 0.01, GossipBytesPerNode: 1000, SteadySeconds: 20, LeaderElections: 1,
		}
	}
	out := report(config{}, []runResult{run(50, 4), run(25, 1), run(25, 3)})
	for _, want := range []string{
		"| 25 | 2 | 0.00 (0.00–0.00) | 2.00 (1.00–3.00) |", // start, then all alive: median (min–max)
		"| 50 | 1 | 0.00 | 4.00 |",
		"| 5 / 20 |",
		"| 1.00 % | 1000 |", // CPU per agent, gossip B/s
		"| 25 | 1.00 (1.00–1.00) | 0.00 |",
		"| all alive (s) | log2 N | -7.29 | 2.00 | 1.000 |", // medians 2 and 4: 2 + 2·(log2 N − log2 25)
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(out, "| 25 | 2 | 0.00 (0.00–0.00) | 2.00 (1.00–3.00) | 1.00 (0.50–1.50) | 1.00 (1.00–1.00) | 5 / 20 | – / 1.00 (1.00–1.00) |") {
		t.Errorf("a run without a figure (NaN) should show –:\n%s", out)
	}
}
