package autoscale

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Sample is one row of a demand trace: the mean rate over the interval
// that starts at Time.
type Sample struct {
	Time time.Time `json:"time"`
	RPS  float64   `json:"rps"`
}

// Trace is a demand series at a fixed step.
type Trace struct {
	// Name is the file's base name.
	Name string `json:"name"`
	// Step is the median gap between samples.
	Step time.Duration `json:"step"`
	// Samples are in time order.
	Samples []Sample `json:"-"`
}

// MaxTraceRows bounds the rows ReadTrace accepts.
const MaxTraceRows = 5_000_000

// ReadTrace reads a CSV demand trace. The first non-comment line is a
// header naming a time column (timestamp, time or period) and a value
// column:
//
//   - rps, requests_per_second or rate: a mean rate in requests/s (the
//     format of deploy/traces and of the public traces in shared/traces:
//     "timestamp,rps", the rate over the interval starting at timestamp);
//   - count or requests: a count per interval, divided by the step to give
//     a rate.
//
// Timestamps are RFC 3339 (fractional seconds and offsets allowed), a
// date (2006-01-02, midnight UTC), "2006-01-02 15:04:05" (UTC), or Unix
// seconds. Lines starting with # and blank lines are skipped. Rows must be
// in increasing time order, with finite non-negative values.
func ReadTrace(r io.Reader, name string) (Trace, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	tr := Trace{Name: name}
	timeCol, valCol, ncols := -1, -1, 0
	counts := false
	line := 0
	var errs []error
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		f := strings.Split(s, ",")
		for i := range f {
			f[i] = strings.TrimSpace(strings.Trim(strings.TrimSpace(f[i]), `"`))
		}
		if timeCol < 0 {
			ncols = len(f)
			for i, h := range f {
				switch strings.ToLower(h) {
				case "timestamp", "time", "period", "ts":
					timeCol = i
				case "rps", "requests_per_second", "rate", "requests/s":
					valCol = i
				case "count", "requests", "invocations":
					valCol, counts = i, true
				}
			}
			if timeCol < 0 || valCol < 0 {
				return tr, fmt.Errorf("%s line %d: header %q: want a time column (timestamp) and a value column (rps or count)", name, line, s)
			}
			continue
		}
		if len(f) != ncols {
			errs = append(errs, fmt.Errorf("line %d: %d fields, want %d", line, len(f), ncols))
		} else if t, err := parseTraceTime(f[timeCol]); err != nil {
			errs = append(errs, fmt.Errorf("line %d: %w", line, err))
		} else if v, err := strconv.ParseFloat(f[valCol], 64); err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			errs = append(errs, fmt.Errorf("line %d: value %q: want a finite non-negative number", line, f[valCol]))
		} else if n := len(tr.Samples); n > 0 && !t.After(tr.Samples[n-1].Time) {
			errs = append(errs, fmt.Errorf("line %d: time %s is not after the previous row", line, f[timeCol]))
		} else {
			tr.Samples = append(tr.Samples, Sample{Time: t, RPS: v})
		}
		if len(errs) >= 10 {
			errs = append(errs, errors.New("too many errors"))
			break
		}
		if len(tr.Samples) > MaxTraceRows {
			return tr, fmt.Errorf("%s: more than %d rows", name, MaxTraceRows)
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return tr, fmt.Errorf("%s: %w", name, errors.Join(errs...))
	}
	if timeCol < 0 {
		return tr, fmt.Errorf("%s: no header", name)
	}
	if len(tr.Samples) < 2 {
		return tr, fmt.Errorf("%s: %d rows, want at least 2", name, len(tr.Samples))
	}
	gaps := make([]time.Duration, 0, len(tr.Samples)-1)
	for i := 1; i < len(tr.Samples); i++ {
		gaps = append(gaps, tr.Samples[i].Time.Sub(tr.Samples[i-1].Time))
	}
	sort.Slice(gaps, func(i, j int) bool { return gaps[i] < gaps[j] })
	tr.Step = gaps[len(gaps)/2]
	if counts {
		for i := range tr.Samples {
			tr.Samples[i].RPS /= tr.Step.Seconds()
		}
	}
	return tr, nil
}

// ReadTraceFile reads a trace from a file (see ReadTrace).
func ReadTraceFile(path string) (Trace, error) {
	f, err := os.Open(path)
	if err != nil {
		return Trace{}, err
	}
	defer f.Close()
	return ReadTrace(f, filepath.Base(path))
}

func parseTraceTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	if v, err := strconv.ParseFloat(s, 64); err == nil && v > 0 && v < 1e11 {
		sec, frac := math.Modf(v)
		return time.Unix(int64(sec), int64(frac*1e9)).UTC(), nil
	}
	return time.Time{}, fmt.Errorf("timestamp %q: want RFC 3339, a date or Unix seconds", s)
}

// Peak is the highest rate in the trace.
func (t Trace) Peak() float64 {
	p := 0.0
	for _, s := range t.Samples {
		p = math.Max(p, s.RPS)
	}
	return p
}

// Span is from the first sample to the end of the last.
func (t Trace) Span() (start, end time.Time) {
	if len(t.Samples) == 0 {
		return
	}
	return t.Samples[0].Time, t.Samples[len(t.Samples)-1].Time.Add(t.Step)
}

// demandFunc returns demand at increasing times: piecewise constant over
// each sample's interval, or, when interpolate is set, linear between the
// interval midpoints (constant before the first and after the last
// midpoint). It must be called with non-decreasing t.
func (t Trace) demandFunc(scale float64, interpolate bool) func(time.Time) float64 {
	s := t.Samples
	i := 0
	half := t.Step / 2
	if !interpolate {
		return func(at time.Time) float64 {
			for i+1 < len(s) && !at.Before(s[i+1].Time) {
				i++
			}
			return s[i].RPS * scale
		}
	}
	return func(at time.Time) float64 {
		for i+1 < len(s) && !at.Before(s[i+1].Time.Add(half)) {
			i++
		}
		m0 := s[i].Time.Add(half)
		if at.Before(m0) || i+1 >= len(s) {
			return s[i].RPS * scale
		}
		m1 := s[i+1].Time.Add(half)
		f := float64(at.Sub(m0)) / float64(m1.Sub(m0))
		return (s[i].RPS + f*(s[i+1].RPS-s[i].RPS)) * scale
	}
}
