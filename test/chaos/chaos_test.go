//go:build linux

package chaos

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/test/retry"
)

// rate is the steady load, in GETs per second over all ingress ports.
const rate = 60

func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("chaos suite (real processes, minutes); skipped with -short")
	}
}

// TestChaos runs the faults of issue 6 one after another on one 5-node
// cluster of real agent processes (gossip encryption, mutual TLS), each
// under a steady load of GETs against every ingress port. Each subtest
// starts by waiting for a healthy cluster, so one that fails leaves a
// clear message and the next can still run.
func TestChaos(t *testing.T) {
	skipShort(t)
	// node5's data dir is a small tmpfs of its own when the machine
	// allows it, for the disk-full scenario.
	diskDir, diskWhy := smallFS(t, 16)
	c := startCluster(t, clusterOpts{n: 5, dataDir: func(i int) string {
		if i == 4 {
			return diskDir
		}
		return ""
	}})
	// A token that expires during the suite, for the last bad-input check.
	expiring, expiringAt := createToken(t, c.nodes[0], "chaos-expiring", "operator", "1m")

	t.Run("bad-input", func(t *testing.T) { c.use(t); testBadInput(t, c) })
	t.Run("kill", func(t *testing.T) { c.use(t); testKill(t, c) })
	t.Run("sigstop", func(t *testing.T) { c.use(t); testStop(t, c) })
	t.Run("rolling-restart", func(t *testing.T) { c.use(t); testRollingRestart(t, c) })
	t.Run("disk-full", func(t *testing.T) {
		c.use(t)
		if diskDir == "" {
			t.Skip("disk full: " + diskWhy)
		}
		testDiskFull(t, c, c.nodes[4], diskDir)
	})
	t.Run("expired-token", func(t *testing.T) { c.use(t); testExpiredToken(t, c, expiring, expiringAt) })
}

// testKill: SIGKILL a random non-leader, then the leader, then restart both.
func testKill(t *testing.T, c *testCluster) {
	c.waitHealthy("before the kills", 60*time.Second)
	before, err := c.sameState(c.nodes)
	if err != nil {
		t.Fatal(err)
	}
	leader := c.leader()
	followers := c.without(leader)
	victim := followers[rand.IntN(len(followers))]
	old := c.node(leader)
	s := newScenario(t, c, "SIGKILL a follower, then the leader, restart both", rate, 3*time.Minute)
	hold(2 * time.Second)

	// The client stops using the ingress of a node about to die: the
	// requests it had in flight there would fail with the process, which no
	// mesh can prevent. What must not fail are the requests the other
	// ingresses forward to it.
	s.load.exclude(t, victim.name)
	s.fault()
	victim.proc.kill()
	s.note("SIGKILL follower %s (pid %d)", victim.name, victim.proc.pid())
	survivors := c.without(victim.name)
	d := waitGone(t, survivors, victim.name)
	s.note("every survivor saw %s as not alive %s after the kill", victim.name, d.Round(time.Millisecond))

	s.load.exclude(t, leader)
	killedAt := time.Now()
	old.proc.kill()
	s.note("SIGKILL leader %s (pid %d)", leader, old.proc.pid())
	survivors = c.without(victim.name, leader)
	var newLeader string
	retry.RunFor(t, 30*time.Second, func(r *retry.R) {
		l, _, err := agreedLeader(survivors)
		r.Check(err)
		if l == leader {
			r.Fatalf("survivors still name the killed leader %s", leader)
		}
		newLeader = l
	})
	failover := time.Since(killedAt)
	s.recover("new leader after SIGKILL of the leader", failover)
	s.note("new leader %s %s after SIGKILL of %s", newLeader, failover.Round(time.Millisecond), leader)
	if _, err := c.write(survivors[0], "chaos-kill-write", 30*time.Second); err != nil {
		t.Errorf("a write through %s with two of five nodes dead: %v", survivors[0].name, err)
	} else {
		s.note("a write through %s (2 of 5 nodes dead) succeeded %s after the leader's death", survivors[0].name, time.Since(killedAt).Round(time.Millisecond))
	}
	waitGone(t, survivors, leader)

	restartAt := time.Now()
	c.restart(victim)
	c.restart(old)
	if err := c.waitStarted([]*node{victim, old}); err != nil {
		t.Fatalf("restart: %v", err)
	}
	c.waitHealthy("after restarting both", 60*time.Second)
	s.recover("both restarted nodes rejoined (alive everywhere, voters, same plan and audit log)", time.Since(restartAt))
	s.recovered()
	s.load.include(victim)
	s.load.include(old)
	hold(2 * time.Second)
	s.finish()
	checkIntact(t, c, before)
}

