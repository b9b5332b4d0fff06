package main

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// median returns the median of the finite values in xs, or NaN when there
// are none. xs is not modified.
func median(xs []float64) float64 { return percentile(xs, 50) }

// percentile returns the p-th percentile (0..100) of the finite values in
// xs by linear interpolation between closest ranks, or NaN when there are
// none. xs is not modified.
func percentile(xs []float64, p float64) float64 {
	v := finite(xs)
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	if len(v) == 1 {
		return v[0]
	}
	pos := max(0, min(100, p)) / 100 * float64(len(v)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	return v[lo] + (v[hi]-v[lo])*(pos-float64(lo))
}

// maxFinite returns the largest finite value in xs, or NaN when there is
// none.
func maxFinite(xs []float64) float64 {
	v := finite(xs)
	if len(v) == 0 {
		return math.NaN()
	}
	return slices.Max(v)
}

// optFloat is a float64 that may be missing (NaN), written as JSON null.
type optFloat float64

func (f optFloat) MarshalJSON() ([]byte, error) {
	v := float64(f)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return []byte("null"), nil
	}
	return strconv.AppendFloat(nil, v, 'g', -1, 64), nil
}

func (f *optFloat) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*f = optFloat(math.NaN())
		return nil
	}
	v, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("optFloat: %w", err)
	}
	*f = optFloat(v)
	return nil
}

// finite returns a copy of xs without NaN and infinities.
func finite(xs []float64) []float64 {
	out := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			out = append(out, x)
		}
	}
	return out
}

// spread formats the median of xs with f, followed by the range when
// there is more than one value: "1.2 (1.1–1.4)". No values give "–".
func spread(xs []float64, f func(float64) string) string {
	v := finite(xs)
	switch len(v) {
	case 0:
		return "–"
	case 1:
		return f(v[0])
	}
	return fmt.Sprintf("%s (%s–%s)", f(median(v)), f(slices.Min(v)), f(slices.Max(v)))
}

// fit is a least-squares line y = A + B·x, with its coefficient of
// determination.
type fit struct {
	A, B, R2 float64
}

// linearFit fits y = A + B·x by least squares. It needs at least two
// distinct x values.
func linearFit(x, y []float64) (fit, error) {
	if len(x) != len(y) || len(x) < 2 {
		return fit{}, errors.New("linear fit: need at least two points")
	}
	n := float64(len(x))
	var sx, sy, sxx, sxy float64
	for i := range x {
		sx += x[i]
		sy += y[i]
		sxx += x[i] * x[i]
		sxy += x[i] * y[i]
	}
	den := n*sxx - sx*sx
	if den == 0 {
		return fit{}, errors.New("linear fit: all x values are equal")
	}
	b := (n*sxy - sx*sy) / den
	a := (sy - b*sx) / n
	mean := sy / n
	var ssRes, ssTot float64
	for i := range x {
		d := y[i] - (a + b*x[i])
		ssRes += d * d
		ssTot += (y[i] - mean) * (y[i] - mean)
	}
	r2 := 1.0
	if ssTot > 0 {
		r2 = 1 - ssRes/ssTot
	}
	return fit{A: a, B: b, R2: r2}, nil
}

// log2s returns log2 of each value.
func log2s(xs []float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = math.Log2(x)
	}
	return out
}

// parseLoadavg reads the 1-minute load average from /proc/loadavg's text.
func parseLoadavg(s string) (float64, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return 0, errors.New("loadavg: empty")
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0, fmt.Errorf("loadavg: %w", err)
	}
	return v, nil
}

// parseStatusKB reads a "Key:   1234 kB" line of /proc/self/status (or
// /proc/meminfo) and returns the value in bytes.
func parseStatusKB(text, key string) (uint64, error) {
	for _, line := range strings.Split(text, "\n") {
		k, rest, ok := strings.Cut(line, ":")
		if !ok || k != key {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			break
		}
		v, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", key, err)
		}
		if len(f) > 1 && f[1] != "kB" {
			return 0, fmt.Errorf("%s: unexpected unit %q", key, f[1])
		}
		return v * 1024, nil
	}
	return 0, fmt.Errorf("%s: not found", key)
}

// estimateRSS extrapolates a process's resident memory from a run of n
// agents (base: the process without agents, total: with them) to target
// agents. Per-agent memory grows with the cluster (every agent keeps a
// table of every member), so the per-agent share is scaled by
// (1 + growth·(target/n − 1)), growth being the share of per-agent memory
// assumed to grow linearly with N.
func estimateRSS(base, total float64, n, target int, growth float64) float64 {
	per := (total - base) / float64(n)
	scale := 1 + growth*(float64(target)/float64(n)-1)
	return base + per*scale*float64(target)
}

// table renders a Markdown table.
func table(header []string, rows [][]string) string {
	var b strings.Builder
	line := func(cells []string) {
		b.WriteString("|")
		for _, c := range cells {
			b.WriteString(" ")
			b.WriteString(strings.ReplaceAll(c, "|", `\|`))
			b.WriteString(" |")
		}
		b.WriteString("\n")
	}
	line(header)
	sep := make([]string, len(header))
	for i := range sep {
		sep[i] = "---"
		if i > 0 {
			sep[i] = "---:"
		}
	}
	b.WriteString("|" + strings.Join(sep, "|") + "|\n")
	for _, r := range rows {
		line(r)
	}
	return b.String()
}

// Number formats for the tables.
func secs(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }
func pct(v float64) string  { return strconv.FormatFloat(100*v, 'f', 2, 64) + " %" }
func mib(v float64) string  { return strconv.FormatFloat(v/(1<<20), 'f', 2, 64) }
func num(v float64) string {
	switch {
	case math.Abs(v) >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case math.Abs(v) >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}
