package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/store"
)

// ErrNotLeader is returned by writes on a node that is not the Raft leader.
var ErrNotLeader = errors.New("not the raft leader")

// Deps are the cluster's runtime collaborators.
type Deps struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Store is the replicated plan; the cluster drives it through Raft.
	Store *store.FSM
	// LogStore, StableStore and Snapshots hold Raft's durable state.
	LogStore    raft.LogStore
	StableStore raft.StableStore
	Snapshots   raft.SnapshotStore
	// RaftTLS, when set, puts the Raft transport under mutual TLS.
	RaftTLS *RaftTLS
	// LeaderHooks run while this node leads (see LeaderHook).
	LeaderHooks []LeaderHook
	// NewNodeState, when set, gives the plan state of a node joining the
	// cluster (the scaling policy's new_node_state); by default, and when
	// it returns "", new nodes are active.
	NewNodeState func() scheduler.NodeState
	// OnLeaderChange, when set, is called (on its own goroutine's loop,
	// never concurrently) after every observed change of leader.
	OnLeaderChange func(leader string)
	// Messages, when set, receive what other nodes send with Broadcast,
	// by topic (see MessageHandler).
	Messages map[byte]MessageHandler
	// Now, when set, is the wall clock the leader stamps its membership
	// changes to the plan with (time.Now by default). Timers and ages
	// measured between two readings are not affected by a constant offset.
	Now func() time.Time
	// Refuse, when set, names nodes (revoked ones) that gossip must not
	// take back and the leader keeps out of Raft (refuse.go). Called on
	// memberlist's goroutines: it must not block.
	Refuse func(name string) bool
}

// RaftTLS configures mutual TLS on the Raft port.
type RaftTLS struct {
	// Server verifies incoming Raft connections.
	Server *tls.Config
	// Client returns the config to dial the node named peer ("" if the
	// address is not known from gossip).
	Client func(peer string) *tls.Config
}

// Cluster is one node's membership in the gossip pool and Raft group.
type Cluster struct {
	cfg     Config
	deps    Deps
	log     *slog.Logger
	metrics *metrics

	advertiseIP net.IP
	gossipAddr  string
	raftLn      net.Listener
	stream      *streamLayer
	keyring     *memberlist.Keyring
	// updateMu serialises memberlist UpdateNode calls (update.go).
	updateMu    sync.Mutex
	delegate    *delegate
	ml          *memberlist.Memberlist
	raft        *raft.Raft
	transport   *raft.NetworkTransport
	notifyCh    chan bool
	eventCh     chan memberEvent
	reconcileCh chan struct{}
	// restoredCh tells the leader loop that Restore replaced the state.
	restoredCh chan struct{}
	observerCh chan raft.Observation
	observer   *raft.Observer
	failCh     chan error // Failed

	stop     chan struct{}
	wg       sync.WaitGroup
	stopOnce sync.Once
	started  bool

	mu      sync.Mutex
	members map[string]*memberEntry
	// acks is when each member last answered one of our probes.
	acks   map[string]time.Time
	meta   Meta
	joined bool
	leader string
}

// New validates cfg and returns an unstarted Cluster.
func New(cfg Config, deps Deps) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Store == nil || deps.LogStore == nil || deps.StableStore == nil || deps.Snapshots == nil {
		return nil, errors.New("cluster: Store, LogStore, StableStore and Snapshots are required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	c := &Cluster{
		cfg:         cfg,
		deps:        deps,
		log:         deps.Logger.With("component", "cluster"),
		delegate:    &delegate{handlers: deps.Messages},
		notifyCh:    make(chan bool, 16),
		eventCh:     make(chan memberEvent, 1024),
		reconcileCh: make(chan struct{}, 1),
		restoredCh:  make(chan struct{}, 1),
		observerCh:  make(chan raft.Observation, 64),
		failCh:      make(chan error, 1),
		stop:        make(chan struct{}),
		members:     map[string]*memberEntry{},
		acks:        map[string]time.Time{},
	}
	c.metrics = newMetrics(deps.Registerer, c)
	return c, nil
}

