package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/raft"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/scheduler"
)

// runConfig is one child run: n agents in this process.
type runConfig struct {
	n           int
	rep         int
	timers      string // "prod" or "fast" gossip timers
	raft        string // "prod" or "relaxed" Raft timers
	steady      time.Duration
	hold        int           // requests held in flight on one agent
	stagger     time.Duration // pause between agent starts
	logFile     string        // agent logs at Info, when set
	cpuProfile  string        // CPU profile of the steady window, when set
	heapProfile string        // heap profile after the steady window, when set
}

// startProfile starts a CPU profile into path (nothing when path is
// empty) and returns the function that stops it.
func startProfile(path string, rerr *runError) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		rerr.add(err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		rerr.add(err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// runResult is what a child reports, as one JSON object on stdout. Times
// are seconds; NaN (null in JSON) where a phase did not complete.
type runResult struct {
	N       int     `json:"n"`
	Rep     int     `json:"rep"`
	Timers  string  `json:"timers"`
	Raft    string  `json:"raft_timers"`
	LoadAvg float64 `json:"loadavg_at_start"`

	// StartSeconds is from the first agent's Start to the last one's
	// return; StartP50Ms a single Start's median.
	StartSeconds float64 `json:"start_seconds"`
	StartP50Ms   float64 `json:"start_p50_ms"`
	// Converge is from the last start until every node lists every node
	// alive (the slowest node); ConvergeP50 the median node.
	Converge    optFloat `json:"converge_seconds"`
	ConvergeP50 optFloat `json:"converge_p50_seconds"`
	// RaftConverge is from the last start until every node's Raft
	// configuration lists all N servers with min(5, N) voters and its plan
	// lists all N nodes.
	RaftConverge optFloat `json:"raft_converge_seconds"`
	Voters       int      `json:"voters"`
	Nonvoters    int      `json:"nonvoters"`
	RaftAgree    bool     `json:"raft_agree"`
	// RaftEntries is the leader's commit index once converged.
	RaftEntries uint64 `json:"raft_entries"`
	// LeaderElections counts the times a node became leader over the
	// whole run (1 when the first leader kept its seat); Candidacies the
	// elections started; SteadyElections those in the steady window.
	LeaderElections uint64 `json:"leader_elections"`
	Candidacies     uint64 `json:"candidacies"`
	SteadyElections uint64 `json:"steady_elections"`

	// Steady window figures.
	SteadySeconds      float64 `json:"steady_seconds"`
	CPUPerAgent        float64 `json:"cpu_per_agent"` // cores
	GossipBytesPerNode float64 `json:"gossip_bytes_per_node"`
	UDPBytesPerNode    float64 `json:"udp_bytes_per_node"`
	TCPBytesPerNode    float64 `json:"tcp_bytes_per_node"`
	UDPRecvPerNode     float64 `json:"udp_recv_bytes_per_node"`
	AliveMsgsPerNode   float64 `json:"alive_msgs_per_node"`
	SuspectMsgs        uint64  `json:"suspect_msgs"`
	DeadMsgs           uint64  `json:"dead_msgs"`
	RaftWritesPerSec   float64 `json:"raft_writes_per_sec"`
	// Raft RPCs per second from the leader to all followers, voters
	// and non-voters (raft's replication metrics).
	RaftHeartbeatsPerSec float64 `json:"raft_heartbeats_per_sec"`
	RaftAppendsPerSec    float64 `json:"raft_appends_per_sec"`
	HeapPerAgent         float64 `json:"heap_per_agent_bytes"`
	RSSPerAgent          float64 `json:"rss_per_agent_bytes"`
	RSSBase              float64 `json:"rss_base_bytes"`
	RSSTotal             float64 `json:"rss_total_bytes"`
	GoroutinesPerAgent   float64 `json:"goroutines_per_agent"`

	// Load change: hold requests in flight on one agent (up), release
	// them (down); seconds until every other node's gossip view of that
	// agent shows the new in-flight figure. Publish is the agent's own
	// table.
	LoadUp      optFloat `json:"load_up_seconds"`
	LoadUpP50   optFloat `json:"load_up_p50_seconds"`
	LoadDown    optFloat `json:"load_down_seconds"`
	LoadDownP50 optFloat `json:"load_down_p50_seconds"`
	LoadPublish optFloat `json:"load_publish_seconds"`

	// Kill: from Kill() returning until every other node lists the node
	// dead.
	KillSeconds optFloat `json:"kill_call_seconds"`
	KillDetect  optFloat `json:"kill_detect_seconds"`
	KillP50     optFloat `json:"kill_detect_p50_seconds"`

	MetaBytes     int `json:"meta_bytes"`
	PlanJSONBytes int `json:"plan_json_bytes"`
	SnapshotBytes int `json:"snapshot_bytes"`

	// Scheduling stalls from the first agent's start to the shutdown:
	// the longest time no goroutine got to run, and how many stalls
	// exceeded 250 ms and 1 s (stallMeter).
	MaxStallMs  float64 `json:"max_stall_ms"`
	Stalls250ms int     `json:"stalls_over_250ms"`
	Stalls1s    int     `json:"stalls_over_1s"`

	ShutdownSeconds    float64  `json:"shutdown_seconds"`
	LeftoverGoroutines int      `json:"leftover_goroutines"`
	LeftoverStacks     []string `json:"leftover_stacks,omitempty"`
	HeapAfterShutdown  float64  `json:"heap_after_shutdown_bytes"`

	Warnings map[string]int `json:"warnings,omitempty"`
	Errors   []string       `json:"errors,omitempty"`
	Seconds  float64        `json:"seconds"`
}

// runError collects a run's errors; the run goes on where it can.
type runError struct{ errs []string }

func (e *runError) add(err error) {
	if err != nil {
		e.errs = append(e.errs, err.Error())
	}
}

// procSample is the process's resource use at one moment.
type procSample struct {
	at         time.Time
	cpu        float64 // seconds, user + system
	heap       float64 // live heap after GC, bytes
	rss        float64
	goroutines int
}

func sampleProc(gc bool) procSample {
	s := procSample{at: time.Now(), goroutines: runtime.NumGoroutine()}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.cpu = float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
	}
	if gc {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		s.heap = float64(ms.HeapAlloc)
	}
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		if v, err := parseStatusKB(string(b), "VmRSS"); err == nil {
			s.rss = float64(v)
		}
	}
	return s
}

