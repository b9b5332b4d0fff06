package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/store"
)

func newRecoverCmd() *cobra.Command {
	var dataDir, peersFile string
	cmd := &cobra.Command{
		Use:   "recover --data-dir DIR --peers-file FILE",
		Short: "Recover a cluster that has lost its Raft quorum for good (offline, agent stopped)",
		Long: `Recover a cluster that has lost a majority of its Raft voters for good: no
leader can be elected, so nothing can change, not even the membership.

Stop the agents that survive. Write a peers file listing the nodes that are
to form the cluster (the survivors), with their Raft addresses:

  [{"id": "a", "address": "10.0.0.1:7948"}]

Run this on the data dir of every node listed, with the same file, then
start those agents: they elect a leader among themselves and keep the
replicated state. The node's log is replayed, entries never committed
included (as hashicorp/raft's manual recovery does). New nodes then join as
usual; a lost node must not come back with its old data dir.`,
		Example: `  loadmesh recover --data-dir /var/lib/loadmesh --peers-file peers.json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dataDir == "" || peersFile == "" {
				return errors.New("--data-dir and --peers-file are required")
			}
			name, err := store.DataDirOwner(dataDir)
			if err != nil {
				return err
			}
			if err := checkUnlocked(filepath.Join(dataDir, store.RaftDBFile)); err != nil {
				return err
			}
			peers, err := cluster.ReadPeersFile(peersFile)
			if err != nil {
				return err
			}
			dd, err := store.OpenDataDir(dataDir, name, io.Discard)
			if err != nil {
				return err
			}
			defer dd.Close()
			fsm := store.NewFSM(nil, nil)
			if err := cluster.Recover(name, peers, cluster.Deps{Store: fsm, LogStore: dd.Bolt, StableStore: dd.Bolt, Snapshots: dd.Snapshots}); err != nil {
				return fmt.Errorf("%w (data dir %s)", err, dataDir)
			}
			var list []string
			for _, p := range peers {
				role := "voter"
				if p.NonVoter {
					role = "non-voter"
				}
				list = append(list, fmt.Sprintf("%s (%s, %s)", p.ID, role, p.Address))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "recovered node %s's data dir %s: its Raft configuration is now %s; state kept: %s.\n"+
				"Do the same on every node listed, then start them.\n", name, dataDir, strings.Join(list, ", "), summaryLine(fsm.Summary()))
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "the stopped agent's --data-dir")
	cmd.Flags().StringVar(&peersFile, "peers-file", "", `JSON list of the nodes to form the cluster: [{"id": NAME, "address": RAFT_IP:PORT, "non_voter": false}, ...]`)
	return cmd
}

// checkUnlocked fails when a running agent holds the Raft database: BoltDB
// keeps an exclusive flock on it while open (and would wait for it).
func checkUnlocked(db string) error {
	f, err := os.Open(db)
	if err != nil {
		return fmt.Errorf("raft store: %w", err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("%s is in use: stop the agent on this data dir first", db)
		}
		return fmt.Errorf("lock %s: %w", db, err)
	}
	return syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}