// ResolveAdvertiseIP returns the IP peers should use for this node: the
// configured one, else the gossip bind IP when specific, else the first
// private IP of the machine.
func ResolveAdvertiseIP(cfg Config) (net.IP, error) {
	if cfg.AdvertiseIP != "" {
		ip := net.ParseIP(cfg.AdvertiseIP)
		if ip == nil {
			return nil, fmt.Errorf("advertise address %q is not an IP address", cfg.AdvertiseIP)
		}
		return ip, nil
	}
	if ip, _, err := splitHostPort(cfg.GossipAddr); err == nil && ip != nil && !ip.IsUnspecified() {
		return ip, nil
	}
	s, err := sockaddr.GetPrivateIP()
	if err != nil || s == "" {
		return nil, errors.New("no private IP address found to advertise; set --advertise")
	}
	return net.ParseIP(s), nil
}

// AdvertiseAddr turns a bound address into the form peers use: an
// unspecified IP is replaced by the advertise IP.
func AdvertiseAddr(bound net.Addr, advertiseIP net.IP) string {
	host, port, err := net.SplitHostPort(bound.String())
	if err != nil {
		return bound.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = advertiseIP.String()
	}
	return net.JoinHostPort(host, port)
}

// Start binds the Raft port, starts Raft and memberlist, and begins joining
// in the background. ctx bounds start-up only.
func (c *Cluster) Start(ctx context.Context) error {
	if c.started {
		return errors.New("cluster already started")
	}
	c.started = true
	ip, err := ResolveAdvertiseIP(c.cfg)
	if err != nil {
		return err
	}
	c.advertiseIP = ip

	if c.raftLn, err = net.Listen("tcp", c.cfg.RaftAddr); err != nil {
		return fmt.Errorf("raft listen %s: %w", c.cfg.RaftAddr, err)
	}
	raftAdvertise := AdvertiseAddr(c.raftLn.Addr(), ip)
	if err := c.startRaft(raftAdvertise); err != nil {
		c.raftLn.Close()
		return err
	}
	c.meta = Meta{
		Zone: c.cfg.Zone, Tags: c.cfg.Tags, HTTP: c.cfg.HTTPAddr, Peer: c.cfg.PeerAddr, Raft: raftAdvertise,
		API: c.cfg.APIAddr, BootstrapExpect: c.cfg.BootstrapExpect, Serving: c.cfg.Serving,
		NonVoter: c.cfg.NonVoter,
	}
	c.loadClusterID()
	if err := c.publishMeta(); err != nil {
		c.abortStart()
		return err
	}
	if err := c.startMemberlist(); err != nil {
		c.abortStart()
		return err
	}

	c.goFunc(c.eventLoop)
	c.goFunc(c.monitorLeadership)
	c.goFunc(c.observeLeader)
	if len(c.cfg.Join) > 0 {
		c.goFunc(c.joinLoop)
	}
	if err := c.maybeBootstrap(ctx); err != nil {
		c.Shutdown(context.Background())
		return err
	}
	c.log.Info("cluster started", "gossip", c.GossipAddr(), "raft", raftAdvertise,
		"bootstrap_expect", c.cfg.BootstrapExpect, "join", c.cfg.Join)
	return nil
}

func (c *Cluster) abortStart() {
	if c.raft != nil {
		c.raft.Shutdown().Error()
	}
	if c.transport != nil {
		c.transport.Close()
	}
}

func (c *Cluster) goFunc(f func()) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
}

func (c *Cluster) startRaft(advertise string) error {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(c.cfg.NodeName)
	rc.HeartbeatTimeout = c.cfg.HeartbeatTimeout
	rc.ElectionTimeout = c.cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = c.cfg.LeaderLeaseTimeout
	rc.NotifyCh = c.notifyCh
	// A removed node keeps running raft so that it can be added back when
	// it returns (for example after a long pause that outlived the grace).
	rc.ShutdownOnRemove = false
	rc.Logger = newHclog(c.deps.Logger.With("component", "raft"), "raft")
	if err := raft.ValidateConfig(rc); err != nil {
		return fmt.Errorf("raft config: %w", err)
	}
	adv, err := net.ResolveTCPAddr("tcp", advertise)
	if err != nil {
		return fmt.Errorf("raft advertise %s: %w", advertise, err)
	}
	layer := &streamLayer{Listener: c.raftLn, advertise: adv}
	c.stream = layer
	if t := c.deps.RaftTLS; t != nil {
		layer.serverTLS = t.Server
		layer.clientTLS = func(address raft.ServerAddress) *tls.Config {
			name, _ := c.memberByRaftAddr(string(address))
			return t.Client(name)
		}
	}
	c.transport = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  layer,
		MaxPool: 3,
		Timeout: 10 * time.Second,
		Logger:  newHclog(c.deps.Logger.With("component", "raft"), "raft-net"),
	})
	c.raft, err = raft.NewRaft(rc, c.deps.Store.Raft(), c.deps.LogStore, c.deps.StableStore, c.deps.Snapshots, c.transport)
	if err != nil {
		c.transport.Close()
		c.transport = nil
		return fmt.Errorf("start raft: %w", err)
	}
	c.observer = raft.NewObserver(c.observerCh, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	c.raft.RegisterObserver(c.observer)
	return nil
}

