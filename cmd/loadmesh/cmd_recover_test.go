package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/test/harness"
	"github.com/loadmesh/loadmesh/test/retry"
)

// TestRecoverAfterQuorumLoss loses two of three voters for good: the
// survivor alone cannot elect a leader; loadmesh recover makes it the
// cluster's only voter, it leads with the state it had, takes writes, and
// a new node joins it.
func TestRecoverAfterQuorumLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node test; skipped with -short")
	}
	c := harness.Start(t, 3, harness.Options{DeadServerGrace: time.Hour})
	leader := c.WaitForLeader(t)
	c.WaitForMembers(t)
	survivor := c.Node("node-0")
	retry.Run(t, func(r *retry.R) {
		if p := leader.Plan().Plan(); len(p.Nodes) != 3 {
			r.Fatalf("plan lists %d nodes, want 3", len(p.Nodes))
		}
	})
	api := func(n *harness.Node) []string {
		return []string{"--api", "http://" + n.APIAddr(), "--token", harness.Token}
	}
	if _, err := runCLI(t, "", append([]string{"cordon", "node-1", "--reason", "before the loss"}, api(leader)...)...); err != nil {
		t.Fatal(err)
	}
	retry.Run(t, func(r *retry.R) {
		if st, _ := survivor.Plan().Plan().StateOf("node-1"); st != scheduler.StateCordoned {
			r.Fatalf("node-1 is %q on node-0", st)
		}
	})
	before := survivor.Plan().Summary()

	dir := t.TempDir()
	peers := filepath.Join(dir, "peers.json")
	os.WriteFile(peers, fmt.Appendf(nil, `[{"id": "node-0", "address": %q}]`, survivor.Cluster().RaftAddr()), 0o600)
	// Not while the agent runs.
	if _, err := runCLI(t, "", "recover", "--data-dir", survivor.Cfg.DataDir, "--peers-file", peers); err == nil || !strings.Contains(err.Error(), "stop the agent on this data dir first") {
		t.Fatalf("recover of a running node: %v", err)
	}

	for _, n := range c.Live() {
		c.Kill(t, n)
	}

	others := filepath.Join(dir, "others.json")
	os.WriteFile(others, []byte(`[{"id": "node-1", "address": "127.0.0.1:1"}]`), 0o600)
	for _, tt := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--data-dir", survivor.Cfg.DataDir}, "--data-dir and --peers-file are required"},
		{[]string{"--data-dir", dir, "--peers-file", peers}, "not a loadmesh data dir"},
		{[]string{"--data-dir", survivor.Cfg.DataDir, "--peers-file", filepath.Join(dir, "missing.json")}, "no such file"},
		{[]string{"--data-dir", survivor.Cfg.DataDir, "--peers-file", others}, `do not include this node "node-0"`},
	} {
		if _, err := runCLI(t, "", append([]string{"recover"}, tt.args...)...); err == nil || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("recover %v: %v, want %q", tt.args, err, tt.msg)
		}
	}

	out, err := runCLI(t, "", "recover", "--data-dir", survivor.Cfg.DataDir, "--peers-file", peers)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "recovered node node-0's data dir") || !strings.Contains(out, "node-0 (voter, "+survivor.Cluster().RaftAddr()+")") {
		t.Fatalf("recover printed %q", out)
	}
	t.Log(strings.TrimSpace(out))

	n0 := c.Restart(t, survivor)
	if l := c.WaitForLeader(t); l != n0 {
		t.Fatalf("leader %s", l.Name())
	}
	if v := n0.Cluster().RaftStatus().Voters; !slices.Equal(v, []string{"node-0"}) {
		t.Fatalf("voters %v", v)
	}
	// The state is the one from before the loss; writes work again.
	p := n0.Plan().Plan()
	if p.Version < before.PlanVersion || p.Nodes["node-1"].State != scheduler.StateCordoned {
		t.Fatalf("plan after recovery %+v, before: version %d", p, before.PlanVersion)
	}
	if _, err := runCLI(t, "", append([]string{"cordon", "node-0", "--reason", "after the recovery"}, api(n0)...)...); err != nil {
		t.Fatal(err)
	}
	// The lost nodes are marked left; a new node joins as a voter.
	added := c.Add(t)
	retry.Run(t, func(r *retry.R) {
		p := n0.Plan().Plan()
		if p.Nodes["node-1"].Left.IsZero() || p.Nodes["node-2"].Left.IsZero() {
			r.Fatalf("lost nodes not marked left: %+v", p.Nodes)
		}
		if v := n0.Cluster().RaftStatus().Voters; !slices.Contains(v, added.Name()) {
			r.Fatalf("voters %v, want %s among them", v, added.Name())
		}
	})
}
