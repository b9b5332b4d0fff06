//go:build linux

package netns

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/test/retry"
)

// Fixed ports: every host has its own address.
const (
	gossipPort  = "7946"
	peerPort    = "7947"
	raftPort    = "7948"
	httpPort    = "8080"
	apiPort     = "7950"
	backendAddr = "127.0.0.1:9000" // on the host's own loopback
)

// drainTimeout is the agents' --drain-timeout.
const drainTimeout = "5s"

// timerFlags are the agents' timer settings: defaults, except a shorter
// shutdown grace and drain timeout. Gossip (memberlist: probe every 1 s,
// 500 ms probe timeout, suspicion ×4) and Raft (500 ms heartbeat and
// election timeouts, 250 ms lease) timers have no flags and keep their
// defaults.
var timerFlags = []string{
	"--dead-server-grace", "30s",
	"--load-interval", "250ms",
	"--peer-timeout", "3s",
	"--shutdown-grace", "500ms",
	"--drain-timeout", drainTimeout,
}

// host is one namespace with its backend and agent.
type host struct {
	i                 int
	name, ns, ip      string
	api, http, gossip string
	dataDir           string
	logPath           string
	backendLog        string
	backendName       string
	// args is the agent's command line; extra is added to it (the clock
	// offset) for the next start.
	args  []string
	extra []string

	agent   *process
	backend *process
}

// bed is the cluster on the LAN.
type bed struct {
	t *testing.T // the (sub)test now using the bed, for failures
	// owner is the test that made the bed: processes, restarted ones
	// included, stop when it ends.
	owner *testing.T
	lan   *lan
	hosts []*host
	key   string
}

// newBed makes the LAN and the PKI and starts a backend on every host; the
// agents start with host.start.
func newBed(t *testing.T, n int) *bed {
	t.Helper()
	loadmeshBin(t)
	b := &bed{t: t, owner: t, lan: newLAN(t, n)}
	b.key = strings.TrimSpace(mustRun(t, "keygen"))
	var names []string
	for i := range n {
		names = append(names, fmt.Sprintf("host%d", i+1))
	}
	pki := makePKI(t, names)
	for i, name := range names {
		h := &host{
			i: i, name: name, ns: b.lan.ns[i], ip: b.lan.ip[i],
			dataDir:     filepath.Join(runDir, name, "data"),
			logPath:     filepath.Join(runDir, name+".log"),
			backendLog:  filepath.Join(runDir, name+"-backend.log"),
			backendName: name + "-backend",
		}
		h.api, h.http, h.gossip = net.JoinHostPort(h.ip, apiPort), net.JoinHostPort(h.ip, httpPort), net.JoinHostPort(h.ip, gossipPort)
		tls := pki[name]
		h.args = []string{"agent",
			"--name", name, "--data-dir", h.dataDir,
			"--gossip", h.gossip, "--peer", net.JoinHostPort(h.ip, peerPort), "--raft", net.JoinHostPort(h.ip, raftPort),
			"--http", h.http, "--api", h.api,
			"--backend", "http://" + backendAddr,
			"--bootstrap-expect", fmt.Sprint(n),
			"--encrypt", b.key,
			"--tls-ca", tls.ca, "--tls-cert", tls.cert, "--tls-key", tls.key,
			// Every ingress spreads requests over all hosts, so that most
			// cross the QUIC peer channel (with the default p2c-ewma a
			// lightly loaded host serves everything itself).
			"--policy", "random",
		}
		h.args = append(h.args, timerFlags...)
		if i > 0 {
			h.args = append(h.args, "--join", b.lan.ip[0]+":"+gossipPort) // the first host is the only seed
		}
		b.hosts = append(b.hosts, h)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range b.hosts {
				if h.agent != nil {
					t.Logf("==== %s (pid %d, %s) ====\n%s", h.name, h.agent.pid(), h.agent.exitDesc(), tail(readLog(h.logPath), 32<<10))
				}
			}
		}
	})
	for _, h := range b.hosts {
		h.backend = startProcess(t, h.backendName, h.ns, h.backendLog, "backend", "--listen", backendAddr, "--name", h.backendName)
	}
	retry.RunFor(t, 20*time.Second, func(r *retry.R) {
		for _, h := range b.hosts {
			if h.backend.exited() {
				t.Fatalf("%s exited: %s: %s", h.backendName, h.backend.exitDesc(), lastLine(readLog(h.backendLog)))
			}
			code, _, err := h.do(true, http.MethodGet, "http://"+backendAddr+"/", nil)
			r.Check(err)
			if code != http.StatusOK {
				r.Fatalf("%s: %d", h.backendName, code)
			}
		}
	})
	return b
}