func (c *Cluster) startMemberlist() error {
	mc := memberlist.DefaultLANConfig()
	mc.Name = c.cfg.NodeName
	bindIP, bindPort, _ := splitHostPort(c.cfg.GossipAddr)
	if bindIP == nil {
		bindIP = net.IPv4zero
	}
	mc.BindAddr = bindIP.String()
	mc.BindPort = bindPort
	mc.AdvertiseAddr = c.advertiseIP.String()
	mc.AdvertisePort = bindPort
	mc.GossipInterval = c.cfg.GossipInterval
	mc.ProbeInterval = c.cfg.ProbeInterval
	mc.ProbeTimeout = c.cfg.ProbeTimeout
	mc.SuspicionMult = c.cfg.SuspicionMult
	mc.PushPullInterval = c.cfg.PushPullInterval
	mc.Delegate = c.delegate
	mc.Ping = &pingDelegate{c: c}
	mc.Events = &eventDelegate{ch: c.eventCh, dropped: c.metrics.eventsDropped.Inc}
	mc.Logger = memberlistLogger(c.deps.Logger.With("component", "memberlist"))
	if len(c.cfg.GossipKey) > 0 {
		mc.SecretKey = c.cfg.GossipKey
	}
	// A keyring (keyring.go) rather than only SecretKey, so that keys can
	// be installed, used and removed at run time.
	kr, err := newKeyring(c.cfg.GossipKey, c.cfg.GossipKeys)
	if err != nil {
		return err
	}
	mc.Keyring, c.keyring = kr, kr
	if c.deps.Refuse != nil {
		mc.Alive = &aliveDelegate{c: c}
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("gossip listen %s: %w", c.cfg.GossipAddr, err)
	}
	c.ml = ml
	// Read once, now: memberlist rewrites its local node (without a lock we
	// can take) whenever our metadata changes.
	n := ml.LocalNode()
	c.gossipAddr = net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
	return nil
}

// publishMeta encodes c.meta for the delegate; callers then UpdateNode.
func (c *Cluster) publishMeta() error {
	b, err := EncodeMeta(c.meta)
	if err != nil {
		return err
	}
	c.delegate.meta.Store(&b)
	return nil
}

// maybeBootstrap makes the first Raft configuration when this node should.
func (c *Cluster) maybeBootstrap(ctx context.Context) error {
	existing, err := raft.HasExistingState(c.deps.LogStore, c.deps.StableStore, c.deps.Snapshots)
	if err != nil {
		return fmt.Errorf("read raft state: %w", err)
	}
	switch {
	case existing:
		c.log.Info("raft state found; rejoining with it")
	case c.cfg.BootstrapExpect > 0:
		c.goFunc(c.bootstrapWatcher)
	case len(c.cfg.Join) == 0:
		cfg := raft.Configuration{Servers: []raft.Server{{
			Suffrage: raft.Voter, ID: raft.ServerID(c.cfg.NodeName), Address: c.transport.LocalAddr(),
		}}}
		if err := c.raft.BootstrapCluster(cfg).Error(); err != nil {
			return fmt.Errorf("bootstrap single-node cluster: %w", err)
		}
		c.log.Info("bootstrapped a single-node cluster")
		c.setClusterID(randomClusterID(), "bootstrapped a single-node cluster")
	default:
		c.log.Info("waiting to be added to the cluster by its leader")
	}
	return nil
}

