//go:build linux

package chaos

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/test/retry"
)

// netTopo runs each node in a network namespace of its own, joined to the
// test's namespace by a veth pair: node i is 10.B.i.2, its end of the pair
// in the test's namespace 10.B.i.1. The test's namespace routes between
// the pairs (forwarding is switched on for those interfaces only), so the
// nodes reach each other, and the test reaches every node, as on a LAN.
//
// A partition adds policy-routing rules in the test's namespace that send
// traffic between the cut node and the others to a blackhole route:
// packets vanish silently, as on a real network, while the test (the
// clients) still reaches every node.
type netTopo struct {
	ns, rootIf, ip []string
	table          string
	// cut holds the `ip rule` arguments of the partition in force.
	cut [][]string
}

// newNetTopo makes the namespaces for n nodes, or skips t with the reason.
func newNetTopo(t *testing.T, n int) *netTopo {
	t.Helper()
	if err := requireRoot(); err != nil {
		t.Skipf("network partition: needs root for network namespaces (running as uid %d)", os.Geteuid())
	}
	if !haveCmd("ip") {
		t.Skip("network partition: needs ip (iproute2) for network namespaces")
	}
	sweepStaleNetns()
	id := os.Getpid() % 1000000
	b := 64 + rand.IntN(128) // 10.B.0.0/16, unlikely to clash with anything
	topo := &netTopo{table: routeTable(id)}
	t.Cleanup(func() {
		topo.heal()
		for _, ns := range topo.ns {
			sh("ip", "netns", "del", ns) // takes its end of the veth pair along
		}
	})
	for i := range n {
		ns := fmt.Sprintf("lmchaos%d-%d", id, i+1)
		rootIf := fmt.Sprintf("lmc%dr%d", id, i+1)
		nsIf := fmt.Sprintf("lmc%dn%d", id, i+1)
		rootIP := fmt.Sprintf("10.%d.%d.1", b, i+1)
		ip := fmt.Sprintf("10.%d.%d.2", b, i+1)
		if err := sh("ip", "netns", "add", ns); err != nil {
			t.Skipf("network partition: cannot make a network namespace here: %v", err)
		}
		topo.ns = append(topo.ns, ns)
		steps := [][]string{
			{"ip", "link", "add", rootIf, "type", "veth", "peer", "name", nsIf},
			{"ip", "link", "set", nsIf, "netns", ns},
			{"ip", "addr", "add", rootIP + "/24", "dev", rootIf},
			{"ip", "link", "set", rootIf, "up"},
			{"ip", "netns", "exec", ns, "ip", "addr", "add", ip + "/24", "dev", nsIf},
			{"ip", "netns", "exec", ns, "ip", "link", "set", nsIf, "up"},
			{"ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"},
			{"ip", "netns", "exec", ns, "ip", "route", "add", "default", "via", rootIP},
		}
		for _, st := range steps {
			if err := sh(st[0], st[1:]...); err != nil {
				t.Skipf("network partition: cannot set up namespaces here: %v", err)
			}
		}
		// Route between the pairs; this interface only, not the machine.
		if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+rootIf+"/forwarding", []byte("1"), 0o644); err != nil {
			t.Skipf("network partition: cannot enable forwarding on %s: %v", rootIf, err)
		}
		topo.rootIf = append(topo.rootIf, rootIf)
		topo.ip = append(topo.ip, ip)
	}
	if err := sh("ip", "route", "add", "blackhole", "default", "table", topo.table); err != nil {
		t.Skipf("network partition: cannot add a blackhole route: %v", err)
	}
	return topo
}

func routeTable(id int) string { return fmt.Sprint(10000 + id%50000) }

// sweepStaleNetns removes what an earlier run that was killed (and so
// could not clean up) left behind: its namespaces (with their veth pairs),
// its partition rules and its blackhole route. A run is identified by the
// PID in the names; only runs whose process is gone are swept.
func sweepStaleNetns() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	stale := map[int]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		var id, i int
		if n, _ := fmt.Sscanf(f[0], "lmchaos%d-%d", &id, &i); n != 2 {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", id)); err == nil {
			continue // that run may still be going (or the PID was reused: harmless to keep)
		}
		sh("ip", "netns", "del", f[0])
		stale[id] = true
	}
	for id := range stale {
		rules, _ := exec.Command("ip", "rule", "list", "pref", "100").Output()
		for _, l := range strings.Split(string(rules), "\n") {
			if strings.Contains(l, fmt.Sprintf("lmc%dr", id)) {
				// "100:	from all to Y iif X [detached] lookup T" →
				// "ip rule del pref 100 to Y iif X lookup T"
				_, spec, _ := strings.Cut(l, "from all ")
				args := []string{"rule", "del", "pref", "100"}
				for _, f := range strings.Fields(spec) {
					if !strings.HasPrefix(f, "[") {
						args = append(args, f)
					}
				}
				sh("ip", args...)
			}
		}
		sh("ip", "route", "flush", "table", routeTable(id))
	}
}

