package provision

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/loadmesh/loadmesh/transport"
)

// LocalConfig configures the local provisioner. Start from
// DefaultLocalConfig.
type LocalConfig struct {
	// Dir is the state directory: one subdirectory per started node,
	// named after it. Required.
	Dir string
	// Bin is the loadmesh binary to start. Default: this executable.
	Bin string
	// Join are the gossip seeds new agents --join. Default: the request's
	// Cluster.Seeds.
	Join []string
	// NamePrefix starts every node name: <prefix>-<zone>-<n>. Default
	// "local"; letters, digits, '.', '_' and '-', at most 64 bytes.
	NamePrefix string
	// Host is the IP every listener binds and advertises. Default
	// 127.0.0.1; not 0.0.0.0 or ::.
	Host string
	// TLSCA and TLSCAKey are the cluster CA's certificate and key (from
	// `loadmesh tls ca create`); each new node gets a certificate issued
	// by it. Required to start nodes.
	TLSCA, TLSCAKey string
	// Backend is passed to every agent as --backend. At most one of
	// Backend and DemoBackend.
	Backend string
	// DemoBackend gives every agent a `loadmesh backend` process of its
	// own, started and stopped with it.
	DemoBackend bool
	// AgentArgs are added to every agent's command line, after the
	// provisioner's own flags (so a single-valued flag here wins).
	AgentArgs []string
	// StopTimeout is how long a stopping agent has after SIGTERM before
	// it gets SIGKILL. Default 30s.
	StopTimeout time.Duration
	// ReadyTimeout is how long a new agent has to answer /readyz.
	// Default 60s.
	ReadyTimeout time.Duration
}

// DefaultLocalConfig returns the defaults of `loadmesh provision local`.
func DefaultLocalConfig() LocalConfig {
	return LocalConfig{NamePrefix: "local", Host: "127.0.0.1", StopTimeout: 30 * time.Second, ReadyTimeout: 60 * time.Second}
}

var labelRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// Validate reports every problem with c at once, naming the flag.
func (c LocalConfig) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Dir == "" {
		add("--dir is required")
	}
	if len(c.NamePrefix) > 64 || !labelRE.MatchString(c.NamePrefix) {
		add("--name-prefix %q: want letters, digits, '.', '_' or '-' (at most 64)", c.NamePrefix)
	}
	if ip := net.ParseIP(c.Host); ip == nil || ip.IsUnspecified() {
		add("--host %q: want the IP address agents bind and advertise (not 0.0.0.0 or ::)", c.Host)
	}
	if (c.TLSCA == "") != (c.TLSCAKey == "") {
		add("--tls-ca and --tls-ca-key go together")
	}
	if c.Backend != "" {
		if c.DemoBackend {
			add("--backend and --demo-backend exclude each other")
		}
		u, err := url.Parse(c.Backend)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("--backend %q is not an http:// or https:// URL", c.Backend)
		}
	}
	for _, j := range c.Join {
		if strings.TrimSpace(j) == "" {
			add("--join: empty address")
		}
	}
	if c.StopTimeout <= 0 {
		add("--stop-timeout %s must be positive", c.StopTimeout)
	}
	if c.ReadyTimeout <= 0 {
		add("ready timeout %s must be positive", c.ReadyTimeout)
	}
	return errors.Join(errs...)
}

// ErrNoCA is returned when nodes are to be started without the cluster
// CA: agents outside --dev need a certificate signed by it to join.
var ErrNoCA = errors.New("--tls-ca and --tls-ca-key are required to start nodes " +
	"(the cluster CA from `loadmesh tls ca create`; each new node gets a certificate signed by it)")