// pollAll checks every node until check holds for each (once true, a node
// is not checked again) and returns, per node, the seconds from t0 when it
// first held (NaN for nodes that never did).
func pollAll(ctx context.Context, t0 time.Time, nodes []*node, every, timeout time.Duration, check func(*node) bool) ([]float64, error) {
	done := make([]float64, len(nodes))
	for i := range done {
		done[i] = math.NaN()
	}
	pending := len(nodes)
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		for i, n := range nodes {
			if math.IsNaN(done[i]) && check(n) {
				done[i] = time.Since(t0).Seconds()
				pending--
			}
		}
		if pending == 0 {
			return done, nil
		}
		if time.Now().After(deadline) {
			var names []string
			for i, n := range nodes {
				if math.IsNaN(done[i]) && len(names) < 5 {
					names = append(names, n.Name())
				}
			}
			return done, fmt.Errorf("%d of %d nodes not there after %s (e.g. %s)", pending, len(nodes), timeout, strings.Join(names, ", "))
		}
		select {
		case <-ctx.Done():
			return done, ctx.Err()
		case <-t.C:
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// runChild runs one measurement with cfg.n agents in this process.
func runChild(ctx context.Context, cfg runConfig) (res runResult) {
	begin := time.Now()
	res = runResult{N: cfg.n, Rep: cfg.rep, Timers: cfg.timers, Raft: cfg.raft}
	nan := optFloat(math.NaN())
	for _, p := range []*optFloat{&res.Converge, &res.ConvergeP50, &res.RaftConverge, &res.LoadUp, &res.LoadUpP50,
		&res.LoadDown, &res.LoadDownP50, &res.LoadPublish, &res.KillDetect, &res.KillP50, &res.KillSeconds} {
		*p = nan
	}
	var rerr runError
	defer func() {
		res.Errors = rerr.errs
		res.Seconds = time.Since(begin).Seconds()
	}()
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		res.LoadAvg, _ = parseLoadavg(string(b))
	}
	g, err := installCounters()
	if err != nil {
		rerr.add(err)
		return res
	}
	gStart := g.snapshot()
	defer func() {
		d := g.snapshot().sub(gStart)
		res.LeaderElections, res.Candidacies = d[raftLeaderTerms], d[raftCandidacies]
	}()
	dir, err := os.MkdirTemp("", "scalebench-")
	if err != nil {
		rerr.add(err)
		return res
	}
	defer os.RemoveAll(dir)
	be, err := startBackend()
	if err != nil {
		rerr.add(err)
		return res
	}
	defer be.close()

	counts := &logCounts{m: map[string]int{}}
	var next slog.Handler
	if cfg.logFile != "" {
		f, err := os.Create(cfg.logFile)
		if err != nil {
			rerr.add(err)
			return res
		}
		defer f.Close()
		next = slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelInfo})
	}
	logger := slog.New(&countHandler{c: counts, next: next})
	defer func() { res.Warnings = counts.top(8) }()

	base := sampleProc(true)
	res.RSSBase = base.rss
	stalls := startStallMeter()
	stallsDone := false
	stopStalls := func() {
		if !stallsDone {
			stallsDone = true
			stalls.close()
			res.MaxStallMs = float64(stalls.max.Milliseconds())
			res.Stalls250ms, res.Stalls1s = stalls.over250, stalls.over1000
		}
	}
	defer stopStalls()
	l, err := newLauncher(dir, cfg.n, be.URL(), cfg.timers, cfg.raft, logger)
	if err != nil {
		rerr.add(err)
		return res
	}
	// The agent whose load changes (loadTarget) has no backend health
	// check: on a busy machine a check can time out, the agent then takes
	// its own backend for unhealthy and forwards the held requests to
	// peers, and its in-flight figure would not change.
	l.tune = func(i int, c *agent.Config) {
		if i == loadTarget(cfg.n) {
			c.HealthPath = ""
		}
	}
	shutdown := func() {
		start := time.Now()
		rerr.add(l.killAll())
		res.ShutdownSeconds = time.Since(start).Seconds()
	}
	defer func() {
		if !allKilled(l) {
			shutdown()
		}
	}()

	// Start: one after another, with a pause between.
	first := time.Now()
	var starts []float64
	for i := range cfg.n {
		t := time.Now()
		if _, err := l.start(ctx, i); err != nil {
			rerr.add(err)
			return res
		}
		starts = append(starts, float64(time.Since(t).Milliseconds()))
		if err := sleepCtx(ctx, cfg.stagger); err != nil {
			rerr.add(err)
			return res
		}
	}
	last := l.nodes[len(l.nodes)-1].started
	res.StartSeconds = last.Sub(first).Seconds()
	res.StartP50Ms = median(starts)
	fmt.Fprintf(os.Stderr, "n=%d: %d agents started in %.1fs\n", cfg.n, cfg.n, res.StartSeconds)

	nodes := l.live()
	n := cfg.n
	every := 50 * time.Millisecond
	if n > 50 {
		every = 100 * time.Millisecond
	}
	conv, err := pollAll(ctx, last, nodes, every, 120*time.Second, func(nd *node) bool {
		alive := 0
		for _, m := range nd.Cluster().Members() {
			if m.Status == cluster.StatusAlive {
				alive++
			}
		}
		return alive == n
	})
	res.ConvergeP50 = optFloat(median(conv))
	if err != nil {
		rerr.add(fmt.Errorf("gossip convergence: %w", err))
		return res
	}
	res.Converge = optFloat(maxFinite(conv))
	fmt.Fprintf(os.Stderr, "n=%d: every node sees every node alive %.2fs after the last start\n", n, res.Converge)

	wantVoters := min(5, n)
	rc, err := pollAll(ctx, last, nodes, 250*time.Millisecond, 120*time.Second, func(nd *node) bool {
		rs := nd.Cluster().RaftStatus()
		if len(rs.Voters) != wantVoters || len(rs.Voters)+len(rs.Nonvoters) != n {
			return false
		}
		members := 0
		for _, pn := range nd.Plan().Plan().Nodes {
			if pn.Left.IsZero() {
				members++
			}
		}
		return members == n
	})
	// Without Raft the gossip figures below still mean something, so the
	// run goes on (what Raft lists then is reported as it is).
	res.RaftAgree, res.Voters, res.Nonvoters = raftAgreement(nodes)
	leader := leaderOf(nodes)
	if leader != nil {
		rs := leader.Cluster().RaftStatus()
		res.RaftEntries, res.Voters, res.Nonvoters = rs.CommitIndex, len(rs.Voters), len(rs.Nonvoters)
	}
	if err != nil {
		rerr.add(fmt.Errorf("raft convergence: %w; the leader lists %d voters and %d non-voters", err, res.Voters, res.Nonvoters))
	} else {
		res.RaftConverge = optFloat(maxFinite(rc))
		fmt.Fprintf(os.Stderr, "n=%d: raft lists every node (%d voters, %d non-voters) %.2fs after the last start\n",
			n, res.Voters, res.Nonvoters, res.RaftConverge)
	}

	// Steady window: nothing polled, only counted.
	if err := sleepCtx(ctx, 2*time.Second); err != nil {
		rerr.add(err)
		return res
	}
	s0, g0 := sampleProc(false), g.snapshot()
	var commit0 uint64
	if leader != nil {
		commit0 = leader.Cluster().RaftStatus().CommitIndex
	}
	stopProfile := startProfile(cfg.cpuProfile, &rerr)
	err = sleepCtx(ctx, cfg.steady)
	stopProfile()
	if err != nil {
		rerr.add(err)
		return res
	}
	s1, g1 := sampleProc(false), g.snapshot()
	w := s1.at.Sub(s0.at).Seconds()
	d := g1.sub(g0)
	fn := float64(n)
	res.SteadySeconds = w
	res.CPUPerAgent = (s1.cpu - s0.cpu) / w / fn
	res.UDPBytesPerNode = float64(d[udpSent]) / w / fn
	res.TCPBytesPerNode = float64(d[tcpSent]) / w / fn
	res.GossipBytesPerNode = res.UDPBytesPerNode + res.TCPBytesPerNode
	res.UDPRecvPerNode = float64(d[udpRecv]) / w / fn
	res.AliveMsgsPerNode = float64(d[aliveMsgs]) / w / fn
	res.SuspectMsgs, res.DeadMsgs = d[suspectMsgs], d[deadMsgs]
	res.RaftHeartbeatsPerSec = float64(d[raftHeartbeats]) / w
	res.RaftAppendsPerSec = float64(d[raftAppends]) / w
	res.SteadyElections = d[raftLeaderTerms]
	if leader != nil {
		res.RaftWritesPerSec = float64(leader.Cluster().RaftStatus().CommitIndex-commit0) / w
	}
	mem := sampleProc(true)
	writeHeapProfile(cfg.heapProfile, &rerr)
	res.HeapPerAgent = (mem.heap - base.heap) / fn
	res.RSSPerAgent = (mem.rss - base.rss) / fn
	res.RSSTotal = mem.rss
	res.GoroutinesPerAgent = float64(mem.goroutines-base.goroutines) / fn
	fmt.Fprintf(os.Stderr, "n=%d: steady %.0fs: %.2f%% of a core, %.0f gossip B/s, %.2f MiB RSS per agent\n",
		n, w, 100*res.CPUPerAgent, res.GossipBytesPerNode, res.RSSPerAgent/(1<<20))

	// Sizes: gossip metadata and plan, once x has the whole plan (and the
	// cluster ID in its metadata).
	x := l.nodes[loadTarget(n)]
	if !math.IsNaN(float64(res.RaftConverge)) {
		res.MetaBytes = metaSize(x)
		res.PlanJSONBytes, res.SnapshotBytes = planSizes(x)
	}

	// Load change on x.
	up, down, pub, err := measureLoadChange(ctx, be, x, nodes, cfg.hold)
	res.LoadPublish = optFloat(pub)
	res.LoadUpP50, res.LoadDownP50 = optFloat(median(up)), optFloat(median(down))
	if err != nil {
		rerr.add(fmt.Errorf("load change: %w", err))
	} else {
		res.LoadUp, res.LoadDown = optFloat(maxFinite(up)), optFloat(maxFinite(down))
		fmt.Fprintf(os.Stderr, "n=%d: load change seen by all in %.2fs (up) and %.2fs (down)\n", n, res.LoadUp, res.LoadDown)
	}

	// Kill the last node (a non-voter that is not a seed).
	// Its gossip and Raft stop first, without a leave, so that the clock
	// starts when it falls silent: Kill alone stops the peer channel and
	// the servers first, which takes seconds with many agents in one
	// process. Then Kill stops the rest.
	victim := l.nodes[n-1]
	t0 := time.Now()
	rerr.add(victim.Cluster().Shutdown(ctx))
	rerr.add(l.kill(victim))
	res.KillSeconds = optFloat(time.Since(t0).Seconds())
	others := l.live()
	kd, err := pollAll(ctx, t0, others, 20*time.Millisecond, 60*time.Second, func(nd *node) bool {
		m, ok := nd.Cluster().Member(victim.Name())
		return ok && m.Status == cluster.StatusDead
	})
	res.KillP50 = optFloat(median(kd))
	if err != nil {
		rerr.add(fmt.Errorf("kill detection: %w", err))
	} else {
		res.KillDetect = optFloat(maxFinite(kd))
		fmt.Fprintf(os.Stderr, "n=%d: every node lists %s dead %.2fs after the kill\n", n, victim.Name(), res.KillDetect)
	}

	stopStalls()
	shutdown()
	be.close()
	leftover, stacks := waitGoroutines(ctx, base.goroutines, 2*time.Second)
	res.LeftoverGoroutines, res.LeftoverStacks = leftover, stacks
	res.HeapAfterShutdown = sampleProc(true).heap - base.heap
	return res
}

