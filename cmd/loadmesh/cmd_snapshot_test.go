package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/loadmesh/loadmesh/store"
	"github.com/loadmesh/loadmesh/test/harness"
	"github.com/loadmesh/loadmesh/test/retry"
)

// TestSnapshotCommands runs loadmesh snapshot save, inspect and restore
// against a one-node cluster, and inspect and restore on damaged files.
func TestSnapshotCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an agent; skipped with -short")
	}
	c := harness.Start(t, 1, harness.Options{StrictAuth: true})
	n := c.WaitForLeader(t)
	api := []string{"--api", "http://" + n.APIAddr(), "--token", harness.Token}
	dir := t.TempDir()
	file := filepath.Join(dir, "backup.snap")

	// Without a token, reading a snapshot is refused even on loopback.
	if _, err := runCLI(t, "", "snapshot", "save", file, "--api", "http://"+n.APIAddr(), "--token", ""); err == nil || !strings.Contains(err.Error(), "needs an API token") {
		t.Fatalf("save without a token: %v", err)
	}
	var out string
	retry.Run(t, func(r *retry.R) {
		var err error
		out, err = runCLI(t, "", append([]string{"snapshot", "save", file}, api...)...)
		r.Check(err)
	})
	if !strings.HasPrefix(out, "saved "+file+": index ") || !strings.Contains(out, "1 nodes, 1 tokens") {
		t.Fatalf("save printed %q", out)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("saved file: %v %v", fi, err)
	}

	out, err := runCLI(t, "", "snapshot", "inspect", file)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Format:        LOADMESH-SNAPSHOT version 1, sha256 ", "(verified)", "Raft:          index ",
		"on node node-0", "Cluster ID:    " + n.Cluster().ClusterID(), "Plan:          version 1; 1 nodes: 1 active",
		"Scaling spec:  none", "Tokens:        1 operator", "Audit log:     2 events", "History:       no demand history"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "bootstrap") || strings.Contains(out, harness.Token[20:]) {
		t.Errorf("inspect shows a token:\n%s", out)
	}
	if out, err := runCLI(t, "", "snapshot", "inspect", "--json", file); err != nil || !strings.Contains(out, `"plan_version": 1`) {
		t.Fatalf("inspect --json: %v\n%s", err, out)
	}

	// Damaged files: one line, a non-zero exit (main prints the error and
	// exits 1), and restore refuses them before sending anything.
	good, _ := os.ReadFile(file)
	for name, b := range map[string][]byte{
		"truncated.snap": good[:len(good)-7],
		"flipped.snap":   append(append(bytes.Clone(good[:len(good)/2]), good[len(good)/2]^1), good[len(good)/2+1:]...),
		"v9.snap":        bytes.Replace(good, []byte("SNAPSHOT 1 "), []byte("SNAPSHOT 9 "), 1),
		"empty.snap":     nil,
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o600)
		_, err := runCLI(t, "", "snapshot", "inspect", p)
		if err == nil || strings.Contains(oneLine(err), "\n") || !strings.Contains(err.Error(), p+": ") {
			t.Errorf("inspect %s: %v", name, err)
		}
		_, rerr := runCLI(t, "", append([]string{"snapshot", "restore", p}, api...)...)
		if rerr == nil || rerr.Error() != err.Error() {
			t.Errorf("restore %s: %v", name, rerr)
		}
		if !errors.Is(err, store.ErrBackupDamaged) && !errors.Is(err, store.ErrBackupFormat) && !errors.Is(err, store.ErrNotBackup) {
			t.Errorf("inspect %s: unclassified error %v", name, err)
		}
	}
	if _, err := runCLI(t, "", "snapshot", "inspect", filepath.Join(dir, "missing.snap")); err == nil {
		t.Error("inspect of a missing file succeeded")
	}

	// Change the plan, then restore: the change is undone, the restore
	// recorded.
	if _, err := runCLI(t, "", append([]string{"cordon", "node-0"}, api...)...); err != nil {
		t.Fatal(err)
	}
	out, err = runCLI(t, "", append([]string{"snapshot", "restore", file, "--reason", "undo the cordon"}, api...)...)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "restored "+file+" (index ") || !strings.Contains(out, "plan version 3, 1 nodes, 1 tokens, 3 audit events; audit event 4 by bootstrap") {
		t.Fatalf("restore printed %q", out)
	}
	if st, _ := n.Plan().Plan().StateOf("node-0"); st != "active" {
		t.Fatalf("node-0 is %s after the restore", st)
	}
	out, err = runCLI(t, "", append([]string{"events", "--limit", "1"}, api...)...)
	if err != nil || !strings.Contains(out, "snapshot.restore") || !strings.Contains(out, "undo the cordon") || !strings.Contains(out, `file "backup.snap"`) {
		t.Fatalf("last event: %v %q", err, out)
	}
}