// Local is the local provisioner: it starts `loadmesh agent` processes on
// this machine, detached from itself, and stops them again. Everything it
// knows is in the state directory, so each run of `loadmesh provision
// local` is a new process that picks up where the last one left off, and
// several may run at once.
//
// Handling a Request is idempotent per Request.ID: a retried scale_out
// counts (and waits for) the nodes an earlier attempt of the same request
// started, and a retried scale_in or replace does not complain about the
// nodes an earlier attempt already stopped.
type Local struct {
	cfg   LocalConfig
	ca    *transport.CA
	caPEM []byte

	client *http.Client

	mu    sync.Mutex
	ports map[int]bool // ports handed out by this Local
}

// NewLocal validates cfg and loads the CA. It starts nothing.
func NewLocal(cfg LocalConfig) (*Local, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	l := &Local{cfg: cfg, ports: map[int]bool{}, client: &http.Client{Timeout: 2 * time.Second}}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("--dir: %w", err)
	}
	l.cfg.Dir = dir
	if l.cfg.Bin == "" {
		if l.cfg.Bin, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("--bin not set and this executable unknown: %w", err)
		}
	}
	if st, err := os.Stat(l.cfg.Bin); err != nil {
		return nil, fmt.Errorf("--bin: %w", err)
	} else if st.IsDir() || st.Mode().Perm()&0o111 == 0 {
		return nil, fmt.Errorf("--bin %s is not an executable file", l.cfg.Bin)
	}
	if cfg.TLSCA != "" {
		if l.ca, err = transport.LoadCA(cfg.TLSCA, cfg.TLSCAKey); err != nil {
			return nil, err
		}
		// The file as given: during a CA rotation it holds both CAs.
		if l.caPEM, err = os.ReadFile(cfg.TLSCA); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// LocalNode is one started node, as recorded in its directory's
// node.json.
type LocalNode struct {
	Name string `json:"name"`
	Zone string `json:"zone"`
	// PID is the agent's process; BackendPID its demo backend's (0: none).
	PID        int `json:"pid"`
	BackendPID int `json:"backend_pid,omitempty"`
	// Host is the IP all its listeners bind.
	Host  string     `json:"host"`
	Ports LocalPorts `json:"ports"`
	// RequestID is the request that started it.
	RequestID string    `json:"request_id,omitempty"`
	Started   time.Time `json:"started"`

	// JoinServers, when set, are where the node requested its
	// certificate with the request's join token (tls/join-token) instead
	// of one this provisioner issued.
	JoinServers []string `json:"join_servers,omitempty"`
}

// LocalPorts are a local node's listening ports on LocalNode.Host.
type LocalPorts struct {
	// Gossip is TCP and UDP.
	Gossip int `json:"gossip"`
	Raft   int `json:"raft"`
	// Peer is UDP (QUIC).
	Peer    int `json:"peer"`
	HTTP    int `json:"http"`
	API     int `json:"api"`
	Backend int `json:"backend,omitempty"`
}

func (n LocalNode) addr(port int) string { return net.JoinHostPort(n.Host, strconv.Itoa(port)) }

// API is the node's status API base URL.
func (n LocalNode) API() string { return "http://" + n.addr(n.Ports.API) }

// Ingress is the node's client ingress URL.
func (n LocalNode) Ingress() string { return "http://" + n.addr(n.Ports.HTTP) }

// LocalResult is what a local provisioner run did, printed as one JSON
// line.
type LocalResult struct {
	Started []StartedNode `json:"started,omitempty"`
	Stopped []StoppedNode `json:"stopped,omitempty"`
}

// StartedNode is a node that is up and answers /readyz.
type StartedNode struct {
	Name    string `json:"name"`
	Zone    string `json:"zone"`
	PID     int    `json:"pid"`
	API     string `json:"api"`
	Ingress string `json:"ingress"`
}

// StoppedNode is a node that was stopped and whose directory is gone.
type StoppedNode struct {
	Name string `json:"name"`
	Zone string `json:"zone"`
	PID  int    `json:"pid"`
	// WasRunning is false when the agent had already exited.
	WasRunning bool `json:"was_running"`
	// Forced is true when it needed SIGKILL.
	Forced bool `json:"forced,omitempty"`
}

// ListedNode is one line of --list.
type ListedNode struct {
	Name    string `json:"name"`
	Zone    string `json:"zone"`
	PID     int    `json:"pid"`
	Alive   bool   `json:"alive"`
	API     string `json:"api"`
	Ingress string `json:"ingress"`
}

// Files in the state directory and in each node's directory.
const (
	nodeFile     = "node.json"
	agentLog     = "agent.log"
	agentPIDFile = "agent.pid"
	backendLog   = "backend.log"
	seqFile      = ".seq"
	lockName     = ".lock"
	requestsDir  = ".requests"
	// requestsKeep is how long a request's progress record is kept for
	// retries of it.
	requestsKeep = 7 * 24 * time.Hour
)

// Handle carries out req. The result lists what was done even when the
// error is not nil (for example when one of three nodes failed to start).
func (l *Local) Handle(ctx context.Context, req Request) (LocalResult, error) {
	if err := req.Validate(); err != nil {
		return LocalResult{}, fmt.Errorf("hook request: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(l.cfg.Dir, requestsDir), 0o700); err != nil {
		return LocalResult{}, fmt.Errorf("--dir: %w", err)
	}
	l.pruneRequests()
	switch req.Kind {
	case KindScaleOut:
		started, err := l.scaleOut(ctx, req, repeat(req.Zone, req.Count))
		return LocalResult{Started: started}, err
	case KindScaleIn:
		stopped, err := l.release(ctx, req)
		return LocalResult{Stopped: stopped}, err
	default: // KindReplace
		stopped, stopErr := l.release(ctx, req)
		n := req.Count
		if n == 0 {
			n = len(req.Nodes)
		}
		if stopErr != nil {
			// Replace what was stopped; a node that is not ours is not
			// ours to replace.
			n = min(n, len(stopped))
		}
		zones := make([]string, n)
		for i := range zones {
			zones[i] = req.Zone
			if zones[i] == "" && len(stopped) > 0 {
				zones[i] = stopped[i%len(stopped)].Zone
			}
		}
		var started []StartedNode
		var startErr error
		if n > 0 {
			started, startErr = l.scaleOut(ctx, req, zones)
		}
		return LocalResult{Started: started, Stopped: stopped}, errors.Join(stopErr, startErr)
	}
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// scaleOut makes sure one node per entry of zones, started for req, is
// up: the nodes an earlier attempt of req started count.
func (l *Local) scaleOut(ctx context.Context, req Request, zones []string) ([]StartedNode, error) {
	if l.ca == nil && req.JoinToken == "" {
		return nil, ErrNoCA
	}
	join := l.cfg.Join
	if len(join) == 0 {
		join = req.Cluster.Seeds
	}
	if len(join) == 0 {
		return nil, errors.New("no gossip seeds to join: the request has no cluster.seeds and no --join is given")
	}
	nodes, err := l.nodes()
	if err != nil {
		return nil, err
	}
	// Earlier attempts' nodes, matched to zones.
	var earlier []LocalNode
	zones = slices.Clone(zones)
	for _, n := range nodes {
		if n.RequestID != req.ID || !l.alive(n) {
			continue
		}
		if i := slices.Index(zones, n.Zone); i >= 0 {
			zones = slices.Delete(zones, i, i+1)
			earlier = append(earlier, n)
		}
	}

	type outcome struct {
		node StartedNode
		err  error
	}
	out := make([]outcome, len(earlier)+len(zones))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i, n := range earlier {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			err := l.waitReady(ctx, n, nil)
			if err != nil {
				l.stopFailed(n)
				os.RemoveAll(filepath.Join(l.cfg.Dir, n.Name))
				err = fmt.Errorf("start %s: %w", n.Name, err)
			}
			out[i] = outcome{startedNode(n), err}
		})
	}
	for i, zone := range zones {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			n, err := l.startNode(ctx, req, zone, join)
			out[len(earlier)+i] = outcome{startedNode(n), err}
		})
	}
	wg.Wait()
	var started []StartedNode
	var errs []error
	for _, o := range out {
		if o.err != nil {
			errs = append(errs, o.err)
			continue
		}
		started = append(started, o.node)
	}
	slices.SortFunc(started, func(a, b StartedNode) int { return strings.Compare(a.Name, b.Name) })
	return started, errors.Join(errs...)
}

