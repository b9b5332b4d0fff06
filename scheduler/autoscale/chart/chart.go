// Package chart draws a simulation report as a chart of demand against
// served capacity over time, with gonum/plot. It is separate from
// package autoscale so that the leader, which imports autoscale, does not
// link a plotting library.
package chart

import (
	"fmt"
	"image/color"
	"io"
	"path/filepath"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/loadmesh/loadmesh/scheduler/autoscale"
)

// Format picks the output format from a file name: "svg" or "png".
func Format(path string) (string, error) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".svg":
		return "svg", nil
	case ".png":
		return "png", nil
	}
	return "", fmt.Errorf("chart %q: want a .svg or .png file name", path)
}

// Write draws the reports' demand (from the first) and each report's
// served capacity (ready nodes × node capacity) in requests/s over time,
// as format "svg" or "png", 10 × 4 inches.
func Write(w io.Writer, format string, reps ...autoscale.Report) error {
	if len(reps) == 0 || len(reps[0].Series) == 0 {
		return fmt.Errorf("chart: no series to draw")
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s: demand and served capacity", reps[0].Trace)
	p.Y.Label.Text = "requests/s"
	p.X.Label.Text = "time (UTC)"
	span := reps[0].End.Sub(reps[0].Start)
	layout := "01-02 15:04"
	if span > 10*24*time.Hour {
		layout = "2006-01-02"
	}
	p.X.Tick.Marker = plot.TimeTicks{Format: layout}
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())

	demand := make(plotter.XYs, len(reps[0].Series))
	for i, s := range reps[0].Series {
		demand[i] = plotter.XY{X: float64(s.Time.Unix()), Y: s.Demand}
	}
	dl, err := plotter.NewLine(demand)
	if err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	dl.Color = color.RGBA{R: 200, G: 40, B: 40, A: 255}
	dl.Width = vg.Points(1)
	p.Add(dl)
	p.Legend.Add("demand", dl)

	colours := []color.Color{
		color.RGBA{R: 30, G: 90, B: 200, A: 255},
		color.RGBA{R: 20, G: 150, B: 60, A: 255},
		color.RGBA{R: 130, G: 60, B: 170, A: 255},
	}
	for i, r := range reps {
		xy := make(plotter.XYs, len(r.Series))
		for j, s := range r.Series {
			xy[j] = plotter.XY{X: float64(s.Time.Unix()), Y: s.Capacity}
		}
		l, err := plotter.NewLine(xy)
		if err != nil {
			return fmt.Errorf("chart: %w", err)
		}
		l.Color = colours[i%len(colours)]
		l.Width = vg.Points(1)
		if i > 0 {
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(2)}
		}
		p.Add(l)
		p.Legend.Add(label(r), l)
	}
	p.Y.Min = 0
	wt, err := p.WriterTo(10*vg.Inch, 4*vg.Inch, format)
	if err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	_, err = wt.WriteTo(w)
	return err
}

func label(r autoscale.Report) string {
	kind := "reactive"
	if r.Predictive {
		kind = "predictive"
	}
	if r.Schedules > 0 {
		kind += "+scheduled"
	}
	return fmt.Sprintf("capacity, %s (SLO-violating %.1f min, %.0f node-h)", kind, r.Total.SLOMinutes, r.Total.NodeHours)
}