// waitGone waits until every node in nodes sees name as not alive, and
// returns how long that took.
func waitGone(t *testing.T, nodes []*node, name string) time.Duration {
	t.Helper()
	start := time.Now()
	retry.RunFor(t, 30*time.Second, func(r *retry.R) {
		for _, n := range nodes {
			st, err := getStatus(n.api)
			r.Check(err)
			if s := st.memberStatus(name); s == "alive" {
				r.Fatalf("%s still sees %s alive", n.name, name)
			}
		}
	})
	return time.Since(start)
}

// checkIntact checks that every node has the same plan, audit log and
// tokens, and that the audit log still begins with everything in before.
func checkIntact(t *testing.T, c *testCluster, before replicated) {
	t.Helper()
	var now replicated
	retry.Run(t, func(r *retry.R) {
		var err error
		now, err = c.sameState(c.nodes)
		r.Check(err)
	})
	if err := intact(before, now); err != nil {
		t.Errorf("replicated state not intact: %v", err)
	}
	t.Logf("plan version %d → %d, audit log %d → %d events, identical on all %d nodes",
		before.pver, now.pver, before.nevent, now.nevent, len(c.nodes))
}

// testStop: SIGSTOP the leader for 10 s (a hung server), then SIGCONT.
func testStop(t *testing.T, c *testCluster) {
	c.waitHealthy("before SIGSTOP", 60*time.Second)
	before, err := c.sameState(c.nodes)
	if err != nil {
		t.Fatal(err)
	}
	leader := c.leader()
	hung := c.node(leader)
	others := c.without(leader)
	s := newScenario(t, c, "SIGSTOP the leader for 10s, then SIGCONT", rate, 3*time.Minute)
	hold(2 * time.Second)

	// A hung ingress holds its clients' connections; the clients' own
	// timeouts are not the mesh's to fix. The other ingresses must route
	// around the hung node.
	s.load.exclude(t, leader)
	stoppedAt := s.fault()
	hung.sigstop()
	s.note("SIGSTOP leader %s (pid %d) for 10s", leader, hung.proc.pid())
	var newLeader string
	retry.RunFor(t, 30*time.Second, func(r *retry.R) {
		l, _, err := agreedLeader(others)
		r.Check(err)
		if l == leader {
			r.Fatalf("the others still name the stopped leader %s", leader)
		}
		newLeader = l
	})
	s.recover("new leader after SIGSTOP", time.Since(stoppedAt))
	s.note("new leader %s %s after SIGSTOP", newLeader, time.Since(stoppedAt).Round(time.Millisecond))
	if _, err := c.write(others[0], "chaos-stop-write", 30*time.Second); err != nil {
		t.Errorf("a write through %s while the old leader is stopped: %v", others[0].name, err)
	}
	hold(time.Until(stoppedAt.Add(10 * time.Second)))

	contAt := time.Now()
	hung.sigcont()
	if err := hung.alive(); err != nil {
		retry.Run(t, func(r *retry.R) { r.Check(hung.alive()) })
	}
	c.waitHealthy("after SIGCONT", 60*time.Second)
	s.recover("rejoined after SIGCONT (alive everywhere, one leader, same plan and audit log)", time.Since(contAt))
	st, _ := getStatus(hung.api)
	s.note("after SIGCONT %s is %s in term %d; leader %s", leader, st.Raft.State, st.Raft.Term, st.Leader)
	s.recovered()
	s.load.include(hung)
	hold(2 * time.Second)
	s.finish()
	checkIntact(t, c, before)
}