// start starts (or restarts) the host's agent with its data dir.
func (h *host) start(t *testing.T) {
	h.agent = startProcess(t, h.name, h.ns, h.logPath, append(slices.Clone(h.args), h.extra...)...)
}

func (b *bed) names() []string {
	var out []string
	for _, h := range b.hosts {
		out = append(out, h.name)
	}
	return out
}

func (b *bed) host(name string) *host {
	for _, h := range b.hosts {
		if h.name == name {
			return h
		}
	}
	b.t.Fatalf("no host %q", name)
	return nil
}

func (b *bed) without(names ...string) []*host {
	var out []*host
	for _, h := range b.hosts {
		if !slices.Contains(names, h.name) {
			out = append(out, h)
		}
	}
	return out
}

func hostNames(hs []*host) []string {
	var out []string
	for _, h := range hs {
		out = append(out, h.name)
	}
	return out
}

// ---------------------------------------------------------------------------
// The API

// lanClient talks to the agents over the bridge, from 10.147.0.254.
var lanClient = &http.Client{Transport: &http.Transport{
	DialContext:       (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
	DisableKeepAlives: true, // a host cut off must not hold a pooled connection
}}

// do sends one request with the operator token (the agents see the test
// as a remote caller) and a short timeout: over the LAN, or with inside
// from the host's own namespace (doInside).
func (h *host) do(inside bool, method, url string, body []byte) (int, []byte, error) {
	if inside {
		return doInside(h.ns, method, url, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), retry.Scale(3*time.Second))
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+bedToken)
	resp, err := lanClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// get fetches an API path over the LAN (or, with inside, from the host's
// namespace) and wants 200.
func (h *host) get(path string, inside bool) ([]byte, error) {
	code, b, err := h.do(inside, http.MethodGet, "http://"+h.api+path, nil)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("GET %s%s: %d: %s", h.api, path, code, bytes.TrimSpace(b))
	}
	return b, nil
}

// status is the documented JSON of GET /v1/status, decoded independently
// of the agent's Go types.
type status struct {
	Node struct {
		Name  string `json:"name"`
		State string `json:"state"`
	} `json:"node"`
	Leader string `json:"leader"`
	Raft   struct {
		State        string   `json:"state"`
		Term         uint64   `json:"term"`
		AppliedIndex uint64   `json:"applied_index"`
		Voters       []string `json:"voters"`
	} `json:"raft"`
	Plan struct {
		Version uint64 `json:"version"`
	} `json:"plan"`
	Members []member `json:"members"`
	// at is when the answer arrived (by the test's clock).
	at time.Time
}

type member struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Load   *struct {
		Version    uint64  `json:"version"`
		AgeSeconds float64 `json:"age_seconds"`
		RPS        float64 `json:"rps"`
		Healthy    bool    `json:"healthy"`
	} `json:"load"`
}

func (st status) member(name string) (member, bool) {
	for _, m := range st.Members {
		if m.Name == name {
			return m, true
		}
	}
	return member{}, false
}

func (st status) memberStatus(name string) string {
	if m, ok := st.member(name); ok {
		return m.Status
	}
	return "absent"
}

func (h *host) status(inside bool) (status, error) {
	var st status
	b, err := h.get("/v1/status", inside)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("GET %s/v1/status: %v", h.api, err)
	}
	st.at = time.Now()
	return st, nil
}

// agreedLeader asks hosts (over the LAN) for their status and returns the
// leader all of them name, itself in raft state Leader when among them.
func agreedLeader(hosts []*host) (string, []status, error) {
	sts := make([]status, len(hosts))
	for i, h := range hosts {
		st, err := h.status(false)
		if err != nil {
			return "", nil, err
		}
		if st.Leader == "" {
			return "", nil, fmt.Errorf("%s knows no leader (raft %s, term %d)", h.name, st.Raft.State, st.Raft.Term)
		}
		if st.Leader != sts[0].Leader && i > 0 {
			return "", nil, fmt.Errorf("%s names leader %s, %s names %s", hosts[0].name, sts[0].Leader, h.name, st.Leader)
		}
		sts[i] = st
	}
	for i, st := range sts {
		if hosts[i].name == st.Leader && st.Raft.State != "Leader" {
			return "", nil, fmt.Errorf("%s is named leader but is in raft state %s", st.Leader, st.Raft.State)
		}
	}
	return sts[0].Leader, sts, nil
}

