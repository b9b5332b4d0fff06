package main

import (
	"fmt"
	"net/url"

	"github.com/spf13/cobra"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/scheduler"
)

func newCacheCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cache",
		Short: "Inspect and purge the response cache",
	}
	cmd.AddCommand(newCachePurgeCmd(), newCacheStatsCmd())
	return cmd
}

func newCachePurgeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "purge (--key URL | --prefix PREFIX)",
		Short: "Drop cached responses on every node: one URL (every variant) or everything under a prefix",
		Long: `Drop cached responses on every node. The purge is written through Raft (it
needs an operator token and appears in loadmesh events); each node applies it
when its replica has it, within about 100 ms.

  --key URL        http://example.org/api/item?id=1 or example.org/api/item?id=1
  --prefix PREFIX  /api/ (any host) or example.org/api/`,
		Args: cobra.NoArgs,
	}
	api := apiFlag(cmd)
	key := cmd.Flags().String("key", "", "the URL whose cached responses to drop")
	prefix := cmd.Flags().String("prefix", "", "drop everything under this path prefix (/api/) or host and path (example.org/api/)")
	reason := cmd.Flags().String("reason", "", "why, for the audit log")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if (*key == "") == (*prefix == "") {
			return fmt.Errorf("give exactly one of --key or --prefix")
		}
		q := url.Values{}
		if *key != "" {
			q.Set("key", *key)
		} else {
			q.Set("prefix", *prefix)
		}
		if *reason != "" {
			q.Set("reason", *reason)
		}
		var ev scheduler.Event
		if err := deleteJSON(cmd.Context(), *api, "/v1/cache?"+q.Encode(), &ev); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "purge of %s recorded (audit event %d); every node applies it\n", ev.After, ev.Seq)
		return nil
	}
	return cmd
}

func newCacheStatsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Show this node's response cache figures",
		Args:  cobra.NoArgs,
	}
	api := apiFlag(cmd)
	asJSON := cmd.Flags().Bool("json", false, "print JSON")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		var st agent.CacheStats
		raw, err := getJSON(cmd.Context(), *api, "/v1/cache", &st)
		if err != nil {
			return err
		}
		w := cmd.OutOrStdout()
		if *asJSON {
			_, err := w.Write(raw)
			return err
		}
		if !st.Enabled {
			fmt.Fprintf(w, "Node %s: response cache off (no --cache prefix)\n", st.Node)
			return nil
		}
		fmt.Fprintf(w, "Node:          %s\nPrefixes:      %s\nOwner lookup:  %v (owners: %s)\nPolicy:        %s\n",
			st.Node, listOrNone(st.Prefixes), st.OwnerLookup, listOrNone(st.Owners), st.Policy)
		fmt.Fprintf(w, "Stored:        %d items, %s of %s\nEvictions:     %d\nOwner lookups: %d sent, %d served\n",
			st.Entries, fmtBytes(st.Bytes), fmtBytes(uint64(st.MaxBytes)), st.Evictions, st.OwnerLookupsSent, st.OwnerLookupsServed)
		return nil
	}
	return cmd
}