func startedNode(n LocalNode) StartedNode {
	return StartedNode{Name: n.Name, Zone: n.Zone, PID: n.PID, API: n.API(), Ingress: n.Ingress()}
}

// startNode allocates a name and directory for a node in zone, starts it
// (trying fresh ports when one was taken in the meantime) and waits until
// it is ready. On failure nothing of it is left.
func (l *Local) startNode(ctx context.Context, req Request, zone string, join []string) (LocalNode, error) {
	reqID := req.ID
	name, dir, err := l.allocate(zone)
	if err != nil {
		return LocalNode{}, err
	}
	n := LocalNode{Name: name, Zone: zone, Host: l.cfg.Host, RequestID: reqID}
	fail := func(err error) (LocalNode, error) {
		l.stopFailed(n)
		os.RemoveAll(dir)
		return n, fmt.Errorf("start %s: %w", name, err)
	}
	if req.JoinToken != "" {
		// The node requests its certificate from the cluster itself.
		n.JoinServers = req.JoinServers
		if err := writeJoinTLS(dir, req); err != nil {
			return fail(err)
		}
	} else if err := l.writeTLS(dir, name); err != nil {
		return fail(err)
	}
	const tries = 3
	for try := 1; ; try++ {
		var ch *child
		n, ch, err = l.launch(n, dir, join)
		if err == nil {
			err = l.waitReady(ctx, n, ch)
		}
		if err == nil {
			return n, nil
		}
		var inUse errAddrInUse
		if try == tries || !errors.As(err, &inUse) {
			return fail(err)
		}
		l.stopFailed(n)
		// A fresh data dir: the failed start may have written to it.
		os.RemoveAll(filepath.Join(dir, "data"))
	}
}