func allKilled(l *launcher) bool { return len(l.live()) == 0 }

// raftAgreement reports whether every node's Raft configuration has the
// same voters and non-voters, and their counts.
func raftAgreement(nodes []*node) (bool, int, int) {
	var ref cluster.RaftStatus
	for i, nd := range nodes {
		rs := nd.Cluster().RaftStatus()
		if i == 0 {
			ref = rs
			continue
		}
		if !slices.Equal(rs.Voters, ref.Voters) || !slices.Equal(rs.Nonvoters, ref.Nonvoters) {
			return false, len(ref.Voters), len(ref.Nonvoters)
		}
	}
	return true, len(ref.Voters), len(ref.Nonvoters)
}

func leaderOf(nodes []*node) *node {
	for _, nd := range nodes {
		if nd.Cluster().IsLeader() {
			return nd
		}
	}
	return nil
}

// metaSize is the size of x's gossip metadata, rebuilt from what x lists
// about itself (tags and services, which this benchmark does not use,
// aside).
func metaSize(x *node) int {
	m, ok := x.Cluster().Member(x.Name())
	if !ok {
		return 0
	}
	b, err := cluster.EncodeMeta(cluster.Meta{
		Zone: m.Zone, HTTP: m.Addresses.HTTP, Peer: m.Addresses.Peer, Raft: m.Addresses.Raft, API: m.Addresses.API,
		Serving: m.Serving, Load: m.Load, Leaving: m.Leaving, ClusterID: x.Cluster().ClusterID(),
	})
	if err != nil {
		return 0
	}
	return len(b)
}