// partition cuts node i off from every other node (not from the test).
func (nt *netTopo) partition(i int) error {
	rules := [][]string{{"iif", nt.rootIf[i], "lookup", nt.table}}
	for j := range nt.ns {
		if j != i {
			rules = append(rules, []string{"iif", nt.rootIf[j], "to", nt.ip[i] + "/32", "lookup", nt.table})
		}
	}
	for _, r := range rules {
		if err := sh("ip", append([]string{"rule", "add", "pref", "100"}, r...)...); err != nil {
			return err
		}
		nt.cut = append(nt.cut, r)
	}
	return nil
}

// heal removes the partition.
func (nt *netTopo) heal() error {
	var first error
	for _, r := range nt.cut {
		if err := sh("ip", append([]string{"rule", "del", "pref", "100"}, r...)...); err != nil && first == nil {
			first = err
		}
	}
	nt.cut = nil
	return first
}

// TestChaosPartition cuts the leader of a 3-node cluster off from the
// other two for 12 s and heals the partition, under load on every ingress
// (the clients still reach the cut node: only node-to-node traffic is cut).
func TestChaosPartition(t *testing.T) {
	skipShort(t)
	topo := newNetTopo(t, 3)
	c := startCluster(t, clusterOpts{n: 3, topo: topo})
	before, err := c.sameState(c.nodes)
	if err != nil {
		t.Fatal(err)
	}
	leader := c.leader()
	var cut int
	for i, n := range c.nodes {
		if n.name == leader {
			cut = i
		}
	}
	cutNode, majority := c.nodes[cut], c.without(leader)
	s := newScenario(t, c, "network partition of the leader from the 2 other nodes for 12s", rate, 3*time.Minute)
	hold(2 * time.Second)

	cutAt := s.fault()
	if err := topo.partition(cut); err != nil {
		t.Fatalf("partition: %v", err)
	}
	s.note("cut leader %s (%s) off from %s and %s", leader, cutNode.http, majority[0].name, majority[1].name)
	var newLeader string
	retry.RunFor(t, 30*time.Second, func(r *retry.R) {
		l, _, err := agreedLeader(majority)
		r.Check(err)
		if l == leader {
			r.Fatalf("the majority still names %s", leader)
		}
		newLeader = l
	})
	s.recover("new leader in the majority", time.Since(cutAt))
	s.note("the majority elected %s %s after the cut", newLeader, time.Since(cutAt).Round(time.Millisecond))
	if _, err := c.write(majority[0], "chaos-partition-majority", 30*time.Second); err != nil {
		t.Errorf("a write through the majority: %v", err)
	}
	// The cut node cannot commit anything; it must say so, not hang.
	code, body, err := apiDo(http.MethodPost, cutNode.api, "/v1/tokens",
		[]byte(`{"name":"chaos-partition-minority","role":"read"}`), chaosToken)
	switch {
	case err != nil:
		s.note("a write through the cut node: %v", err)
	case code == http.StatusOK:
		t.Errorf("a write through the cut node %s succeeded: %s", leader, body)
	default:
		s.note("a write through the cut node: %d %s", code, oneLine(string(body)))
	}
	if st, err := getStatus(cutNode.api); err == nil {
		s.note("the cut node %s: raft %s, term %d, leader %q", leader, st.Raft.State, st.Raft.Term, st.Leader)
	}
	hold(time.Until(cutAt.Add(12 * time.Second)))

	healAt := time.Now()
	if err := topo.heal(); err != nil {
		t.Fatalf("heal: %v", err)
	}
	c.waitHealthy("after healing the partition", 90*time.Second)
	s.recover("healthy after healing (alive everywhere, one leader, same plan and audit log)", time.Since(healAt))
	l, sts, _ := agreedLeader(c.nodes)
	s.note("after healing: leader %s, term %d", l, sts[0].Raft.Term)
	s.recovered()
	hold(2 * time.Second)
	s.finish()
	checkIntact(t, c, before)
	// The minority's write must not have surfaced after the heal.
	if rep, err := c.sameState(c.nodes); err == nil && strings.Contains(string(rep.tokens), "chaos-partition-minority") {
		t.Errorf("the write sent to the cut node was committed after the heal")
	}
}