// errAddrInUse is a start that failed because a port was taken between
// choosing it and the child's bind.
type errAddrInUse struct{ error }

// allocate picks the next node name for zone and creates its directory.
// Numbers are never reused within the state directory: a name that left
// the cluster may still be remembered by it.
func (l *Local) allocate(zone string) (name, dir string, err error) {
	unlock, err := lockDir(filepath.Join(l.cfg.Dir, lockName))
	if err != nil {
		return "", "", fmt.Errorf("lock %s: %w", l.cfg.Dir, err)
	}
	defer unlock()
	seq := 0
	if b, err := os.ReadFile(filepath.Join(l.cfg.Dir, seqFile)); err == nil {
		seq, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	ents, err := os.ReadDir(l.cfg.Dir)
	if err != nil {
		return "", "", fmt.Errorf("--dir: %w", err)
	}
	for _, e := range ents {
		if i := strings.LastIndexByte(e.Name(), '-'); i >= 0 {
			if k, err := strconv.Atoi(e.Name()[i+1:]); err == nil && k > seq {
				seq = k
			}
		}
	}
	for {
		seq++
		name = nodeName(l.cfg.NamePrefix, zone, seq)
		dir = filepath.Join(l.cfg.Dir, name)
		err = os.Mkdir(dir, 0o700)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", "", fmt.Errorf("--dir: %w", err)
		}
		break
	}
	if err := writeFileAtomic(filepath.Join(l.cfg.Dir, seqFile), []byte(strconv.Itoa(seq)+"\n"), 0o600); err != nil {
		os.Remove(dir)
		return "", "", err
	}
	return name, dir, nil
}

// nodeName is <prefix>-<zone>-<n>, with the zone reduced to characters
// that are safe in a file name ("default" when empty).
func nodeName(prefix, zone string, n int) string {
	return fmt.Sprintf("%s-%s-%d", prefix, zoneLabel(zone), n)
}

