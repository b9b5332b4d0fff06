package test

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/test/harness"
	"github.com/loadmesh/loadmesh/test/retry"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The process-wide HTTP client keeps idle keep-alive connections.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

func skipShort(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-node test; skipped with -short")
	}
}

func voters(n *harness.Node) []string    { return n.Cluster().RaftStatus().Voters }
func nonvoters(n *harness.Node) []string { return n.Cluster().RaftStatus().Nonvoters }

func getStatus(t testing.TB, n *harness.Node) agent.Status {
	t.Helper()
	resp, err := http.Get("http://" + n.APIAddr() + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st agent.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestThreeAgentsAgreeOnOneLeader(t *testing.T) {
	skipShort(t)
	c := harness.Start(t, 3, harness.Options{})
	c.WaitForMembers(t)
	leader := c.WaitForLeader(t)
	retry.Run(t, func(r *retry.R) {
		if v := voters(leader); len(v) != 3 {
			r.Fatalf("voters %v, want 3", v)
		}
		plan := leader.Plan().Plan()
		if len(plan.Nodes) != 3 {
			r.Fatalf("plan lists %d nodes, want 3", len(plan.Nodes))
		}
	})
	// Every node's status API names three alive members and the same leader,
	// and its own plan state is active once the plan has replicated.
	for _, n := range c.Live() {
		retry.Run(t, func(r *retry.R) {
			st := getStatus(t, n)
			if st.Leader != leader.Name() {
				r.Fatalf("%s: leader %q, want %q", n.Name(), st.Leader, leader.Name())
			}
			if len(st.Members) != 3 {
				r.Fatalf("%s: %d members", n.Name(), len(st.Members))
			}
			for _, m := range st.Members {
				if m.Status != cluster.StatusAlive || m.Addresses.HTTP == "" || m.Addresses.Raft == "" || m.Addresses.API == "" || m.Addresses.Peer == "" {
					r.Fatalf("%s: member %+v incomplete", n.Name(), m)
				}
			}
			if st.Node.State != string(scheduler.StateActive) {
				r.Fatalf("%s: state %q", n.Name(), st.Node.State)
			}
			if len(st.Raft.Voters) != 3 {
				r.Fatalf("%s: voters %v", n.Name(), st.Raft.Voters)
			}
		})
	}
}

func TestFiveAgentsSurviveLeaderLoss(t *testing.T) {
	skipShort(t)
	c := harness.Start(t, 5, harness.Options{})
	c.WaitForMembers(t)
	old := c.WaitForLeader(t)
	c.Stop(t, old) // graceful: hands over leadership and leaves
	leader := c.WaitForLeader(t)
	if leader.Name() == old.Name() {
		t.Fatalf("leader is still %s", old.Name())
	}
	// A member that left is removed from Raft at once; the plan keeps its
	// entry, marked left, for its return.
	retry.Run(t, func(r *retry.R) {
		if v := voters(leader); len(v) != 4 || slices.Contains(v, old.Name()) {
			r.Fatalf("voters %v, want the 4 remaining nodes", v)
		}
		if pn, ok := leader.Plan().Plan().Nodes[old.Name()]; !ok || pn.Left.IsZero() {
			r.Fatalf("plan entry of %s: %v %+v; want it kept and marked left", old.Name(), ok, pn)
		}
	})
	// The leader saw a departure, not a failure (that is why it removed the
	// node at once). Others may have suspected the node before its leave
	// reached them on a busy machine, so for them dead is acceptable too.
	retry.Run(t, func(r *retry.R) {
		if m, ok := leader.Cluster().Member(old.Name()); !ok || m.Status != cluster.StatusLeft {
			r.Fatalf("leader sees %s as %+v, want left", old.Name(), m)
		}
		for _, n := range c.Live() {
			m, ok := n.Cluster().Member(old.Name())
			if !ok || (m.Status != cluster.StatusLeft && m.Status != cluster.StatusDead) {
				r.Fatalf("%s sees %s as %+v, want left", n.Name(), old.Name(), m)
			}
		}
	})
}

func TestKilledLeaderIsReplaced(t *testing.T) {
	skipShort(t)
	c := harness.Start(t, 3, harness.Options{})
	old := c.WaitForLeader(t)
	c.Kill(t, old)
	leader := c.WaitForLeader(t)
	if leader.Name() == old.Name() {
		t.Fatalf("leader is still %s", old.Name())
	}
}

func TestFourthAgentBecomesVoter(t *testing.T) {
	skipShort(t)
	c := harness.Start(t, 3, harness.Options{})
	leader := c.WaitForLeader(t)
	added := c.Add(t)
	c.WaitForMembers(t)
	retry.Run(t, func(r *retry.R) {
		if v := voters(leader); len(v) != 4 || !slices.Contains(v, added.Name()) {
			r.Fatalf("voters %v, want 4 including %s", v, added.Name())
		}
		if added.Cluster().Leader() != leader.Name() {
			r.Fatalf("new node sees leader %q", added.Cluster().Leader())
		}
		if st, _ := added.Plan().Plan().StateOf(added.Name()); st != scheduler.StateActive {
			r.Fatalf("new node's plan state %q", st)
		}
	})
}

func TestVotersAreCappedAndDeadServersRemoved(t *testing.T) {
	skipShort(t)
	c := harness.Start(t, 3, harness.Options{MaxVoters: 3, DeadServerGrace: time.Second})
	leader := c.WaitForLeader(t)
	extra := c.Add(t)
	retry.Run(t, func(r *retry.R) {
		if nv := nonvoters(leader); !slices.Equal(nv, []string{extra.Name()}) {
			r.Fatalf("non-voters %v, want [%s]", nv, extra.Name())
		}
	})
	// Kill a voter that is not the leader: after the grace period it is
	// removed, and the non-voter takes its seat.
	var victim *harness.Node
	for _, n := range c.Live() {
		if n != leader && n != extra {
			victim = n
			break
		}
	}
	start := time.Now()
	c.Kill(t, victim)
	retry.Run(t, func(r *retry.R) {
		v := voters(leader)
		if slices.Contains(v, victim.Name()) {
			r.Fatalf("voters %v still include killed %s", v, victim.Name())
		}
		if !slices.Contains(v, extra.Name()) || len(v) != 3 {
			r.Fatalf("voters %v: want %s promoted", v, extra.Name())
		}
	})
	if el := time.Since(start); el < time.Second {
		t.Fatalf("dead server removed after %s, before its 1s grace", el)
	}
	retry.Run(t, func(r *retry.R) {
		if pn, ok := leader.Plan().Plan().Nodes[victim.Name()]; !ok || pn.Left.IsZero() {
			r.Fatalf("plan entry of %s: %v %+v; want it kept and marked left", victim.Name(), ok, pn)
		}
	})
}

func TestRestartedAgentRejoinsWithItsState(t *testing.T) {
	skipShort(t)
	c := harness.Start(t, 3, harness.Options{DeadServerGrace: time.Minute})
	leader := c.WaitForLeader(t)
	var follower *harness.Node
	for _, n := range c.Live() {
		if n != leader {
			follower = n
			break
		}
	}
	retry.Run(t, func(r *retry.R) {
		if v := follower.Plan().Plan().Version; v < 3 {
			r.Fatalf("follower plan version %d", v)
		}
	})
	c.Kill(t, follower)
	back := c.Restart(t, follower)
	// Its Raft configuration is on disk: it is a voter at once, without
	// the leader adding it again, and it catches up on the plan.
	if v := voters(back); len(v) != 3 || !slices.Contains(v, back.Name()) {
		t.Fatalf("restarted node's voters %v; raft state was not kept", v)
	}
	c.WaitForMembers(t)
	retry.Run(t, func(r *retry.R) {
		if back.Cluster().Leader() != leader.Name() {
			r.Fatalf("restarted node sees leader %q", back.Cluster().Leader())
		}
		if v := back.Plan().Plan().Version; v < 3 {
			r.Fatalf("restarted node's plan version %d", v)
		}
	})
}

func TestIngressServesWithLocalBackend(t *testing.T) {
	skipShort(t)
	c := harness.Start(t, 2, harness.Options{Backends: true, Tune: func(i int, cfg *agent.Config) {
		if i == 1 {
			cfg.Backend = "" // ingress-only
		}
	}})
	c.WaitForLeader(t)
	n0, n1 := c.Nodes[0], c.Nodes[1]
	n1.Backend.Shutdown(t.Context()) // harness gave it one; make it truly ingress-only
	req, _ := http.NewRequest("GET", "http://"+n0.HTTPAddr()+"/some/path", nil)
	req.Header.Set("Connection", "close")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Loadmesh-Node") != n0.Name() {
		t.Fatalf("got %d node=%q body=%q", resp.StatusCode, resp.Header.Get("X-Loadmesh-Node"), body)
	}
	if want := "hello from node-0-backend: GET /some/path\n"; string(body) != want {
		t.Fatalf("body %q, want %q", body, want)
	}
	_ = n1
}
