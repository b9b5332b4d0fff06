package main

import (
	"fmt"
	"io"
	"maps"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/loadmesh/loadmesh/scheduler/cost"
)

func newCostCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cost [--since 24h] [--by zone|tag:KEY]",
		Short: "Show spend, energy and carbon, the reactive-only counterfactual and right-sizing",
		Long: `Show what the cluster's nodes cost over a window, from the leader's
replicated cost records: node-hours by state, cost (cost_per_hour tags),
energy (power_watts) and carbon (energy × the carbon_intensity of the
node's carbon_region), broken down by zone or by a tag; the cost per hour
now and the month's projection against the plan's budget; what
reactive-only scaling would have cost (the window's recorded demand
replayed through the simulator); and per node the peak and p95 of requests
in flight against --capacity, with a recommendation. See docs/cost.md.`,
		Args: cobra.NoArgs,
	}
	api := apiFlag(cmd)
	asJSON := cmd.Flags().Bool("json", false, "print the raw JSON")
	since := cmd.Flags().Duration("since", 24*time.Hour, "window length, up to 31 days (records are kept for a day by default)")
	by := cmd.Flags().String("by", "", "break down by zone or tag:KEY (e.g. tag:spot)")
	nodeRPS := cmd.Flags().Float64("node-rps", 0, "counterfactual: requests/s one node serves at full --capacity (0: from the spec or the window)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if *since <= 0 {
			return &exitError{2, fmt.Errorf("--since %s: want a positive duration", *since)}
		}
		if err := cost.ValidBy(*by); err != nil {
			return &exitError{2, fmt.Errorf("--%v", err)}
		}
		q := url.Values{"since": {since.String()}}
		if *by != "" {
			q.Set("by", *by)
		}
		if *nodeRPS > 0 {
			q.Set("node_rps", fmt.Sprint(*nodeRPS))
		}
		var rep cost.Report
		raw, err := getJSON(cmd.Context(), *api, "/v1/cost?"+q.Encode(), &rep)
		if err != nil {
			return err
		}
		if *asJSON {
			_, err := cmd.OutOrStdout().Write(raw)
			return err
		}
		printCost(cmd.OutOrStdout(), rep)
		return nil
	}
	return cmd
}

func printCost(w io.Writer, r cost.Report) {
	cur := r.Currency
	money := func(v float64) string {
		if cur == "" {
			return fmt.Sprintf("%.4f", v)
		}
		return fmt.Sprintf("%.4f %s", v, cur)
	}
	if r.Records == 0 {
		fmt.Fprintf(w, "Window:  %s to %s: no cost records yet (the leader writes one a minute)\n",
			r.Since.Local().Format(time.DateTime), r.Until.Local().Format(time.DateTime))
	} else {
		fmt.Fprintf(w, "Window:  %s to %s (%s, %d records)\n", r.From.Local().Format(time.DateTime), r.To.Local().Format(time.DateTime),
			r.To.Sub(r.From).Round(time.Second), r.Records)
	}
	t := r.Totals
	fmt.Fprintf(w, "Spend:   %s, %.4f kWh, %.1f g CO2e\n", money(t.Cost), t.EnergyKWh, t.CarbonGrams)
	fmt.Fprintf(w, "Hours:   %s\n", nodeHours(t.NodeHours))
	fmt.Fprintf(w, "Now:     %s per hour\n", money(r.CostPerHour))
	b := r.Budget
	if b.Monthly > 0 {
		fmt.Fprintf(w, "Budget:  %s: %s spent, %s projected of %s (%.0f %%)\n", b.Month, money(b.MonthToDate), money(b.Projected), money(b.Monthly), 100*b.Ratio)
	} else {
		fmt.Fprintf(w, "Budget:  %s: %s spent, %s projected (no budget in the plan)\n", b.Month, money(b.MonthToDate), money(b.Projected))
	}

	if len(r.Groups) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "%s\tNODES\tNODE-HOURS\tCOST\tENERGY KWH\tCARBON G\t\n", strings.ToUpper(r.By))
		for _, g := range r.Groups {
			fmt.Fprintf(tw, "%s\t%d\t%.4f\t%.4f\t%.4f\t%.1f\t\n", g.Key, g.Nodes, g.BilledHours(), g.Cost, g.EnergyKWh, g.CarbonGrams)
		}
		tw.Flush()
	}

	if cf := r.Counterfactual; cf != nil {
		fmt.Fprintln(w)
		if cf.Error != "" {
			fmt.Fprintf(w, "Reactive-only counterfactual: not available: %s\n", cf.Error)
		} else {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "SERVING NODES (active, draining)\tNODE-HOURS\tCOST\tSLO-VIOLATING MIN\t\n")
			fmt.Fprintf(tw, "actual\t%.4f\t%.4f\t-\t\n", cf.ActualNodeHours, cf.ActualCost)
			fmt.Fprintf(tw, "reactive-only (simulated)\t%.4f\t%.4f\t%.1f\t\n", cf.NodeHours, cf.Cost, cf.SLOMinutes)
			tw.Flush()
			fmt.Fprintf(w, "(simulated with %.4g req/s per node at full capacity, %s)\n", cf.NodeRPS, cf.NodeRPSFrom)
		}
	}

	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tZONE\tCAPACITY\tMINUTES\tPEAK\tP95\tVERDICT\tRECOMMENDATION\t")
	for _, s := range r.Nodes {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.0f\t%.0f\t%s\t%s\t\n", s.Node, s.Zone, s.Capacity, s.Minutes, s.Peak, s.P95, s.Verdict, s.Recommendation)
	}
	tw.Flush()
}

func nodeHours(m map[string]float64) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, st := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %.4f", st, m[st]))
	}
	return strings.Join(parts, ", ")
}