// planSizes returns the size of x's plan as JSON and of a snapshot of its
// whole replicated state (plan, audit events, tokens, history).
func planSizes(x *node) (planJSON, snapshot int) {
	if b, err := json.Marshal(x.Plan().Plan()); err == nil {
		planJSON = len(b)
	}
	snap, err := x.Plan().Raft().Snapshot()
	if err != nil {
		return planJSON, 0
	}
	sink := &bufSink{}
	if err := snap.Persist(sink); err == nil {
		snapshot = sink.Len()
	}
	snap.Release()
	return planJSON, snapshot
}

// bufSink is a raft.SnapshotSink in memory.
type bufSink struct{ bytes.Buffer }

var _ raft.SnapshotSink = (*bufSink)(nil)

func (*bufSink) ID() string    { return "scalebench" }
func (*bufSink) Cancel() error { return nil }
func (*bufSink) Close() error  { return nil }

// measureLoadChange holds `hold` requests in flight on x through its
// ingress, then releases them, and returns per node the seconds until its
// gossip view of x showed the new in-flight figure, for both changes
// (nodes other than x), and the seconds until x's own table did.
func measureLoadChange(ctx context.Context, be *backend, x *node, nodes []*node, hold int) (up, down []float64, publish float64, err error) {
	publish = math.NaN()
	var others []*node
	for _, nd := range nodes {
		if nd != x {
			others = append(others, nd)
		}
	}
	inflightIs := func(want int) func(*node) bool {
		return func(nd *node) bool {
			m, ok := nd.Cluster().Member(x.Name())
			if !ok || len(m.Load) == 0 {
				return false
			}
			l, err := scheduler.DecodeLoad(m.Load)
			return err == nil && l.Inflight == want
		}
	}
	// Start from a settled figure of 0 everywhere.
	if _, err := pollAll(ctx, time.Now(), nodes, 50*time.Millisecond, 20*time.Second, inflightIs(0)); err != nil {
		return nil, nil, publish, fmt.Errorf("before: %w", err)
	}
	reached, release := be.hold(hold)
	defer release()
	client := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: hold}}
	defer client.CloseIdleConnections()
	var wg sync.WaitGroup
	defer wg.Wait() // after release (deferred later, runs first)
	url := "http://" + x.HTTPAddr() + "/hold"
	for range hold {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if resp, err := client.Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	var t0 time.Time
	select {
	case t0 = <-reached:
	case <-time.After(10 * time.Second):
		return nil, nil, publish, fmt.Errorf("only %d of %d held requests reached the backend", be.arrivals.Load(), hold)
	case <-ctx.Done():
		return nil, nil, publish, ctx.Err()
	}
	own, err := pollAll(ctx, t0, []*node{x}, 5*time.Millisecond, 5*time.Second, inflightIs(hold))
	publish = own[0]
	if err != nil {
		got := -1
		if m, ok := x.Cluster().Member(x.Name()); ok {
			if l, err := scheduler.DecodeLoad(m.Load); err == nil {
				got = l.Inflight
			}
		}
		return nil, nil, publish, fmt.Errorf("up: %s's own gossip entry shows %d in flight, not %d", x.Name(), got, hold)
	}
	up, err = pollAll(ctx, t0, others, 20*time.Millisecond, 30*time.Second, inflightIs(hold))
	if err != nil {
		return up, nil, publish, fmt.Errorf("up: %w", err)
	}
	release()
	t1 := time.Now()
	down, err = pollAll(ctx, t1, others, 20*time.Millisecond, 30*time.Second, inflightIs(0))
	if err != nil {
		return up, down, publish, fmt.Errorf("down: %w", err)
	}
	return up, down, publish, nil
}

