package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/store"
)

func newKeyringCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keyring",
		Short: "Rotate the gossip encryption key across the cluster",
		Long: `The gossip keyring is replicated through Raft: every agent applies it to its
gossip and keeps it in DATA_DIR/keyring.json. Rotate with install, use, remove,
checking "keyring list" between the steps. Keys are shown by fingerprint only.`,
	}
	cmd.AddCommand(newKeyringListCmd(), newKeyringWriteCmd("install", "Add a key to every node's gossip keyring (make one with loadmesh keygen)"),
		newKeyringWriteCmd("use", "Make an installed key the one every node encrypts gossip with"),
		newKeyringWriteCmd("remove", "Remove a key (not the primary) from every node's gossip keyring"))
	return cmd
}

func newKeyringListCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "list", Short: "List the gossip keys (by fingerprint) and which nodes hold them", Args: cobra.NoArgs}
	api := apiFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		v, views, unreachable, err := keyringViews(cmd.Context(), *api)
		if err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KEY\tPRIMARY\tINSTALLED\tBY\tNODES HOLDING IT\t")
		for _, k := range v.Keys {
			n := 0
			for _, nv := range views {
				if slices.Contains(nv.LocalKeys, k.Fingerprint) {
					n++
				}
			}
			primary := ""
			if k.Primary {
				primary = "yes"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t\n", k.Fingerprint, primary, k.Installed.Local().Format(time.DateTime), k.By, n, len(views))
		}
		tw.Flush()
		fmt.Fprintln(out)
		tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tENCRYPTS WITH\tKEYS\tIN SYNC\tAPPLIED INDEX\t")
		names := make([]string, 0, len(views))
		for name := range views {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			nv := views[name]
			fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%d\t\n", name, nv.LocalPrimary, strings.Join(nv.LocalKeys, ","), nv.InSync, nv.AppliedIndex)
		}
		tw.Flush()
		if len(unreachable) > 0 {
			fmt.Fprintf(out, "\nnot reached: %s\n", strings.Join(unreachable, ", "))
		}
		return nil
	}
	return cmd
}

// keyringViews fetches the keyring from --api and every live member's own
// view of it (a node holds a key once its replica has applied the change).
func keyringViews(ctx context.Context, api string) (agent.KeyringView, map[string]agent.KeyringView, []string, error) {
	var v agent.KeyringView
	if _, err := getJSON(ctx, api, "/v1/keyring", &v); err != nil {
		return v, nil, nil, err
	}
	if !v.Encrypted {
		return v, nil, nil, errors.New("gossip is not encrypted in this cluster (agents run without --encrypt)")
	}
	var members []agent.MemberView
	if _, err := getJSON(ctx, api, "/v1/members", &members); err != nil {
		return v, nil, nil, err
	}
	views := map[string]agent.KeyringView{}
	var unreachable []string
	for _, m := range members {
		if m.Status != cluster.StatusAlive && m.Status != cluster.StatusSuspect || slices.Contains(v.Revoked, m.Name) {
			continue
		}
		if m.Name == v.Node {
			views[m.Name] = v
			continue
		}
		var nv agent.KeyringView
		if _, err := getJSON(ctx, sameScheme(api, m.Addresses.API), "/v1/keyring", &nv); err != nil || m.Addresses.API == "" {
			unreachable = append(unreachable, m.Name)
			continue
		}
		views[m.Name] = nv
	}
	return v, views, unreachable, nil
}

