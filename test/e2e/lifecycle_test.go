//go:build unix

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/loadmesh/loadmesh/test/retry"
)

// ---------------------------------------------------------------------------
// Steady load

// load sends GETs at a steady pace (a bounded number at once) to the
// ingress ports, round-robin, until stopped. As a load balancer would, it
// sends a request whose connection is refused (it cannot have reached
// the node: the node is down) to the next ingress, and so a GET whose
// connection closed without an answer as a node stopped; any other error
// and any answer but 200 is a failure.
type load struct {
	addrs   []string
	hc      *http.Client
	stopCh  chan struct{}
	wg      sync.WaitGroup
	started time.Time

	sent, redirected atomic.Int64
	// unanswered counts GETs whose connection closed without an answer
	// (EOF or reset) as the node stopped, sent on to another ingress.
	unanswered atomic.Int64
	mu         sync.Mutex
	failures   []string
	latencies  []time.Duration
}

// startLoad sends rate requests per second, at most 32 at once.
func startLoad(t *testing.T, addrs []string, rate int) *load {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 32
	l := &load{addrs: addrs, hc: &http.Client{Transport: tr, Timeout: retry.Scale(30 * time.Second)},
		stopCh: make(chan struct{}), started: time.Now()}
	sem := make(chan struct{}, 32)
	l.wg.Go(func() {
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-l.stopCh:
				return
			case <-tick.C:
			}
			select {
			case sem <- struct{}{}:
			default:
				continue // all 32 busy: this tick sends nothing
			}
			l.wg.Go(func() {
				defer func() { <-sem }()
				l.one(i)
			})
		}
	})
	t.Cleanup(func() { l.stop(); tr.CloseIdleConnections() })
	return l
}

func (l *load) one(i int) {
	l.sent.Add(1)
	start := time.Now()
	fail := func(msg string) {
		l.mu.Lock()
		l.failures = append(l.failures, fmt.Sprintf("%s: %s", time.Since(l.started).Round(time.Millisecond), msg))
		l.mu.Unlock()
	}
	for try := range len(l.addrs) {
		u := fmt.Sprintf("http://%s/load/%d", l.addrs[(i+try)%len(l.addrs)], i)
		resp, err := l.hc.Get(u)
		if errors.Is(err, syscall.ECONNREFUSED) {
			l.redirected.Add(1)
			continue
		}
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			// The node closed the connection without answering, as its
			// ingress closed: a load balancer sends such a GET on too
			// (HAProxy: retry-on conn-failure empty-response). net/http
			// already does so itself on a reused connection.
			l.unanswered.Add(1)
			continue
		}
		if err != nil {
			fail(err.Error())
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			fail(fmt.Sprintf("GET %s: %s: %s", u, resp.Status, bytes.TrimSpace(body)))
			return
		}
		l.mu.Lock()
		l.latencies = append(l.latencies, time.Since(start))
		l.mu.Unlock()
		return
	}
	fail("every ingress refused the connection")
}

func (l *load) stop() {
	select {
	case <-l.stopCh:
	default:
		close(l.stopCh)
	}
	l.wg.Wait()
}

// finish stops the load, logs its figures and fails t if any request
// failed.
func (l *load) finish(t *testing.T) (sent, failed int64, p99 time.Duration) {
	t.Helper()
	l.stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	lat := slices.Clone(l.latencies)
	slices.Sort(lat)
	if len(lat) > 0 {
		p99 = lat[(len(lat)*99)/100]
	}
	sent, failed = l.sent.Load(), int64(len(l.failures))
	t.Logf("load: %d requests sent in %s, %d failed, p99 %s; %d sent on to another ingress after a refused connection, %d after a connection closed without an answer",
		sent, time.Since(l.started).Round(time.Millisecond), failed, p99.Round(time.Microsecond), l.redirected.Load(), l.unanswered.Load())
	if failed > 0 {
		n := min(len(l.failures), 5)
		t.Errorf("%d of %d requests failed; the first %d:\n%s", failed, sent, n, strings.Join(l.failures[:n], "\n"))
	}
	return sent, failed, p99
}

