// Package agent assembles one loadmesh node from its parts: the data dir
// and replicated plan (store), gossip and Raft (cluster), the ingress and
// peer transport (transport), and the status API. `loadmesh agent` runs one;
// tests start several in one process.
package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/quic-go/quic-go/http3"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/cmd/loadmesh/demo"
	"github.com/loadmesh/loadmesh/cmd/loadmesh/provision"
	"github.com/loadmesh/loadmesh/store"
	"github.com/loadmesh/loadmesh/transport"
)

// Deps are runtime collaborators; all optional.
type Deps struct {
	Logger *slog.Logger
	// Registry receives every metric; a fresh one is made when nil.
	Registry *prometheus.Registry
	// TuneCluster may adjust the cluster config (tests shorten timers).
	TuneCluster func(*cluster.Config)
	// Version is reported by loadmesh_build_info.
	Version string
	// TLS, when set, is the node's mutual-TLS identity instead of the
	// --tls-* files (tests share one in-memory CA this way).
	TLS *transport.MutualTLS
	// BootstrapOut receives the one-time print of a made-up bootstrap
	// token (default os.Stderr).
	BootstrapOut io.Writer
	// ImplicitLoopbackToken, for tests only: an API request from a
	// loopback address without an Authorization header is taken as
	// carrying this token.
	ImplicitLoopbackToken string
	// Now, when set, replaces time.Now as the agent's wall clock for what
	// other nodes see of it: the version of its gossiped load summaries,
	// the times of the audit events, tokens and autoscaler decisions it
	// writes (the leader's membership events too), API token expiry, the
	// rate limiter and the certificate expiry watch. The TLS handshakes
	// (crypto/tls in transport) and the local timers and latencies keep
	// the real clock. `loadmesh agent --dev-clock-offset` sets it to fake
	// a host whose clock is off.
	Now func() time.Time
}

// Agent is one running loadmesh node.
type Agent struct {
	cfg  Config
	deps Deps
	log  *slog.Logger
	reg  *prometheus.Registry

	dataDir *store.DataDir
	tmpDir  string
	fsm     *store.FSM
	cluster *cluster.Cluster
	demo    *demo.Server
	backend *transport.Backend
	ingress *transport.Ingress
	// tcp runs the --service TCP services (nil without any); services
	// places their connections.
	tcp        *transport.TCPServices
	services   *serviceView
	httpLn     net.Listener
	apiLn      net.Listener
	mtls       *transport.MutualTLS
	peer       *transport.PeerServer
	peers      *peerView
	local      http.Handler // the metered local backend; nil on ingress-only nodes
	autoscaler *autoscalerHook
	dirProbe   dirProbe
	sec        *security
	limits     *limits
	// liveCluster is a.cluster once started, for goroutines that may run
	// before Start returns (peer-channel handshakes).
	liveCluster atomic.Pointer[cluster.Cluster]
	health      *transport.HealthChecker
	sys         *sysLoad
	series      *seriesSampler
	backups     *backupScheduler
	healthCh    chan struct{}
	pubStop     chan struct{}
	pubWG       sync.WaitGroup
	httpSrv     *http.Server
	h3Srv       *http3.Server
	h3Conn      net.PacketConn
	apiSrv      *http.Server
	// draining is set once a graceful shutdown begins (lifecycle.go).
	draining atomic.Bool
	// live is the configuration Reload last applied (a.cfg stays the one
	// the agent started with); ingressCert the ingress's TLS certificate
	// (reload.go).
	live        atomic.Pointer[Config]
	ingressCert atomic.Pointer[tls.Certificate]
	reloadMu    sync.Mutex

	// keyring applies the replicated gossip keyring (keyring.go);
	// revocations enforces node revocations (revoke.go).
	keyring     *keyringSync
	revocations *revocationEnforcer
	// joined is set for a node whose certificate the cluster issued (a
	// join token); joinLimit limits failed join attempts per source IP;
	// renewCancel and renewWG run the renewal loop (join_*.go).
	joined      *joinedIdentity
	joinLimit   joinLimiter
	renewCancel context.CancelFunc
	renewWG     sync.WaitGroup

	wg       sync.WaitGroup
	stopOnce sync.Once
	// costs is the leader's cost accounting (cost.go).
	costs *costHook

	// cache is the response cache (cache.go).
	cache *cacheWiring
}

// New validates cfg and returns an unstarted agent.
func New(cfg Config, deps Deps) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Registry == nil {
		deps.Registry = prometheus.NewRegistry()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	a := &Agent{cfg: cfg, deps: deps, log: deps.Logger.With("node", cfg.Name), reg: deps.Registry}
	a.live.Store(&cfg)
	a.autoscaler = &autoscalerHook{a: a}
	a.sec = newSecurity(a)
	a.costs = &costHook{a: a}
	return a, nil
}