// waitGoroutines waits (at most timeout) until the process is back to
// base goroutines, and returns how many more there are and, if any, the
// most common stacks of the goroutines still running.
func waitGoroutines(ctx context.Context, base int, timeout time.Duration) (int, []string) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && runtime.NumGoroutine() > base {
		if sleepCtx(ctx, 100*time.Millisecond) != nil {
			break
		}
	}
	extra := runtime.NumGoroutine() - base
	if extra <= 0 {
		return 0, nil
	}
	var buf bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&buf, 1)
	if f := os.Getenv("SCALEBENCH_GOROUTINES"); f != "" {
		os.WriteFile(f, buf.Bytes(), 0o644) // the full profile, for a closer look
	}
	// debug=1 groups identical stacks: "N @ 0x... \n# 0x... func file:line".
	var stacks []string
	_, text, _ := strings.Cut(buf.String(), "\n") // "goroutine profile: total N"
	for _, block := range strings.Split(text, "\n\n") {
		lines := strings.Split(strings.TrimSpace(block), "\n")
		if len(lines) < 2 {
			continue
		}
		count, _, _ := strings.Cut(lines[0], " @")
		var frames []string
		// The innermost frame, then the first few outside the standard
		// library (whose first path element has a dot), which say whose
		// goroutine it is.
		for i, ln := range lines[1:] {
			f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(ln), "#"))
			if len(f) < 3 {
				continue
			}
			first, _, _ := strings.Cut(f[1], "/")
			if i == 0 || strings.Contains(f[1], "/") && strings.Contains(first, ".") {
				frames = append(frames, f[1]+" "+f[2][strings.LastIndex(f[2], "/")+1:])
			}
			if len(frames) == 4 {
				break
			}
		}
		stacks = append(stacks, count+" × "+strings.Join(frames, " ← "))
		if len(stacks) == 6 {
			break
		}
	}
	return extra, stacks
}

