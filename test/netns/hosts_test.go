//go:build linux

package netns

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/loadmesh/loadmesh/test/retry"
)

const nHosts = 5

// TestHosts runs the scenarios on one 5-host cluster, in order (doc.go).
func TestHosts(t *testing.T) {
	requireBed(t)
	runStart := time.Now()
	rep := &report{}
	t.Cleanup(func() { rep.print(t, time.Since(runStart)) })

	b := newBed(t, nHosts)
	t.Logf("LAN %s on bridge %s (test at %s); hosts %s in namespaces lmhost%d-1..%d", subnet, b.lan.br[0], bridgeIP,
		strings.Join(b.lan.ip, ", "), b.lan.id, nHosts)
	t.Logf("agent timers: %s (gossip and Raft timers have no flags: probe 1s/500ms, suspicion x4, Raft heartbeat and election 500ms); load %d GET/s per scenario",
		strings.Join(timerFlags, " "), loadRate)

	ok := t.Run("form", func(t *testing.T) { b.t = t; scenarioForm(t, b, rep) })
	if !ok {
		t.Fatal("the cluster did not form; the other scenarios need it")
	}
	t.Run("minority-partition", func(t *testing.T) { b.t = t; scenarioMinority(t, b, rep) })
	t.Run("split-2-3", func(t *testing.T) { b.t = t; scenarioSplit(t, b, rep) })
	t.Run("clock-skew", func(t *testing.T) {
		b.t = t
		// The control: the same drain with every clock true.
		b.waitHealthy("before the control drain", 60*time.Second)
		if leader, _, err := agreedLeader(b.hosts); err == nil {
			h := skewHost(b, leader)
			took, why := observeDrain(t, b, h, leader)
			t.Logf("control: a drain of %s (true clock) ended after %s: %q", h.name, took.Round(time.Millisecond), why)
			rep.notes = append(rep.notes, fmt.Sprintf("drain of %s with a true clock (control): ended after %s: %q",
				h.name, took.Round(time.Millisecond), why))
		}
		for _, off := range []time.Duration{90 * time.Second, -90 * time.Second} {
			t.Run(fmt.Sprintf("%+v", off), func(t *testing.T) { b.t = t; scenarioSkew(t, b, rep, off) })
		}
	})
}

// ---------------------------------------------------------------------------
// Scenario 1: formation from one seed

func scenarioForm(t *testing.T, b *bed, rep *report) {
	row := rep.add("form: 5 hosts, one seed")
	start := time.Now()
	for _, h := range b.hosts {
		h.start(b.owner)
	}
	apiUp := &watch{what: "every agent's API answers", check: func() error {
		for _, h := range b.hosts {
			if h.agent.exited() {
				t.Fatalf("%s exited during start-up (%s): %s", h.name, h.agent.exitDesc(), lastLine(readLog(h.logPath)))
			}
			if _, err := h.get("/healthz", false); err != nil {
				return err
			}
		}
		return nil
	}}
	elected := &watch{what: "a host names a leader", check: func() error {
		for _, h := range b.hosts {
			if st, err := h.status(false); err == nil && st.Leader != "" {
				return nil
			}
		}
		return errors.New("no host names a leader")
	}}
	formed := &watch{what: "formed: 5 alive in every view, one leader, 5 voters, same plan", check: b.healthy}
	waitAll(t, start, 60*time.Second, apiUp, elected, formed)
	leader, sts, _ := agreedLeader(b.hosts)
	t.Logf("agents started %s; APIs up after %s, leader %s elected after %s, cluster formed after %s (term %d, plan version %d)",
		start.Format("15:04:05.000"), apiUp.took, leader, elected.took, formed.took, sts[0].Raft.Term, sts[0].Plan.Version)

	g := startLoad(t, b, b.hosts, 30*time.Second)
	g.waitAnswered(t, 3*loadRate)
	g.stop()
	f := summarise(g.snapshot())
	t.Logf("load into all 5 ingresses after forming: %s", f)
	row.figures(f)
	row.election, row.heal = elected.took, formed.took
	row.note("APIs up %s; formed = all see 5 alive + agreed leader + 5 voters + same plan", apiUp.took.Round(time.Millisecond))
	checkNoFailures(t, f)
}

// ---------------------------------------------------------------------------
// Scenario 2: the leader's host cut off, then restored