// ---------------------------------------------------------------------------
// Clusters and processes

func ingresses(agents []*agentNode) []string {
	var out []string
	for _, a := range agents {
		out = append(out, a.http)
	}
	return out
}

// waitExit waits until p exits, failing t after 10s (scaled).
func waitExit(t *testing.T, p *process) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(stopGrace()):
		t.Fatalf("%s still running %s after SIGTERM", p.name, stopGrace())
	}
}

// waitLog waits until p's output contains every one of want.
func waitLog(t *testing.T, p *process, want ...string) {
	t.Helper()
	retry.Run(t, func(r *retry.R) {
		log := p.log()
		for _, w := range want {
			if !strings.Contains(log, w) {
				r.Fatalf("%s has not logged %q yet", p.name, w)
			}
		}
	})
}

// waitHealthy waits until every agent answers, all name the same leader,
// list every agent as alive, and count n voters.
func waitHealthy(t *testing.T, agents []*agentNode, voters int) string {
	t.Helper()
	var leader string
	retry.RunFor(t, 60*time.Second, func(r *retry.R) {
		l, sts, err := agreedLeader(apis(agents))
		r.Check(err)
		for _, st := range sts {
			for _, a := range agents {
				if m, ok := st.member(a.name); !ok || m.Status != "alive" {
					r.Fatalf("%s sees %s as %q", st.Node.Name, a.name, m.Status)
				}
			}
			if len(st.Raft.Voters) != voters {
				r.Fatalf("%s: voters %v, want %d", st.Node.Name, st.Raft.Voters, voters)
			}
		}
		leader = l
	})
	return leader
}

// ---------------------------------------------------------------------------
// Certificates served

// servedSerial dials a TLS server and returns the serial number of the
// certificate it presents, whether or not the handshake then completes
// (the agents want a client certificate of a member).
func servedSerial(dial func(*tls.Config) error) (string, error) {
	var serial string
	conf := &tls.Config{
		InsecureSkipVerify: true, //nolint:gosec // only reads the certificate
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if c, err := x509.ParseCertificate(raw[0]); err == nil {
				serial = fmt.Sprintf("%x", c.SerialNumber)
			}
			return nil
		},
	}
	err := dial(conf)
	if serial == "" {
		return "", fmt.Errorf("no certificate served: %v", err)
	}
	return serial, nil
}

// peerSerial is the serial of the certificate the QUIC peer channel at
// addr serves.
func peerSerial(addr string) (string, error) {
	return servedSerial(func(conf *tls.Config) error {
		conf.NextProtos = []string{"h3"}
		ctx, cancel := context.WithTimeout(context.Background(), retry.Scale(5*time.Second))
		defer cancel()
		conn, err := quic.DialAddr(ctx, addr, conf, nil)
		if err == nil {
			conn.CloseWithError(0, "")
		}
		return err
	})
}

// raftSerial is the serial of the certificate the Raft port at addr
// serves.
func raftSerial(addr string) (string, error) {
	return servedSerial(func(conf *tls.Config) error {
		conf.NextProtos = []string{"loadmesh-raft/1"}
		c, err := tls.Dial("tcp", addr, conf)
		if err == nil {
			c.Close()
		}
		return err
	})
}

