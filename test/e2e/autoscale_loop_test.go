//go:build unix

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/test/retry"
)

// planView is what the loop test reads of GET /v1/plan and /v1/events.
type planView struct {
	Nodes map[string]struct {
		State string            `json:"state"`
		Tags  map[string]string `json:"tags"`
		Left  time.Time         `json:"left"`
	} `json:"nodes"`
}

type eventView struct {
	Kind  string `json:"kind"`
	Who   string `json:"who"`
	Node  string `json:"node"`
	After string `json:"after"`
}

func getInto(r *retry.R, u string, v any) {
	resp, body, err := get(u)
	r.Check(err)
	if resp.StatusCode != 200 {
		r.Fatalf("GET %s: %s: %s", u, resp.Status, body)
	}
	r.Check(json.Unmarshal(body, v))
}

// TestAutoscalerRunsTheLocalProvisioner is the whole loop with real
// processes: the leader's autoscaler wants two active nodes but has one, so
// it runs its scale_out hook, `loadmesh provision local`, which starts a
// second agent; that agent joins as standby (new_node_state) and is
// activated. Then the limits fall to one: the autoscaler drains the more
// expensive new node, which becomes an idle standby, and the scale_in hook
// stops its process — with steady requests failing none.
func TestAutoscalerRunsTheLocalProvisioner(t *testing.T) {
	skipShort(t)
	t.Parallel()
	c := startCluster(t, 1, true)
	seed := c.agents[0]
	retry.Run(t, func(r *retry.R) {
		_, _, err := agreedLeader(apis(c.agents))
		r.Check(err)
	})
	dir := t.TempDir()
	state := filepath.Join(dir, "provisioned")
	caKey := filepath.Join(filepath.Dir(seed.tls.ca), "loadmesh-ca-key.pem")
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := filepath.Glob(filepath.Join(state, "*", "agent.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				t.Logf("==== %s ====\n%s", l, b)
			}
		}
		// Stop the leader first: while it runs, its autoscaler may start
		// another agent through the hook after --stop-all.
		if !seed.proc.exited() {
			seed.proc.kill()
		}
		res := runProvision(t, "", "provision", "local", "--dir", state, "--stop-all", "--stop-timeout", "10s")
		if res.code != 0 {
			t.Errorf("provision local --stop-all: exit %d: %s", res.code, res.stderr)
		}
	})
	hook := func(extra ...string) string {
		argv := append([]string{loadmeshBin(t), "provision", "local", "--dir", state, "--tls-ca", seed.tls.ca, "--tls-ca-key", caKey,
			"--name-prefix", "loop", "--stop-timeout", "10s"}, extra...)
		b, _ := json.Marshal(argv)
		return string(b)
	}
	spec := func(active int) string {
		return fmt.Sprintf(`mode: auto
interval: 1s
limits: {min_active: %d, max_active: %d}
targets: {inflight_utilisation: 0.7}
new_node_state: standby
standby: {keep: 0, release_after: 2s}
scale_in: {stabilisation: 0s, max_step_nodes: 4, max_step_percent: 100}
rollback: {enabled: false}
hooks:
  scale_out: {command: %s, timeout: 2m, retries: 0}
  scale_in: {command: %s, timeout: 1m, retries: 1, backoff: 1s}
`, active, active, hook("--demo-backend", "--agent-arg=--tag=cost_per_hour=5"), hook())
	}
	apply := func(doc string) {
		t.Helper()
		f := filepath.Join(dir, fmt.Sprintf("plan-%d.yaml", time.Now().UnixNano()))
		if err := os.WriteFile(f, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		mustRun(t, "plan", "apply", f, "--api", seed.api)
	}
	plan := func(r *retry.R) planView {
		var p planView
		getInto(r, "http://"+seed.api+"/v1/plan", &p)
		return p
	}

	// Scale out through the hook.
	apply(spec(2))
	var added string
	retry.RunFor(t, retry.Scale(90*time.Second), func(r *retry.R) {
		p := plan(r)
		added = ""
		for name, n := range p.Nodes {
			if name != seed.name && n.State == "active" && n.Tags["cost_per_hour"] == "5" {
				added = name
			}
		}
		if len(p.Nodes) != 2 || added == "" {
			r.Fatalf("plan %+v: want the seed and a provisioned node, both active", p.Nodes)
		}
	})
	var events []eventView
	retry.Run(t, func(r *retry.R) { getInto(r, "http://"+seed.api+"/v1/events?limit=1000", &events) })
	joinedStandby := false
	for _, e := range events {
		if e.Node == added && e.Kind == "node.upsert" && strings.Contains(e.After, "state=standby") {
			joinedStandby = true
		}
	}
	if !joinedStandby || !hasEvent(events, "hook.scale_out", "succeeded on attempt 1") {
		t.Fatalf("want %s to join as standby and the scale_out hook to succeed; events %+v", added, events)
	}
	// The new node serves through its own ingress and backend.
	list := runProvision(t, "", "provision", "local", "--dir", state, "--list", "--json")
	var listed []struct {
		Name    string `json:"name"`
		Ingress string `json:"ingress"`
	}
	if err := json.Unmarshal([]byte(list.stdout), &listed); err != nil || len(listed) != 1 || listed[0].Name != added {
		t.Fatalf("provision local --list: %q (%v)", list.stdout, err)
	}
	retry.Run(t, func(r *retry.R) {
		resp, _, err := get(listed[0].Ingress + "/?sleep=1ms")
		r.Check(err)
		if got := resp.Header.Get("X-Loadmesh-Node"); resp.StatusCode != 200 || got != added {
			r.Fatalf("%s, served by %q; want 200 from %s", resp.Status, got, added)
		}
	})

	// Steady requests from here on; none may fail through the scale-in.
	var sent, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		deadline := time.Now().Add(retry.Scale(3 * time.Minute))
		for time.Now().Before(deadline) {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			sent.Add(1)
			resp, body, err := get("http://" + seed.http + "/?sleep=5ms")
			if err == nil && resp.StatusCode != 200 {
				err = fmt.Errorf("%s: %s", resp.Status, body)
			}
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	// Scale in: the expensive new node is drained, released and stopped.
	apply(spec(1))
	retry.RunFor(t, retry.Scale(90*time.Second), func(r *retry.R) {
		p := plan(r)
		if n, ok := p.Nodes[added]; !ok || n.Left.IsZero() || len(p.Nodes) != 2 {
			r.Fatalf("plan %+v: waiting for %s to be released and marked left", p.Nodes, added)
		}
	})
	retry.Run(t, func(r *retry.R) {
		getInto(r, "http://"+seed.api+"/v1/events?limit=1000", &events)
		if !hasEvent(events, "hook.scale_in", "succeeded") {
			r.Fatalf("no successful scale_in hook in the audit log")
		}
	})
	drained := false
	for _, e := range events {
		if e.Node == added && e.Who == "autoscaler" && strings.Contains(e.After, "state=draining") {
			drained = true
		}
	}
	if !drained {
		t.Errorf("%s was not drained by the autoscaler before release", added)
	}
	list = runProvision(t, "", "provision", "local", "--dir", state, "--list", "--json")
	if strings.Contains(list.stdout, `"alive":true`) {
		t.Errorf("a provisioned agent still runs after scale_in: %s", list.stdout)
	}
	close(stop)
	wg.Wait()
	stop = make(chan struct{})
	t.Logf("requests through the scale-in: %d sent, %d failed", sent.Load(), failed.Load())
	if failed.Load() != 0 || sent.Load() == 0 {
		t.Fatalf("%d of %d requests failed during the scale-in; first: %v", failed.Load(), sent.Load(), firstErr.Load())
	}
}

func hasEvent(events []eventView, kind, afterContains string) bool {
	for _, e := range events {
		if e.Kind == kind && strings.Contains(e.After, afterContains) {
			return true
		}
	}
	return false
}