func scenarioMinority(t *testing.T, b *bed, rep *report) {
	row := rep.add("minority-partition: leader's link down")
	b.waitHealthy("before the cut", 60*time.Second)
	leader, _, err := agreedLeader(b.hosts)
	if err != nil {
		t.Fatal(err)
	}
	cut, majority := b.host(leader), b.without(leader)
	g := startLoad(t, b, majority, 3*time.Minute)
	g.waitAnswered(t, 2*loadRate)
	retriesBefore := sumMetric(majority, "loadmesh_transport_retries_total")

	// Times count from the moment the link is down: a request sent before
	// may still have reached the host.
	if err := b.lan.cut(cut.i); err != nil {
		t.Fatal(err)
	}
	cutAt := time.Now()
	t.Logf("%s: cut off %s (the leader) with `ip link set %s down`; steady load into %s", cutAt.Format("15:04:05.000"),
		cut.name, b.lan.port[cut.i], strings.Join(hostNames(majority), ", "))
	var newLeader string
	detected := &watch{what: "every majority host sees " + cut.name + " not alive", check: func() error {
		return seenAs(majority, []string{cut.name}, false)
	}}
	elected := &watch{what: "the majority agrees on a new leader", check: func() error {
		l, _, err := agreedLeader(majority)
		if err == nil && l == cut.name {
			err = fmt.Errorf("the majority still names %s", l)
		}
		newLeader = l
		return err
	}}
	var cutSt status
	steppedDown := &watch{what: cut.name + " no longer claims leadership (its /v1/status from inside its namespace)", check: func() error {
		st, err := cut.status(true)
		if err != nil {
			return err
		}
		cutSt = st
		if st.Raft.State == "Leader" || st.Leader == cut.name {
			return fmt.Errorf("%s: raft %s, leader %q", cut.name, st.Raft.State, st.Leader)
		}
		return nil
	}}
	waitAll(t, cutAt, 45*time.Second, detected, elected, steppedDown)
	t.Logf("after the cut: %s; majority elected %s after %s; %s stepped down after %s (raft %s, term %d, leader %q)",
		detected, newLeader, elected.took, cut.name, steppedDown.took, cutSt.Raft.State, cutSt.Raft.Term, cutSt.Leader)

	took := majority[0].writeOK(t, "hosts-s2-majority", 20*time.Second)
	t.Logf("a write through %s (majority) succeeded in %s", majority[0].name, took.Round(time.Millisecond))
	code, body := refusedWrite(t, cut, "hosts-s2-minority")
	t.Logf("a write through %s (cut off, from inside its namespace): %d %s", cut.name, code, body)

	g.waitAnswered(t, 4*loadRate) // the majority serves on while the host is cut
	if err := seenAs(majority, []string{cut.name}, false); err != nil {
		t.Errorf("before restoring: %v", err)
	}
	restoreAt := time.Now()
	if err := b.lan.restore(cut.i); err != nil {
		t.Fatal(err)
	}
	duringCut := between(g.snapshot(), cutAt, restoreAt)
	if n := countServedBy(duringCut, cut.name); n > 0 {
		t.Errorf("%d requests sent to the majority during the cut were answered by %s", n, cut.name)
	}
	rejoined := &watch{what: cut.name + " alive in every view", check: func() error { return seenAs(b.hosts, []string{cut.name}, true) }}
	healed := &watch{what: "healthy: one leader, all alive, 5 voters, same plan", check: b.healthy}
	waitAll(t, restoreAt, 60*time.Second, rejoined, healed)
	g.setTargets(b.hosts)
	servesAgain := waitServedBy(t, g, cut.name, time.Now())
	g.stop()
	l, sts, _ := agreedLeader(b.hosts)
	t.Logf("after restoring: %s; healed after %s (leader %s, term %d, plan version %d everywhere; the last wait: %v); %s answers forwarded requests again %s after the heal",
		rejoined, healed.took, l, sts[0].Raft.Term, sts[0].Plan.Version, healed.last, cut.name, servesAgain.Round(time.Millisecond))

	all, cutF := summarise(g.snapshot()), summarise(duringCut)
	retries := sumMetric(majority, "loadmesh_transport_retries_total") - retriesBefore
	t.Logf("load: %s", all)
	t.Logf("during the cut (%s): %s; %d answered by %s; the majority retried %.0f requests on another host",
		restoreAt.Sub(cutAt).Round(time.Millisecond), cutF, countServedBy(duringCut, cut.name), cut.name, retries)
	row.figures(all)
	row.detect, row.election, row.heal = detected.took, elected.took, healed.took
	row.note("new leader %s; %s stepped down after %s; write through it: %d; %.0f retries", newLeader, cut.name,
		steppedDown.took.Round(time.Millisecond), code, retries)
	checkNoFailures(t, all)
	checkNotCommitted(t, b, "hosts-s2-minority")
}

