package test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/test/harness"
	"github.com/loadmesh/loadmesh/test/retry"
	"github.com/loadmesh/loadmesh/transport"
)

func post(t *testing.T, url string, body string) (int, []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/json", bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestDrainThroughAFollowerStopsTraffic(t *testing.T) {
	skipShort(t)
	c := harness.Start(t, 3, harness.Options{Backends: true, IngressOnly: []int{2}})
	leader := c.WaitForLeader(t)
	ingress := c.Nodes[2]
	waitServingPeers(t, c, ingress, 2)
	var follower *harness.Node
	for _, n := range c.Live() {
		if n != leader {
			follower = n
			break
		}
	}
	// Drain node-0 by asking a follower: the write is carried to the leader.
	// 503 means "no leader right now, try again" (an election on a busy
	// machine); anything else is final.
	var code int
	var body []byte
	retry.Run(t, func(r *retry.R) {
		code, body = post(t, "http://"+follower.APIAddr()+"/v1/nodes/node-0/drain", `{"reason":"maintenance window"}`)
		if code == http.StatusServiceUnavailable {
			r.Fatalf("drain: %d %s", code, body)
		}
	})
	if code != 200 {
		t.Fatalf("drain: %d %s", code, body)
	}
	var ev scheduler.Event
	if err := json.Unmarshal(body, &ev); err != nil || ev.Node != "node-0" || ev.Why != "maintenance window" {
		t.Fatalf("drain event %s (%v)", body, err)
	}
	for _, n := range c.Live() {
		retry.Run(t, func(r *retry.R) {
			if st, _ := n.Plan().Plan().StateOf("node-0"); st != scheduler.StateDraining {
				r.Fatalf("%s sees node-0 as %q", n.Name(), st)
			}
		})
	}
	// Once every node has the new plan, nothing is sent to node-0.
	hc := client(t)
	retry.Run(t, func(r *retry.R) {
		for range 40 {
			resp, err := hc.Get("http://" + ingress.HTTPAddr() + "/d")
			r.Check(err)
			resp.Body.Close()
			if got := resp.Header.Get(transport.HeaderNode); resp.StatusCode != 200 || got != "node-1" {
				r.Fatalf("status %d from %q; want node-1 only while node-0 drains", resp.StatusCode, got)
			}
		}
	})
	// The audit log names who and why; activate brings it back.
	resp, err := http.Get("http://" + leader.APIAddr() + "/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	var evs []scheduler.Event
	json.NewDecoder(resp.Body).Decode(&evs)
	resp.Body.Close()
	found := false
	for _, e := range evs {
		if e.Kind == "node.state" && e.Node == "node-0" && e.Why == "maintenance window" && e.Who != "" && e.After == "state=draining zone=default" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no audit event for the drain in %+v", evs)
	}
	// With nothing in flight the leader finishes the drain: standby.
	retry.Run(t, func(r *retry.R) {
		if st, _ := leader.Plan().Plan().StateOf("node-0"); st != scheduler.StateStandby {
			r.Fatalf("node-0 is %q, want standby after its drain", st)
		}
	})
	if last := leader.Plan().Events(1)[0]; last.Why != "drain finished: no requests in flight" || last.Who != "membership" {
		t.Fatalf("drain completion event %+v", last)
	}
	if code, body := post(t, "http://"+follower.APIAddr()+"/v1/nodes/node-0/activate", ""); code != 200 {
		t.Fatalf("activate: %d %s", code, body)
	}
	waitServingPeers(t, c, ingress, 2)
}

func TestPlanAPIRejectsBadInput(t *testing.T) {
	skipShort(t)
	c := harness.Start(t, 1, harness.Options{})
	c.WaitForLeader(t)
	api := "http://" + c.Nodes[0].APIAddr()
	retry.Run(t, func(r *retry.R) {
		if _, ok := c.Nodes[0].Plan().Plan().Nodes["node-0"]; !ok {
			r.Fatalf("node-0 not in the plan yet")
		}
	})
	before := c.Nodes[0].Plan().Plan().Version
	for _, tc := range []struct {
		path, body string
		want       int
	}{
		{"/v1/nodes/nope/drain", "", 404},
		{"/v1/nodes/node-0/drain", "{not json", 400},
		{"/v1/nodes/node-0/drain", `{"reason":"x","extra":1}`, 400},
		{"/v1/nodes/node-0/explode", "", 404},
		{"/v1/nodes/..%2F..%2Fetc/drain", "", 400},
	} {
		if code, body := post(t, api+tc.path, tc.body); code != tc.want {
			t.Errorf("POST %s %q: %d %s, want %d", tc.path, tc.body, code, body, tc.want)
		}
	}
	for _, q := range []string{"/v1/events?limit=-1", "/v1/events?since=x"} {
		resp, err := http.Get(api + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("GET %s: %d, want 400", q, resp.StatusCode)
		}
	}
	if after := c.Nodes[0].Plan().Plan().Version; after != before {
		t.Fatalf("bad input changed the plan: version %d → %d", before, after)
	}
}

func TestPlanApplyValidateAndRollback(t *testing.T) {
	skipShort(t)
	c := harness.Start(t, 3, harness.Options{})
	leader := c.WaitForLeader(t)
	var follower *harness.Node
	for _, n := range c.Live() {
		if n != leader {
			follower = n
		}
	}
	example, err := os.ReadFile("../deploy/plan.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	postYAML := func(body string) (int, []byte) {
		resp, err := http.Post("http://"+follower.APIAddr()+"/v1/plan?reason=test", "application/yaml", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if code, body := postYAML(string(example)); code != 200 {
		t.Fatalf("apply example: %d %s", code, body)
	}
	first := leader.Plan().Spec()
	if first.PlanVersion == 0 || first.Why != "test" {
		t.Fatalf("spec after apply: %+v", first)
	}
	// An invalid file is refused with the reasons, and changes nothing.
	for _, bad := range []string{"mode: sideways\n", "limits:\n  min_active: 5\n  max_active: 2\n", "no_such_key: 1\n", "::: not yaml"} {
		code, body := postYAML(bad)
		if code != 422 || !strings.Contains(string(body), "invalid plan file") {
			t.Fatalf("bad plan %q: %d %s", bad, code, body)
		}
	}
	if got := leader.Plan().Spec(); got.PlanVersion != first.PlanVersion {
		t.Fatalf("a refused plan changed the spec: %+v", got)
	}
	second := strings.Replace(string(example), "mode: auto", "mode: dry-run", 1)
	if code, body := postYAML(second); code != 200 {
		t.Fatalf("apply second: %d %s", code, body)
	}
	if code, body := post(t, "http://"+follower.APIAddr()+"/v1/plan/rollback", ""); code != 200 {
		t.Fatalf("rollback: %d %s", code, body)
	}
	retry.Run(t, func(r *retry.R) {
		for _, n := range c.Live() {
			cur := n.Plan().Spec()
			if string(cur.Doc) != string(first.Doc) || !strings.Contains(cur.Why, "rollback") {
				r.Fatalf("%s: spec after rollback %s (%s), want the first again", n.Name(), cur.Doc, cur.Why)
			}
		}
	})
	if code, _ := post(t, "http://"+follower.APIAddr()+"/v1/plan/rollback", `{"version":999}`); code != 404 {
		t.Fatalf("rollback to an unknown version: %d, want 404", code)
	}
}

// TestADepartedNodeReturnsToItsState: a node that leaves keeps its plan
// entry (marked left) and comes back to its state — an operator's cordon
// survives a restart — while an entry gone longer than the retention is
// removed.
func TestADepartedNodeReturnsToItsState(t *testing.T) {
	skipShort(t)
	retention := retry.Scale(20 * time.Second)
	c := harness.Start(t, 4, harness.Options{Backends: true, Tune: func(i int, cfg *agent.Config) {
		cfg.LeftNodeRetention = retention
	}})
	leader := c.WaitForLeader(t)
	var cordoned, killed *harness.Node
	for _, n := range c.Live() {
		if n == leader {
			continue
		}
		if cordoned == nil {
			cordoned = n
		} else if killed == nil {
			killed = n
		}
	}
	retry.Run(t, func(r *retry.R) {
		code, body := post(t, "http://"+leader.APIAddr()+"/v1/nodes/"+cordoned.Name()+"/cordon", `{"reason":"disk check"}`)
		if code != 200 {
			r.Fatalf("cordon: %d %s", code, body)
		}
	})
	c.Stop(t, cordoned) // graceful leave
	retry.Run(t, func(r *retry.R) {
		pn, ok := leader.Plan().Plan().Nodes[cordoned.Name()]
		if !ok || pn.Left.IsZero() || pn.State != scheduler.StateCordoned {
			r.Fatalf("entry of the departed node: %v %+v; want cordoned and marked left", ok, pn)
		}
	})
	back := c.Restart(t, cordoned)
	retry.RunFor(t, 30*time.Second, func(r *retry.R) {
		for _, n := range c.Live() {
			pn := n.Plan().Plan().Nodes[back.Name()]
			if pn.State != scheduler.StateCordoned || !pn.Left.IsZero() {
				r.Fatalf("%s sees the returned node as %+v; want cordoned, not left", n.Name(), pn)
			}
		}
	})

	// A node that does not come back is removed after the retention.
	c.Kill(t, killed)
	retry.RunFor(t, 2*retention+60*time.Second, func(r *retry.R) {
		if pn, ok := leader.Plan().Plan().Nodes[killed.Name()]; ok {
			r.Fatalf("entry of the killed node still there: %+v", pn)
		}
	})
	var left, removed bool
	for _, e := range leader.Plan().Events(0) {
		if e.Node == killed.Name() && e.Who == "membership" {
			left = left || e.Kind == "node.left"
			removed = removed || (e.Kind == "node.remove" && left)
		}
	}
	if !left || !removed {
		t.Fatalf("audit log: left %v, then removed %v", left, removed)
	}
}