func zoneLabel(zone string) string {
	b := []byte(zone)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			b[i] = '_'
		}
	}
	s := strings.TrimLeft(string(b), ".")
	if s == "" {
		return "default"
	}
	return s
}

// writeTLS issues the node's certificate into dir/tls, next to a copy of
// the CA certificate.
func (l *Local) writeTLS(dir, name string) error {
	certPEM, keyPEM, err := l.ca.IssueNodeCert(name, 365*24*time.Hour, []net.IP{net.ParseIP(l.cfg.Host)}, nil)
	if err != nil {
		return err
	}
	tdir := filepath.Join(dir, "tls")
	if err := os.MkdirAll(tdir, 0o700); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
		perm os.FileMode
	}{{"ca.pem", l.caPEM, 0o644}, {"node.pem", certPEM, 0o644}, {"node-key.pem", keyPEM, 0o600}} {
		if err := os.WriteFile(filepath.Join(tdir, f.name), f.data, f.perm); err != nil {
			return err
		}
	}
	return nil
}

// agentArgs is the command line of node n in dir.
func (l *Local) agentArgs(n LocalNode, dir string, join []string) []string {
	tdir := filepath.Join(dir, "tls")
	args := []string{"agent",
		"--name", n.Name, "--data-dir", filepath.Join(dir, "data"),
		"--gossip", n.addr(n.Ports.Gossip), "--raft", n.addr(n.Ports.Raft), "--peer", n.addr(n.Ports.Peer),
		"--http", n.addr(n.Ports.HTTP), "--api", n.addr(n.Ports.API),
		"--join", strings.Join(join, ","),
		"--tls-ca", filepath.Join(tdir, "ca.pem"),
	}
	if len(n.JoinServers) > 0 {
		args = append(args, "--join-token-file", filepath.Join(tdir, joinTokenFile))
		for _, s := range n.JoinServers {
			args = append(args, "--join-server", s)
		}
	} else {
		args = append(args, "--tls-cert", filepath.Join(tdir, "node.pem"), "--tls-key", filepath.Join(tdir, "node-key.pem"))
	}
	if n.Zone != "" {
		args = append(args, "--zone", n.Zone)
	}
	switch {
	case l.cfg.Backend != "":
		args = append(args, "--backend", l.cfg.Backend)
	case n.Ports.Backend != 0:
		args = append(args, "--backend", "http://"+n.addr(n.Ports.Backend))
	}
	return append(args, l.cfg.AgentArgs...)
}

// backendName names node n's demo backend; it is also how its process is
// recognised.
func backendName(node string) string { return node + "-backend" }

// launch picks ports for n, starts its demo backend (if any) and its
// agent, and records them in node.json.
func (l *Local) launch(n LocalNode, dir string, join []string) (LocalNode, *child, error) {
	var err error
	if n.Ports, err = l.pickPorts(); err != nil {
		return n, nil, err
	}
	n.PID, n.BackendPID = 0, 0
	if l.cfg.DemoBackend {
		b, err := startDetached(l.cfg.Bin, filepath.Join(dir, backendLog),
			"backend", "--listen", n.addr(n.Ports.Backend), "--name", backendName(n.Name))
		if err != nil {
			return n, nil, fmt.Errorf("start demo backend: %w", err)
		}
		n.BackendPID = b.pid
		if err := l.writeNode(dir, n); err != nil {
			return n, nil, err
		}
		if err := l.waitBackend(n, b, filepath.Join(dir, backendLog)); err != nil {
			return n, nil, err
		}
	}
	ch, err := startDetached(l.cfg.Bin, filepath.Join(dir, agentLog), l.agentArgs(n, dir, join)...)
	if err != nil {
		return n, nil, fmt.Errorf("start agent: %w", err)
	}
	n.PID, n.Started = ch.pid, time.Now().UTC()
	if err := os.WriteFile(filepath.Join(dir, agentPIDFile), []byte(strconv.Itoa(n.PID)+"\n"), 0o600); err != nil {
		return n, ch, err
	}
	return n, ch, l.writeNode(dir, n)
}