// now reads the agent's wall clock (Deps.Now).
func (a *Agent) now() time.Time { return a.deps.Now() }

// Start opens the data dir, binds every port, starts gossip and Raft, and
// serves the ingress and the API. On error everything started is undone.
func (a *Agent) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			a.close(false)
		}
	}()
	a.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo(a.deps.Version),
		memberLoadCollector{a: a},
		costCollector{a: a},
	)
	a.autoscaler.m = newAutoscalerMetrics(a.autoscaler, a.reg)
	a.reg.MustRegister(a.dataDirGauge())
	a.autoscaler.runner = provision.NewRunner(provision.RunnerConfig{Logger: a.log})
	dir := a.cfg.DataDir
	if a.cfg.Dev && dir == "" {
		if a.tmpDir, err = os.MkdirTemp("", "loadmesh-dev-"); err != nil {
			return fmt.Errorf("dev data dir: %w", err)
		}
		dir = a.tmpDir
	}
	if a.dataDir, err = store.OpenDataDir(dir, a.cfg.Name, io.Discard); err != nil {
		return err
	}
	a.fsm = store.NewFSM(a.log, a.reg)

	// Bind every port first, so a conflict is reported before anything
	// else starts, and tests can use port 0.
	if a.apiLn, err = net.Listen("tcp", a.cfg.API); err != nil {
		return fmt.Errorf("api listen %s: %w", a.cfg.API, err)
	}
	if a.httpLn, err = net.Listen("tcp", a.cfg.HTTP); err != nil {
		return fmt.Errorf("http listen %s: %w", a.cfg.HTTP, err)
	}
	if a.mtls, err = a.loadTLS(ctx); err != nil {
		return err
	}
	if err := a.sec.start(); err != nil {
		return err
	}

	backendURL := a.cfg.Backend
	if a.cfg.Dev && backendURL == "" {
		if a.demo, err = demo.Start("127.0.0.1:0", a.cfg.Name+"-demo", 0); err != nil {
			return err
		}
		backendURL = a.demo.URL()
	}
	if backendURL != "" {
		a.backend, err = transport.NewBackend(transport.BackendConfig{
			NodeName: a.cfg.Name, URL: backendURL, Capacity: a.cfg.Capacity,
		}, a.log, a.reg)
		if err != nil {
			return err
		}
	}
	if err := a.setupScheduling(backendURL); err != nil {
		return err
	}
	if err := a.setupLimits(); err != nil {
		return err
	}
	pcfg := transport.DefaultPeerConfig()
	pcfg.Addr = a.cfg.Peer
	// A peer connection with requests in flight must notice a dead peer
	// fast: keep-alives every PeerTimeout/3 mean a live peer always sends
	// something, so PeerTimeout of silence closes the connection and its
	// idempotent requests are retried elsewhere.
	pcfg.DialTimeout = min(a.cfg.DialTimeout, a.cfg.PeerTimeout)
	pcfg.MaxIdleTimeout = a.cfg.PeerTimeout
	pcfg.KeepAlivePeriod = a.cfg.PeerTimeout / 3
	svcCfgs, err := parseServices(a.cfg.Services) // checked by Validate
	if err != nil {
		return err
	}
	if a.services, err = newServiceView(a.cfg.Name, a.cfg.Zone, svcCfgs); err != nil {
		return err
	}
	a.peers.services = a.services
	if err := a.setupCache(); err != nil {
		return err
	}
	peerHandler := transport.PeerHandler(a.cfg.Name, a.admittedLocal())
	a.peer, err = transport.NewPeerServer(pcfg, transport.PeerDeps{
		TLS: a.mtls,
		// Relay streams of TCP services go to them; a.tcp is set before
		// the peer server starts.
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if a.tcp != nil && transport.IsTunnel(r) {
				a.tcp.ServeTunnel(w, r)
				return
			}
			if a.servePeerCache(w, r) {
				return
			}
			peerHandler.ServeHTTP(w, r)
		}),
		Authorize:  a.authorizePeer,
		Join:       a.handleJoin,
		Logger:     a.log,
		Registerer: a.reg,

		AuthorizeCert: a.certRevoked, // revoke.go
	})
	if err != nil {
		return err
	}
	if len(svcCfgs) > 0 {
		a.tcp, err = transport.NewTCPServices(svcCfgs, transport.TCPServicesDeps{
			Picker: a.services, Peers: a.peer.Client(), Logger: a.log, Registerer: a.reg,
			OnHealthChange: func(string, bool) {
				select { // gossip the change at once
				case a.healthCh <- struct{}{}:
				default:
				}
			},
		})
		if err != nil {
			return err
		}
		a.services.svcs = a.tcp
	}
	if err := a.peer.Start(ctx); err != nil {
		a.peer = nil
		return err
	}
	a.peers.client = a.peer.Client()
	var metrics *transport.RequestMetrics
	if a.backend != nil {
		metrics = a.backend.RequestMetrics()
	}
	a.ingress = transport.NewIngress(transport.IngressConfig{
		NodeName:        a.cfg.Name,
		UpstreamTimeout: a.cfg.UpstreamTimeout,
	}, transport.IngressDeps{
		Logger:     a.log,
		Local:      a.local,
		Metrics:    metrics,
		Picker:     a.peers,
		Peers:      a.peer.Client(),
		Registerer: a.reg,
		Admission:  a.limits.admission,
	})

	ccfg := cluster.DefaultConfig()
	ccfg.NodeName = a.cfg.Name
	ccfg.Zone = a.cfg.Zone
	ccfg.Tags, _ = ParseTags(a.cfg.Tags) // checked by Validate
	ccfg.GossipAddr = a.cfg.Gossip
	ccfg.RaftAddr = a.cfg.Raft
	ccfg.AdvertiseIP = a.cfg.Advertise
	ccfg.Join = a.cfg.Join
	ccfg.BootstrapExpect = a.cfg.BootstrapExpect
	ccfg.NonVoter = a.cfg.NonVoter || a.joined != nil && a.cfg.TLSCAKey == ""
	if ccfg.NonVoter && !a.cfg.NonVoter {
		a.log.Info("joined with a token and holds no CA key (--tls-ca-key): this node is a Raft non-voter and never leads")
	}
	ccfg.MaxVoters = a.cfg.MaxVoters
	ccfg.DeadServerGrace = a.cfg.DeadServerGrace
	ccfg.LeftNodeRetention = a.cfg.LeftNodeRetention
	ccfg.DrainTimeout = a.cfg.DrainTimeout
	if a.cfg.Encrypt != "" {
		ccfg.GossipKey, _ = DecodeGossipKey(a.cfg.Encrypt)
	}
	if a.joined != nil {
		// A node that joined with a token uses the gossip keyring and seeds
		// it received, unless given its own key.
		if keys := a.joined.gossipKeys; ccfg.GossipKey == nil && len(keys) > 0 {
			ccfg.GossipKey = keys[0]
		}
		if len(ccfg.Join) == 0 {
			ccfg.Join = a.joined.seeds
		}
	}
	if ccfg.GossipKey, ccfg.GossipKeys, ccfg.RetryKeyMismatch, err = a.startingGossipKeys(a.dataDir.Path, ccfg.GossipKey); err != nil {
		return err
	}
	if a.joined != nil && len(ccfg.GossipKeys) == 0 && len(a.joined.gossipKeys) > 1 && bytes.Equal(ccfg.GossipKey, a.joined.gossipKeys[0]) {
		// The rest of the keyring received (a rotation in progress).
		ccfg.GossipKeys = a.joined.gossipKeys[1:]
	}
	if a.deps.TuneCluster != nil {
		a.deps.TuneCluster(&ccfg)
	}
	ip, err := cluster.ResolveAdvertiseIP(ccfg)
	if err != nil {
		return err
	}
	ccfg.HTTPAddr = cluster.AdvertiseAddr(a.httpLn.Addr(), ip)
	ccfg.PeerAddr = cluster.AdvertiseAddr(a.peer.Addr(), ip)
	ccfg.Serving = a.backend != nil
	ccfg.APIAddr = cluster.AdvertiseAddr(a.apiLn.Addr(), ip)
	a.cluster, err = cluster.New(ccfg, cluster.Deps{
		Logger:       a.log,
		Registerer:   a.reg,
		Store:        a.fsm,
		LogStore:     a.dataDir.Bolt,
		StableStore:  a.dataDir.Bolt,
		Snapshots:    a.dataDir.Snapshots,
		LeaderHooks:  []cluster.LeaderHook{a.autoscaler, a.sec, a.costs, keyringHook{a}},
		NewNodeState: a.newNodeState,
		Messages:     a.limitMessages(),
		Now:          a.deps.Now,
		Refuse:       a.revoked,
		RaftTLS: &cluster.RaftTLS{
			Server: a.raftServerTLS(),
			Client: func(peer string) *tls.Config { return a.mtls.ClientConfig(peer, raftALPN) },
		},
	})
	if err != nil {
		return err
	}
	if err := a.cluster.Start(ctx); err != nil {
		a.cluster = nil
		return err
	}
	a.liveCluster.Store(a.cluster)

	a.peers.start(a.cluster, a.fsm)
	a.startKeyringSync()
	a.startRevocations()
	if a.health != nil {
		a.health.Start()
	}
	if a.tcp != nil {
		a.publishServices(true)
		if err := a.tcp.Start(); err != nil {
			a.tcp = nil // nothing of it runs
			return err
		}
	}
	a.startLoadPublisher()
	a.startLimits()
	a.startSeries()
	a.startBackups()
	a.startRenewal()
	if err := a.startIngress(); err != nil {
		return err
	}
	a.apiSrv = &http.Server{
		Handler:           a.apiHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
	}
	a.serve(a.apiSrv, a.apiLn)
	a.log.Info("agent started", "http", a.HTTPAddr(), "api", a.APIAddr(), "gossip", a.cluster.GossipAddr(),
		"raft", a.cluster.RaftAddr(), "backend", backendURL, "data_dir", dir)
	return nil
}