// bootstrapWatcher waits until BootstrapExpect agents with the same setting
// are alive, then bootstraps Raft with all of them. Every such agent does
// the same with the same set, which raft accepts.
func (c *Cluster) bootstrapWatcher() {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		if c.raft.Leader() != "" {
			return // someone else's configuration reached us
		}
		var servers []raft.Server
		c.mu.Lock()
		for name, e := range c.members {
			if e.status == StatusAlive && e.meta.BootstrapExpect == c.cfg.BootstrapExpect && e.meta.Raft != "" {
				servers = append(servers, raft.Server{ID: raft.ServerID(name), Address: raft.ServerAddress(e.meta.Raft)})
			}
		}
		c.mu.Unlock()
		if len(servers) < c.cfg.BootstrapExpect {
			continue
		}
		sortServers(servers)
		for i := range servers {
			servers[i].Suffrage = raft.Voter
			if i >= c.cfg.MaxVoters {
				servers[i].Suffrage = raft.Nonvoter
			}
		}
		err := c.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error()
		switch {
		case err == nil:
			c.log.Info("bootstrapped raft", "servers", len(servers))
			c.setClusterID(bootstrapClusterID(servers), "bootstrapped raft")
		case errors.Is(err, raft.ErrCantBootstrap):
			c.log.Info("raft already has state; not bootstrapping")
		default:
			c.log.Error("bootstrap raft", "error", err)
			continue
		}
		return
	}
}

// joinLoop joins the seeds with backoff until it succeeds, nudges
// convergence by rejoining a few known members shortly after, and starts
// over whenever the node finds itself alone.
func (c *Cluster) joinLoop() {
	backoff := c.cfg.RetryJoinMin
	wait := time.Duration(0)
	for {
		select {
		case <-c.stop:
			return
		case <-time.After(wait):
		}
		if c.ml.NumMembers() > 1 {
			wait, backoff = c.cfg.RetryJoinMax, c.cfg.RetryJoinMin
			continue
		}
		n, err := c.ml.Join(c.expandJoin(context.Background()))
		c.mu.Lock()
		first := !c.joined
		c.mu.Unlock()
		if n > 0 {
			c.log.Info("joined cluster", "contacted", n)
			c.metrics.joins.WithLabelValues("ok").Inc()
			c.mu.Lock()
			c.joined = true
			c.mu.Unlock()
			if first {
				c.verifyClusterID()
			}
			c.rejoinSoon()
			wait, backoff = c.cfg.RetryJoinMax, c.cfg.RetryJoinMin
			continue
		}
		c.metrics.joins.WithLabelValues("error").Inc()
		if kerr := gossipKeyError(err, c.cfg.Join); kerr != nil && first && !c.cfg.RetryKeyMismatch {
			// Not a passing failure: retrying cannot help.
			c.fail(kerr)
			return
		}
		c.log.Warn("join failed; retrying", "seeds", c.cfg.Join, "retry_in", backoff, "error", err)
		// Full jitter keeps a fleet that restarts together from retrying in step.
		wait = backoff/2 + rand.N(backoff/2+1)
		backoff = min(2*backoff, c.cfg.RetryJoinMax)
	}
}

// rejoinSoon contacts up to three random known members a moment after
// joining: early joiners otherwise learn of later ones only at the next
// push-pull.
func (c *Cluster) rejoinSoon() {
	select {
	case <-c.stop:
		return
	case <-time.After(c.cfg.GossipInterval * 5):
	}
	var addrs []string
	c.mu.Lock()
	for name, e := range c.members {
		if name != c.cfg.NodeName && e.status == StatusAlive {
			addrs = append(addrs, e.gossip)
		}
	}
	c.mu.Unlock()
	rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	if len(addrs) > 3 {
		addrs = addrs[:3]
	}
	if len(addrs) > 0 {
		c.ml.Join(addrs)
	}
}

// eventLoop owns the member table.
func (c *Cluster) eventLoop() {
	t := time.NewTicker(c.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case ev := <-c.eventCh:
			now := time.Now()
			c.mu.Lock()
			c.applyEvent(ev, now)
			c.mu.Unlock()
			c.metrics.memberEvents.Inc()
			c.wakeLeader()
		case <-t.C:
			c.mu.Lock()
			c.resync(time.Now())
			c.mu.Unlock()
			c.adoptClusterID()
		}
	}
}

func (c *Cluster) wakeLeader() {
	select {
	case c.reconcileCh <- struct{}{}:
	default:
	}
}

// observeLeader tracks leader changes reported by raft.
func (c *Cluster) observeLeader() {
	for {
		select {
		case <-c.stop:
			return
		case o := <-c.observerCh:
			lo, ok := o.Data.(raft.LeaderObservation)
			if !ok {
				continue
			}
			leader := string(lo.LeaderID)
			c.mu.Lock()
			changed := c.leader != leader
			c.leader = leader
			c.mu.Unlock()
			if !changed {
				continue
			}
			if leader != "" {
				c.metrics.leaderChanges.Inc()
			}
			c.log.Info("leader changed", "leader", leader, "term", c.raft.CurrentTerm())
			if c.deps.OnLeaderChange != nil {
				c.deps.OnLeaderChange(leader)
			}
		}
	}
}

