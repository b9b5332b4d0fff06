package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/loadmesh/loadmesh/scheduler/autoscale"
	"github.com/loadmesh/loadmesh/scheduler/autoscale/chart"
)

func newSimulateCmd() *cobra.Command {
	var (
		planPath, tracePath, mode, out string
		asJSON                         bool
		nodeCap, scale, peakNodes      float64
		startup, provision, every      time.Duration
	)
	cmd := &cobra.Command{
		Use:   "simulate --plan FILE --trace FILE.csv",
		Short: "Replay a demand trace against the autoscaler with a virtual clock",
		Long: `Replay a demand trace (CSV: timestamp,rps) against the real autoscaler code
with a virtual clock and a simple node model, and report per interval the
demand, served capacity, SLO-violating minutes, node-hours, cost and carbon.

--mode plan runs the plan as written; reactive turns predictive scaling off
and drops the schedules; predictive turns predictive scaling on and keeps
the schedules; compare runs reactive and predictive and prints both and a
side-by-side summary.

The trace is scaled so that its peak needs --peak-nodes nodes of
--node-capacity requests/s (or by --scale when given). Traces with a step
over 5 minutes are interpolated between interval midpoints. See
docs/autoscaling.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(planPath)
			if err != nil {
				return &exitError{2, err}
			}
			spec, err := autoscale.ParseSpec(data)
			if err != nil {
				// Every problem on one line: the root prints one line.
				var parts []string
				for _, l := range strings.Split(err.Error(), "\n") {
					if l = strings.TrimSpace(l); l != "" {
						parts = append(parts, l)
					}
				}
				return &exitError{2, fmt.Errorf("%s: %s", planPath, strings.Join(parts, "; "))}
			}
			trace, err := autoscale.ReadTraceFile(tracePath)
			if err != nil {
				return &exitError{2, err}
			}
			var format string
			if out != "" {
				if format, err = chart.Format(out); err != nil {
					return &exitError{2, err}
				}
			}
			model := autoscale.DefaultNodeModel(spec)
			if nodeCap <= 0 || startup < 0 || provision < 0 {
				return &exitError{2, fmt.Errorf("--node-capacity must be positive and --startup, --provision not negative")}
			}
			model.Capacity = nodeCap
			model.StartupDelay, model.ProvisionDelay = autoscale.Duration(startup), autoscale.Duration(provision)
			opts := autoscale.SimOptions{Scale: scale, PeakNodes: peakNodes, ReportEvery: every}

			var specs []autoscale.Spec
			switch mode {
			case "plan":
				specs = []autoscale.Spec{spec}
			case "reactive":
				specs = []autoscale.Spec{spec.Reactive()}
			case "predictive":
				specs = []autoscale.Spec{spec.WithPredictive()}
			case "compare":
				specs = []autoscale.Spec{spec.Reactive(), spec.WithPredictive()}
			default:
				return &exitError{2, fmt.Errorf("--mode %q: want plan, reactive, predictive or compare", mode)}
			}
			var reps []autoscale.Report
			for _, s := range specs {
				r, err := autoscale.Simulate(s, trace, model, opts)
				if err != nil {
					return err
				}
				reps = append(reps, r)
			}

			w := cmd.OutOrStdout()
			if asJSON {
				var v any = reps[0]
				if len(reps) == 2 {
					v = autoscale.Comparison{Trace: trace.Name, Reactive: reps[0], Predictive: reps[1]}
				}
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				if err := enc.Encode(v); err != nil {
					return err
				}
			} else {
				for i, r := range reps {
					if i > 0 {
						fmt.Fprintln(w)
					}
					if err := r.WriteText(w); err != nil {
						return err
					}
				}
				if len(reps) == 2 {
					fmt.Fprintln(w)
					c := autoscale.Comparison{Trace: trace.Name, Reactive: reps[0], Predictive: reps[1]}
					if err := autoscale.WriteComparisonTable(w, []autoscale.Comparison{c}); err != nil {
						return err
					}
				}
			}
			if out != "" {
				var buf bytes.Buffer
				if err := chart.Write(&buf, format, reps...); err != nil {
					return err
				}
				if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
					return err
				}
				if !asJSON {
					fmt.Fprintf(w, "\nchart written to %s\n", out)
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&planPath, "plan", "", "plan file (YAML; see deploy/plan.example.yaml)")
	f.StringVar(&tracePath, "trace", "", "demand trace CSV (timestamp,rps)")
	f.StringVar(&mode, "mode", "plan", "plan, reactive, predictive or compare")
	f.StringVar(&out, "out", "", "write a chart of demand against capacity (.svg or .png)")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.Float64Var(&nodeCap, "node-capacity", 100, "requests/s one node serves within the SLO")
	f.DurationVar(&startup, "startup", 60*time.Second, "start-up delay, standby to serving")
	f.DurationVar(&provision, "provision", 5*time.Minute, "delay from a scale_out hook to the new node joining")
	f.Float64Var(&peakNodes, "peak-nodes", 20, "scale the trace so that its peak needs this many nodes at full capacity")
	f.Float64Var(&scale, "scale", 0, "multiply the trace's rates by this instead (0: use --peak-nodes)")
	f.DurationVar(&every, "report-every", 0, "report row length (0: 1h up to 2 days, 1d up to 35 days, 1w up to 26 weeks, else 4w)")
	_ = cmd.MarkFlagRequired("plan")
	_ = cmd.MarkFlagRequired("trace")
	return cmd
}
