package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/scheduler"
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
	resp, err := http.DefaultClient.Do(req)
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
					fmt.Fprintf(cmd.OutOrStdout(), "%s  v%-5d %-12s %-14s %-10s %s", e.Time.Local().Format(time.DateTime), e.Version, e.Who, e.Kind, e.Node, e.Why)
					if e.Before != "" || e.After != "" {
						fmt.Fprintf(cmd.OutOrStdout(), " [%s → %s]", e.Before, e.After)
					}
					fmt.Fprintln(cmd.OutOrStdout())
				}
				since = max(since, e.Version)
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
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", n, pn.State, pn.Zone, pn.Since.Local().Format(time.DateTime), strings.Join(tags, ","))
		}
		tw.Flush()
		if p.Spec.PlanVersion == 0 {
			fmt.Fprintln(out, "\nNo scaling spec applied (manual mode).")
		} else {
			fmt.Fprintf(out, "\nScaling spec from plan version %d, applied by %s: %s\n", p.Spec.PlanVersion, p.Spec.Who, p.Spec.Why)
		}
		return nil
	}
	plan.AddCommand(show)
	return plan
}