// ---------------------------------------------------------------------------
// Scenario 3: the voters split 2/3

func scenarioSplit(t *testing.T, b *bed, rep *report) {
	row := rep.add("split-2-3: 2 followers on another bridge")
	b.waitHealthy("before the split", 60*time.Second)
	leader, sts, err := agreedLeader(b.hosts)
	if err != nil {
		t.Fatal(err)
	}
	termBefore := sts[0].Raft.Term
	var two []*host
	for i := len(b.hosts) - 1; i >= 0 && len(two) < 2; i-- {
		if b.hosts[i].name != leader {
			two = append(two, b.hosts[i])
		}
	}
	twoNames := hostNames(two)
	three := b.without(twoNames...)
	g := startLoad(t, b, three, 3*time.Minute)
	g.waitAnswered(t, 2*loadRate)

	if err := b.lan.split(two[0].i, two[1].i); err != nil {
		t.Fatal(err)
	}
	splitAt := time.Now() // the ports are on the other bridge
	t.Logf("%s: moved %s to bridge %s; %s (leader %s) stay on %s; steady load into the 3-side", splitAt.Format("15:04:05.000"),
		strings.Join(twoNames, " and "), b.lan.br[1], strings.Join(hostNames(three), ", "), leader, b.lan.br[0])
	detected := &watch{what: "the 3-side sees " + strings.Join(twoNames, " and ") + " not alive", check: func() error {
		return seenAs(three, twoNames, false)
	}}
	var leader3 string
	kept := &watch{what: "the 3-side agrees on a leader", check: func() error {
		var err error
		leader3, _, err = agreedLeader(three)
		return err
	}}
	leaderless := &watch{what: "the 2-side knows no leader (from inside its namespaces)", check: func() error {
		for _, h := range two {
			st, err := h.status(true)
			if err != nil {
				return err
			}
			if st.Leader != "" || st.Raft.State == "Leader" {
				return fmt.Errorf("%s: raft %s, leader %q", h.name, st.Raft.State, st.Leader)
			}
		}
		return nil
	}}
	waitAll(t, splitAt, 45*time.Second, detected, kept, leaderless)
	t.Logf("after the split: %s; 3-side leader %s; 2-side leaderless after %s", detected, leader3, leaderless.took)

	took := three[0].writeOK(t, "hosts-s3-majority", 20*time.Second)
	t.Logf("a write through %s (3-side) succeeded in %s", three[0].name, took.Round(time.Millisecond))
	var codes []string
	for _, h := range two {
		code, body := refusedWrite(t, h, "hosts-s3-minority-"+h.name)
		codes = append(codes, strconv.Itoa(code))
		t.Logf("a write through %s (2-side, from inside its namespace): %d %s", h.name, code, body)
	}

	g.waitAnswered(t, 4*loadRate)
	// Still so after the wait: the 3-side leads, the 2-side does not.
	l3, sts3, err := agreedLeader(three)
	if err != nil {
		t.Errorf("the 3-side lost its leader during the split: %v", err)
	}
	for _, h := range two {
		if st, err := h.status(true); err != nil || st.Leader != "" {
			t.Errorf("%s during the split: leader %q, %v", h.name, st.Leader, err)
		}
	}
	healAt := time.Now()
	if err := b.lan.heal(); err != nil {
		t.Fatal(err)
	}
	duringSplit := between(g.snapshot(), splitAt, healAt)
	for _, h := range two {
		if n := countServedBy(duringSplit, h.name); n > 0 {
			t.Errorf("%d requests sent to the 3-side during the split were answered by %s", n, h.name)
		}
	}
	rejoined := &watch{what: strings.Join(twoNames, " and ") + " alive in every view", check: func() error { return seenAs(b.hosts, twoNames, true) }}
	healed := &watch{what: "healthy: one leader, all alive, 5 voters, same plan", check: b.healthy}
	waitAll(t, healAt, 60*time.Second, rejoined, healed)
	g.stop()
	l, sts, _ := agreedLeader(b.hosts)
	ver, _ := samePlan(b.hosts)
	t.Logf("after healing: %s; healed after %s: leader %s (term %d, %d before the split), plan version %d byte-identical on all 5; the last wait: %v",
		rejoined, healed.took, l, sts[0].Raft.Term, termBefore, ver, healed.last)
	keptNote := "kept"
	if l3 != leader {
		keptNote = "changed to " + l3
	}
	all, splitF := summarise(g.snapshot()), summarise(duringSplit)
	t.Logf("load: %s", all)
	t.Logf("during the split (%s): %s", healAt.Sub(splitAt).Round(time.Millisecond), splitF)
	row.figures(all)
	row.detect, row.heal = detected.took, healed.took
	row.note("3-side leader %s %s (term %d during the split); 2-side leaderless after %s, writes: %s",
		leader, keptNote, sts3Term(sts3), leaderless.took.Round(time.Millisecond), strings.Join(codes, ", "))
	checkNoFailures(t, all)
	for _, h := range two {
		checkNotCommitted(t, b, "hosts-s3-minority-"+h.name)
	}
}

