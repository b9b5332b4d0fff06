package test

// Durability of the replicated capacity plan: a leader crash in the middle
// of a scaling action, and a restart of the whole cluster.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/test/harness"
	"github.com/loadmesh/loadmesh/test/retry"
	"github.com/loadmesh/loadmesh/transport"
)

// durHoldSpec keeps all three nodes active: the autoscaler runs (at a 1s
// interval) but has nothing to do on an idle cluster.
const durHoldSpec = `mode: auto
interval: 1s
limits:
  min_active: 3
  max_active: 3
targets:
  inflight_utilisation: 0.7
  rps_per_node: 1000
scale_in:
  stabilisation: 0s
  max_step_nodes: 1
predictive:
  enabled: false
`

// durScaleInSpec lets an idle three-node cluster shrink by one node. The
// node drained is the most recently activated one (no tags: equal scores).
const durScaleInSpec = `mode: auto
interval: 1s
limits:
  min_active: 2
  max_active: 3
targets:
  inflight_utilisation: 0.7
  rps_per_node: 1000
scale_in:
  stabilisation: 0s
  max_step_nodes: 1
predictive:
  enabled: false
`

// durManualSpecA and durManualSpecB are specs that never change node
// states, for the restart test.
const durManualSpecA = `mode: manual
interval: 2s
limits:
  min_active: 1
  max_active: 3
targets:
  inflight_utilisation: 0.6
`

const durManualSpecB = `mode: manual
interval: 5s
limits:
  min_active: 2
  max_active: 3
targets:
  inflight_utilisation: 0.8
  rps_per_node: 500
`

// durEvent is an audit event as GET /v1/events returns it. Seq is read if
// the API has it (0 otherwise).
type durEvent struct {
	Seq     uint64    `json:"seq"`
	Version uint64    `json:"version"`
	Time    time.Time `json:"time"`
	Who     string    `json:"who"`
	Kind    string    `json:"kind"`
	Node    string    `json:"node"`
	Why     string    `json:"why"`
	Before  string    `json:"before"`
	After   string    `json:"after"`
}

func (e durEvent) String() string {
	return fmt.Sprintf("v%d seq%d %s %s by %q (%s) %q→%q", e.Version, e.Seq, e.Kind, e.Node, e.Who, e.Why, e.Before, e.After)
}

func (e durEvent) same(o durEvent) bool {
	return e.Seq == o.Seq && e.Version == o.Version && e.Time.Equal(o.Time) && e.Who == o.Who && e.Kind == o.Kind &&
		e.Node == o.Node && e.Why == o.Why && e.Before == o.Before && e.After == o.After
}

// durPlanKinds are the event kinds that change the plan (and its version).
var durPlanKinds = []string{"node.upsert", "node.state", "node.left", "node.remove", "spec.apply"}

// durPlan is GET /v1/plan.
type durPlan struct {
	Version uint64                        `json:"version"`
	Nodes   map[string]scheduler.PlanNode `json:"nodes"`
	Spec    durSpec                       `json:"spec"`
	Leader  string                        `json:"leader"`
}

type durSpec struct {
	PlanVersion uint64          `json:"plan_version"`
	Time        time.Time       `json:"time"`
	Who         string          `json:"who"`
	Why         string          `json:"why"`
	Doc         json.RawMessage `json:"doc"`
}

func (s durSpec) same(o durSpec) bool {
	return s.PlanVersion == o.PlanVersion && s.Time.Equal(o.Time) && s.Who == o.Who && s.Why == o.Why && durSameJSON(s.Doc, o.Doc)
}

func durSameJSON(a, b []byte) bool {
	var ca, cb bytes.Buffer
	if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil {
		return false
	}
	return bytes.Equal(ca.Bytes(), cb.Bytes())
}

func durSameNodes(a, b map[string]scheduler.PlanNode) bool {
	if len(a) != len(b) {
		return false
	}
	for name, x := range a {
		y, ok := b[name]
		if !ok || x.State != y.State || x.Zone != y.Zone || !x.Since.Equal(y.Since) || len(x.Tags) != len(y.Tags) {
			return false
		}
		for k, v := range x.Tags {
			if y.Tags[k] != v {
				return false
			}
		}
	}
	return true
}

