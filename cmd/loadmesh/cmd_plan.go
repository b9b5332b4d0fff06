package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/scheduler/autoscale"
	"github.com/loadmesh/loadmesh/store"
)

// postJSON sends body to an API path and decodes the answer into v.
func postJSON(ctx context.Context, base, path string, body, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var buf bytes.Buffer
	if body != nil {
		if err := json.NewEncoder(&buf).Encode(body); err != nil {
			return err
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, apiURL(base, path), &buf)
	if err != nil {
		return fmt.Errorf("bad --api %q: %v", base, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := apiDo(req)
	if err != nil {
		return fmt.Errorf("cannot reach agent at %s: %v", base, unwrapURLError(err))
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode >= 300 {
		var e struct{ Error string }
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s", e.Error)
		}
		return fmt.Errorf("agent at %s answered %s", base, resp.Status)
	}
	if v != nil {
		return json.Unmarshal(b, v)
	}
	return nil
}

func unwrapURLError(err error) error {
	if u, ok := err.(interface{ Unwrap() error }); ok && u.Unwrap() != nil {
		return u.Unwrap()
	}
	return err
}

func newNodeActionCmd(action, short string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   action + " NODE",
		Short: short,
		Args:  cobra.ExactArgs(1),
	}
	api := apiFlag(cmd)
	reason := cmd.Flags().String("reason", "", "why, for the audit log")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		var ev scheduler.Event
		if err := postJSON(cmd.Context(), *api, "/v1/nodes/"+pathEscape(args[0])+"/"+action, map[string]string{"reason": *reason}, &ev); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s: %s → %s (plan version %d)\n", args[0], ev.Before, ev.After, ev.Version)
		return nil
	}
	return cmd
}

func pathEscape(s string) string {
	r := strings.NewReplacer("/", "%2F", "?", "%3F", "#", "%23", "%", "%25")
	return r.Replace(s)
}

func newEventsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Show the audit log of plan changes and scaling events",
		Args:  cobra.NoArgs,
	}
	api := apiFlag(cmd)
	follow := cmd.Flags().BoolP("follow", "f", false, "keep printing new events")
	limit := cmd.Flags().Int("limit", 50, "how many recent events to show")
	asJSON := cmd.Flags().Bool("json", false, "print JSON")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		var since uint64
		first := true
		for {
			var evs []scheduler.Event
			path := fmt.Sprintf("/v1/events?since=%d", since)
			if first {
				path += fmt.Sprintf("&limit=%d", *limit)
			}
			if _, err := getJSON(cmd.Context(), *api, path, &evs); err != nil {
				return err
			}
			first = false
			for _, e := range evs {
				if *asJSON {
					b, _ := json.Marshal(e)
					fmt.Fprintln(cmd.OutOrStdout(), string(b))
				} else {
					// Audit text comes from API callers: never let it drive
					// the terminal (escape sequences, carriage returns).
					fmt.Fprintf(cmd.OutOrStdout(), "%s  v%-5d %-12s %-14s %-10s %s", e.Time.Local().Format(time.DateTime), e.Version,
						printable(e.Who), printable(e.Kind), printable(e.Node), printable(e.Why))
					if e.Before != "" || e.After != "" {
						fmt.Fprintf(cmd.OutOrStdout(), " [%s → %s]", printable(e.Before), printable(e.After))
					}
					fmt.Fprintln(cmd.OutOrStdout())
				}
				since = max(since, e.Seq)
			}
			if !*follow {
				return nil
			}
			select {
			case <-cmd.Context().Done():
				return nil
			case <-time.After(time.Second):
			}
		}
	}
	return cmd
}

func newPlanCmd() *cobra.Command {
	plan := &cobra.Command{Use: "plan", Short: "Show and change the capacity plan"}
	show := &cobra.Command{Use: "show", Short: "Show the plan: nodes, states and the scaling spec", Args: cobra.NoArgs}
	api := apiFlag(show)
	asJSON := show.Flags().Bool("json", false, "print the raw JSON")
	show.RunE = func(cmd *cobra.Command, args []string) error {
		var p agent.PlanView
		raw, err := getJSON(cmd.Context(), *api, "/v1/plan", &p)
		if err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		if *asJSON {
			_, err := out.Write(raw)
			return err
		}
		fmt.Fprintf(out, "Plan version %d (leader %s)\n\n", p.Version, p.Leader)
		names := make([]string, 0, len(p.Nodes))
		for n := range p.Nodes {
			names = append(names, n)
		}
		sort.Strings(names)
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tSTATE\tZONE\tSINCE\tTAGS\t")
		for _, n := range names {
			pn := p.Nodes[n]
			var tags []string
			for k, v := range pn.Tags {
				tags = append(tags, k+"="+v)
			}
			sort.Strings(tags)
			state := string(pn.State)
			if !pn.Left.IsZero() {
				state += " (left " + pn.Left.Local().Format(time.DateTime) + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", n, state, pn.Zone, pn.Since.Local().Format(time.DateTime), strings.Join(tags, ","))
		}
		tw.Flush()
		if p.Spec.PlanVersion == 0 {
			fmt.Fprintln(out, "\nNo scaling spec applied (manual mode).")
		} else {
			fmt.Fprintf(out, "\nScaling spec from plan version %d, applied by %s: %s\n", p.Spec.PlanVersion, p.Spec.Who, p.Spec.Why)
		}
		return nil
	}
	plan.AddCommand(show, newPlanValidateCmd(), newPlanDiffCmd(), newPlanApplyCmd(), newPlanHistoryCmd(), newPlanRollbackCmd())
	return plan
}

func readSpec(file string) (autoscale.Spec, []byte, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return autoscale.Spec{}, nil, err
	}
	spec, err := autoscale.ParseSpec(b)
	if err != nil {
		return autoscale.Spec{}, nil, fmt.Errorf("%s: %w", file, err)
	}
	return spec, b, nil
}

func newPlanValidateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "validate FILE",
		Short: "Check a plan file (schema, limits, schedules, hooks) without applying it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, _, err := readSpec(args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: valid\n", args[0])
			return nil
		},
	}
}

// currentSpec fetches the cluster's spec (the defaults when none applied).
func currentSpec(cmd *cobra.Command, api string) (autoscale.Spec, agent.PlanView, error) {
	var p agent.PlanView
	if _, err := getJSON(cmd.Context(), api, "/v1/plan", &p); err != nil {
		return autoscale.Spec{}, p, err
	}
	cur := autoscale.DefaultSpec()
	if len(p.Spec.Doc) > 0 {
		if err := json.Unmarshal(p.Spec.Doc, &cur); err != nil {
			return cur, p, fmt.Errorf("the cluster's spec is unreadable: %v", err)
		}
	}
	return cur, p, nil
}

func newPlanDiffCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "diff FILE", Short: "Show what applying a plan file would change", Args: cobra.ExactArgs(1)}
	api := apiFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		next, _, err := readSpec(args[0])
		if err != nil {
			return err
		}
		cur, _, err := currentSpec(cmd, *api)
		if err != nil {
			return err
		}
		changes := autoscale.Diff(cur, next)
		if len(changes) == 0 {
			fmt.Fprintln(cmd.OutOrStdout(), "no changes")
		}
		for _, c := range changes {
			fmt.Fprintln(cmd.OutOrStdout(), c)
		}
		return nil
	}
	return cmd
}

func newPlanApplyCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "apply FILE", Short: "Validate a plan file and make it the cluster's scaling spec", Args: cobra.ExactArgs(1)}
	api := apiFlag(cmd)
	reason := cmd.Flags().String("reason", "", "why, for the audit log")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		_, raw, err := readSpec(args[0])
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), 15*time.Second)
		defer cancel()
		u := apiURL(*api, "/v1/plan?reason="+url.QueryEscape(*reason))
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(raw))
		if err != nil {
			return fmt.Errorf("bad --api %q: %v", *api, err)
		}
		req.Header.Set("Content-Type", "application/yaml")
		resp, err := apiDo(req)
		if err != nil {
			return fmt.Errorf("cannot reach agent at %s: %v", *api, unwrapURLError(err))
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if resp.StatusCode != http.StatusOK {
			var e struct{ Error string }
			if json.Unmarshal(b, &e) == nil && e.Error != "" {
				return errors.New(e.Error)
			}
			return fmt.Errorf("agent answered %s", resp.Status)
		}
		var ev scheduler.Event
		json.Unmarshal(b, &ev)
		fmt.Fprintf(cmd.OutOrStdout(), "applied %s as plan version %d\n", args[0], ev.Version)
		return nil
	}
	return cmd
}

func newPlanHistoryCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "history", Short: "List the earlier scaling specs (for rollback)", Args: cobra.NoArgs}
	api := apiFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		var hist []store.SpecRecord
		if _, err := getJSON(cmd.Context(), *api, "/v1/plan/history", &hist); err != nil {
			return err
		}
		_, p, err := currentSpec(cmd, *api)
		if err != nil {
			return err
		}
		if p.Spec.PlanVersion != 0 {
			hist = append(hist, p.Spec)
		}
		tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "VERSION\tWHEN\tWHO\tWHY\t")
		for i, r := range hist {
			cur := ""
			if i == len(hist)-1 && p.Spec.PlanVersion != 0 {
				cur = " (current)"
			}
			fmt.Fprintf(tw, "%d%s\t%s\t%s\t%s\t\n", r.PlanVersion, cur, r.Time.Local().Format(time.DateTime), r.Who, r.Why)
		}
		return tw.Flush()
	}
	return cmd
}

func newPlanRollbackCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "rollback [VERSION]", Short: "Restore an earlier scaling spec (default: the one before the current)", Args: cobra.MaximumNArgs(1)}
	api := apiFlag(cmd)
	reason := cmd.Flags().String("reason", "", "why, for the audit log")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		var v uint64
		if len(args) == 1 {
			var err error
			if v, err = strconv.ParseUint(args[0], 10, 64); err != nil || v == 0 {
				return fmt.Errorf("version %q is not a plan version (see loadmesh plan history)", args[0])
			}
		}
		var ev scheduler.Event
		if err := postJSON(cmd.Context(), *api, "/v1/plan/rollback", map[string]any{"version": v, "reason": *reason}, &ev); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "rolled back: %s (plan version %d)\n", ev.Why, ev.Version)
		return nil
	}
	return cmd
}

// printable replaces control characters (ESC, CR, …) with their Go
// escapes, so that text from the audit log cannot drive a terminal.
func printable(s string) string {
	if !strings.ContainsFunc(s, unicode.IsControl) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if unicode.IsControl(r) {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
