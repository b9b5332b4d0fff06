package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
)

const defaultAPI = "http://127.0.0.1:7950"

// apiFlag adds --api with LOADMESH_API as its default, and the flags
// that authenticate to it (see apiDo).
func apiFlag(cmd *cobra.Command) *string {
	def := defaultAPI
	if v := os.Getenv("LOADMESH_API"); v != "" {
		def = v
	}
	addAPIAuthFlags(cmd)
	return cmd.Flags().String("api", def, "agent API address; https:// when the agent has --api-tls-cert (env LOADMESH_API)")
}

func apiURL(base, path string) string {
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return strings.TrimRight(base, "/") + path
}

// getJSON fetches an API path into v and returns the raw body.
func getJSON(ctx context.Context, base, path string, v any) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	u := apiURL(base, path)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("bad --api %q: %v", base, err)
	}
	resp, err := apiDo(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach agent at %s: %v", base, unwrapURLError(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read answer from %s: %v", base, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("agent at %s: %s", base, e.Error)
		}
		return nil, fmt.Errorf("agent at %s answered %s", base, resp.Status)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return nil, fmt.Errorf("agent at %s sent unreadable JSON: %v", base, err)
	}
	return body, nil
}

func newStatusCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the node, its Raft state and the cluster's members",
		Args:  cobra.NoArgs,
	}
	api := apiFlag(cmd)
	asJSON := cmd.Flags().Bool("json", false, "print the raw JSON")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		var st agent.Status
		raw, err := getJSON(cmd.Context(), *api, "/v1/status", &st)
		if err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		if *asJSON {
			_, err := out.Write(raw)
			return err
		}
		leader := st.Leader
		if leader == "" {
			leader = "(none)"
		}
		fmt.Fprintf(out, "Node:    %s (zone %s, %s)\n", st.Node.Name, st.Node.Zone, st.Node.State)
		fmt.Fprintf(out, "Leader:  %s\n", leader)
		fmt.Fprintf(out, "Raft:    %s, term %d, commit index %d\n", st.Raft.State, st.Raft.Term, st.Raft.CommitIndex)
		fmt.Fprintf(out, "Voters:  %s\n", listOrNone(st.Raft.Voters))
		fmt.Fprintf(out, "Non-voters: %s\n", listOrNone(st.Raft.Nonvoters))
		if t := st.TLS; t != nil {
			fmt.Fprintf(out, "TLS:     node certificate until %s", t.NodeCertExpires.Local().Format(time.DateOnly))
			if !t.CAExpires.IsZero() {
				fmt.Fprintf(out, ", CA until %s", t.CAExpires.Local().Format(time.DateOnly))
			}
			if !t.APICertExpires.IsZero() {
				fmt.Fprintf(out, ", API certificate until %s", t.APICertExpires.Local().Format(time.DateOnly))
			}
			if len(t.Expiring) > 0 {
				fmt.Fprintf(out, " (renew soon: %s)", strings.Join(t.Expiring, ", "))
			}
			fmt.Fprintln(out)
			printTrust(out, t)
		}
		fmt.Fprintf(out, "Plan:    version %d\n\n", st.Plan.Version)
		printMembers(out, st.Members, st.Leader)
		printServices(out, st.Services, st.Members)
		return nil
	}
	return cmd
}

func newMembersCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List the cluster's members as this agent sees them",
		Args:  cobra.NoArgs,
	}
	api := apiFlag(cmd)
	asJSON := cmd.Flags().Bool("json", false, "print the raw JSON")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		var st agent.Status
		if _, err := getJSON(cmd.Context(), *api, "/v1/status", &st); err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(st.Members)
		}
		printMembers(cmd.OutOrStdout(), st.Members, st.Leader)
		return nil
	}
	return cmd
}