func durClient(t *testing.T) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: retry.Scale(60 * time.Second)}
}

// durGet GETs url and decodes a 200 answer into v.
func durGet(hc *http.Client, url string, v any) (int, error) {
	resp, err := hc.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(b))
	}
	if err := json.Unmarshal(b, v); err != nil {
		return resp.StatusCode, fmt.Errorf("GET %s: %v in %s", url, err, b)
	}
	return resp.StatusCode, nil
}

// durWrite POSTs body to url and returns the first answer that is not "no
// leader right now" (503) or "the leader went away while carrying the
// write" (502): elections on a busy machine. A write that timed out on a
// leader that lost leadership is answered 503 as well and was not applied,
// so retrying is safe.
func durWrite(t *testing.T, hc *http.Client, url, contentType, body string) (int, []byte) {
	t.Helper()
	var code int
	var out []byte
	retry.RunFor(t, 40*time.Second, func(r *retry.R) {
		resp, err := hc.Post(url, contentType, strings.NewReader(body))
		r.Check(err)
		defer resp.Body.Close()
		out, _ = io.ReadAll(resp.Body)
		code = resp.StatusCode
		if code == http.StatusServiceUnavailable || code == http.StatusBadGateway {
			r.Fatalf("POST %s: %d %s", url, code, out)
		}
	})
	return code, out
}

func durMustWrite(t *testing.T, hc *http.Client, url, contentType, body string) []byte {
	t.Helper()
	code, out := durWrite(t, hc, url, contentType, body)
	if code != http.StatusOK {
		t.Fatalf("POST %s: %d %s", url, code, out)
	}
	return out
}

func durAPI(n *harness.Node) string { return "http://" + n.APIAddr() }

func durEvents(hc *http.Client, n *harness.Node) ([]durEvent, error) {
	var evs []durEvent
	_, err := durGet(hc, durAPI(n)+"/v1/events?limit=10000", &evs)
	return evs, err
}

// durCheckAuditLog reports what is wrong with an audit log that must be
// complete (never trimmed) for a plan at version planVersion: events are
// ordered by version; each plan change has the next version (no gap, no
// duplicate); any other record carries the version it was made at; audit
// sequence numbers, when present, count up from 1 without gaps.
func durCheckAuditLog(evs []durEvent, planVersion uint64) error {
	var prev uint64
	lastChange := uint64(0)
	for i, e := range evs {
		isChange := slices.Contains(durPlanKinds, e.Kind)
		switch {
		case isChange && e.Version != prev+1:
			return fmt.Errorf("event %d (%s): plan change at version %d after version %d (gap, duplicate or reorder)", i, e, e.Version, prev)
		case !isChange && e.Version != prev && e.Version != prev+1:
			return fmt.Errorf("event %d (%s): version %d out of order after %d", i, e, e.Version, prev)
		}
		if e.Seq != 0 && e.Seq != uint64(i)+1 {
			return fmt.Errorf("event %d (%s): audit sequence %d, want %d", i, e, e.Seq, i+1)
		}
		if e.Who == "" || e.Time.IsZero() {
			return fmt.Errorf("event %d (%s): no author or time", i, e)
		}
		if isChange {
			lastChange = e.Version
		}
		prev = e.Version
	}
	if lastChange != planVersion {
		return fmt.Errorf("last plan change in the audit log is version %d, the plan is at version %d", lastChange, planVersion)
	}
	return nil
}

// durLoad is the load summary node about gossips, as seen by from.
func durLoad(from *harness.Node, about string) (scheduler.Load, bool) {
	m, ok := from.Cluster().Member(about)
	if !ok || len(m.Load) == 0 {
		return scheduler.Load{}, false
	}
	l, err := scheduler.DecodeLoad(m.Load)
	return l, err == nil
}

// durTraffic sends a steady, light stream of GETs to one ingress and counts
// failures.
type durTraffic struct {
	node           string
	sent, failed   atomic.Int64
	mu             sync.Mutex
	firstErr       error
	firstErrAt     time.Time
	stop           chan struct{}
	done           chan struct{}
	servedByOthers atomic.Int64
}