// pickPorts returns free ports on Host: gossip free for TCP and UDP, peer
// for UDP, the others for TCP. Another program can still take one before
// the agent binds it; startNode then tries again.
func (l *Local) pickPorts() (LocalPorts, error) {
	var p LocalPorts
	for _, f := range []struct {
		dst      *int
		tcp, udp bool
	}{{&p.Gossip, true, true}, {&p.Raft, true, false}, {&p.Peer, false, true}, {&p.HTTP, true, false}, {&p.API, true, false}} {
		port, err := l.freePort(f.tcp, f.udp)
		if err != nil {
			return p, err
		}
		*f.dst = port
	}
	if l.cfg.DemoBackend {
		port, err := l.freePort(true, false)
		if err != nil {
			return p, err
		}
		p.Backend = port
	}
	return p, nil
}

func (l *Local) freePort(tcp, udp bool) (int, error) {
	var err error
	for range 100 {
		var port int
		if port, err = tryPort(l.cfg.Host, tcp, udp); err != nil {
			continue
		}
		l.mu.Lock()
		dup := l.ports[port]
		l.ports[port] = true
		l.mu.Unlock()
		if !dup {
			return port, nil
		}
	}
	return 0, fmt.Errorf("no free port on %s: %v", l.cfg.Host, err)
}

func tryPort(host string, tcp, udp bool) (int, error) {
	port := 0
	if tcp {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return 0, err
		}
		defer ln.Close()
		port = ln.Addr().(*net.TCPAddr).Port
	}
	if udp {
		pc, err := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return 0, err
		}
		defer pc.Close()
		port = pc.LocalAddr().(*net.UDPAddr).Port
	}
	return port, nil
}

// waitBackend waits until the demo backend answers.
func (l *Local) waitBackend(n LocalNode, b *child, logPath string) error {
	u := "http://" + n.addr(n.Ports.Backend) + "/"
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b.exited() {
			return startupError("demo backend", logPath)
		}
		resp, err := l.client.Get(u)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo backend not answering after 10s: %v: %s", err, logTail(logPath))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitReady waits until n's API answers /readyz (it has joined and knows
// the leader). ch is n's process when this run started it, else nil.
func (l *Local) waitReady(ctx context.Context, n LocalNode, ch *child) error {
	dir := filepath.Join(l.cfg.Dir, n.Name)
	u := n.API() + "/readyz"
	deadline := time.Now().Add(l.cfg.ReadyTimeout)
	last := errors.New("no answer yet")
	for {
		if (ch != nil && ch.exited()) || (ch == nil && !l.alive(n)) {
			return startupError("agent", filepath.Join(dir, agentLog))
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		resp, err := l.client.Do(req)
		if err == nil {
			var b [256]byte
			k, _ := resp.Body.Read(b[:])
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b[:k])))
		} else {
			last = unwrapURLError(err)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted waiting for /readyz: %w", ctx.Err())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s (/readyz: %v); agent.log: %s", l.cfg.ReadyTimeout, last, logTail(filepath.Join(dir, agentLog)))
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// startupError reports a process that exited while starting, with the
// end of its log; errAddrInUse when a port was taken.
func startupError(what, logPath string) error {
	b, _ := os.ReadFile(logPath)
	err := fmt.Errorf("%s exited during start-up: %s", what, logTail(logPath))
	if strings.Contains(string(b), "address already in use") {
		return errAddrInUse{err}
	}
	return err
}

// logTail is the end of a log file as one line.
func logTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	defer f.Close()
	const n = 4096
	if st, err := f.Stat(); err == nil && st.Size() > n {
		f.Seek(st.Size()-n, 0)
	}
	b := make([]byte, n)
	k, _ := f.Read(b)
	if tail := errTail(b[:k]); tail != "" {
		return tail
	}
	return "(empty log)"
}