func sts3Term(sts []status) uint64 {
	if len(sts) == 0 {
		return 0
	}
	return sts[0].Raft.Term
}

// ---------------------------------------------------------------------------
// Scenario 4: a host whose clock is off

func scenarioSkew(t *testing.T, b *bed, rep *report, off time.Duration) {
	row := rep.add(fmt.Sprintf("clock-skew %+v", off))
	b.waitHealthy("before the restart", 60*time.Second)
	leader, _, err := agreedLeader(b.hosts)
	if err != nil {
		t.Fatal(err)
	}
	skew := skewHost(b, leader)
	others := b.without(skew.name)

	stopAt := time.Now()
	if !skew.agent.stop(stopGrace()) {
		t.Errorf("%s did not stop within %s of SIGTERM", skew.name, stopGrace())
	} else if code := skew.agent.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("%s: %s after SIGTERM, want exit status 0", skew.name, skew.agent.exitDesc())
	}
	retry.RunFor(t, 30*time.Second, func(r *retry.R) { r.Check(seenAs(others, []string{skew.name}, false)) })
	skew.extra = []string{"--dev-clock-offset", off.String()}
	startAt := time.Now()
	skew.start(b.owner)
	t.Logf("%s stopped in %s (SIGTERM) and restarted with its data dir and --dev-clock-offset %s", skew.name,
		startAt.Sub(stopAt).Round(time.Millisecond), off)
	joined := &watch{what: skew.name + " rejoined: healthy, all alive, 5 voters, same plan", check: func() error {
		if skew.agent.exited() {
			t.Fatalf("%s exited: %s: %s", skew.name, skew.agent.exitDesc(), lastLine(readLog(skew.logPath)))
		}
		return b.healthy()
	}}
	waitAll(t, startAt, 60*time.Second, joined)

	g := startLoad(t, b, b.hosts, 2*time.Minute)
	loadAt := time.Now()
	// Its peers take its load summaries: versions from its skewed clock,
	// fresh, and newer ones arriving.
	firstVer := map[string]uint64{}
	var seen []string
	used := &watch{what: "every peer holds fresh, advancing load summaries of " + skew.name + " showing traffic", check: func() error {
		seen = seen[:0]
		for _, h := range others {
			st, err := h.status(false)
			if err != nil {
				return err
			}
			m, ok := st.member(skew.name)
			if !ok || m.Load == nil {
				return fmt.Errorf("%s has no load summary of %s", h.name, skew.name)
			}
			l := m.Load
			delta := time.Duration(int64(l.Version)-st.at.UnixMilli()) * time.Millisecond
			switch {
			case delta < off-10*time.Second || delta > off+10*time.Second:
				return fmt.Errorf("%s: load version of %s is %s from the test's clock, want about %s", h.name, skew.name, delta, off)
			case l.AgeSeconds > 2:
				return fmt.Errorf("%s: load summary of %s is %.1fs old", h.name, skew.name, l.AgeSeconds)
			case !l.Healthy:
				return fmt.Errorf("%s: %s's load summary says unhealthy", h.name, skew.name)
			}
			if firstVer[h.name] == 0 {
				firstVer[h.name] = l.Version
			}
			if l.Version <= firstVer[h.name] || l.RPS <= 0 {
				return fmt.Errorf("%s: load of %s version %d (first seen %d), %.1f req/s", h.name, skew.name, l.Version, firstVer[h.name], l.RPS)
			}
			seen = append(seen, fmt.Sprintf("%s: %+.1fs, age %.2fs, %.1f req/s", h.name, delta.Seconds(), l.AgeSeconds, l.RPS))
		}
		return nil
	}}
	waitAll(t, loadAt, 30*time.Second, used)
	t.Logf("%s's load as its peers hold it (version minus the test's clock, age, rate): %s", skew.name, strings.Join(seen, "; "))

	// Plan writes through its API (carried to the leader): cordon it,
	// make it active again, and a token.
	for _, action := range []string{"cordon", "activate"} {
		nodeAction(t, skew, skew.name, action)
	}
	skew.writeOK(t, fmt.Sprintf("hosts-s4-skew%ds", int(off.Seconds())), 20*time.Second)
	ver := waitPlanState(t, b, skew, "active")
	t.Logf("plan writes through %s (cordon, activate) and a token: done; plan version %d byte-identical on all 5", skew.name, ver)

	// The leader ends a drain once a load summary newer than the one it
	// saw when the drain began shows nothing in flight, at least 1 s
	// later by its own clock: the skewed clock must change nothing, so
	// the drain ends idle, not at the drain timeout and not before 1 s.
	drained, why := observeDrain(t, b, skew, leader)
	t.Logf("a drain of %s (through its API) ended after %s: %q (--drain-timeout %s)", skew.name, drained.Round(time.Millisecond), why, drainTimeout)
	if !strings.HasPrefix(why, "drain finished") || drained < time.Second {
		t.Errorf("the drain of the skewed host ended after %s (%q); want it finished idle, after the 1 s settle time", drained, why)
	}

	// Serves and forwards, now that it is active again: its ingress
	// answers, forwards to peers, and its backend serves requests that
	// came in through the others.
	activeAt := time.Now()
	var in, fwdOut, fwdIn int
	retry.RunFor(t, 30*time.Second, func(r *retry.R) {
		in, fwdOut, fwdIn = 0, 0, 0
		for _, x := range g.snapshot() {
			switch {
			case x.start.Before(activeAt) || x.err != "":
			case x.target == skew.name:
				in++
				if x.servedBy != skew.name {
					fwdOut++
				}
			case x.servedBy == skew.name:
				fwdIn++
			}
		}
		if in < 20 || fwdOut < 5 || fwdIn < 5 {
			r.Fatalf("since it is active again %s answered %d requests at its ingress, forwarded %d, served %d for peers; want 20, 5, 5 at least",
				skew.name, in, fwdOut, fwdIn)
		}
	})
	window := time.Since(activeAt)
	g.stop()
	f := summarise(g.snapshot())
	t.Logf("load: %s; in the %s since it is active again %s answered %d requests at its ingress, forwarded %d of them to peers, and served %d forwarded by peers",
		f, window.Round(time.Millisecond), skew.name, in, fwdOut, fwdIn)
	row.figures(f)
	row.heal = joined.took
	row.note("%s: rejoined %s after restart; in %s once active again: answered %d at its ingress, forwarded %d of them, served %d for peers",
		skew.name, joined.took.Round(time.Millisecond), window.Round(time.Millisecond), in, fwdOut, fwdIn)
	row.note("its load as peers hold it (version - test clock, age, rate): %s", strings.Join(seen, "; "))
	row.note("a drain of it ended after %s: %q", drained.Round(time.Millisecond), why)
	checkNoFailures(t, f)
}

