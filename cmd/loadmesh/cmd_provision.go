package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/provision"
)

func newProvisionCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "provision",
		Short: "Provisioners for the autoscaler's scale_out, scale_in and replace hooks",
	}
	cmd.AddCommand(newProvisionLocalCmd())
	return cmd
}

func newProvisionLocalCmd() *cobra.Command {
	cfg := provision.DefaultLocalConfig()
	var list, stopAll, asJSON bool
	cmd := &cobra.Command{
		Use:   "local",
		Short: "Start and stop agents on this machine, as a hook command",
		Long: `Read one hook request (JSON, as the leader sends it) from stdin and carry it
out on this machine: scale_out starts agents on free loopback ports that join
the cluster, scale_in stops them, replace does both. Each node gets a
directory under --dir with its data, agent.log and node.json, and a
certificate issued by the cluster CA. The result is one JSON line on stdout.

Use it as the hook command in the plan file, so that the whole autoscaling
loop can be watched on one machine (give scale_out and replace a timeout
above --ready-timeout):

  hooks:
    scale_out:
      command: [loadmesh, provision, local, --dir, /tmp/lm, --demo-backend,
                --tls-ca, ca.pem, --tls-ca-key, ca-key.pem]
      timeout: 2m

A retried request (same id) is not carried out twice: the nodes an earlier
attempt started count, and the nodes it stopped are not reported as
strangers. The agents it starts get none of its LOADMESH_* variables.
--list shows the nodes it manages and --stop-all stops them all.`,
		Example: `  echo '{"version":1,"id":"x","kind":"scale_out","count":1,"cluster":{"seeds":["127.0.0.1:7946"]}}' |
      loadmesh provision local --dir /tmp/lm --tls-ca loadmesh-ca.pem --tls-ca-key loadmesh-ca-key.pem
  loadmesh provision local --dir /tmp/lm --list
  loadmesh provision local --dir /tmp/lm --stop-all`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if list && stopAll {
				return errors.New("--list and --stop-all exclude each other")
			}
			if asJSON && !list {
				return errors.New("--json goes with --list")
			}
			l, err := provision.NewLocal(cfg)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			out := cmd.OutOrStdout()
			switch {
			case list:
				nodes, err := l.List()
				if err != nil {
					return err
				}
				if asJSON {
					return printJSONLine(out, nodes)
				}
				return printLocalNodes(out, nodes)
			case stopAll:
				res, err := l.StopAll(ctx)
				if perr := printJSONLine(out, res); err == nil {
					err = perr
				}
				return err
			}
			req, err := provision.ReadRequest(cmd.InOrStdin())
			if cfg.TLSCA == "" && req.JoinToken == "" {
				// Without the CA the nodes need the request's join token.
				return provision.ErrNoCA
			}
			if err != nil {
				return err
			}
			res, err := l.Handle(ctx, req)
			if len(res.Started) > 0 || len(res.Stopped) > 0 || err == nil {
				if perr := printJSONLine(out, res); err == nil {
					err = perr
				}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.SortFlags = false
	f.StringVar(&cfg.Dir, "dir", "", "state directory: one subdirectory per started node (required)")
	f.StringVar(&cfg.Bin, "bin", "", "loadmesh binary to start (default: this one)")
	f.StringSliceVar(&cfg.Join, "join", nil, "gossip seed host:port for new agents (repeatable or comma-separated; default: the request's cluster.seeds)")
	f.StringVar(&cfg.NamePrefix, "name-prefix", cfg.NamePrefix, "node names are <prefix>-<zone>-<n>")
	f.StringVar(&cfg.Host, "host", cfg.Host, "IP address the agents listen on and advertise")
	f.StringVar(&cfg.TLSCA, "tls-ca", "", "cluster CA certificate, from loadmesh tls ca create (required to start nodes, unless the hook request carries a join token)")
	f.StringVar(&cfg.TLSCAKey, "tls-ca-key", "", "cluster CA private key; each new node gets a certificate signed by it")
	f.StringVar(&cfg.Backend, "backend", "", "--backend URL for every agent")
	f.BoolVar(&cfg.DemoBackend, "demo-backend", false, "give every agent a loadmesh backend process of its own")
	f.StringArrayVar(&cfg.AgentArgs, "agent-arg", nil, "extra argument for every agent (repeatable, e.g. --agent-arg=--capacity=8)")
	f.DurationVar(&cfg.StopTimeout, "stop-timeout", cfg.StopTimeout, "time a stopping agent has after SIGTERM before SIGKILL")
	f.DurationVar(&cfg.ReadyTimeout, "ready-timeout", cfg.ReadyTimeout, "time a new agent has to answer /readyz")
	f.BoolVar(&list, "list", false, "list the nodes in --dir instead of reading a request")
	f.BoolVar(&asJSON, "json", false, "with --list: print JSON")
	f.BoolVar(&stopAll, "stop-all", false, "stop every node in --dir instead of reading a request")
	return cmd
}

func printJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

func printLocalNodes(w io.Writer, nodes []provision.ListedNode) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tZONE\tPID\tALIVE\tAPI")
	for _, n := range nodes {
		alive := "no"
		if n.Alive {
			alive = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", n.Name, n.Zone, n.PID, alive, n.API)
	}
	return tw.Flush()
}