func (a *Agent) serve(srv *http.Server, ln net.Listener) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("server stopped", "addr", ln.Addr().String(), "error", err)
		}
	}()
}

// Shutdown stops the node gracefully (lifecycle.go): it announces that it
// leaves, keeps accepting for --shutdown-grace, stops accepting and
// finishes the requests in flight (at most --drain-timeout), hands over
// leadership if it leads, leaves the cluster, then Raft and the stores
// close. When ctx ends, every remaining step is cut short: the node stops
// at once. It waits for every goroutine. Idempotent.
func (a *Agent) Shutdown(ctx context.Context) error { return a.stop(ctx, true) }

// Kill stops the node abruptly without telling the cluster, as a crash
// would. For tests.
func (a *Agent) Kill() error { return a.stop(context.Background(), false) }

func (a *Agent) stop(ctx context.Context, graceful bool) error {
	var err error
	a.stopOnce.Do(func() {
		start := time.Now()
		var errs []error
		if graceful {
			errs = a.drainAndLeave(ctx)
		}
		errs = append(errs, a.close(graceful))
		err = errors.Join(errs...)
		a.log.Info("agent stopped", "graceful", graceful, "duration", time.Since(start).Round(time.Millisecond))
	})
	return err
}

// close releases everything that was started, in reverse start order.
func (a *Agent) close(graceful bool) error {
	var errs []error
	for _, srv := range []*http.Server{a.httpSrv, a.apiSrv} {
		if srv != nil {
			srv.Close()
		}
	}
	if a.h3Srv != nil {
		a.h3Srv.Close()
	}
	for _, c := range []io.Closer{a.httpLn, a.apiLn, a.h3Conn} {
		if c != nil {
			c.Close()
		}
	}
	if a.peers != nil {
		a.peers.stop()
	}
	a.closeCache()
	a.stopKeyringSync()
	a.stopRevocations()
	if a.health != nil {
		a.health.Shutdown()
	}
	a.stopLimits()
	a.stopPublisher()
	a.stopSeries()
	a.stopBackups()
	a.stopRenewal()
	a.sec.stop()
	if a.tcp != nil {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := a.tcp.Shutdown(cctx); err != nil && graceful {
			errs = append(errs, err)
		}
		cancel()
	}
	if a.peer != nil {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		errs = append(errs, a.peer.Shutdown(cctx))
		cancel()
	}
	if a.cluster != nil {
		errs = append(errs, a.cluster.Shutdown(context.Background()))
	}
	if a.dataDir != nil {
		errs = append(errs, a.dataDir.Close())
	}
	if a.demo != nil {
		errs = append(errs, a.demo.Shutdown(context.Background()))
	}
	a.wg.Wait()
	if a.tmpDir != "" {
		os.RemoveAll(a.tmpDir)
	}
	return errors.Join(errs...)
}