// checkRotationStep refuses a use of a key some live node does not hold
// yet, or a removal of a key some node still encrypts with: either would
// leave nodes unable to read each other's gossip for a moment.
func checkRotationStep(ctx context.Context, api, action, fp string) error {
	v, views, unreachable, err := keyringViews(ctx, api)
	if err != nil {
		return err
	}
	known := slices.ContainsFunc(v.Keys, func(k agent.KeyView) bool { return k.Fingerprint == fp })
	if !known || action == "remove" && v.Primary == fp {
		return nil // the leader refuses it with the reason
	}
	names := slices.Sorted(maps.Keys(views))
	for _, name := range names {
		nv := views[name]
		switch {
		case action == "use" && !slices.Contains(nv.LocalKeys, fp):
			return fmt.Errorf("node %s does not hold key %s yet (applied index %d); wait for it (loadmesh keyring list), or use --force", name, fp, nv.AppliedIndex)
		case action == "remove" && nv.LocalPrimary == fp:
			return fmt.Errorf("node %s still encrypts gossip with key %s (applied index %d); wait for it (loadmesh keyring list), or use --force", name, fp, nv.AppliedIndex)
		}
	}
	if len(unreachable) > 0 {
		return fmt.Errorf("cannot check nodes %s (their API did not answer); use --force to go ahead", strings.Join(unreachable, ", "))
	}
	return nil
}

// sameScheme gives a member's API address the scheme of --api.
func sameScheme(base, addr string) string {
	if strings.HasPrefix(base, "https://") {
		return "https://" + addr
	}
	return addr
}

func newKeyringWriteCmd(action, short string) *cobra.Command {
	cmd := &cobra.Command{Use: action + " KEY", Short: short, Args: cobra.ExactArgs(1)}
	if action != "install" {
		cmd.Use = action + " KEY|FINGERPRINT"
	}
	api := apiFlag(cmd)
	reason := cmd.Flags().String("reason", "", "why, for the audit log")
	force := new(bool)
	if action != "install" {
		force = cmd.Flags().Bool("force", false, "skip the check that every live node is ready for this step")
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		key := strings.TrimSpace(args[0])
		if action == "install" {
			if _, err := agent.DecodeGossipKey(key); err != nil {
				return fmt.Errorf("gossip key: %w", err)
			}
		}
		if action != "install" && !*force {
			fp := key
			if k, derr := agent.DecodeGossipKey(key); derr == nil {
				fp = store.KeyFingerprint(k)
			}
			if err := checkRotationStep(cmd.Context(), *api, action, fp); err != nil {
				return err
			}
		}
		var res agent.KeyringChange
		var err error
		switch action {
		case "remove":
			fp := key
			if k, derr := agent.DecodeGossipKey(key); derr == nil {
				fp = store.KeyFingerprint(k)
			}
			err = deleteJSON(cmd.Context(), *api, "/v1/keyring/"+url.PathEscape(fp)+"?reason="+url.QueryEscape(*reason), &res)
		default:
			err = postJSON(cmd.Context(), *api, "/v1/keyring/"+action, agent.KeyringRequest{Key: key, Reason: *reason}, &res)
		}
		if err != nil {
			return err
		}
		done := map[string]string{"install": "installed", "use": "now encrypting gossip with", "remove": "removed"}[action]
		if !res.Changed {
			done = map[string]string{"install": "already installed:", "use": "already primary:", "remove": "removed"}[action]
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s key %s; check every node holds it with: loadmesh keyring list\n", done, res.Fingerprint)
		return nil
	}
	return cmd
}

func newNodeCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "node", Short: "Act on a node of the cluster"}
	cmd.AddCommand(newNodeRevokeCmd())
	return cmd
}

func newNodeRevokeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke a node: every peer refuses it, it leaves Raft and the plan stops using it",
		Args:  cobra.ExactArgs(1),
	}
	api := apiFlag(cmd)
	reason := cmd.Flags().String("reason", "", "why, for the audit log")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		var ev struct {
			Version uint64 `json:"version"`
		}
		if err := postJSON(cmd.Context(), *api, "/v1/nodes/"+pathEscape(args[0])+"/revoke", map[string]string{"reason": *reason}, &ev); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "revoked node %q (plan version %d); rotate the gossip key next (loadmesh keyring) so it cannot read gossip either\n", args[0], ev.Version)
		return nil
	}
	return cmd
}