// SetLoad publishes this node's encoded load summary in its gossip
// metadata. It blocks until memberlist has queued the update (at most
// timeout); call it from a publishing loop, not a request path.
func (c *Cluster) SetLoad(load []byte, timeout time.Duration) error {
	c.mu.Lock()
	c.meta.Load = load
	err := c.publishMeta()
	c.mu.Unlock()
	if err != nil {
		return err
	}
	return c.updateNode(timeout)
}

// SetServices publishes the state of the TCP services this node offers
// in its gossip metadata, blocking until memberlist has queued the update
// (at most timeout). The map is not retained.
func (c *Cluster) SetServices(svcs map[string]ServiceMeta, timeout time.Duration) error {
	m := make(ServiceMetas, len(svcs))
	for k, v := range svcs {
		m[k] = v
	}
	if len(m) == 0 {
		m = nil
	}
	c.mu.Lock()
	c.meta.Services = m
	err := c.publishMeta()
	c.mu.Unlock()
	if err != nil {
		return err
	}
	return c.updateNode(timeout)
}

// GossipAddr is the advertised gossip address.
func (c *Cluster) GossipAddr() string { return c.gossipAddr }

// RaftAddr is the advertised Raft address.
func (c *Cluster) RaftAddr() string { return string(c.transport.LocalAddr()) }

// Leader returns the current leader's name, or "" when none is known.
func (c *Cluster) Leader() string {
	_, id := c.raft.LeaderWithID()
	return string(id)
}

// IsLeader reports whether this node is the Raft leader.
func (c *Cluster) IsLeader() bool { return c.raft.State() == raft.Leader }

// AnnounceLeaving flags this node as leaving in its gossip metadata and
// pushes the update (blocking up to timeout), so that peers stop choosing
// it for new requests while it still serves those under way. The node
// stays a member until Leave. Idempotent.
func (c *Cluster) AnnounceLeaving(timeout time.Duration) error {
	c.mu.Lock()
	already := c.meta.Leaving
	c.meta.Leaving = true
	err := c.publishMeta()
	c.mu.Unlock()
	if err != nil || already {
		return err
	}
	if err := c.updateNode(timeout); err != nil {
		return fmt.Errorf("announce leave: %w", err)
	}
	return nil
}

// Leave announces a graceful departure: the leader hands leadership to
// another voter first; the node flags itself as leaving in gossip (if
// AnnounceLeaving has not) and then leaves the pool. Call before Shutdown.
func (c *Cluster) Leave(ctx context.Context) error {
	var errs []error
	if c.IsLeader() && c.voterCount() > 1 {
		start := time.Now()
		if err := c.raft.LeadershipTransfer().Error(); err != nil {
			errs = append(errs, fmt.Errorf("transfer leadership: %w", err))
		} else {
			c.log.Info("leadership transferred before leaving", "duration", time.Since(start).Round(time.Millisecond))
		}
	}
	timeout := time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d)/2)
	}
	if err := c.AnnounceLeaving(timeout); err != nil {
		errs = append(errs, err)
	}
	start := time.Now()
	timeout = 3 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = max(100*time.Millisecond, time.Until(d))
	}
	if err := c.ml.Leave(timeout); err != nil {
		errs = append(errs, fmt.Errorf("leave gossip: %w", err))
	}
	c.log.Info("left the cluster", "duration", time.Since(start).Round(time.Millisecond))
	return errors.Join(errs...)
}

func (c *Cluster) voterCount() int {
	f := c.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	n := 0
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			n++
		}
	}
	return n
}

// Shutdown stops gossip and raft without announcing anything (call Leave
// first for a graceful exit) and waits for every goroutine. Idempotent.
func (c *Cluster) Shutdown(ctx context.Context) error {
	var err error
	c.stopOnce.Do(func() {
		close(c.stop)
		var errs []error
		if c.ml != nil {
			errs = append(errs, c.ml.Shutdown())
		}
		if c.raft != nil {
			c.raft.DeregisterObserver(c.observer)
			errs = append(errs, c.raft.Shutdown().Error())
		}
		if c.transport != nil {
			errs = append(errs, c.transport.Close())
			// Close keeps the pooled outgoing connections open.
			c.transport.CloseStreams()
		}
		done := make(chan struct{})
		go func() { c.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("cluster shutdown: %w", ctx.Err()))
		}
		err = errors.Join(errs...)
	})
	return err
}
