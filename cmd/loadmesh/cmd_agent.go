package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/scheduler"
)

func newAgentCmd() *cobra.Command {
	cfg := agent.DefaultConfig()
	var configFile, logLevel, logFormat string
	var clockOffset time.Duration
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run a loadmesh agent (one per server)",
		Long: `Run a loadmesh agent. Every flag can also be set with a LOADMESH_* variable
(--data-dir is LOADMESH_DATA_DIR) or as a key of the YAML --config file
(data-dir: /var/lib/loadmesh). The command line wins over the environment,
which wins over the file.`,
		Example: `  loadmesh agent --dev
  loadmesh agent --name a --data-dir /var/lib/loadmesh --bootstrap-expect 3 \
      --join 10.0.0.1,10.0.0.2 --backend http://127.0.0.1:9000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			src := &agentSources{fs: cmd.Flags(), cfg: &cfg, configFile: &configFile, logLevel: &logLevel, logFormat: &logFormat}
			// From here cfg is the resolved configuration; the flags stay
			// bound to the outer one, which src reads again on SIGHUP.
			cfg, err := src.load()
			if err != nil {
				return err
			}
			log, level, err := newLeveledLogger(cmd.ErrOrStderr(), logLevel, logFormat)
			if err != nil {
				return err
			}
			if cfg.Dev && cfg.BootstrapToken == "" {
				// A throwaway node: make its operator token up here, to
				// show it with the addresses below.
				if cfg.BootstrapToken, err = agent.NewToken(); err != nil {
					return err
				}
				src.devToken = cfg.BootstrapToken
			}
			deps := agent.Deps{Logger: log, Version: version, BootstrapOut: cmd.ErrOrStderr()}
			if clockOffset != 0 {
				log.Warn("--dev-clock-offset: this agent's clock is faked, for tests only", "offset", clockOffset)
				deps.Now = func() time.Time { return time.Now().Add(clockOffset) }
			}
			a, err := agent.New(cfg, deps)
			if err != nil {
				return err
			}
			// SIGHUP is caught from the start (its default would end the
			// process); a reload waits until the agent runs.
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			term := make(chan os.Signal, 2)
			signal.Notify(term, os.Interrupt, syscall.SIGTERM)
			defer signal.Stop(term)
			startCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			go func() {
				// A stop signal during start-up ends it.
				select {
				case s := <-term:
					cancel()
					term <- s // for the loop below, should Start succeed
				case <-startCtx.Done():
				}
			}()
			err = a.Start(startCtx)
			cancel()
			if err != nil {
				return err
			}
			if cfg.Dev {
				fmt.Fprintf(cmd.OutOrStdout(), `
loadmesh dev agent %q is running (a throwaway node; its data is deleted on exit).
  send requests to:  http://%s/
  status API:        http://%s/v1/status   (or: loadmesh status --api http://%s)
  metrics:           http://%s/metrics
  operator token:    %s   (export LOADMESH_TOKEN=... for plan, drain and token commands)
Press Ctrl-C to stop.
`, cfg.Name, a.HTTPAddr(), a.APIAddr(), a.APIAddr(), a.APIAddr(), cfg.BootstrapToken)
			}
			r := &reloader{src: src, a: a, log: log, level: level, format: logFormat}
			var sig os.Signal
			for sig == nil {
				select {
				case sig = <-term:
				case <-hup:
					r.reload()
				case err := <-a.Failed():
					a.Kill()
					if errors.Is(err, cluster.ErrForeignCluster) {
						err = fmt.Errorf("%w (--data-dir %s)", err, cfg.DataDir)
					}
					return err
				}
			}
			return shutdownAgent(a, log, cfg, sig, term, hup)
		},
	}
	f := cmd.Flags()
	f.SortFlags = false
	f.StringVar(&configFile, "config", "", "YAML config file whose keys are these flag names")
	f.StringVar(&cfg.Name, "name", "", "node name, unique in the cluster (default: hostname)")
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for the Raft log, stable store and snapshots")
	f.StringVar(&cfg.Zone, "zone", cfg.Zone, "availability zone label")
	f.StringSliceVar(&cfg.Tags, "tag", cfg.Tags, "node tag key=value, repeatable (cost_per_hour, spot, carbon_region, power_watts, or your own)")
	f.StringArrayVar(&cfg.Services, "service", cfg.Services, "TCP passthrough service, repeatable: name=NAME,mode=tcp[,listen=IP:PORT][,backend=IP:PORT][,health=tcp://IP:PORT|http://URL|none][,proxy_protocol=v2][,balance=least-conn|consistent-hash|round-robin|random][,connect_timeout=5s][,idle_timeout=10m][,max_conns=N][,max_conns_per_client=N][,rate=N][,burst=N]")
	f.StringVar(&cfg.Gossip, "gossip", cfg.Gossip, "gossip (memberlist) bind address IP:PORT")
	f.StringVar(&cfg.Advertise, "advertise", "", "IP peers use to reach this node, when the bind address is not reachable")
	f.StringVar(&cfg.Raft, "raft", cfg.Raft, "Raft transport bind address IP:PORT")
	f.StringVar(&cfg.Peer, "peer", cfg.Peer, "UDP address for QUIC peer proxying IP:PORT")
	f.StringVar(&cfg.HTTP, "http", cfg.HTTP, "client ingress address IP:PORT")
	f.StringVar(&cfg.API, "api", cfg.API, "status API and /metrics address IP:PORT")
	f.StringVar(&cfg.Backend, "backend", "", "URL of the local service this node fronts (empty: ingress only)")
	f.IntVar(&cfg.Capacity, "capacity", cfg.Capacity, "concurrent requests the backend is sized for")
	f.StringSliceVar(&cfg.Join, "join", nil, "seed gossip address host[:port] (repeatable or comma-separated)")
	f.IntVar(&cfg.BootstrapExpect, "bootstrap-expect", 0, "form the first Raft configuration once this many agents see each other")
	f.IntVar(&cfg.MaxVoters, "max-voters", cfg.MaxVoters, "Raft voters at most; further members join as non-voters")
	f.BoolVar(&cfg.NonVoter, "non-voter", false, "never a Raft voter, so never the leader (default for a node that joined with a join token and has no --tls-ca-key)")
	f.DurationVar(&cfg.DeadServerGrace, "dead-server-grace", cfg.DeadServerGrace, "remove a dead member from Raft after this long")
	f.DurationVar(&cfg.LeftNodeRetention, "left-node-retention", cfg.LeftNodeRetention, "keep a departed node's plan entry (state, tags) this long for its return")
	f.StringVar(&cfg.Encrypt, "encrypt", "", "gossip encryption key (base64, from loadmesh keygen)")
	f.StringVar(&cfg.TLSCA, "tls-ca", "", "cluster CA certificate (PEM) for mutual TLS between nodes; a bundle of several is all trusted (CA rotation: loadmesh tls ca bundle)")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "this node's certificate (PEM), from loadmesh tls cert create")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "this node's private key (PEM)")
	f.StringVar(&cfg.HTTPTLSCert, "http-tls-cert", "", "certificate (PEM) to terminate TLS at the ingress (enables HTTP/2 and HTTP/3)")
	f.StringVar(&cfg.HTTPTLSKey, "http-tls-key", "", "private key (PEM) for --http-tls-cert")
	f.StringVar(&cfg.APITLSCert, "api-tls-cert", "", "certificate (PEM) to serve the API over HTTPS; it must name the --advertise IP for writes carried between nodes")
	f.StringVar(&cfg.APITLSKey, "api-tls-key", "", "private key (PEM) for --api-tls-cert")
	f.StringVar(&cfg.BootstrapToken, "bootstrap-token", "", "the cluster's first operator API token (from loadmesh token generate); default: made up by the first leader and printed once")
	f.StringVar(&cfg.TLSCAKey, "tls-ca-key", "", "private key (PEM) of --tls-ca: this server signs the certificates of nodes joining with a join token (give it to the voters)")
	f.DurationVar(&cfg.CertTTL, "cert-ttl", cfg.CertTTL, "lifetime of the node certificates this server signs as leader (they renew themselves when a third is left)")
	f.StringVar(&cfg.JoinToken, "join-token", "", "join token (loadmesh token create --role join): without --tls-cert, request this node's certificate from the cluster with it")
	f.StringVar(&cfg.JoinTokenFile, "join-token-file", "", "file holding the join token (keeps it out of ps)")
	f.StringSliceVar(&cfg.JoinServers, "join-server", nil, "peer address host:port to request the certificate from (repeatable; default: each --join host at port 7947)")
	f.DurationVar(&cfg.DialTimeout, "dial-timeout", cfg.DialTimeout, "timeout to connect to a peer or the backend")
	f.DurationVar(&cfg.RequestHeaderTimeout, "request-header-timeout", cfg.RequestHeaderTimeout, "time a client has to send its request headers")
	f.DurationVar(&cfg.IdleTimeout, "idle-timeout", cfg.IdleTimeout, "close idle client and peer connections after this long")
	f.DurationVar(&cfg.PeerTimeout, "peer-timeout", cfg.PeerTimeout, "a peer connection silent this long (keep-alives included) is closed and its requests retried elsewhere")
	f.DurationVar(&cfg.UpstreamTimeout, "upstream-timeout", cfg.UpstreamTimeout, "overall limit for a request to a backend or peer, body included (0: none)")
	f.StringVar(&cfg.Policy, "policy", cfg.Policy, "where requests go: "+strings.Join(scheduler.PolicyNames(), ", "))
	f.StringVar(&cfg.HashHeader, "hash-header", "", "request header whose value is the consistent-hash key")
	f.StringVar(&cfg.HashCookie, "hash-cookie", "", "cookie whose value is the consistent-hash key")
	f.StringVar(&cfg.HealthPath, "health-path", cfg.HealthPath, `path checked on the backend with GET; any answer below 500 is healthy ("" turns checks off)`)
	f.DurationVar(&cfg.HealthInterval, "health-interval", cfg.HealthInterval, "time between backend health checks")
	f.DurationVar(&cfg.HealthTimeout, "health-timeout", cfg.HealthTimeout, "timeout of one health check")
	f.IntVar(&cfg.HealthRise, "health-rise", cfg.HealthRise, "consecutive passes that make the backend healthy")
	f.IntVar(&cfg.HealthFall, "health-fall", cfg.HealthFall, "consecutive failures that make the backend unhealthy")
	f.DurationVar(&cfg.LoadInterval, "load-interval", cfg.LoadInterval, "how often this node gossips its load summary")
	f.DurationVar(&cfg.DrainTimeout, "drain-timeout", cfg.DrainTimeout, "longest wait for a draining node's in-flight requests (also when shutting down)")
	f.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", cfg.ShutdownGrace, "on SIGTERM, keep accepting this long after announcing the departure, for clients and peers that picked this node before they heard")
	f.Float64Var(&cfg.RateLimit, "rate-limit", 0, "requests per second allowed per client key (0: no rate limit); over it: 429 with Retry-After")
	f.IntVar(&cfg.RateBurst, "rate-burst", 0, "requests a client key may send at once (default: --rate-limit rounded up)")
	f.StringVar(&cfg.RateLimitKey, "rate-limit-key", cfg.RateLimitKey, "client key: ip, or header:NAME (requests without the header count by IP)")
	f.StringVar(&cfg.RateLimitScope, "rate-limit-scope", cfg.RateLimitScope, "cluster: the nodes share each key's allowance through gossip; node: each node allows it")
	f.IntVar(&cfg.RateLimitMaxKeys, "rate-limit-max-keys", cfg.RateLimitMaxKeys, "client keys tracked at most (least recently used dropped beyond)")
	f.IntVar(&cfg.MaxHeaderBytes, "max-header-bytes", cfg.MaxHeaderBytes, "largest request header in bytes (431 beyond)")
	f.Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", cfg.MaxBodyBytes, "largest request body in bytes (413 beyond; 0: no limit)")
	f.IntVar(&cfg.MaxConns, "max-conns", cfg.MaxConns, "open client connections at most (0: no limit); more are closed at once")
	f.IntVar(&cfg.MaxConnsPerClient, "max-conns-per-client", 0, "open connections per client IP at most (0: no limit)")
	f.DurationVar(&cfg.ReadTimeout, "read-timeout", cfg.ReadTimeout, "time a client has to send its request body (408 beyond; 0: none)")
	f.DurationVar(&cfg.WriteTimeout, "write-timeout", cfg.WriteTimeout, "longest time from a request's headers to the end of its answer (0: none); at least --upstream-timeout")
	f.IntVar(&cfg.MaxInflight, "max-inflight", 0, "requests the backend serves at once at most, from this node and its peers (default: twice --capacity)")
	f.IntVar(&cfg.MaxQueue, "max-queue", cfg.MaxQueue, "requests that may wait for the backend beyond --max-inflight; more are shed with 503")
	f.DurationVar(&cfg.QueueTarget, "queue-target", cfg.QueueTarget, "longest wait in a standing queue before a request is shed (CoDel target)")
	f.DurationVar(&cfg.QueueInterval, "queue-interval", cfg.QueueInterval, "longest wait in a queue that empties now and then; a queue not empty this long is standing")
	f.DurationVar(&cfg.SnapshotInterval, "snapshot-interval", 0, "write a snapshot file of the replicated state every this long (0: off; at least 1s); every node writes its own")
	f.IntVar(&cfg.SnapshotRetain, "snapshot-retain", cfg.SnapshotRetain, "scheduled snapshot files to keep (the newest)")
	f.StringVar(&cfg.SnapshotDir, "snapshot-dir", "", "directory for scheduled snapshot files (default: DATA_DIR/backups)")
	f.StringArrayVar(&cfg.Cache, "cache", nil, "cache GET/HEAD answers under this path prefix (/api/) or host and path (example.org/api/), repeatable; none: the response cache is off")
	f.Var(byteSize{&cfg.CacheSize}, "cache-size", "memory for cached responses on this node (bytes, or with a unit: 512MiB, 1GiB); admission and eviction by W-TinyLFU")
	f.BoolVar(&cfg.CacheOwnerLookup, "cache-owner-lookup", cfg.CacheOwnerLookup, "ask the owner node of a key (consistent hashing over the active nodes) on a miss, so the cluster is one cache; false: each node caches alone")
	f.BoolVar(&cfg.Dev, "dev", false, "throwaway single node: temporary data dir, built-in demo backend, loopback addresses")
	f.StringVar(&logLevel, "log-level", "info", "trace, debug, info, warn or error")
	f.StringVar(&logFormat, "log-format", "text", "text or json")
	// Hidden: a test bed's way to run a host whose clock is off
	// (test/netns); see agent.Deps.Now for what it shifts.
	f.DurationVar(&clockOffset, "dev-clock-offset", 0, "for tests only: shift this agent's wall clock by this much (e.g. 90s, -90s) in what it stamps and gossips; TLS handshakes keep the real clock")
	_ = f.MarkHidden("dev-clock-offset")
	return cmd
}

// shutdownAgent stops the agent gracefully after the first SIGTERM or
// SIGINT; a second one stops it at once. It exits 0 after a graceful
// stop, even one that was not entirely clean (logged), and 1 after a
// forced one.
func shutdownAgent(a *agent.Agent, log *slog.Logger, cfg agent.Config, sig os.Signal, term, hup <-chan os.Signal) error {
	grace := a.ShutdownGrace()
	log.Info("signal received: shutting down gracefully (send it again to stop at once)", "signal", sig.String(),
		"shutdown_grace", grace, "drain_timeout", cfg.DrainTimeout)
	// A fixed overall bound, so that a stuck step cannot hold the process.
	ctx, cancel := context.WithTimeout(context.Background(), grace+cfg.DrainTimeout+30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Shutdown(ctx) }()
	forced := false
	for {
		select {
		case err := <-done:
			if forced {
				return &exitError{code: 1, err: errors.New("stopped at once by a second signal; requests still in flight were cut")}
			}
			if err != nil {
				log.Warn("shutdown was not clean", "error", oneLine(err))
			}
			return nil
		case s := <-term:
			if !forced {
				forced = true
				log.Warn("second signal: stopping at once", "signal", s.String())
				cancel()
			}
		case <-hup:
			log.Info("reload ignored: shutting down")
		}
	}
}

func setDevAddr(cfg *agent.Config, flag, addr string) {
	switch flag {
	case "gossip":
		cfg.Gossip = addr
	case "raft":
		cfg.Raft = addr
	case "peer":
		cfg.Peer = addr
	case "http":
		cfg.HTTP = addr
	case "api":
		cfg.API = addr
	}
}