func durStartTraffic(hc *http.Client, n *harness.Node) *durTraffic {
	tr := &durTraffic{node: n.Name(), stop: make(chan struct{}), done: make(chan struct{})}
	addr := n.HTTPAddr()
	go func() {
		defer close(tr.done)
		tick := time.NewTicker(50 * time.Millisecond) // pacing (20 requests/s), not a wait
		defer tick.Stop()
		for {
			select {
			case <-tr.stop:
				return
			case <-tick.C:
			}
			tr.sent.Add(1)
			resp, err := hc.Get("http://" + addr + "/background")
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("status %d", resp.StatusCode)
				} else if resp.Header.Get(transport.HeaderNode) != tr.node {
					tr.servedByOthers.Add(1)
				}
			}
			if err != nil {
				tr.failed.Add(1)
				tr.mu.Lock()
				if tr.firstErr == nil {
					tr.firstErr, tr.firstErrAt = err, time.Now()
				}
				tr.mu.Unlock()
			}
		}
	}()
	return tr
}

func (tr *durTraffic) halt() {
	select {
	case <-tr.stop:
	default:
		close(tr.stop)
	}
	<-tr.done
}

// heldResult is the outcome of one long request held in flight.
type heldResult struct {
	status int
	node   string
	err    error
}

// durBackend answers at once, except requests for /held/..., which it
// holds until release (or until the client goes away): requests stay in
// flight exactly as long as the test needs, however slow the machine.
type durBackend struct {
	srv  *httptest.Server
	gate chan struct{}
	once sync.Once
}

func newDurBackend(t *testing.T) *durBackend {
	b := &durBackend{gate: make(chan struct{})}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/held/") {
			select {
			case <-b.gate:
			case <-r.Context().Done():
				return
			}
		}
		io.WriteString(w, "ok\n")
	}))
	// Registered before the cluster starts, so it runs after the agents
	// are stopped; release first so that Close does not wait on held
	// requests.
	t.Cleanup(func() {
		b.release()
		b.srv.Close()
	})
	return b
}

func (b *durBackend) release() { b.once.Do(func() { close(b.gate) }) }

// TestLeaderFailoverMidScalingLeavesAConsistentPlan crashes the Raft leader
// while the autoscaler's scale-in is in progress (a node draining with
// requests in flight on it) and checks that the new leader finishes the
// drain and carries on with a consistent, gap-free plan.
func TestLeaderFailoverMidScalingLeavesAConsistentPlan(t *testing.T) {
	skipShort(t)
	const attempts = 3
	for attempt := 1; ; attempt++ {
		if durFailoverScenario(t, attempt == attempts) {
			return
		}
		t.Logf("attempt %d: an election during the set-up made the draining node the leader, which the scenario must not crash; starting over with a new cluster", attempt)
	}
}

