//go:build unix

package e2e

import (
	"syscall"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/test/retry"
)

// TestRollingRestart restarts every agent of a 5-agent cluster, one after
// the other, under steady load: SIGTERM (the agent drains and leaves; the
// leader hands over leadership first), exit status 0, the same command
// line again, and on to the next agent once the cluster is whole again
// (every agent alive everywhere, five voters, one leader). No request
// fails. It prints the requests sent and failed, the p99 latency, and the
// time each agent took.
func TestRollingRestart(t *testing.T) {
	skipShort(t)
	t.Parallel()
	c := startClusterWith(t, 5, true)
	waitHealthy(t, c.agents, 5)
	l := startLoad(t, ingresses(c.agents), 100)
	retry.Run(t, func(r *retry.R) {
		if l.sent.Load() < 100 {
			r.Fatalf("%d requests sent", l.sent.Load())
		}
	})

	type timing struct {
		name, role      string
		stop, back, all time.Duration
	}
	var times []timing
	start := time.Now()
	for _, a := range c.agents {
		leader := waitHealthy(t, c.agents, 5)
		role := "follower"
		if a.name == leader {
			role = "leader"
		}
		began := time.Now()
		a.proc.cmd.Process.Signal(syscall.SIGTERM)
		waitExit(t, a.proc)
		stopped := time.Since(began)
		if code := a.proc.cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("%s: %s after SIGTERM, want exit status 0", a.name, a.proc.cmd.ProcessState)
		}
		restarted := time.Now()
		// The same ports, data dir and flags; a port taken meanwhile
		// would fail the test, not be retried.
		if err := waitStarted([]*process{a.start(t)}); err != nil {
			t.Fatalf("restart %s: %v", a.name, err)
		}
		next := waitHealthy(t, c.agents, 5)
		times = append(times, timing{a.name, role, stopped, time.Since(restarted), time.Since(began)})
		if role == "leader" && next == a.name {
			t.Logf("%s leads again after its restart", a.name)
		}
	}
	// Some load on the whole cluster after the last restart, too.
	after := l.sent.Load()
	retry.Run(t, func(r *retry.R) {
		if l.sent.Load() < after+100 {
			r.Fatalf("%d requests sent since the last restart", l.sent.Load()-after)
		}
	})
	sent, failed, p99 := l.finish(t)
	for _, tm := range times {
		t.Logf("%s (%s): SIGTERM to exit %s, restart to a whole cluster %s, %s in all",
			tm.name, tm.role, tm.stop.Round(time.Millisecond), tm.back.Round(time.Millisecond), tm.all.Round(time.Millisecond))
	}
	t.Logf("rolling restart of 5 agents: %s; %d requests sent, %d failed, p99 %s",
		time.Since(start).Round(time.Millisecond), sent, failed, p99.Round(time.Microsecond))
}