// ---------------------------------------------------------------------------
// Helpers

// watch is one condition waited for; took is when it first held, from the
// fault, and last what the check said the last time it failed.
type watch struct {
	what  string
	check func() error
	took  time.Duration
	done  bool
	last  error
}

func (w *watch) String() string {
	return fmt.Sprintf("%s after %s", w.what, w.took.Round(time.Millisecond))
}

// waitAll polls every pending condition every 50 ms until all have held
// once, recording when each first did; it fails t after timeout (scaled).
func waitAll(t *testing.T, from time.Time, timeout time.Duration, ws ...*watch) {
	t.Helper()
	deadline := time.Now().Add(retry.Scale(timeout))
	for {
		pending := 0
		for _, w := range ws {
			if w.done {
				continue
			}
			if err := w.check(); err != nil {
				w.last = err
				pending++
				continue
			}
			w.done, w.took = true, time.Since(from)
		}
		if pending == 0 {
			return
		}
		if time.Now().After(deadline) {
			var msgs []string
			for _, w := range ws {
				if !w.done {
					msgs = append(msgs, fmt.Sprintf("%s: %v", w.what, w.last))
				}
			}
			t.Fatalf("not within %s: %s", retry.Scale(timeout), strings.Join(msgs, "; "))
		}
		time.Sleep(50 * time.Millisecond) // the poll interval
	}
}

