//go:build linux

package chaos

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// scenario is one fault under steady load: it collects the figures the
// issue asks for and reports them.
type scenario struct {
	t    *testing.T
	c    *testCluster
	name string
	load *loadGen
	// faultFrom and faultTo bound "during the fault": from the first fault
	// action until the cluster is healthy again.
	faultFrom, faultTo time.Time
	// recovery names each recovery time measured.
	recovery []string
	notes    []string
}

func newScenario(t *testing.T, c *testCluster, name string, rate int, maxTime time.Duration) *scenario {
	t.Helper()
	s := &scenario{t: t, c: c, name: name}
	s.load = startLoad(t, c, rate, maxTime)
	return s
}

// fault marks the start of the fault.
func (s *scenario) fault() time.Time {
	s.faultFrom = time.Now()
	return s.faultFrom
}

// recovered marks the end of the fault window.
func (s *scenario) recovered() { s.faultTo = time.Now() }

func (s *scenario) recover(what string, d time.Duration) {
	s.recovery = append(s.recovery, fmt.Sprintf("%s %s", what, d.Round(time.Millisecond)))
}

func (s *scenario) note(format string, args ...any) {
	s.t.Helper()
	line := fmt.Sprintf(format, args...)
	s.notes = append(s.notes, line)
	s.t.Log(line)
}

// finding records a product finding that does not fail the test.
func (s *scenario) finding(format string, args ...any) {
	s.t.Helper()
	s.note("FINDING "+format, args...)
}

// hold keeps the load running for d: a deliberate period under load or
// in a fault (its length is part of the scenario), not a wait for a state.
func hold(d time.Duration) { time.Sleep(d) }

// finish stops the load, prints the scenario's report and fails the test
// on any failed request.
func (s *scenario) finish() {
	s.t.Helper()
	s.load.stop()
	if s.faultTo.IsZero() {
		s.faultTo = time.Now()
	}
	f := summarise(s.load.snapshot(), s.faultFrom, s.faultTo)
	line := fmt.Sprintf("%s: sent %d, failed %d (forwarded to a peer %d, redirected %d: connection refused, sent to another ingress); "+
		"during the fault (%s, %d requests): p50 %s, p99 %s, max %s; recovery: %s",
		s.name, f.sent, f.failed, f.forwarded, f.redirected, s.faultTo.Sub(s.faultFrom).Round(100*time.Millisecond), f.faultSent,
		f.p50.Round(100*time.Microsecond), f.p99.Round(100*time.Microsecond), f.max.Round(100*time.Microsecond),
		strings.Join(s.recovery, "; "))
	s.t.Log("REPORT " + line)
	addReport(line, s.notes)
	if f.failed > 0 {
		var b strings.Builder
		for i, x := range f.failures {
			if i == 20 {
				fmt.Fprintf(&b, "\n  ... and %d more", len(f.failures)-20)
				break
			}
			fmt.Fprintf(&b, "\n  %+.3fs after the fault began, via %s's ingress (%d redirects), after %s: %s",
				x.start.Sub(s.faultFrom).Seconds(), x.target, x.redirected, x.latency.Round(time.Millisecond), x.err)
		}
		// What each node's scheduler did: selections{result="budget"}
		// counts retries the retry budget refused (each such request is
		// answered with its last error), retries_total the retries made.
		for _, n := range s.c.nodes {
			if m, err := apiGet(n.api, "/metrics"); err == nil {
				fmt.Fprintf(&b, "\n  %s: %s", n.name, strings.Join(grepLines(string(m), `^loadmesh_scheduler_(selections|retries)_total`, 10), ", "))
			}
		}
		s.t.Errorf("%s: %d of %d requests failed:%s", s.name, f.failed, f.sent, b.String())
	}
}

// reports collects every scenario's report line, printed at the end of the
// run (go test -v shows it; so does LOADMESH_CHAOS_REPORT=FILE).
var reports struct {
	sync.Mutex
	lines []string
}

func addReport(line string, notes []string) {
	reports.Lock()
	defer reports.Unlock()
	reports.lines = append(reports.lines, line)
	for _, n := range notes {
		reports.lines = append(reports.lines, "    "+n)
	}
}

func printReports() {
	reports.Lock()
	defer reports.Unlock()
	if len(reports.lines) == 0 {
		return
	}
	out := "chaos suite report\n" + strings.Join(reports.lines, "\n") + "\n"
	fmt.Print(out)
	if path := os.Getenv("LOADMESH_CHAOS_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "chaos: write report:", err)
		}
	}
}
