//go:build linux

package netns

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The bed's LAN: host i is 10.147.0.i, the test's end of the bridge .254.
const (
	subnet   = "10.147.0.0/24"
	bridgeIP = "10.147.0.254"
)

// lan is the hosts' network: one namespace per host, each joined to the
// bridge br[0] by a veth pair. Names carry the test process's PID, so
// that a later run can tell a dead run's leftovers from a live run's
// (ADAPTED FROM test/chaos's newNetTopo and sweepStaleNetns, which route
// between veth pairs instead of bridging them).
type lan struct {
	id int
	// ns, ip and port are per host: the namespace, its address, and the
	// host side of its veth pair (a bridge port).
	ns, ip, port []string
	// br are the bridges: br[0] the LAN, br[1] the far side of a split.
	br [2]string
}

func hostIP(i int) string { return fmt.Sprintf("10.147.0.%d", i+1) }

// newLAN makes n hosts on one bridge. It fails t when the set-up fails
// (requireBed has checked that this machine can do it).
func newLAN(t *testing.T, n int) *lan {
	t.Helper()
	if swept := sweepStale(); len(swept) > 0 {
		t.Logf("removed what killed runs left behind: %s", strings.Join(swept, ", "))
	}
	if out, _ := exec.Command("ip", "-4", "-o", "addr", "show", "to", subnet).Output(); len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("%s is in use on this machine (another test-hosts run?): %s", subnet, strings.TrimSpace(string(out)))
	}
	l := &lan{id: os.Getpid()}
	l.br = [2]string{fmt.Sprintf("lmh%db0", l.id), fmt.Sprintf("lmh%db1", l.id)}
	onCleanup(t, "remove namespaces and bridges", func() {
		for _, ns := range l.ns {
			sh("ip", "netns", "del", ns)
		}
		// A namespace outlives its name while the kernel still holds
		// sockets of it (a killed agent's connections to a host it was
		// cut off from), and with it its veth pair: delete the pairs.
		for _, port := range l.port {
			sh("ip", "link", "del", port)
		}
		for _, br := range l.br {
			sh("ip", "link", "del", br)
		}
	})
	must := func(args ...string) {
		t.Helper()
		if err := sh("ip", args...); err != nil {
			t.Fatalf("set up the LAN: %v", err)
		}
	}
	for i, br := range l.br {
		must("link", "add", br, "type", "bridge")
		must("link", "set", br, "up")
		if i == 0 {
			must("addr", "add", bridgeIP+"/24", "dev", br)
		}
	}
	for i := range n {
		ns := fmt.Sprintf("lmhost%d-%d", l.id, i+1)
		port := fmt.Sprintf("lmh%dv%d", l.id, i+1)
		must("netns", "add", ns)
		l.ns = append(l.ns, ns)
		must("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
		l.port = append(l.port, port)
		l.ip = append(l.ip, hostIP(i))
		must("link", "set", port, "master", l.br[0])
		must("link", "set", port, "up")
		must("-n", ns, "addr", "add", hostIP(i)+"/24", "dev", "eth0")
		must("-n", ns, "link", "set", "eth0", "up")
		must("-n", ns, "link", "set", "lo", "up")
	}
	return l
}

// cut takes host i's bridge port down: the host is off the LAN (the test
// reaches it only from inside its namespace).
func (l *lan) cut(i int) error { return sh("ip", "link", "set", l.port[i], "down") }

// restore brings host i's bridge port up again.
func (l *lan) restore(i int) error { return sh("ip", "link", "set", l.port[i], "up") }

// split moves the given hosts' ports to the second bridge: they reach
// each other, not the rest, nor the test.
func (l *lan) split(hosts ...int) error {
	for _, i := range hosts {
		if err := sh("ip", "link", "set", l.port[i], "master", l.br[1]); err != nil {
			return err
		}
	}
	return nil
}

// heal puts every port back on the LAN's bridge, up.
func (l *lan) heal() error {
	for i := range l.port {
		if err := sh("ip", "link", "set", l.port[i], "master", l.br[0]); err != nil {
			return err
		}
		if err := l.restore(i); err != nil {
			return err
		}
	}
	return nil
}

var (
	staleNS   = regexp.MustCompile(`^lmhost(\d+)-\d+$`)
	staleLink = regexp.MustCompile(`^lmh(\d+)[bv]\d+$`)
)

// sweepStale removes what an earlier run that was killed (and so could not
// clean up) left behind: namespaces and links named with the PID of a
// process that is gone or is no test binary of this package.
func sweepStale() (swept []string) {
	if out, err := exec.Command("ip", "netns", "list").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			f := strings.Fields(l)
			if len(f) > 0 && staleOwner(staleNS, f[0]) {
				sh("ip", "netns", "del", f[0])
				swept = append(swept, "namespace "+f[0])
			}
		}
	}
	if out, err := exec.Command("ip", "-o", "link", "show").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			// "12: lmh123v1@if2: <...>"
			f := strings.Fields(l)
			if len(f) < 2 {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if staleOwner(staleLink, name) {
				sh("ip", "link", "del", name)
				swept = append(swept, "link "+name)
			}
		}
	}
	return swept
}

// staleOwner reports whether name matches re and the PID in it is not a
// running netns.test process.
func staleOwner(re *regexp.Regexp, name string) bool {
	m := re.FindStringSubmatch(name)
	if m == nil {
		return false
	}
	pid, _ := strconv.Atoi(m[1])
	if pid == os.Getpid() {
		return false
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return err != nil || strings.TrimSpace(string(comm)) != "netns.test"
}