// testRollingRestart: SIGTERM each node in turn and start it again with
// the same data dir, under load. The client keeps sending to every ingress
// port, the one being restarted included: a refused connection is tried on
// another ingress (nothing reached the node), anything else that goes wrong
// is a failure.
func testRollingRestart(t *testing.T, c *testCluster) {
	c.waitHealthy("before the rolling restart", 60*time.Second)
	before, err := c.sameState(c.nodes)
	if err != nil {
		t.Fatal(err)
	}
	leader := c.leader()
	s := newScenario(t, c, "rolling restart (SIGTERM, restart with the same data dir) of all 5 nodes", rate, 4*time.Minute)
	hold(2 * time.Second)
	s.fault()
	var worst time.Duration
	for _, n := range c.nodes {
		role := "follower"
		if n.name == leader {
			role = "leader"
		}
		termAt := time.Now()
		clean := n.proc.stop(retry.Scale(40 * time.Second))
		drained := time.Since(termAt)
		exit := n.proc.exitDesc()
		if !clean || exit != "exit status 0" {
			t.Errorf("%s (%s): %s %s after SIGTERM, want exit status 0", n.name, role, exit, drained.Round(time.Millisecond))
		}
		c.restart(n)
		if err := c.waitStarted([]*node{n}); err != nil {
			t.Fatalf("restart %s: %v", n.name, err)
		}
		c.waitHealthy("after restarting "+n.name, 60*time.Second)
		took := time.Since(termAt)
		worst = max(worst, took)
		l, _, _ := agreedLeader(c.nodes)
		s.note("%s (%s): exited %s after SIGTERM (%s); healthy again %s after SIGTERM; leader now %s",
			n.name, role, drained.Round(time.Millisecond), exit, took.Round(time.Millisecond), l)
		if n.name == leader {
			leader = l
		}
	}
	s.recover("slowest node back (SIGTERM to healthy cluster)", worst)
	s.recovered()
	hold(2 * time.Second)
	s.finish()
	checkIntact(t, c, before)
}

// smallFS mounts a tmpfs of sizeMiB under a new temporary directory and
// returns it, or "" and the reason it cannot.
func smallFS(t *testing.T, sizeMiB int) (dir, why string) {
	t.Helper()
	if testing.Short() {
		return "", "skipped with -short"
	}
	if err := requireRoot(); err != nil {
		return "", "needs root to mount a small tmpfs for one node's data dir (running as uid " + fmt.Sprint(os.Geteuid()) + ")"
	}
	mnt := filepath.Join(t.TempDir(), "small-fs")
	if err := os.Mkdir(mnt, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := sh("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dm,mode=0750", sizeMiB), "chaos-small-fs", mnt); err != nil {
		return "", "cannot mount a tmpfs: " + err.Error()
	}
	t.Cleanup(func() {
		if err := sh("umount", mnt); err != nil {
			t.Logf("%v; detaching it lazily", err)
			if err := sh("umount", "-l", mnt); err != nil {
				t.Logf("%v", err)
			}
		}
	})
	return filepath.Join(mnt, "data"), ""
}