// seenAs checks that every host in viewers sees each of names as alive
// (alive true) or as anything but alive.
func seenAs(viewers []*host, names []string, alive bool) error {
	for _, v := range viewers {
		st, err := v.status(false)
		if err != nil {
			return err
		}
		for _, n := range names {
			if s := st.memberStatus(n); (s == "alive") != alive {
				return fmt.Errorf("%s sees %s as %s", v.name, n, s)
			}
		}
	}
	return nil
}

// refusedWrite sends writes through h from inside its namespace until one
// is refused with 503 (a host that may still believe in a leader it
// cannot reach answers 502 first); a write that succeeds fails t.
func refusedWrite(t *testing.T, h *host, name string) (int, string) {
	t.Helper()
	var code int
	var body string
	retry.RunFor(t, 20*time.Second, func(r *retry.R) {
		var err error
		code, body, err = h.write(name, true)
		r.Check(err)
		if code == http.StatusOK {
			t.Fatalf("a write through %s, cut off from the majority, succeeded: %s", h.name, body)
		}
		if code != http.StatusServiceUnavailable {
			r.Fatalf("write through %s: %d %s, waiting for 503", h.name, code, body)
		}
	})
	return code, body
}

// checkNotCommitted checks that no host has a token named name.
func checkNotCommitted(t *testing.T, b *bed, name string) {
	t.Helper()
	for _, h := range b.hosts {
		names, err := h.tokenNames()
		if err != nil {
			t.Errorf("tokens of %s: %v", h.name, err)
			continue
		}
		for _, n := range names {
			if n == name {
				t.Errorf("%s has token %q, written through a host without quorum", h.name, name)
			}
		}
	}
}

func countServedBy(samples []sample, name string) int {
	n := 0
	for _, s := range samples {
		if s.err == "" && s.servedBy == name {
			n++
		}
	}
	return n
}

// waitServedBy waits until a request sent after from is answered by
// name, and returns how long after from that request started.
func waitServedBy(t *testing.T, g *loadGen, name string, from time.Time) time.Duration {
	t.Helper()
	var took time.Duration
	retry.RunFor(t, 20*time.Second, func(r *retry.R) {
		for _, s := range g.snapshot() {
			if s.err == "" && s.servedBy == name && !s.start.Before(from) {
				took = s.start.Sub(from)
				return
			}
		}
		r.Fatalf("no request answered by %s yet", name)
	})
	return took
}

// sumMetric adds up a counter (all its series) over hosts' /metrics; a
// host that does not answer counts 0.
func sumMetric(hosts []*host, name string) float64 {
	var sum float64
	for _, h := range hosts {
		b, err := h.get("/metrics", false)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			l := sc.Text()
			if !strings.HasPrefix(l, name) || (len(l) > len(name) && l[len(name)] != ' ' && l[len(name)] != '{') {
				continue
			}
			f := strings.Fields(l)
			if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
				sum += v
			}
		}
	}
	return sum
}

func checkNoFailures(t *testing.T, f figures) {
	t.Helper()
	if f.failed == 0 {
		return
	}
	for i, s := range f.failures {
		if i == 10 {
			t.Logf("... and %d more", len(f.failures)-10)
			break
		}
		t.Logf("failed: %s into %s after %s: %s", s.start.Format("15:04:05.000"), s.target, s.latency.Round(time.Millisecond), s.err)
	}
	t.Errorf("%d of %d requests failed", f.failed, f.sent)
}

// ---------------------------------------------------------------------------
// The report

type report struct {
	rows  []*row
	notes []string // about the run as a whole
}

type row struct {
	scenario                string
	sent, failed, forwarded int
	detect, election, heal  time.Duration
	notes                   []string
}