// logCounts counts agent log records at Warn and above by message (with
// digits masked, so that addresses and names fold together).
type logCounts struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *logCounts) add(level slog.Level, msg string) {
	var b strings.Builder
	b.WriteString(level.String() + " ")
	for _, r := range msg {
		if b.Len() >= 100 {
			break
		}
		if r >= '0' && r <= '9' {
			r = '#'
		}
		b.WriteRune(r)
	}
	c.mu.Lock()
	c.m[b.String()]++
	c.mu.Unlock()
}

// top returns the k most frequent messages.
func (c *logCounts) top(k int) map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	type kv struct {
		k string
		v int
	}
	var all []kv
	for k, v := range c.m {
		all = append(all, kv{k, v})
	}
	slices.SortFunc(all, func(a, b kv) int { return b.v - a.v })
	out := map[string]int{}
	for _, e := range all[:min(k, len(all))] {
		out[e.k] = e.v
	}
	return out
}

// countHandler counts Warn+ records and passes records on to next (if any).
type countHandler struct {
	c    *logCounts
	next slog.Handler
}

func (h *countHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn || (h.next != nil && h.next.Enabled(ctx, l))
}

func (h *countHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.c.add(r.Level, r.Message)
	}
	if h.next != nil && h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h *countHandler) WithAttrs(as []slog.Attr) slog.Handler {
	if h.next == nil {
		return h
	}
	return &countHandler{c: h.c, next: h.next.WithAttrs(as)}
}