// fill writes a filler file into dir until the file system is full, and
// returns its path and size.
func fill(dir string) (string, int64, error) {
	path := filepath.Join(dir, "chaos-filler")
	f, err := os.Create(path)
	if err != nil {
		return path, 0, err
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	var n int64
	for _, chunk := range []int{64 << 10, 4 << 10, 512} {
		for {
			w, err := f.Write(buf[:chunk])
			n += int64(w)
			if errors.Is(err, syscall.ENOSPC) {
				break
			}
			if err != nil {
				return path, n, err
			}
		}
	}
	return path, n, nil
}

// testDiskFull fills node d's data dir to the last byte while the cluster
// takes writes, then frees it.
func testDiskFull(t *testing.T, c *testCluster, d *node, dataDir string) {
	c.waitHealthy("before the disk fills", 60*time.Second)
	before, err := c.sameState(c.nodes)
	if err != nil {
		t.Fatal(err)
	}
	leader := c.leader()
	if leader == d.name {
		// The scenario is about a follower's disk: restart d gracefully,
		// which hands leadership over.
		if !d.proc.stop(retry.Scale(40 * time.Second)) {
			t.Fatalf("%s did not exit after SIGTERM", d.name)
		}
		c.restart(d)
		if err := c.waitStarted([]*node{d}); err != nil {
			t.Fatalf("restart %s: %v", d.name, err)
		}
		c.waitHealthy("after moving leadership off "+d.name, 60*time.Second)
		if before, err = c.sameState(c.nodes); err != nil {
			t.Fatal(err)
		}
		if leader = c.leader(); leader == d.name {
			t.Fatalf("%s is still the leader after a graceful restart", d.name)
		}
	}
	others := c.without(d.name)
	s := newScenario(t, c, "disk full on a follower", rate, 3*time.Minute)
	hold(2 * time.Second)
	logBefore := len(d.log())

	s.fault()
	filler, size, err := fill(filepath.Dir(dataDir))
	if err != nil {
		t.Fatalf("fill %s: %v", filler, err)
	}
	s.note("filled %s's file system (%s) with %d KiB", d.name, filepath.Dir(dataDir), size>>10)

	// The cluster carries on: writes through another node succeed.
	const writes = 40
	var failedWrites int
	for i := range writes {
		if _, err := c.write(others[i%len(others)], fmt.Sprintf("chaos-disk-%d", i), 30*time.Second); err != nil {
			failedWrites++
			t.Errorf("write %d through %s with %s's disk full: %v", i, others[i%len(others)].name, d.name, err)
		}
	}
	s.note("%d of %d writes through the other nodes succeeded", writes-failedWrites, writes)

	// The full node: alive? what does it say?
	report := func(when string) {
		var parts []string
		if err := d.alive(); err != nil {
			t.Errorf("%s %s: %v\n%s", d.name, when, err, tail(d.log()[logBefore:], 8<<10))
			parts = append(parts, "NOT ALIVE: "+err.Error())
		}
		if st, err := getStatus(d.api); err == nil {
			lst, _ := getStatus(c.node(c.leaderOf(others)).api)
			parts = append(parts, fmt.Sprintf("raft %s in term %d (leader's %d), applied index %d (leader's %d), plan version %d (leader's %d)",
				st.Raft.State, st.Raft.Term, lst.Raft.Term, st.Raft.AppliedIndex, lst.Raft.AppliedIndex, st.Plan.Version, lst.Plan.Version))
		}
		code, body, err := apiDo(http.MethodGet, d.api, "/readyz", nil, "")
		if err == nil {
			parts = append(parts, fmt.Sprintf("/readyz %d %q", code, strings.TrimSpace(string(body))))
			if code == http.StatusOK && when == "after the writes" {
				s.finding("%s answers /readyz 200 %q and /v1/status shows nothing amiss while it cannot write its Raft log: a load balancer or operator polling them does not notice; only the log says so. Suggest: readyz (and status) report the last storage error while it persists", d.name, strings.TrimSpace(string(body)))
			}
		}
		s.note("%s %s: %s", d.name, when, strings.Join(parts, "; "))
	}
	report("after the writes")
	errLines := grepLines(d.log()[logBefore:], `no space left on device`, 1<<20)
	if len(errLines) == 0 {
		t.Errorf("%s logged nothing about its full disk (no \"no space left on device\" in its log)", d.name)
	} else {
		s.note("%s logged %d lines with \"no space left on device\" in %s; the first: %s", d.name, len(errLines),
			time.Since(s.faultFrom).Round(100*time.Millisecond), strings.TrimSpace(errLines[0]))
	}

	// A change of leader while the disk is full: the full node must
	// record the new term (Raft panics when it cannot).
	{
		l := c.node(c.leaderOf(others))
		s.load.exclude(t, l.name)
		l.proc.kill()
		s.note("SIGKILL leader %s while %s's disk is full", l.name, d.name)
		rest := c.without(l.name, d.name)
		retry.RunFor(t, 30*time.Second, func(r *retry.R) {
			nl, _, err := agreedLeader(rest)
			r.Check(err)
			if nl == l.name {
				r.Fatalf("still %s", nl)
			}
		})
		if _, err := c.write(rest[0], "chaos-disk-after-failover", 30*time.Second); err != nil {
			t.Errorf("write after failover with %s's disk full: %v", d.name, err)
		}
		c.restart(l)
		if err := c.waitStarted([]*node{l}); err != nil {
			t.Fatalf("restart %s: %v", l.name, err)
		}
		report("after a new leader was elected")
	}

	freedAt := time.Now()
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if d.proc.exited() {
		s.note("%s had exited (%s); starting it again", d.name, d.proc.exitDesc())
		c.restart(d)
		if err := c.waitStarted([]*node{d}); err != nil {
			t.Fatalf("restart %s: %v", d.name, err)
		}
	}
	c.waitHealthy("after freeing the disk", 90*time.Second)
	s.recover(d.name+" caught up after the filler was removed", time.Since(freedAt))
	s.recovered()
	for _, n := range c.nodes {
		s.load.include(n)
	}
	hold(2 * time.Second)
	s.finish()
	checkIntact(t, c, before)
}

// leaderOf returns the leader that nodes agree on.
func (c *testCluster) leaderOf(nodes []*node) string {
	c.t.Helper()
	var l string
	retry.Run(c.t, func(r *retry.R) {
		var err error
		l, _, err = agreedLeader(nodes)
		r.Check(err)
	})
	return l
}

// grepLines returns up to n lines of s matching the regular expression re.
func grepLines(s, re string, n int) []string {
	rx := regexp.MustCompile(re)
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if rx.MatchString(l) {
			out = append(out, l)
			if len(out) == n {
				break
			}
		}
	}
	return out
}