func fileSerial(t *testing.T, certFile string) string {
	t.Helper()
	b, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(b, mustRead(t, strings.TrimSuffix(certFile, ".pem")+"-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", pair.Leaf.SerialNumber)
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	if err := os.WriteFile(to, mustRead(t, from), 0o600); err != nil {
		t.Fatal(err)
	}
}

// ---------------------------------------------------------------------------
// Tests

// TestSIGTERMDrainsUnderLoad sends SIGTERM to the leader of a 3-agent
// cluster under steady load: no request fails, the leader hands over
// leadership, leaves, exits 0, and logs each step.
func TestSIGTERMDrainsUnderLoad(t *testing.T) {
	skipShort(t)
	t.Parallel()
	c := startClusterWith(t, 3, true)
	leader := waitHealthy(t, c.agents, 3)
	l := startLoad(t, ingresses(c.agents), 100)
	retry.Run(t, func(r *retry.R) {
		if l.sent.Load() < 100 {
			r.Fatalf("%d requests sent", l.sent.Load())
		}
	})

	old := c.agent(leader)
	start := time.Now()
	old.proc.cmd.Process.Signal(syscall.SIGTERM)
	waitExit(t, old.proc)
	took := time.Since(start)
	if code := old.proc.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("leader %s: %s after SIGTERM, want exit status 0", leader, old.proc.cmd.ProcessState)
	}
	survivors := c.without(leader)
	var next string
	retry.Run(t, func(r *retry.R) {
		l, sts, err := agreedLeader(apis(survivors))
		r.Check(err)
		if l == leader {
			r.Fatalf("survivors still name %s", leader)
		}
		for _, st := range sts {
			if m, ok := st.member(leader); !ok || m.Status != "left" {
				r.Fatalf("%s sees %s as %q, want left", st.Node.Name, leader, m.Status)
			}
		}
		next = l
	})
	retry.Run(t, func(r *retry.R) {
		if l.sent.Load() < 400 {
			r.Fatalf("%d requests sent", l.sent.Load())
		}
	})
	l.finish(t)
	t.Logf("%s exited %s after SIGTERM; %s leads now", leader, took.Round(time.Millisecond), next)

	log := old.proc.log()
	steps := []string{
		"signal received: shutting down gracefully",
		"draining: announced to the cluster that this node leaves",
		"draining: still accepting during the shutdown grace",
		"draining: no longer accepting; waiting for requests in flight",
		"draining: requests in flight finished",
		"leadership transferred before leaving",
		"left the cluster",
		"agent stopped",
	}
	at := 0
	for _, s := range steps {
		i := strings.Index(log[at:], s)
		if i < 0 {
			t.Errorf("the log lacks %q after the previous step", s)
			continue
		}
		at += i
	}
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "step=shutdown") || strings.Contains(line, "leadership transferred") || strings.Contains(line, "left the cluster") {
			t.Log(line)
		}
	}
}

// TestSecondSignalStopsAtOnce sends SIGTERM to an agent with a long
// shutdown grace, then SIGINT: it stops at once, with exit status 1.
func TestSecondSignalStopsAtOnce(t *testing.T) {
	skipShort(t)
	t.Parallel()
	c := startClusterWith(t, 2, false, "--shutdown-grace", "4m")
	waitHealthy(t, c.agents, 2)
	a := c.agents[1]
	a.proc.cmd.Process.Signal(syscall.SIGTERM)
	waitLog(t, a.proc, "draining: still accepting during the shutdown grace")
	start := time.Now()
	a.proc.cmd.Process.Signal(syscall.SIGINT)
	waitExit(t, a.proc)
	t.Logf("exited %s after the second signal: %s", time.Since(start).Round(time.Millisecond), a.proc.cmd.ProcessState)
	if code := a.proc.cmd.ProcessState.ExitCode(); code != 1 {
		t.Errorf("%s after the second signal, want exit status 1", a.proc.cmd.ProcessState)
	}
	log := strings.TrimSpace(a.proc.log())
	if last := log[strings.LastIndexByte(log, '\n')+1:]; !strings.HasPrefix(last, "loadmesh: stopped at once by a second signal") {
		t.Errorf("last line %q, want the forced stop explained", last)
	}
	if !strings.Contains(log, "second signal: stopping at once") {
		t.Errorf("the log does not say the second signal stopped it")
	}
}