func (h *countHandler) WithGroup(name string) slog.Handler {
	if h.next == nil {
		return h
	}
	return &countHandler{c: h.c, next: h.next.WithGroup(name)}
}

// loadTarget is the index of the agent whose load changes: one in the
// middle, neither a seed nor the node killed later.
func loadTarget(n int) int { return n / 2 }

// stallMeter measures how late a 20 ms ticker is served. A late tick
// means no goroutine of this process got to run for that long: the
// process's own CPU demand beyond its cores, a GC pause, or the machine's
// other load.
type stallMeter struct {
	stop chan struct{}
	done chan struct{}
	// Written by the meter's goroutine; read after close.
	max               time.Duration
	over250, over1000 int
}

func startStallMeter() *stallMeter {
	s := &stallMeter{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		const tick = 20 * time.Millisecond
		t := time.NewTicker(tick)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
			now := time.Now()
			late := now.Sub(last) - tick
			last = now
			s.max = max(s.max, late)
			if late > 250*time.Millisecond {
				s.over250++
			}
			if late > time.Second {
				s.over1000++
			}
		}
	}()
	return s
}

// close stops the meter and waits for its goroutine.
func (s *stallMeter) close() {
	close(s.stop)
	<-s.done
}

// writeHeapProfile writes the live heap (after the GC sampleProc ran) to
// path; nothing when path is empty.
func writeHeapProfile(path string, rerr *runError) {
	if path == "" {
		return
	}
	f, err := os.Create(path)
	if err != nil {
		rerr.add(err)
		return
	}
	defer f.Close()
	rerr.add(pprof.Lookup("heap").WriteTo(f, 0))
}