// createToken creates an API token through n and returns it and when it
// expires (zero without ttl).
func createToken(t *testing.T, n *node, name, role, ttl string) (string, time.Time) {
	t.Helper()
	body := fmt.Sprintf(`{"name":%q,"role":%q,"ttl":%q}`, name, role, ttl)
	var tok string
	var created time.Time
	retry.Run(t, func(r *retry.R) {
		code, b, err := apiDo(http.MethodPost, n.api, "/v1/tokens", []byte(body), chaosToken)
		r.Check(err)
		if code != http.StatusOK {
			r.Fatalf("create token %s: %d: %s", name, code, b)
		}
		m := regexp.MustCompile(`"token": "(lm_[0-9a-f_]+)"`).FindSubmatch(b)
		if m == nil {
			t.Fatalf("create token %s: no token in %s", name, b)
		}
		tok, created = string(m[1]), time.Now()
	})
	var exp time.Time
	if ttl != "" {
		d, _ := time.ParseDuration(ttl)
		exp = created.Add(d)
	}
	return tok, exp
}

// testExpiredToken presents a token after its expiry: refused with 401,
// naming the expiry, and nothing changes.
func testExpiredToken(t *testing.T, c *testCluster, tok string, expires time.Time) {
	c.waitHealthy("before the expired token", 60*time.Second)
	before, err := c.sameState(c.nodes)
	if err != nil {
		t.Fatal(err)
	}
	if wait := time.Until(expires.Add(2 * time.Second)); wait > 0 {
		t.Logf("waiting %s for the 1m token to expire", wait.Round(time.Second))
		hold(wait)
	}
	for _, n := range c.nodes[:2] {
		code, b, err := apiDo(http.MethodPost, n.api, "/v1/nodes/node1/cordon", []byte(`{"reason":"expired token"}`), tok)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("POST /v1/nodes/node1/cordon with an expired operator token via %s: %d %s", n.name, code, strings.TrimSpace(string(b)))
		if code != http.StatusUnauthorized || !strings.Contains(string(b), "expired") {
			t.Errorf("expired token via %s: %d %s, want 401 naming the expiry", n.name, code, b)
		}
	}
	after, err := c.sameState(c.nodes)
	if err != nil {
		t.Fatal(err)
	}
	if string(after.plan) != string(before.plan) || string(after.events) != string(before.events) {
		t.Errorf("an expired token changed the plan or the audit log")
	}
}