// TestSIGHUPReloads renews an agent's certificate and changes its log
// level in its config file: SIGHUP applies both and says so, names what
// needs a restart, and new handshakes on the peer channel and on Raft get
// the new certificate. A broken config file is refused; the agent keeps
// serving.
func TestSIGHUPReloads(t *testing.T) {
	skipShort(t)
	t.Parallel()
	dir := t.TempDir()
	shared := nodeTLS(t, "reloader")
	tlsf := tlsFiles{ca: shared.ca, cert: filepath.Join(dir, "reloader.pem"), key: filepath.Join(dir, "reloader-key.pem")}
	copyFile(t, shared.cert, tlsf.cert)
	copyFile(t, shared.key, tlsf.key)
	configFile := filepath.Join(dir, "agent.yaml")
	config := func(level, zone string) string {
		return fmt.Sprintf("log-level: %s\nzone: %s\n", level, zone)
	}
	if err := os.WriteFile(configFile, []byte(config("info", "z1")), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, "reloader", func(a *agentNode) {
		a.tls = tlsf
		a.argv = append(a.args(), "--config", configFile)
	})
	retry.Run(t, func(r *retry.R) { r.Check(httpOK("http://" + a.api + "/readyz")) })
	first := fileSerial(t, tlsf.cert)
	for what, get := range map[string]func(string) (string, error){"peer channel": peerSerial, "raft": raftSerial} {
		addr := map[string]string{"peer channel": a.peer, "raft": a.raft}[what]
		if s, err := get(addr); err != nil || s != first {
			t.Fatalf("%s serves serial %q (%v), want %s", what, s, err, first)
		}
	}

	// Renew: a new certificate from the same CA, written over the old files.
	renewed := t.TempDir()
	mustRun(t, "tls", "cert", "create", "--node", "reloader", "--dir", renewed,
		"--ca", shared.ca, "--ca-key", filepath.Join(filepath.Dir(shared.ca), "loadmesh-ca-key.pem"))
	copyFile(t, filepath.Join(renewed, "reloader.pem"), tlsf.cert)
	copyFile(t, filepath.Join(renewed, "reloader-key.pem"), tlsf.key)
	second := fileSerial(t, tlsf.cert)
	if err := os.WriteFile(configFile, []byte(config("debug", "z2")), 0o600); err != nil {
		t.Fatal(err)
	}
	a.proc.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, a.proc, "configuration reloaded", "tls-cert: serial "+first+" → "+second, "log-level: info → debug", "zone changed; restart to apply")
	for what, get := range map[string]func(string) (string, error){"peer channel": peerSerial, "raft": raftSerial} {
		addr := map[string]string{"peer channel": a.peer, "raft": a.raft}[what]
		retry.Run(t, func(r *retry.R) {
			s, err := get(addr)
			r.Check(err)
			if s != second {
				r.Fatalf("%s serves serial %s, want the renewed %s", what, s, second)
			}
		})
	}
	waitLog(t, a.proc, "level=DEBUG")

	// Broken files: the running configuration stays, and so does the agent.
	for _, broken := range []string{"zone: [unclosed\n", "capacity: 0\n", "no-such-key: 1\n"} {
		before := strings.Count(a.proc.log(), "reload failed")
		if err := os.WriteFile(configFile, []byte(broken), 0o600); err != nil {
			t.Fatal(err)
		}
		a.proc.cmd.Process.Signal(syscall.SIGHUP)
		retry.Run(t, func(r *retry.R) {
			if strings.Count(a.proc.log(), "reload failed") == before {
				r.Fatalf("no reload failure logged for %q yet", broken)
			}
		})
		if a.proc.exited() {
			t.Fatalf("the agent exited after reloading %q", broken)
		}
		if err := httpOK("http://" + a.api + "/healthz"); err != nil {
			t.Fatalf("after reloading %q: %v", broken, err)
		}
	}
	for _, line := range strings.Split(a.proc.log(), "\n") {
		if strings.Contains(line, `msg="reload`) || strings.Contains(line, `msg="configuration reloaded"`) || strings.Contains(line, "restart to apply") {
			t.Log(line)
		}
	}
	if s, err := peerSerial(a.peer); err != nil || s != second {
		t.Errorf("after the failed reloads the peer channel serves %q (%v), want %s", s, err, second)
	}
}
