package autoscale

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteText writes the report as a table: one row per report interval,
// then the totals.
func (r Report) WriteText(w io.Writer) error {
	var b strings.Builder
	pred := "off"
	if r.Predictive {
		pred = "on"
	}
	how := "held per interval"
	if r.Interpolate {
		how = "interpolated between interval midpoints"
	}
	fmt.Fprintf(&b, "trace      %s: %s to %s, step %s, %s\n", r.Trace, r.Start.UTC().Format(time.RFC3339), r.End.UTC().Format(time.RFC3339), r.Step, how)
	fmt.Fprintf(&b, "scale      ×%.4g (node capacity %.4g req/s at the SLO, start-up %s, provisioning %s)\n", r.Scale, r.Model.Capacity, r.Model.StartupDelay, r.Model.ProvisionDelay)
	fmt.Fprintf(&b, "autoscaler mode %s, predictive %s, %d schedules, tick %s\n\n", r.Mode, pred, r.Schedules, r.Tick)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "interval start\tdemand mean\tdemand peak\tcapacity mean\tactive mean\tSLO-viol min\tnode-hours\tcost\tcarbon kg\t")
	for _, row := range r.Rows {
		writeRow(tw, row.Start.UTC().Format("2006-01-02 15:04"), row)
	}
	writeRow(tw, "total", r.Total)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(&b, "\nactivations %d, drains %d, rollbacks %d, scale_out hooks %d (%d nodes provisioned), %d nodes released\n",
		r.Activations, r.Drains, r.Rollbacks, r.ScaleOuts, r.Provisioned, r.Released)
	if r.ForecastMAE > 0 || r.ForecastUsed > 0 {
		fmt.Fprintf(&b, "forecast (holt-winters): MAPE %.1f%%, MAE %.4g req/s, drove %d steps\n", 100*r.ForecastMAPE, r.ForecastMAE, r.ForecastUsed)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeRow(w io.Writer, label string, r ReportRow) {
	fmt.Fprintf(w, "%s\t%.1f\t%.1f\t%.1f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t\n",
		label, r.DemandMean, r.DemandPeak, r.CapacityMean, r.ActiveMean, r.SLOMinutes, r.NodeHours, r.Cost, r.CarbonKg)
}

// Comparison is reactive-only against predictive+scheduled on one trace.
type Comparison struct {
	Trace      string `json:"trace"`
	Reactive   Report `json:"reactive"`
	Predictive Report `json:"predictive"`
}

// SLOReduction is the relative cut in SLO-violating minutes (1 = all
// gone); NaN-free: 0 when reactive has none.
func (c Comparison) SLOReduction() float64 {
	r := c.Reactive.Total.SLOMinutes
	if r <= 0 {
		return 0
	}
	return 1 - c.Predictive.Total.SLOMinutes/r
}

// NodeHourIncrease is the relative change in node-hours.
func (c Comparison) NodeHourIncrease() float64 {
	r := c.Reactive.Total.NodeHours
	if r <= 0 {
		return 0
	}
	return c.Predictive.Total.NodeHours/r - 1
}

// GoalMet reports the goal: at least 80 % fewer SLO-violating minutes at
// no more than 10 % more node-hours. With no violations under reactive
// scaling the first half is moot; the result says so.
func (c Comparison) GoalMet() string {
	nh := c.NodeHourIncrease() <= 0.10
	r, p := c.Reactive.Total.SLOMinutes, c.Predictive.Total.SLOMinutes
	switch {
	case r < 0.5 && p < 0.5:
		if nh {
			return "n/a (no violations either way)"
		}
		return "no (node-hours)"
	case c.SLOReduction() >= 0.80 && nh:
		return "yes"
	case !nh:
		return "no (node-hours)"
	default:
		return "no (SLO minutes)"
	}
}

// WriteComparisonTable writes a Markdown table of comparisons.
func WriteComparisonTable(w io.Writer, cs []Comparison) error {
	var b strings.Builder
	b.WriteString("| trace | SLO-violating min, reactive | SLO-violating min, predictive+scheduled | change | node-hours, reactive | node-hours, predictive+scheduled | change | goal met |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---|\n")
	for _, c := range cs {
		chg := "–"
		if c.Reactive.Total.SLOMinutes > 0 {
			chg = fmt.Sprintf("%+.0f %%", -100*c.SLOReduction())
		}
		fmt.Fprintf(&b, "| %s | %.1f | %.1f | %s | %.1f | %.1f | %+.1f %% | %s |\n",
			c.Trace, c.Reactive.Total.SLOMinutes, c.Predictive.Total.SLOMinutes, chg,
			c.Reactive.Total.NodeHours, c.Predictive.Total.NodeHours, 100*c.NodeHourIncrease(), c.GoalMet())
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Reactive returns spec with predictive scaling off and no schedules: the
// reactive-only baseline.
func (s Spec) Reactive() Spec {
	s.Predictive.Enabled = false
	s.Schedules = nil
	return s
}

// WithPredictive returns spec with predictive scaling on (schedules kept).
func (s Spec) WithPredictive() Spec {
	s.Predictive.Enabled = true
	return s
}
