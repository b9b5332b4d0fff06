//go:build unix

package e2e

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/test/retry"
)

// Targets for TestMeasureElection, reported but not asserted.
const (
	formationTarget = 3 * time.Second
	failoverTarget  = 2 * time.Second
)

// TestMeasureElection measures, over several fresh 3-agent clusters, how
// long the agents take to agree on a leader after the third one starts, and
// how long the two survivors take to agree on a new leader after the leader
// is SIGKILLed. It is a measurement, not a test: it fails only when a
// cluster does not form or recover at all. Run it without -race:
//
//	LOADMESH_MEASURE=1 go test -run TestMeasureElection -v -count=1 ./test/e2e/
func TestMeasureElection(t *testing.T) {
	if os.Getenv("LOADMESH_MEASURE") != "1" {
		t.Skip("a measurement, not a pass/fail test: set LOADMESH_MEASURE=1 to run it " +
			"(LOADMESH_MEASURE_RUNS=N sets the number of runs, default 7)")
	}
	runs := 7
	if s := os.Getenv("LOADMESH_MEASURE_RUNS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("LOADMESH_MEASURE_RUNS=%q: want a positive integer", s)
		}
		runs = n
	}
	loadmeshBin(t) // build now, not inside the first measurement

	var formation, failover []time.Duration
	for i := range runs {
		t.Run(fmt.Sprintf("run%d", i+1), func(t *testing.T) {
			m := measureElection(t)
			t.Logf("run %d: formation %-7s failover %-7s (leader %s, then %s)", i+1,
				m.formation.Round(time.Millisecond), m.failover.Round(time.Millisecond), m.leader, m.next)
			formation = append(formation, m.formation)
			failover = append(failover, m.failover)
		})
	}
	t.Logf("%d runs", len(formation))
	t.Logf("formation (third agent started → all three agree on a leader): %s", summarize(formation, formationTarget))
	t.Logf("failover (leader SIGKILLed → both survivors agree on a new one): %s", summarize(failover, failoverTarget))
}

// election is one run's measurement.
type election struct {
	// formation is from the third agent's start until all three agree
	// on a leader; failover from the leader's SIGKILL until both
	// survivors agree on the next one.
	formation, failover time.Duration
	leader, next        string
}

// measureElection starts a 3-agent cluster, waits for a leader, kills it
// and waits for a new one, polling every 10ms.
func measureElection(t *testing.T) election {
	var m election
	c := startCluster(t, 3, false)
	agreed := pollEvery(t, 10*time.Millisecond, 30*time.Second, func() (err error) {
		m.leader, _, err = agreedLeader(apis(c.agents))
		return err
	})
	m.formation = agreed.Sub(c.lastStart)

	survivors := apis(c.without(m.leader))
	killed := time.Now()
	c.agent(m.leader).proc.kill()
	agreed = pollEvery(t, 10*time.Millisecond, 30*time.Second, func() (err error) {
		m.next, _, err = agreedLeader(survivors)
		if err == nil && m.next == m.leader {
			err = fmt.Errorf("survivors still name the killed %s", m.leader)
		}
		return err
	})
	m.failover = agreed.Sub(killed)
	return m
}

// pollEvery calls f every interval until it returns nil, and returns the
// time at which it did. It fails t after timeout (scaled).
func pollEvery(t *testing.T, interval, timeout time.Duration, f func() error) time.Time {
	t.Helper()
	deadline := time.Now().Add(retry.Scale(timeout))
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		err := f()
		now := time.Now()
		if err == nil {
			return now
		}
		if now.After(deadline) {
			t.Fatalf("gave up after %s: %v", retry.Scale(timeout), err)
		}
		<-tick.C
	}
}

// summarize gives the median and maximum of ds and how many met target.
func summarize(ds []time.Duration, target time.Duration) string {
	if len(ds) == 0 {
		return "no runs"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	median := s[len(s)/2]
	if len(s)%2 == 0 {
		median = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	met := 0
	for _, d := range s {
		if d <= target {
			met++
		}
	}
	return fmt.Sprintf("median %s, max %s; %d of %d within the %s target",
		median.Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond), met, len(s), target)
}