// release stops and removes the nodes req names. It goes through all of
// them, and then reports the ones that were not started here.
func (l *Local) release(ctx context.Context, req Request) ([]StoppedNode, error) {
	prog := l.loadProgress(req)
	var stopped []StoppedNode
	var errs []error
	for _, name := range req.Nodes {
		if i := slices.IndexFunc(prog.Stopped, func(s StoppedNode) bool { return s.Name == name }); i >= 0 {
			stopped = append(stopped, prog.Stopped[i])
			continue
		}
		dir, ok := l.nodeDir(name)
		if !ok {
			errs = append(errs, fmt.Errorf("node %q was not started by this provisioner (no %s)", name, filepath.Join(l.cfg.Dir, name)))
			continue
		}
		s, err := l.stop(ctx, dir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		stopped = append(stopped, s)
		prog.Stopped = append(prog.Stopped, s)
		l.saveProgress(prog)
	}
	return stopped, errors.Join(errs...)
}

// nodeDir returns the directory of the node named name, if this
// provisioner started it.
func (l *Local) nodeDir(name string) (string, bool) {
	if !labelRE.MatchString(name) || filepath.Base(name) != name {
		return "", false
	}
	dir := filepath.Join(l.cfg.Dir, name)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return "", false
	}
	return dir, true
}

// stop stops the node in dir (SIGTERM, SIGKILL after StopTimeout), then
// its demo backend, and removes dir. A node whose agent already exited is
// only removed.
func (l *Local) stop(ctx context.Context, dir string) (StoppedNode, error) {
	n, err := readNode(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return StoppedNode{}, err
	}
	if n.Name == "" {
		// A directory whose start never got as far as node.json.
		n.Name = filepath.Base(dir)
	}
	s := StoppedNode{Name: n.Name, Zone: n.Zone, PID: n.PID}
	if n.PID > 0 && l.alive(n) {
		s.WasRunning = true
		s.Forced = terminate(ctx, n.PID, nameMarker(n.Name), l.cfg.StopTimeout)
		if isAlive(n.PID, nameMarker(n.Name)) {
			return s, fmt.Errorf("stop %s: pid %d still running after SIGKILL", n.Name, n.PID)
		}
	}
	if n.BackendPID > 0 {
		terminate(ctx, n.BackendPID, nameMarker(backendName(n.Name)), 5*time.Second)
	}
	if err := os.RemoveAll(dir); err != nil {
		return s, fmt.Errorf("stop %s: %w", n.Name, err)
	}
	return s, nil
}

// stopFailed kills whatever a failed start of n left running.
func (l *Local) stopFailed(n LocalNode) {
	if n.PID > 0 {
		terminate(context.Background(), n.PID, nameMarker(n.Name), 5*time.Second)
	}
	if n.BackendPID > 0 {
		terminate(context.Background(), n.BackendPID, nameMarker(backendName(n.Name)), 5*time.Second)
	}
}

// terminate sends SIGTERM to pid, waits up to grace for it to exit (less
// if ctx ends), then sends SIGKILL and waits a little more. It reports
// whether SIGKILL was needed.
func terminate(ctx context.Context, pid int, marker string, grace time.Duration) (forced bool) {
	if !isAlive(pid, marker) {
		return false
	}
	signalTerm(pid)
	if waitGone(ctx, pid, marker, grace) {
		return false
	}
	signalKill(pid)
	waitGone(context.Background(), pid, marker, 5*time.Second)
	return true
}

func waitGone(ctx context.Context, pid int, marker string, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for isAlive(pid, marker) {
		select {
		case <-tick.C:
		case <-t.C:
			return !isAlive(pid, marker)
		case <-ctx.Done():
			return !isAlive(pid, marker)
		}
	}
	return true
}

// nameMarker is what the command line of a process started with
// --name name contains (arguments are NUL-separated in /proc/PID/cmdline).
func nameMarker(name string) string { return "\x00--name\x00" + name + "\x00" }