// durFailoverScenario runs the failover scenario on a new cluster. It
// returns false, with the cluster stopped, when an election made the
// draining node the leader before the crash (unless last, when that fails
// the test).
func durFailoverScenario(t *testing.T, last bool) bool {
	drainTimeout := retry.Scale(60 * time.Second)
	var backends []*durBackend
	for range 3 {
		backends = append(backends, newDurBackend(t))
	}
	c := harness.Start(t, 3, harness.Options{Tune: func(i int, cfg *agent.Config) {
		cfg.Backend = backends[i].srv.URL
		cfg.DrainTimeout = drainTimeout
	}})
	t.Cleanup(func() {
		for _, b := range backends {
			b.release()
		}
	})
	leader := c.WaitForLeader(t)
	c.WaitForMembers(t)
	hc := durClient(t)
	retry.Run(t, func(r *retry.R) {
		for _, n := range c.Live() {
			if p := n.Plan().Plan(); len(p.Nodes) != 3 {
				r.Fatalf("%s: plan lists %d nodes, want 3", n.Name(), len(p.Nodes))
			}
		}
	})
	// The drainee x is a follower; it serves the held requests. The node
	// that leads when the drain is under way is crashed.
	var x *harness.Node
	var xBackend *durBackend
	for i, n := range c.Live() {
		if n != leader {
			x, xBackend = n, backends[i]
			break
		}
	}
	// Make x the most recently activated node, which the autoscaler drains
	// first when scores tie.
	durMustWrite(t, hc, durAPI(x)+"/v1/nodes/"+x.Name()+"/cordon", "application/json", `{"reason":"test: reorder"}`)
	durMustWrite(t, hc, durAPI(x)+"/v1/nodes/"+x.Name()+"/activate", "application/json", `{"reason":"test: reorder"}`)

	// A spec that holds three active nodes; once the autoscaler has made a
	// decision under it, it steps every second.
	durMustWrite(t, hc, durAPI(x)+"/v1/plan?reason=hold", "application/yaml", durHoldSpec)
	retry.RunFor(t, 40*time.Second, func(r *retry.R) {
		var d struct {
			Min int `json:"min"`
		}
		_, err := durGet(hc, durAPI(x)+"/v1/autoscaler", &d)
		r.Check(err)
		if d.Min != 3 {
			r.Fatalf("autoscaler decision has min %d, want the hold spec's 3", d.Min)
		}
	})

	// Steady light traffic through both other ingresses; requests through
	// the one that survives must all succeed.
	traffic := map[string]*durTraffic{}
	var others []*harness.Node
	for _, n := range c.Live() {
		if n != x {
			traffic[n.Name()] = durStartTraffic(hc, n)
			others = append(others, n)
		}
	}
	defer func() {
		for _, tr := range traffic {
			tr.halt()
		}
	}()

	// Requests held in flight on x (its ingress serves locally while it
	// is active and has headroom).
	const nHeld = 4
	var heldDone atomic.Int32
	heldCh := make(chan heldResult, nHeld)
	for i := range nHeld {
		go func() {
			res := heldResult{}
			resp, err := hc.Get(fmt.Sprintf("http://%s/held/%d", x.HTTPAddr(), i))
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				res.status, res.node = resp.StatusCode, resp.Header.Get(transport.HeaderNode)
			}
			res.err = err
			heldDone.Add(1)
			heldCh <- res
		}()
	}
	retry.Run(t, func(r *retry.R) {
		for _, n := range others {
			if l, ok := durLoad(n, x.Name()); !ok || l.Inflight < nHeld {
				r.Fatalf("%s sees %s with load %+v (known %v), want %d in flight", n.Name(), x.Name(), l, ok, nHeld)
			}
		}
	})

	// Allow scale-in by one: the autoscaler drains x.
	durMustWrite(t, hc, durAPI(x)+"/v1/plan?reason=scale-in", "application/yaml", durScaleInSpec)
	retry.RunFor(t, 30*time.Second, func(r *retry.R) {
		for _, n := range c.Live() {
			if st, _ := n.Plan().Plan().StateOf(x.Name()); st != scheduler.StateDraining {
				r.Fatalf("%s is %q on %s, want draining", x.Name(), st, n.Name())
			}
		}
	})

	// Crash the leader in the middle of the drain.
	leader = c.WaitForLeader(t)
	if leader == x {
		if !last {
			for _, n := range c.Live() {
				c.Kill(t, n)
			}
			return false
		}
		t.Fatalf("elections during the set-up kept making the draining node %s the leader", x.Name())
	}
	plan := leader.Plan().Plan()
	killVersion := plan.Version
	if st, _ := plan.StateOf(x.Name()); st != scheduler.StateDraining {
		t.Fatalf("%s is %s before the crash, want draining", x.Name(), st)
	}
	for name, pn := range plan.Nodes {
		if name != x.Name() && pn.State != scheduler.StateActive {
			t.Fatalf("the autoscaler drained more than %s: %s is %s", x.Name(), name, pn.State)
		}
	}
	var drainEv durEvent
	for _, e := range leader.Plan().Events(0) {
		if e.Kind == "node.state" && e.Node == x.Name() && strings.HasPrefix(e.After, "state=draining") {
			drainEv = durEvent{Version: e.Version, Time: e.Time, Who: e.Who, Kind: e.Kind, Node: e.Node, Why: e.Why, After: e.After}
		}
	}
	if drainEv.Who != "autoscaler" {
		t.Fatalf("drain of %s not recorded for the autoscaler: %+v", x.Name(), drainEv)
	}
	if d := heldDone.Load(); d != 0 {
		t.Fatalf("%d held requests ended before they were released", d)
	}
	killedAt := time.Now()
	c.Kill(t, leader)
	t.Logf("killed leader %s at plan version %d while %s drains (drain at version %d)", leader.Name(), killVersion, x.Name(), drainEv.Version)
	newLeader := c.WaitForLeader(t)
	if newLeader == leader {
		t.Fatalf("leader is still %s", leader.Name())
	}
	var y *harness.Node // the surviving node that is not x
	for _, n := range c.Live() {
		if n != x {
			y = n
		}
	}

	// The drain does not end while requests are in flight on x, leader or
	// no leader. Release them once the new leader is in charge: they
	// complete, on x.
	retry.Run(t, func(r *retry.R) {
		if l, ok := durLoad(y, x.Name()); !ok || l.Inflight < nHeld {
			r.Fatalf("%s sees %s with load %+v, want %d in flight", y.Name(), x.Name(), l, nHeld)
		}
		// The new leader may still be applying what the old one committed.
		if p := newLeader.Plan().Plan(); p.Version < killVersion {
			r.Fatalf("new leader %s is at plan version %d, the old one committed %d", newLeader.Name(), p.Version, killVersion)
		}
	})
	if st, _ := newLeader.Plan().Plan().StateOf(x.Name()); st != scheduler.StateDraining {
		t.Fatalf("%s is %s on the new leader with requests still in flight, want draining", x.Name(), st)
	}
	releasedAt := time.Now()
	xBackend.release()
	retry.RunFor(t, 60*time.Second, func(r *retry.R) {
		if d := heldDone.Load(); d != nHeld {
			r.Fatalf("%d of %d held requests done", d, nHeld)
		}
	})
	for range nHeld {
		res := <-heldCh
		if res.err != nil || res.status != http.StatusOK || res.node != x.Name() {
			t.Errorf("held request on draining %s: status %d from %q, error %v", x.Name(), res.status, res.node, res.err)
		}
	}

	// The new leader finishes the drain, removes the dead leader from the
	// plan, and its autoscaler brings the cluster back to its minimum of
	// two active nodes with x. Every survivor converges on that plan.
	var final durPlan
	retry.RunFor(t, drainTimeout+60*time.Second, func(r *retry.R) {
		var plans []durPlan
		for _, n := range c.Live() {
			var p durPlan
			_, err := durGet(hc, durAPI(n)+"/v1/plan", &p)
			r.Check(err)
			plans = append(plans, p)
		}
		p := plans[0]
		if pn, ok := p.Nodes[leader.Name()]; ok && pn.Left.IsZero() {
			r.Fatalf("plan lists the dead leader %s as a member: %+v", leader.Name(), p.Nodes)
		}
		for _, n := range c.Live() {
			pn, ok := p.Nodes[n.Name()]
			if !ok {
				r.Fatalf("surviving %s is not in the plan %+v", n.Name(), p.Nodes)
			}
			if pn.State != scheduler.StateActive {
				r.Fatalf("%s is %s, want active again (min_active 2)", n.Name(), pn.State)
			}
		}
		for i, q := range plans[1:] {
			if q.Version != p.Version || !durSameNodes(q.Nodes, p.Nodes) || !q.Spec.same(p.Spec) || q.Leader != p.Leader {
				r.Fatalf("plans differ: %s has version %d %+v leader %s; %s has version %d %+v leader %s",
					c.Live()[0].Name(), p.Version, p.Nodes, p.Leader, c.Live()[i+1].Name(), q.Version, q.Nodes, q.Leader)
			}
		}
		if c.Node(p.Leader) == nil {
			r.Fatalf("plan API names leader %q, not a live node", p.Leader)
		}
		final = p
	})
	for name, pn := range final.Nodes {
		if !pn.State.Valid() {
			t.Errorf("%s has invalid state %q", name, pn.State)
		}
	}
	if final.Version <= killVersion {
		t.Errorf("plan version %d did not move past %d after the failover", final.Version, killVersion)
	}

	// The audit log is the same on every survivor, ordered without gaps or
	// duplicates, and after the failover only the autoscaler and membership
	// changed the plan.
	var evs []durEvent
	retry.Run(t, func(r *retry.R) {
		var logs [][]durEvent
		for _, n := range c.Live() {
			e, err := durEvents(hc, n)
			r.Check(err)
			logs = append(logs, e)
		}
		for i, l := range logs[1:] {
			if len(l) != len(logs[0]) || !slices.EqualFunc(l, logs[0], durEvent.same) {
				r.Fatalf("audit logs differ: %d events on %s, %d on %s", len(logs[0]), c.Live()[0].Name(), len(l), c.Live()[i+1].Name())
			}
		}
		evs = logs[0]
	})
	t.Logf("audit log (plan version %d):\n%s", final.Version, durEventList(evs))
	if err := durCheckAuditLog(evs, final.Version); err != nil {
		t.Fatalf("audit log: %v", err)
	}
	var standbyEv, reactivateEv, removeEv *durEvent
	for i := range evs {
		e := &evs[i]
		if e.Version <= killVersion {
			continue
		}
		if slices.Contains(durPlanKinds, e.Kind) && e.Who != "autoscaler" && e.Who != "membership" {
			t.Errorf("plan change after the failover not by the autoscaler or membership: %s", e)
		}
		switch {
		case e.Kind == "node.state" && e.Node == x.Name() && strings.HasPrefix(e.After, "state=standby") && standbyEv == nil:
			standbyEv = e
		case e.Kind == "node.state" && e.Node == x.Name() && strings.HasPrefix(e.After, "state=active") && standbyEv != nil:
			reactivateEv = e
		case e.Kind == "node.left" && e.Node == leader.Name():
			removeEv = e
		}
	}
	switch {
	case standbyEv == nil:
		t.Errorf("no drain completion (draining → standby) of %s after the failover", x.Name())
	case standbyEv.Who != "membership":
		t.Errorf("drain of %s finished by %q, want membership: %s", x.Name(), standbyEv.Who, standbyEv)
	case standbyEv.Time.Before(releasedAt):
		t.Errorf("drain of %s finished at %s, before its in-flight requests were released at %s: %s", x.Name(), standbyEv.Time, releasedAt, standbyEv)
	case standbyEv.Time.Sub(drainEv.Time) > drainTimeout:
		t.Errorf("drain of %s took %s, beyond its %s timeout: %s", x.Name(), standbyEv.Time.Sub(drainEv.Time), drainTimeout, standbyEv)
	default:
		t.Logf("drain of %s finished %s after it began, %s after the release: %s", x.Name(),
			standbyEv.Time.Sub(drainEv.Time).Round(time.Millisecond), standbyEv.Time.Sub(releasedAt).Round(time.Millisecond), standbyEv.Why)
	}
	if reactivateEv == nil || reactivateEv.Who != "autoscaler" {
		t.Errorf("the new leader's autoscaler did not reactivate %s: %v", x.Name(), reactivateEv)
	}
	if removeEv == nil || removeEv.Who != "membership" {
		t.Errorf("the dead leader %s was not marked left in the plan by membership: %v", leader.Name(), removeEv)
	}

	// The new leader's autoscaler reports its own decisions.
	retry.Run(t, func(r *retry.R) {
		var d struct {
			Time time.Time `json:"time"`
			Min  int       `json:"min"`
		}
		_, err := durGet(hc, durAPI(y)+"/v1/autoscaler", &d)
		r.Check(err)
		if !d.Time.After(killedAt) || d.Min != 2 {
			r.Fatalf("autoscaler decision at %s with min %d; want one made after the failover at %s under min 2", d.Time, d.Min, killedAt)
		}
	})

	// No request through the surviving ingress failed.
	for _, tr := range traffic {
		tr.halt()
	}
	for name, tr := range traffic {
		tr.mu.Lock()
		firstErr, at := tr.firstErr, tr.firstErrAt
		tr.mu.Unlock()
		if name == leader.Name() {
			t.Logf("through the killed %s: %d requests, %d failed (from %s after the kill)", name, tr.sent.Load(), tr.failed.Load(), at.Sub(killedAt).Round(time.Millisecond))
			continue
		}
		if tr.sent.Load() < 10 {
			t.Errorf("only %d requests sent through %s", tr.sent.Load(), name)
		}
		if tr.failed.Load() != 0 {
			t.Errorf("%d of %d requests through surviving %s failed; first (%s after the kill): %v", tr.failed.Load(), tr.sent.Load(), name, at.Sub(killedAt).Round(time.Millisecond), firstErr)
		}
		t.Logf("through %s: %d requests, none failed (%d served by another node)", name, tr.sent.Load(), tr.servedByOthers.Load())
	}
	return true
}

