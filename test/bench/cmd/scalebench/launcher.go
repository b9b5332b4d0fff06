package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/transport"
)

// fastTimers are the values of test/harness.FastTimers (the harness cannot
// be imported here: it needs a testing.TB). Raft keeps production timers.
func fastTimers(c *cluster.Config) {
	c.GossipInterval = 50 * time.Millisecond
	c.ProbeInterval = 300 * time.Millisecond
	c.ProbeTimeout = 200 * time.Millisecond
	c.SuspicionMult = 3
	c.PushPullInterval = time.Second
	c.ReconcileInterval = 200 * time.Millisecond
	c.RetryJoinMin = 100 * time.Millisecond
	c.RetryJoinMax = time.Second
}

// relaxedRaft lengthens the Raft timers fourfold (production: 500ms
// heartbeat and election timeouts, 250ms leader lease). With 100 or more
// agents sharing two cores, heartbeats from the leader to its voters come
// late often enough that the production lease makes the leader step down
// again and again (see docs/scaling.md); relaxed timers also send a
// quarter of the heartbeats (raft sends one to every follower each
// HeartbeatTimeout/10 to /5).
func relaxedRaft(c *cluster.Config) {
	c.HeartbeatTimeout = 2 * time.Second
	c.ElectionTimeout = 2 * time.Second
	c.LeaderLeaseTimeout = time.Second
}

// backend is one HTTP server that every agent uses as its backend. GET
// /hold requests wait until released (or their client gives up), so that
// one agent's in-flight figure can be set from outside; anything else
// (the agents' health checks) answers 200 at once.
type backend struct {
	srv *http.Server
	ln  net.Listener
	wg  sync.WaitGroup

	mu       sync.Mutex
	release  chan struct{}
	want     int64
	arrivals atomic.Int64
	reached  chan time.Time // receives when arrivals reaches want
}

func startBackend() (*backend, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("backend listen: %w", err)
	}
	b := &backend{ln: ln, release: make(chan struct{})}
	close(b.release)
	b.srv = &http.Server{Handler: b, ReadHeaderTimeout: 10 * time.Second}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.srv.Serve(ln)
	}()
	return b, nil
}

func (b *backend) URL() string { return "http://" + b.ln.Addr().String() }

func (b *backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/hold" {
		w.Write([]byte("ok\n"))
		return
	}
	b.mu.Lock()
	rel, want, reached := b.release, b.want, b.reached
	b.mu.Unlock()
	if n := b.arrivals.Add(1); n == want && reached != nil {
		select {
		case reached <- time.Now():
		default:
		}
	}
	select {
	case <-rel:
	case <-r.Context().Done():
	}
	w.Write([]byte("released\n"))
}

// hold arms the backend: the next n /hold requests wait until the returned
// release function is called. The channel receives the time the n-th
// arrived.
func (b *backend) hold(n int) (<-chan time.Time, func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.release = make(chan struct{})
	b.want = int64(n)
	b.arrivals.Store(0)
	b.reached = make(chan time.Time, 1)
	rel := b.release
	var once sync.Once
	return b.reached, func() { once.Do(func() { close(rel) }) }
}

func (b *backend) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b.srv.Shutdown(ctx)
	b.srv.Close()
	b.wg.Wait()
}

// node is one in-process agent.
type node struct {
	*agent.Agent
	idx     int
	started time.Time // when Start returned
	killed  bool
}

// launcher starts agents the way test/harness does: loopback addresses
// with port 0, one in-memory CA shared by all, a data dir each.
type launcher struct {
	dir     string
	ca      *transport.CA
	tls     []*transport.MutualTLS
	backend string
	timers  string // "prod" or "fast" gossip timers
	raft    string // "prod" or "relaxed" Raft timers
	log     *slog.Logger
	// tune, when set, adjusts agent i's config before it starts.
	tune  func(i int, cfg *agent.Config)
	nodes []*node
}

func newLauncher(dir string, n int, backendURL, timers, raftTimers string, log *slog.Logger) (*launcher, error) {
	ca, err := transport.NewCA("scalebench CA", transport.DefaultCALifetime)
	if err != nil {
		return nil, err
	}
	l := &launcher{dir: dir, ca: ca, backend: backendURL, timers: timers, raft: raftTimers, log: log}
	// Certificates first, so that issuing them is not part of start-up.
	for i := range n {
		id, err := transport.DevMutualTLS(nodeName(i), ca)
		if err != nil {
			return nil, err
		}
		l.tls = append(l.tls, id)
	}
	return l, nil
}

func nodeName(i int) string { return fmt.Sprintf("node-%03d", i) }

// start starts agent i. The first three bootstrap Raft together
// (--bootstrap-expect 3); the others join through the three of them.
func (l *launcher) start(ctx context.Context, i int) (*node, error) {
	cfg := agent.DefaultConfig()
	cfg.Name = nodeName(i)
	cfg.DataDir = filepath.Join(l.dir, cfg.Name)
	cfg.Gossip, cfg.Raft, cfg.Peer, cfg.HTTP, cfg.API = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.Backend = l.backend
	if l.tune != nil {
		l.tune(i, &cfg)
	}
	switch {
	case i < 3:
		cfg.BootstrapExpect = 3
		for _, s := range l.nodes {
			cfg.Join = append(cfg.Join, s.GossipAddr())
		}
	default:
		for _, s := range l.nodes[:3] {
			cfg.Join = append(cfg.Join, s.GossipAddr())
		}
	}
	deps := agent.Deps{
		TLS:          l.tls[i],
		Logger:       l.log,
		BootstrapOut: io.Discard,
	}
	deps.TuneCluster = func(c *cluster.Config) {
		if l.timers == "fast" {
			fastTimers(c)
		}
		if l.raft == "relaxed" {
			relaxedRaft(c)
		}
	}
	a, err := agent.New(cfg, deps)
	if err != nil {
		return nil, fmt.Errorf("agent %s: %w", cfg.Name, err)
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := a.Start(sctx); err != nil {
		return nil, fmt.Errorf("start agent %s: %w", cfg.Name, err)
	}
	n := &node{Agent: a, idx: i, started: time.Now()}
	l.nodes = append(l.nodes, n)
	return n, nil
}

// live returns the agents not killed.
func (l *launcher) live() []*node {
	return slices.DeleteFunc(slices.Clone(l.nodes), func(n *node) bool { return n.killed })
}

// kill stops n abruptly, as a crash would.
func (l *launcher) kill(n *node) error {
	n.killed = true
	return n.Kill()
}

// killAll stops every live agent at once and waits for all of them.
func (l *launcher) killAll() error {
	var wg sync.WaitGroup
	errs := make([]error, len(l.nodes))
	for i, n := range l.nodes {
		if n.killed {
			continue
		}
		n.killed = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.Kill()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
