package chart

import (
	"bytes"
	"image/png"
	"strings"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/scheduler/autoscale"
)

func report(predictive bool) autoscale.Report {
	t0 := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	r := autoscale.Report{Trace: "t.csv", Start: t0, End: t0.Add(2 * time.Hour), Predictive: predictive}
	for i := 0; i < 120; i++ {
		r.Series = append(r.Series, autoscale.SeriesPoint{Time: t0.Add(time.Duration(i) * time.Minute), Demand: float64(100 + i), Capacity: 300, Active: 3})
	}
	return r
}

func TestWrite(t *testing.T) {
	var svg bytes.Buffer
	if err := Write(&svg, "svg", report(false), report(true)); err != nil {
		t.Fatal(err)
	}
	s := svg.String()
	if !strings.Contains(s, "<svg") || !strings.Contains(s, "demand") || !strings.Contains(s, "predictive") {
		t.Fatalf("svg lacks its parts: %.300s", s)
	}
	var pngBuf bytes.Buffer
	if err := Write(&pngBuf, "png", report(false)); err != nil {
		t.Fatal(err)
	}
	if _, err := png.Decode(&pngBuf); err != nil {
		t.Fatalf("png: %v", err)
	}
	if err := Write(&svg, "svg"); err == nil {
		t.Fatal("no reports accepted")
	}
}

func TestFormat(t *testing.T) {
	for in, want := range map[string]string{"a.svg": "svg", "B.PNG": "png", "c.pdf": ""} {
		got, err := Format(in)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("Format(%q) = %q, %v", in, got, err)
		}
	}
}