// alive reports whether n's agent is running.
func (l *Local) alive(n LocalNode) bool {
	return n.PID > 0 && isAlive(n.PID, nameMarker(n.Name))
}

// List returns the nodes in the state directory, sorted by name.
func (l *Local) List() ([]ListedNode, error) {
	nodes, err := l.nodes()
	if err != nil {
		return nil, err
	}
	out := make([]ListedNode, 0, len(nodes))
	for _, n := range nodes {
		ln := ListedNode{Name: n.Name, Zone: n.Zone, PID: n.PID, Alive: l.alive(n)}
		if n.Ports.API != 0 {
			ln.API, ln.Ingress = n.API(), n.Ingress()
		}
		out = append(out, ln)
	}
	return out, nil
}

// StopAll stops every node in the state directory and removes their
// directories.
func (l *Local) StopAll(ctx context.Context) (LocalResult, error) {
	ents, err := os.ReadDir(l.cfg.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return LocalResult{}, nil
	}
	if err != nil {
		return LocalResult{}, fmt.Errorf("--dir: %w", err)
	}
	var res LocalResult
	var errs []error
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		s, err := l.stop(ctx, filepath.Join(l.cfg.Dir, e.Name()))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		res.Stopped = append(res.Stopped, s)
	}
	return res, errors.Join(errs...)
}

// nodes reads every node.json in the state directory, sorted by name.
// Directories without one (a start in progress, or one that crashed
// early) are listed with only their name.
func (l *Local) nodes() ([]LocalNode, error) {
	ents, err := os.ReadDir(l.cfg.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("--dir: %w", err)
	}
	var out []LocalNode
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		n, err := readNode(filepath.Join(l.cfg.Dir, e.Name()))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		if n.Name == "" {
			n.Name = e.Name()
		}
		out = append(out, n)
	}
	return out, nil
}

func (l *Local) writeNode(dir string, n LocalNode) error {
	b, err := json.MarshalIndent(n, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, nodeFile), append(b, '\n'), 0o600)
}

// readNode reads dir/node.json.
func readNode(dir string) (LocalNode, error) {
	var n LocalNode
	b, err := os.ReadFile(filepath.Join(dir, nodeFile))
	if err != nil {
		return n, err
	}
	if err := json.Unmarshal(b, &n); err != nil {
		return n, fmt.Errorf("%s: %w", filepath.Join(dir, nodeFile), err)
	}
	if n.Name != filepath.Base(dir) {
		return n, fmt.Errorf("%s: names node %q, not %q", filepath.Join(dir, nodeFile), n.Name, filepath.Base(dir))
	}
	return n, nil
}

func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp" + strconv.Itoa(os.Getpid())
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// progress records what the attempts of one request have stopped, so a
// retry does not take those nodes for strangers.
type progress struct {
	ID      string        `json:"id"`
	Kind    string        `json:"kind"`
	Stopped []StoppedNode `json:"stopped"`
}

func (l *Local) progressPath(id string) string {
	sum := sha256.Sum256([]byte(id))
	return filepath.Join(l.cfg.Dir, requestsDir, hex.EncodeToString(sum[:12])+".json")
}

func (l *Local) loadProgress(req Request) progress {
	p := progress{ID: req.ID, Kind: req.Kind}
	if req.ID == "" {
		return p
	}
	b, err := os.ReadFile(l.progressPath(req.ID))
	if err != nil {
		return p
	}
	var saved progress
	if json.Unmarshal(b, &saved) == nil && saved.ID == req.ID {
		p.Stopped = saved.Stopped
	}
	return p
}

func (l *Local) saveProgress(p progress) {
	if p.ID == "" {
		return
	}
	if b, err := json.Marshal(p); err == nil {
		writeFileAtomic(l.progressPath(p.ID), b, 0o600)
	}
}

// pruneRequests removes progress records older than requestsKeep.
func (l *Local) pruneRequests() {
	dir := filepath.Join(l.cfg.Dir, requestsDir)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > requestsKeep {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}