// Name is the node's name.
func (a *Agent) Name() string { return a.cfg.Name }

// HTTPAddr is the bound ingress address.
func (a *Agent) HTTPAddr() string { return a.httpLn.Addr().String() }

// APIAddr is the bound API address.
func (a *Agent) APIAddr() string { return a.apiLn.Addr().String() }

// PeerAddr is the bound UDP address for peer forwarding.
func (a *Agent) PeerAddr() string { return a.peer.Addr().String() }

// GossipAddr is the advertised gossip address (what --join takes).
func (a *Agent) GossipAddr() string { return a.cluster.GossipAddr() }

// Cluster exposes the node's cluster membership (for tests and the API).
func (a *Agent) Cluster() *cluster.Cluster { return a.cluster }

// Plan exposes the node's replica of the plan.
func (a *Agent) Plan() *store.FSM { return a.fsm }

// DemoURL is the built-in demo backend's URL in --dev mode, else "".
func (a *Agent) DemoURL() string {
	if a.demo == nil {
		return ""
	}
	return a.demo.URL()
}

func buildInfo(version string) prometheus.Collector {
	if version == "" {
		version = "dev"
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "loadmesh_build_info",
		Help:        "Build information; the value is always 1.",
		ConstLabels: prometheus.Labels{"version": version},
	})
	g.Set(1)
	return g
}

func (a *Agent) stopPublisher() {
	if a.pubStop != nil {
		close(a.pubStop)
		a.pubWG.Wait()
		a.pubStop = nil
	}
}
