package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/provision"
	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/test/harness"
	"github.com/loadmesh/loadmesh/test/retry"
)

// provisionScript fails its first attempt (as a cloud API over quota
// would), then records the request it got on stdin in dir.
const provisionScript = `#!/bin/sh
if [ "$LOADMESH_HOOK_ATTEMPT" = 1 ]; then
  echo "quota exceeded, try later" >&2
  exit 3
fi
cat > "%s/$LOADMESH_HOOK_ID.json.tmp" && mv "%s/$LOADMESH_HOOK_ID.json.tmp" "%s/$LOADMESH_HOOK_ID.json"
echo '{"started":["via-test"]}'
`

// TestScaleOutHookProvisionsANodeThatJoinsAsStandbyAndIsActivated runs the
// whole scale-out loop in-process: the autoscaler wants three active nodes
// but the cluster has two; it runs the scale_out hook (a real command, the
// first attempt of which fails and is retried); the "provisioner" (this
// test, reacting to the request the hook wrote) starts an agent, which
// joins as standby as the policy says and is then activated.
func TestScaleOutHookProvisionsANodeThatJoinsAsStandbyAndIsActivated(t *testing.T) {
	skipShort(t)
	dir := t.TempDir()
	script := filepath.Join(dir, "provision.sh")
	if err := os.WriteFile(script, fmt.Appendf(nil, provisionScript, dir, dir, dir), 0o755); err != nil {
		t.Fatal(err)
	}
	spec := fmt.Sprintf(`mode: auto
interval: 1s
limits: {min_active: 3, max_active: 4}
targets: {inflight_utilisation: 0.7}
new_node_state: standby
standby: {keep: 0}
hooks:
  scale_out: {command: ["/bin/sh", %q], timeout: 10s, retries: 2, backoff: 10ms}
  provision_timeout: 5m
`, script)

	c := harness.Start(t, 2, harness.Options{Backends: true})
	leader := c.WaitForLeader(t)
	waitAllActive(t, c, leader)
	retry.Run(t, func(r *retry.R) {
		resp, err := http.Post("http://"+leader.APIAddr()+"/v1/plan", "application/yaml", strings.NewReader(spec))
		r.Check(err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			r.Fatalf("apply spec: %s %s", resp.Status, b)
		}
	})

	// The hook is run, retried, and hands over a complete request.
	var req provision.Request
	retry.RunFor(t, 30*time.Second, func(r *retry.R) {
		files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
		if len(files) != 1 {
			r.Fatalf("%d hook requests recorded, want 1", len(files))
		}
		f, err := os.Open(files[0])
		r.Check(err)
		defer f.Close()
		req, err = provision.ReadRequest(f)
		r.Check(err)
	})
	if req.Kind != provision.KindScaleOut || req.Count != 1 || req.NewNodeState != "standby" || req.Attempt != 2 ||
		req.Cluster.Leader != leader.Cfg.Name || len(req.Cluster.Seeds) != 2 || req.ID == "" || req.Why == "" {
		t.Fatalf("hook request %+v", req)
	}

	// The provisioner starts a node; it joins as standby, then the
	// autoscaler activates it to reach its minimum of three.
	added := c.Add(t)
	retry.RunFor(t, 40*time.Second, func(r *retry.R) {
		pn, ok := leader.Plan().Plan().Nodes[added.Cfg.Name]
		if !ok || pn.State != scheduler.StateActive {
			r.Fatalf("new node in plan: %v %+v", ok, pn)
		}
	})
	var joined, activated bool
	var attempts []string
	for _, e := range leader.Plan().Events(0) {
		switch {
		case e.Node == added.Cfg.Name && e.Kind == "node.upsert" && strings.Contains(e.After, "state=standby"):
			joined = true
		case e.Node == added.Cfg.Name && e.Kind == "node.state" && e.Who == "autoscaler" && strings.Contains(e.After, "state=active"):
			activated = e.Metrics["min"] == 3
		case e.Kind == "hook.scale_out":
			attempts = append(attempts, e.After)
		}
	}
	if !joined || !activated {
		t.Fatalf("joined as standby %v, activated by the autoscaler with its figures %v", joined, activated)
	}
	got := strings.Join(attempts, " | ")
	if len(attempts) != 3 || !strings.HasPrefix(attempts[0], "requested "+req.ID) ||
		!strings.Contains(attempts[1], "attempt 1 of 3 failed") || !strings.Contains(attempts[1], "quota exceeded") ||
		!strings.Contains(attempts[2], "succeeded on attempt 2") || !strings.Contains(attempts[2], "via-test") {
		t.Fatalf("hook audit records: %s", got)
	}
	// One run, no new request while the node was on its way or after.
	if files, _ := filepath.Glob(filepath.Join(dir, "*.json")); len(files) != 1 {
		t.Fatalf("%d hook requests, want 1", len(files))
	}
	// The outcome is a metric, and the decision with its figures is in the API.
	resp, err := http.Get("http://" + leader.APIAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`loadmesh_autoscaler_hook_runs_total{kind="scale_out",outcome="success"} 1`,
		`loadmesh_autoscaler_hook_attempts_total{kind="scale_out",outcome="failure"} 1`,
		`loadmesh_autoscaler_leader 1`,
		`loadmesh_autoscaler_nodes{kind="min"} 3`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	var d struct {
		Active  int `json:"active"`
		Desired int `json:"desired"`
	}
	// 503 while a busy machine elects a new leader: try again.
	retry.Run(t, func(r *retry.R) {
		resp, err := http.Get("http://" + added.APIAddr() + "/v1/autoscaler")
		r.Check(err)
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			r.Fatalf("GET /v1/autoscaler via a follower: %s", resp.Status)
		}
		r.Check(json.NewDecoder(resp.Body).Decode(&d))
	})
	if d.Desired != 3 {
		t.Fatalf("decision %+v, want desired 3", d)
	}
}
