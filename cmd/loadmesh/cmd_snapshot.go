package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/store"
)

func newSnapshotCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Save, inspect and restore snapshots of the replicated state",
		Long: `A snapshot holds everything the cluster replicates: the capacity plan and
its node states, the scaling spec and its history, the API tokens (their
hashes), the audit log, the autoscaler's state and the demand history. The
file starts with a header (format version, Raft index and term, when and
where it was taken) and a SHA-256 checksum of its contents.

Saving and restoring need an operator token: the file holds the token
hashes and the audit log, so keep it like a secret.`,
	}
	cmd.AddCommand(newSnapshotSaveCmd(), newSnapshotInspectCmd(), newSnapshotRestoreCmd())
	return cmd
}

// snapshotRequest sends an API request whose body and answer may be
// snapshot files, and returns the answer's body; an error answer becomes
// an error with the agent's message.
func snapshotRequest(ctx context.Context, method, base, path string, body []byte, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, apiURL(base, path), rd)
	if err != nil {
		return nil, fmt.Errorf("bad --api %q: %v", base, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := apiDo(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach agent at %s: %v", base, unwrapURLError(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, store.MaxBackupBody+1<<20))
	if err != nil {
		return nil, fmt.Errorf("read answer from %s: %v", base, unwrapURLError(err))
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return nil, errors.New(e.Error)
		}
		return nil, fmt.Errorf("agent at %s answered %s", base, resp.Status)
	}
	return b, nil
}

// openBackup reads and verifies a snapshot file and decodes its state.
func openBackup(file string) (store.Backup, store.State, error) {
	f, err := os.Open(file)
	if err != nil {
		return store.Backup{}, store.State{}, err
	}
	defer f.Close()
	bk, err := store.ReadBackup(f)
	if err != nil {
		return bk, store.State{}, fmt.Errorf("%s: %w", file, err)
	}
	st, err := store.DecodeSnapshot(bytes.NewReader(bk.Body))
	if err != nil {
		return bk, st, fmt.Errorf("%s: %w: the body does not decode: %v", file, store.ErrBackupDamaged, err)
	}
	return bk, st, nil
}

// writeFileAtomic writes b to file through a temporary file in the same
// directory, so that file is either the old one or complete; mode 0600.
func writeFileAtomic(file string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), file)
	}
	return err
}

func newSnapshotSaveCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "save FILE",
		Short: "Save a consistent snapshot of the replicated state, taken on the leader, to FILE",
		Args:  cobra.ExactArgs(1),
	}
	api := apiFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		file := args[0]
		b, err := snapshotRequest(cmd.Context(), http.MethodGet, *api, "/v1/snapshot", nil, 2*time.Minute)
		if err != nil {
			return err
		}
		// Check what came before writing it: a file that does not verify
		// is worse than none.
		bk, err := store.DecodeBackup(b)
		if err != nil {
			return fmt.Errorf("the agent sent a snapshot that does not verify: %w", err)
		}
		st, err := store.DecodeSnapshot(bytes.NewReader(bk.Body))
		if err != nil {
			return fmt.Errorf("the agent sent a snapshot that does not decode: %w", err)
		}
		if err := writeFileAtomic(file, b); err != nil {
			return fmt.Errorf("write %s: %w", file, err)
		}
		s := store.Summarize(st)
		fmt.Fprintf(cmd.OutOrStdout(), "saved %s: index %d, term %d, %s; %d bytes, sha256 %.16s…\n",
			file, bk.Header.Index, bk.Header.Term, summaryLine(s), len(b), bk.SHA256)
		return nil
	}
	return cmd
}

func newSnapshotInspectCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inspect FILE",
		Short: "Verify a snapshot file's checksum and show what it holds (offline)",
		Args:  cobra.ExactArgs(1),
	}
	asJSON := cmd.Flags().Bool("json", false, "print JSON")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		bk, st, err := openBackup(args[0])
		if err != nil {
			return err
		}
		s := store.Summarize(st)
		out := cmd.OutOrStdout()
		if *asJSON {
			enc := json.NewEncoder(out)
			enc.SetIndent("", "  ")
			return enc.Encode(struct {
				File    string             `json:"file"`
				Size    int64              `json:"size"`
				Format  int                `json:"format"`
				SHA256  string             `json:"sha256"`
				Header  store.BackupHeader `json:"header"`
				Summary store.Summary      `json:"summary"`
			}{args[0], bk.Size, store.BackupFormat, bk.SHA256, bk.Header, s})
		}
		h := bk.Header
		cid := h.ClusterID
		if cid == "" {
			cid = "(unknown)"
		}
		fmt.Fprintf(out, "File:          %s, %d bytes (state %d bytes)\n", args[0], bk.Size, h.BodySize)
		fmt.Fprintf(out, "Format:        %s version %d, sha256 %s (verified)\n", store.BackupMagic, store.BackupFormat, bk.SHA256)
		fmt.Fprintf(out, "Raft:          index %d, term %d\n", h.Index, h.Term)
		fmt.Fprintf(out, "Created:       %s on node %s (loadmesh %s)\n", h.Created.Local().Format(time.RFC3339), printable(h.Node), printable(h.Version))
		fmt.Fprintf(out, "Cluster ID:    %s\n", printable(cid))
		fmt.Fprintf(out, "Plan:          version %d; %s\n", s.PlanVersion, nodeCounts(s))
		switch {
		case s.Spec:
			fmt.Fprintf(out, "Scaling spec:  from plan version %d; %d earlier kept for rollback\n", s.SpecPlanVersion, s.SpecHistory)
		default:
			fmt.Fprintf(out, "Scaling spec:  none (manual mode)\n")
		}
		fmt.Fprintf(out, "Tokens:        %s\n", tokenCounts(s))
		if s.Events == 0 {
			fmt.Fprintf(out, "Audit log:     no events\n")
		} else {
			fmt.Fprintf(out, "Audit log:     %d events, %s to %s (newest seq %d)\n", s.Events,
				s.FirstEvent.Local().Format(time.DateTime), s.LastEvent.Local().Format(time.DateTime), s.AuditSeq)
		}
		if s.History == 0 {
			fmt.Fprintf(out, "History:       no demand history\n")
		} else {
			fmt.Fprintf(out, "History:       %d minutes of demand, %s to %s\n", s.History,
				s.HistoryFrom.Local().Format(time.DateTime), s.HistoryTo.Local().Format(time.DateTime))
		}
		fmt.Fprintf(out, "Autoscaler:    %s\n", map[bool]string{true: "state recorded", false: "no state"}[s.Autoscaler])
		return nil
	}
	return cmd
}

func newSnapshotRestoreCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "restore FILE",
		Short: "Replace the cluster's replicated state with a snapshot file's, on every node",
		Long: `Replace the replicated state of the running cluster with FILE's: the plan,
spec, tokens, audit log, autoscaler state and demand history, on every
node, recorded in the restored audit log (who, when, from which snapshot).
The file is verified here first and again by the leader; a file of another
format version or with a bad checksum is refused and nothing changes.

The tokens become the snapshot's: make sure you hold an operator token
that is in it.`,
		Args: cobra.ExactArgs(1),
	}
	api := apiFlag(cmd)
	reason := cmd.Flags().String("reason", "", "why, for the audit log")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		file := args[0]
		// Verify it here too, for an error before anything is sent.
		if _, _, err := openBackup(file); err != nil {
			return err
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		q := url.Values{"file": {filepath.Base(file)}}
		if *reason != "" {
			q.Set("reason", *reason)
		}
		ans, err := snapshotRequest(cmd.Context(), http.MethodPost, *api, "/v1/snapshot/restore?"+q.Encode(), b, 2*time.Minute)
		if err != nil {
			return err
		}
		var res agent.RestoreResult
		if err := json.Unmarshal(ans, &res); err != nil {
			return fmt.Errorf("restored, but the agent's answer is unreadable: %v", err)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "restored %s (index %d, term %d, taken %s): %s; audit event %d by %s\n",
			file, res.Snapshot.Index, res.Snapshot.Term, res.Snapshot.Created.Local().Format(time.DateTime),
			summaryLine(res.Restored), res.Event.Seq, printable(res.Event.Who))
		return nil
	}
	return cmd
}

// summaryLine is a state's main figures on one line.
func summaryLine(s store.Summary) string {
	n := 0
	for _, c := range s.Nodes {
		n += c
	}
	t := 0
	for _, c := range s.Tokens {
		t += c
	}
	return fmt.Sprintf("plan version %d, %d nodes, %d tokens, %d audit events", s.PlanVersion, n, t, s.Events)
}

// nodeCounts lists plan nodes by state: "3 nodes: 2 active, 1 cordoned".
func nodeCounts(s store.Summary) string {
	total := 0
	var parts []string
	for _, st := range []scheduler.NodeState{scheduler.StateActive, scheduler.StateStandby, scheduler.StateDraining, scheduler.StateCordoned} {
		if n := s.Nodes[st]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, st))
			total += n
		}
	}
	line := fmt.Sprintf("%d nodes", total)
	if len(parts) > 0 {
		line += ": " + strings.Join(parts, ", ")
	}
	if s.Left > 0 {
		line += fmt.Sprintf(" (%d of them left the cluster)", s.Left)
	}
	return line
}

// tokenCounts lists tokens by role: "1 operator, 2 read".
func tokenCounts(s store.Summary) string {
	if len(s.Tokens) == 0 {
		return "none"
	}
	var parts []string
	for _, r := range slices.Sorted(maps.Keys(s.Tokens)) {
		parts = append(parts, fmt.Sprintf("%d %s", s.Tokens[r], r))
	}
	return strings.Join(parts, ", ")
}