func durEventList(evs []durEvent) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "  %s\n", e)
	}
	return b.String()
}

// TestFullClusterRestartKeepsPlan crashes every node of a cluster and
// starts them again on their data dirs: the plan, its node states, the
// scaling spec with its history and the audit log must all come back.
func TestFullClusterRestartKeepsPlan(t *testing.T) {
	skipShort(t)
	// Nodes not yet restarted must not be removed as dead meanwhile.
	c := harness.Start(t, 3, harness.Options{Backends: true, DeadServerGrace: time.Hour})
	leader := c.WaitForLeader(t)
	c.WaitForMembers(t)
	hc := durClient(t)
	retry.Run(t, func(r *retry.R) {
		if p := leader.Plan().Plan(); len(p.Nodes) != 3 {
			r.Fatalf("plan lists %d nodes, want 3", len(p.Nodes))
		}
	})
	var followers []*harness.Node
	for _, n := range c.Live() {
		if n != leader {
			followers = append(followers, n)
		}
	}
	drained, cordoned := followers[0].Name(), followers[1].Name()

	// Two specs, so that there is a history to roll back to.
	var applyA durEvent
	if body := durMustWrite(t, hc, durAPI(followers[0])+"/v1/plan?reason=first", "application/yaml", durManualSpecA); json.Unmarshal(body, &applyA) != nil || applyA.Version == 0 {
		t.Fatalf("apply of the first spec answered %s", body)
	}
	durMustWrite(t, hc, durAPI(followers[1])+"/v1/plan?reason=second", "application/yaml", durManualSpecB)
	durMustWrite(t, hc, durAPI(leader)+"/v1/nodes/"+drained+"/drain", "application/json", `{"reason":"restart test"}`)
	retry.Run(t, func(r *retry.R) {
		if st, _ := leader.Plan().Plan().StateOf(drained); st != scheduler.StateStandby {
			r.Fatalf("%s is %q, want standby after its drain", drained, st)
		}
	})
	durMustWrite(t, hc, durAPI(leader)+"/v1/nodes/"+cordoned+"/cordon", "application/json", `{"reason":"restart test"}`)

	// Every node has applied everything before the crash.
	var before durPlan
	var beforeEvents []durEvent
	var beforeHistory []durSpec
	retry.Run(t, func(r *retry.R) {
		var plans []durPlan
		for _, n := range c.Live() {
			var p durPlan
			_, err := durGet(hc, durAPI(n)+"/v1/plan", &p)
			r.Check(err)
			plans = append(plans, p)
		}
		for _, p := range plans[1:] {
			if p.Version != plans[0].Version {
				r.Fatalf("plan versions differ: %d and %d", plans[0].Version, p.Version)
			}
		}
		before = plans[0]
		if st := before.Nodes[cordoned].State; st != scheduler.StateCordoned {
			r.Fatalf("%s is %q, want cordoned", cordoned, st)
		}
		evs, err := durEvents(hc, leader)
		r.Check(err)
		beforeEvents = evs
		_, err = durGet(hc, durAPI(leader)+"/v1/plan/history", &beforeHistory)
		r.Check(err)
	})
	if err := durCheckAuditLog(beforeEvents, before.Version); err != nil {
		t.Fatalf("audit log before the restart: %v\n%s", err, durEventList(beforeEvents))
	}
	if before.Nodes[drained].State != scheduler.StateStandby || before.Nodes[leader.Name()].State != scheduler.StateActive {
		t.Fatalf("plan before the restart: %+v", before.Nodes)
	}
	i := slices.IndexFunc(beforeHistory, func(r durSpec) bool { return r.PlanVersion == applyA.Version })
	if i < 0 || durSameJSON(beforeHistory[i].Doc, before.Spec.Doc) || before.Spec.Why != "second" {
		t.Fatalf("spec history before the restart %+v lacks the first spec (plan version %d)", beforeHistory, applyA.Version)
	}
	specA := beforeHistory[i]
	t.Logf("before: plan version %d, %d events, %d earlier specs", before.Version, len(beforeEvents), len(beforeHistory))

	// Crash every node, then start them all again on their data dirs.
	old := c.Live()
	for _, n := range old {
		c.Kill(t, n)
	}
	for _, n := range old {
		c.Restart(t, n)
	}
	c.WaitForLeader(t)

	// Every node comes back with the same plan, spec and audit log.
	for _, n := range c.Live() {
		retry.Run(t, func(r *retry.R) {
			var p durPlan
			_, err := durGet(hc, durAPI(n)+"/v1/plan", &p)
			r.Check(err)
			if p.Version < before.Version {
				r.Fatalf("%s: plan version %d, was %d before the restart", n.Name(), p.Version, before.Version)
			}
			if !durSameNodes(p.Nodes, before.Nodes) {
				r.Fatalf("%s: plan nodes %+v, were %+v before the restart", n.Name(), p.Nodes, before.Nodes)
			}
			if !p.Spec.same(before.Spec) {
				r.Fatalf("%s: spec %+v, was %+v before the restart", n.Name(), p.Spec, before.Spec)
			}
			evs, err := durEvents(hc, n)
			r.Check(err)
			if len(evs) < len(beforeEvents) || !slices.EqualFunc(evs[:len(beforeEvents)], beforeEvents, durEvent.same) {
				r.Fatalf("%s: audit log of %d events does not start with the %d from before the restart", n.Name(), len(evs), len(beforeEvents))
			}
			if err := durCheckAuditLog(evs, p.Version); err != nil {
				r.Fatalf("%s: audit log: %v", n.Name(), err)
			}
			var hist []durSpec
			_, err = durGet(hc, durAPI(n)+"/v1/plan/history", &hist)
			r.Check(err)
			if !slices.EqualFunc(hist, beforeHistory, durSpec.same) {
				r.Fatalf("%s: spec history %+v, was %+v", n.Name(), hist, beforeHistory)
			}
		})
	}

	// The spec history still allows a rollback to the first spec.
	via := c.Live()[0]
	body := durMustWrite(t, hc, durAPI(via)+"/v1/plan/rollback", "application/json", fmt.Sprintf(`{"version":%d}`, specA.PlanVersion))
	var ev durEvent
	if err := json.Unmarshal(body, &ev); err != nil || ev.Kind != "spec.apply" || ev.Version <= before.Version {
		t.Fatalf("rollback answer %s (%v)", body, err)
	}
	for _, n := range c.Live() {
		retry.Run(t, func(r *retry.R) {
			var p durPlan
			_, err := durGet(hc, durAPI(n)+"/v1/plan", &p)
			r.Check(err)
			if !durSameJSON(p.Spec.Doc, specA.Doc) || p.Spec.PlanVersion != ev.Version || !strings.Contains(p.Spec.Why, "rollback") {
				r.Fatalf("%s: spec after the rollback %+v, want the first spec (%s) at version %d", n.Name(), p.Spec, specA.Doc, ev.Version)
			}
			if !durSameNodes(p.Nodes, before.Nodes) {
				r.Fatalf("%s: the rollback changed node states: %+v", n.Name(), p.Nodes)
			}
			evs, err := durEvents(hc, n)
			r.Check(err)
			if err := durCheckAuditLog(evs, p.Version); err != nil {
				r.Fatalf("%s: audit log after the rollback: %v", n.Name(), err)
			}
		})
	}
}