func printMembers(w io.Writer, members []agent.MemberView, leader string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATUS\tZONE\tHEALTH\tINFLIGHT\tRPS\tEWMA\tP95\tERR\tCPU\tMEM\tAGE\tHTTP\tPEER\t")
	for _, m := range members {
		name := m.Name
		if name == leader {
			name += " *"
		}
		health, inflight, rps, ewma, p95, errs, cpu, mem, age := "-", "-", "-", "-", "-", "-", "-", "-", "-"
		if l := m.Load; l != nil {
			health = "healthy"
			switch {
			case !m.Serving:
				health = "no backend"
			case l.Ejected:
				health = "ejected"
			case !l.Healthy:
				health = "unhealthy"
			}
			inflight = fmt.Sprintf("%d/%d", l.Inflight, l.Capacity)
			rps = fmt.Sprintf("%.1f", l.RPS)
			ewma = fmtSeconds(l.LatencyEWMA)
			p95 = fmtSeconds(l.P95)
			errs = fmt.Sprintf("%.1f%%", 100*l.ErrorRate)
			cpu = fmt.Sprintf("%.0f%%", 100*l.CPU)
			mem = fmt.Sprintf("%.0f%%", 100*l.Mem)
			age = fmt.Sprintf("%.1fs", l.AgeSeconds)
		}
		a := m.Addresses
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			name, m.Status, m.Zone, health, inflight, rps, ewma, p95, errs, cpu, mem, age, a.HTTP, a.Peer)
	}
	tw.Flush()
	if leader != "" {
		fmt.Fprintln(w, "(* = raft leader)")
	}
}

// printServices lists this node's TCP services and, per service, the
// members offering it.
func printServices(w io.Writer, svcs []agent.ServiceStatus, members []agent.MemberView) {
	if len(svcs) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tLISTEN\tBACKEND\tHEALTH\tOPEN\tACCEPTED\tIN\tOUT\tFOR PEERS\tBACKEND IN/OUT\tERRORS\tOFFERED BY\tPLACES ON\t")
	for _, s := range svcs {
		listen, backend, health := s.Listen, s.Backend, "-"
		if listen == "" {
			listen = "-"
		}
		if backend == "" {
			backend = "-"
		} else if s.Healthy {
			health = "healthy"
		} else {
			health = "unhealthy"
		}
		var errs uint64
		for _, n := range s.Errors {
			errs += n
		}
		var offered []string
		for _, m := range members {
			if sv, ok := m.Services[s.Name]; ok {
				mark := ""
				if !sv.Healthy {
					mark = " (unhealthy)"
				}
				offered = append(offered, fmt.Sprintf("%s[%d]%s", m.Name, sv.Open, mark))
			}
		}
		beIO := "-"
		if s.Backend != "" {
			beIO = fmtBytes(s.BackendBytesUp) + "/" + fmtBytes(s.BackendBytesDown)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%d\t%s\t%s\t%d\t%s\t%d\t%s\t%s\t\n",
			s.Name, listen, backend, health, s.OpenClients, s.OpenBackend, s.Accepted,
			fmtBytes(s.BytesUp), fmtBytes(s.BytesDown), s.RelayedForPeers, beIO, errs, listOrNone(offered), listOrNone(s.Candidates))
	}
	tw.Flush()
	fmt.Fprintln(w, "(OPEN = client connections here / connections to this node's backend; IN/OUT = bytes of clients here; FOR PEERS = connections peers placed on this backend; OFFERED BY = node[open connections])")
}

func fmtBytes(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}

func fmtSeconds(s float64) string {
	d := time.Duration(s * float64(time.Second))
	switch {
	case d == 0:
		return "0"
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	default:
		return d.Round(100 * time.Microsecond).String()
	}
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "(none)"
	}
	return strings.Join(s, ", ")
}

func newKeygenCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "keygen",
		Short: "Print a new gossip encryption key for --encrypt",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			k := make([]byte, 32)
			if _, err := rand.Read(k); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), base64.StdEncoding.EncodeToString(k))
			return nil
		},
	}
}