// healthy checks the whole bed: one leader named by all, every host alive
// in every host's view and a voter, the same applied index and plan
// version everywhere, and byte-identical plans.
func (b *bed) healthy() error {
	_, sts, err := agreedLeader(b.hosts)
	if err != nil {
		return err
	}
	names := b.names()
	for i, st := range sts {
		for _, name := range names {
			if s := st.memberStatus(name); s != "alive" {
				return fmt.Errorf("%s sees %s as %s", b.hosts[i].name, name, s)
			}
		}
		if v := slices.Sorted(slices.Values(st.Raft.Voters)); !slices.Equal(v, names) {
			return fmt.Errorf("%s: raft voters %v, want %v", b.hosts[i].name, v, names)
		}
		if st.Raft.AppliedIndex != sts[0].Raft.AppliedIndex || st.Plan.Version != sts[0].Plan.Version {
			return fmt.Errorf("%s: applied index %d, plan version %d; %s: %d, %d", b.hosts[0].name, sts[0].Raft.AppliedIndex,
				sts[0].Plan.Version, b.hosts[i].name, st.Raft.AppliedIndex, st.Plan.Version)
		}
	}
	_, err = samePlan(b.hosts)
	return err
}

// waitHealthy waits up to timeout (scaled) for healthy and returns how
// long that took.
func (b *bed) waitHealthy(what string, timeout time.Duration) time.Duration {
	b.t.Helper()
	start := time.Now()
	var last error
	if !retry.Until(timeout, func(r *retry.R) {
		last = b.healthy()
		r.Check(last)
	}) {
		b.t.Fatalf("%s: not healthy after %s: %v", what, retry.Scale(timeout), last)
	}
	return time.Since(start)
}

// samePlan checks that hosts show byte-identical plans (GET /v1/plan
// without its "leader" field) and returns that plan's version.
func samePlan(hosts []*host) (uint64, error) {
	var first []byte
	var ver uint64
	for i, h := range hosts {
		b, err := h.get("/v1/plan", false)
		if err != nil {
			return 0, err
		}
		var plan map[string]json.RawMessage
		if err := json.Unmarshal(b, &plan); err != nil {
			return 0, fmt.Errorf("GET %s/v1/plan: %v", h.api, err)
		}
		delete(plan, "leader")
		norm, _ := json.Marshal(plan) // sorted keys
		var v uint64
		json.Unmarshal(plan["version"], &v)
		if i == 0 {
			first, ver = norm, v
			continue
		}
		if !bytes.Equal(norm, first) {
			return 0, fmt.Errorf("plan differs: %s has version %d, %s version %d", hosts[0].name, ver, h.name, v)
		}
	}
	return ver, nil
}

// write creates a read token named name through the host's API (a
// follower carries it to the leader); inside sends it from the host's
// namespace. It returns the status code and body of one attempt.
func (h *host) write(name string, inside bool) (int, string, error) {
	body, _ := json.Marshal(map[string]string{"name": name, "role": "read", "reason": "test-hosts write probe"})
	code, b, err := h.do(inside, http.MethodPost, "http://"+h.api+"/v1/tokens", body)
	return code, oneLine(string(b)), err
}

// writeOK retries write until it succeeds (a 502/503 while leadership
// moves is retried) and returns how long that took.
func (h *host) writeOK(t *testing.T, name string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	retry.RunFor(t, timeout, func(r *retry.R) {
		code, body, err := h.write(name, false)
		r.Check(err)
		if code == http.StatusConflict && strings.Contains(body, "exists") {
			return // an earlier attempt went through but its answer was lost
		}
		if code != http.StatusOK {
			r.Fatalf("write %q through %s: %d %s", name, h.name, code, body)
		}
	})
	return time.Since(start)
}

// tokenNames lists the token names on h.
func (h *host) tokenNames() ([]string, error) {
	b, err := h.get("/v1/tokens", false)
	if err != nil {
		return nil, err
	}
	var toks []struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(b, &toks); err != nil {
		return nil, err
	}
	var out []string
	for _, t := range toks {
		out = append(out, t.Name)
	}
	return out, nil
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}