func (r *report) add(scenario string) *row {
	x := &row{scenario: scenario}
	r.rows = append(r.rows, x)
	return x
}

func (x *row) figures(f figures) { x.sent, x.failed, x.forwarded = f.sent, f.failed, f.forwarded }

func (x *row) note(format string, a ...any) { x.notes = append(x.notes, fmt.Sprintf(format, a...)) }

func dur(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return d.Round(10 * time.Millisecond).String()
}

// print logs the summary table, and writes it to LOADMESH_HOSTS_REPORT
// when set.
func (r *report) print(t *testing.T, runTime time.Duration) {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "test-hosts: %d hosts, %d GET/s, run time %s\n", nHosts, loadRate, runTime.Round(time.Second))
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tsent\tfailed\tforwarded\tdetect\telection\theal\t")
	for _, x := range r.rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%s\t\n", x.scenario, x.sent, x.failed, x.forwarded, dur(x.detect), dur(x.election), dur(x.heal))
	}
	tw.Flush()
	fmt.Fprintln(&buf, "detect: the fault seen by every host that can see it; election: a (new) leader agreed;")
	fmt.Fprintln(&buf, "heal: restore/heal/start → every host alive in every view, one leader, 5 voters, same plan.")
	for _, x := range r.rows {
		for _, n := range x.notes {
			fmt.Fprintf(&buf, "  %s: %s\n", x.scenario, n)
		}
	}
	for _, n := range r.notes {
		fmt.Fprintf(&buf, "  %s\n", n)
	}
	t.Logf("summary\n%s", buf.String())
	if p := os.Getenv("LOADMESH_HOSTS_REPORT"); p != "" {
		if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
			t.Errorf("report: %v", err)
		}
	}
}

// nodeAction posts a plan action (cordon, activate, drain) for node
// through via's API, retrying a 502/503 while leadership moves.
func nodeAction(t *testing.T, via *host, node, action string) {
	t.Helper()
	retry.RunFor(t, 20*time.Second, func(r *retry.R) {
		code, body, err := via.do(false, http.MethodPost, "http://"+via.api+"/v1/nodes/"+node+"/"+action,
			[]byte(`{"reason":"test-hosts"}`))
		r.Check(err)
		if code != http.StatusOK {
			r.Fatalf("POST /v1/nodes/%s/%s through %s: %d %s", node, action, via.name, code, oneLine(string(body)))
		}
	})
}

// waitPlanState waits until every host has the same plan and h's own
// status shows it in state; it returns the plan version.
func waitPlanState(t *testing.T, b *bed, h *host, state string) uint64 {
	t.Helper()
	var ver uint64
	retry.RunFor(t, 30*time.Second, func(r *retry.R) {
		var err error
		ver, err = samePlan(b.hosts)
		r.Check(err)
		st, err := h.status(false)
		r.Check(err)
		if st.Node.State != state {
			r.Fatalf("%s is %s in the plan, waiting for %s", h.name, st.Node.State, state)
		}
	})
	return ver
}

// observeDrain drains h through its own API, waits until the leader has
// moved it to standby, makes it active again, and returns how long the
// drain took and the leader's reason for ending it. Not asserted: the
// leader ends a drain when a load summary of the node made more than a
// second after the drain began (the summary's version is the node's
// clock, the drain's start the leader's) shows nothing in flight, or at
// --drain-timeout.
func observeDrain(t *testing.T, b *bed, h *host, leader string) (time.Duration, string) {
	t.Helper()
	start := time.Now()
	nodeAction(t, h, h.name, "drain")
	waitPlanState(t, b, h, "standby")
	took := time.Since(start)
	why := "?"
	if body, err := b.host(leader).get("/v1/events?limit=20", false); err == nil {
		var evs []struct {
			Node, Why, After string
		}
		if json.Unmarshal(body, &evs) == nil {
			for _, e := range evs {
				if e.Node == h.name && strings.Contains(e.After, "standby") {
					why = e.Why
				}
			}
		}
	}
	nodeAction(t, h, h.name, "activate")
	waitPlanState(t, b, h, "active")
	return took, why
}

// skewHost is the host the clock-skew scenario restarts: the last one
// that is not the leader.
func skewHost(b *bed, leader string) *host {
	for i := len(b.hosts) - 1; i >= 0; i-- {
		if b.hosts[i].name != leader {
			return b.hosts[i]
		}
	}
	return nil
}
