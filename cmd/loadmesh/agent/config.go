package agent

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/scheduler/autoscale"
	"github.com/loadmesh/loadmesh/transport"
)

// Config is everything `loadmesh agent` can be told, as plain values. The
// command line, LOADMESH_* variables and --config files all fill this.
type Config struct {
	Name    string `yaml:"name"`
	DataDir string `yaml:"data-dir"`
	Zone    string `yaml:"zone"`
	// Tags are key=value node tags (cost_per_hour, spot, carbon_region,
	// power_watts, or anything else), gossiped and kept in the plan.
	Tags []string `yaml:"tag"`
	// Services are --service TCP passthrough services (ParseServiceSpec).
	Services        []string `yaml:"service"`
	Gossip          string   `yaml:"gossip"`
	Advertise       string   `yaml:"advertise"`
	Raft            string   `yaml:"raft"`
	Peer            string   `yaml:"peer"`
	HTTP            string   `yaml:"http"`
	API             string   `yaml:"api"`
	Backend         string   `yaml:"backend"`
	Capacity        int      `yaml:"capacity"`
	Join            []string `yaml:"join"`
	BootstrapExpect int      `yaml:"bootstrap-expect"`
	MaxVoters       int      `yaml:"max-voters"`
	// NonVoter keeps this node out of the Raft voters and so out of
	// leadership. A node that joins with a join token and holds no CA key
	// (--tls-ca-key) is a non-voter without it: only servers that can sign
	// certificates lead.
	NonVoter        bool          `yaml:"non-voter"`
	DeadServerGrace time.Duration `yaml:"dead-server-grace"`
	// LeftNodeRetention is how long the plan keeps a departed node's
	// entry for its return.
	LeftNodeRetention time.Duration `yaml:"left-node-retention"`
	// Encrypt is the base64 gossip encryption key (loadmesh keygen).
	Encrypt string `yaml:"encrypt"`
	// TLSCA, TLSCert and TLSKey are the cluster CA certificate and this
	// node's certificate and key (PEM files), used for mutual TLS on the
	// QUIC peer channel and on Raft. Required outside --dev.
	TLSCA   string `yaml:"tls-ca"`
	TLSCert string `yaml:"tls-cert"`
	TLSKey  string `yaml:"tls-key"`
	// HTTPTLSCert and HTTPTLSKey turn on TLS at the client ingress
	// (HTTP/1.1, HTTP/2 and HTTP/3).
	HTTPTLSCert string `yaml:"http-tls-cert"`
	HTTPTLSKey  string `yaml:"http-tls-key"`
	// APITLSCert and APITLSKey serve the status API over HTTPS.
	APITLSCert string `yaml:"api-tls-cert"`
	APITLSKey  string `yaml:"api-tls-key"`
	// BootstrapToken, when set, is the secret of the cluster's first
	// operator token (loadmesh token generate); else the leader that
	// bootstraps the cluster makes one up and prints it once.
	BootstrapToken string `yaml:"bootstrap-token"`

	// DialTimeout bounds dialling a peer or the backend.
	DialTimeout time.Duration `yaml:"dial-timeout"`
	// RequestHeaderTimeout bounds reading a client's request headers.
	RequestHeaderTimeout time.Duration `yaml:"request-header-timeout"`
	// IdleTimeout closes idle client and peer connections.
	IdleTimeout time.Duration `yaml:"idle-timeout"`
	// PeerTimeout is how long a peer connection may stay silent (keep-alives
	// included) before the peer is taken for gone.
	PeerTimeout time.Duration `yaml:"peer-timeout"`
	// UpstreamTimeout bounds a whole request to a backend or peer (0: none).
	UpstreamTimeout time.Duration `yaml:"upstream-timeout"`

	// Policy chooses where requests go: p2c-ewma, least-inflight,
	// weighted-round-robin, random or consistent-hash.
	Policy string `yaml:"policy"`
	// HashHeader and HashCookie name the consistent-hash key.
	HashHeader string `yaml:"hash-header"`
	HashCookie string `yaml:"hash-cookie"`
	// HealthPath is checked on the backend with GET ("" turns checks off).
	HealthPath     string        `yaml:"health-path"`
	HealthInterval time.Duration `yaml:"health-interval"`
	HealthTimeout  time.Duration `yaml:"health-timeout"`
	HealthRise     int           `yaml:"health-rise"`
	HealthFall     int           `yaml:"health-fall"`
	// LoadInterval is how often the node gossips its load summary.
	LoadInterval time.Duration `yaml:"load-interval"`
	// SeriesInterval is how often the node samples the cluster's figures
	// for the dashboard's last-hour chart (GET /v1/timeseries). Default
	// 10s; 100ms to 1m; 0 means the default. Not a flag: tests shorten it.
	SeriesInterval time.Duration `yaml:"-"`
	// CostInterval is how often the leader samples the plan for cost
	// accounting, CostRecordEvery how often it writes a cost record through
	// Raft (cost.go). Defaults 10s and 1m (also when 0). Not flags: tests
	// shorten them.
	CostInterval    time.Duration `yaml:"-"`
	CostRecordEvery time.Duration `yaml:"-"`
	// DrainTimeout bounds how long a draining node may take to finish its
	// in-flight requests before the leader moves it on, and how long a
	// node shutting down waits for its own.
	DrainTimeout time.Duration `yaml:"drain-timeout"`
	// ShutdownGrace is how long a node shutting down keeps accepting new
	// connections after announcing that it leaves, so that peers and
	// clients that picked it before they heard are still served.
	ShutdownGrace time.Duration `yaml:"shutdown-grace"`

	// Abuse protection at the ingress (limits.go). RateLimit is the
	// requests per second allowed per client key, 0 for none; RateBurst
	// the bucket size (0: RateLimit rounded up); RateLimitKey "ip" or
	// "header:NAME" (falling back to the IP); RateLimitScope "cluster"
	// (the nodes share each key's allowance through gossip) or "node".
	RateLimit        float64 `yaml:"rate-limit"`
	RateBurst        int     `yaml:"rate-burst"`
	RateLimitKey     string  `yaml:"rate-limit-key"`
	RateLimitScope   string  `yaml:"rate-limit-scope"`
	RateLimitMaxKeys int     `yaml:"rate-limit-max-keys"`
	// MaxHeaderBytes bounds a request's header (431 beyond); MaxBodyBytes
	// its body (413 beyond; 0: none).
	MaxHeaderBytes int   `yaml:"max-header-bytes"`
	MaxBodyBytes   int64 `yaml:"max-body-bytes"`
	// MaxConns and MaxConnsPerClient bound open client connections (0:
	// none); connections over a limit are closed at once.
	MaxConns          int `yaml:"max-conns"`
	MaxConnsPerClient int `yaml:"max-conns-per-client"`
	// ReadTimeout bounds receiving a request body (408 beyond; 0: none);
	// WriteTimeout bounds a request from its headers to the end of the
	// answer (http.Server.WriteTimeout; 0: none).
	ReadTimeout  time.Duration `yaml:"read-timeout"`
	WriteTimeout time.Duration `yaml:"write-timeout"`
	// MaxInflight bounds the requests the backend serves at once (0: twice
	// Capacity); MaxQueue how many more may wait, at most QueueInterval,
	// or QueueTarget once the queue stands; the rest are shed with 503.
	MaxInflight   int           `yaml:"max-inflight"`
	MaxQueue      int           `yaml:"max-queue"`
	QueueTarget   time.Duration `yaml:"queue-target"`
	QueueInterval time.Duration `yaml:"queue-interval"`

	// SnapshotInterval is how often this node writes a snapshot file of
	// its replica to SnapshotDir (0, the default: never; else at least
	// 1s); SnapshotRetain how many of its files it keeps there (newest
	// first; 1..10000, default 5); SnapshotDir defaults to DATA_DIR/backups.
	SnapshotInterval time.Duration `yaml:"snapshot-interval"`
	SnapshotRetain   int           `yaml:"snapshot-retain"`
	SnapshotDir      string        `yaml:"snapshot-dir"`

	// Dev runs a throwaway single node: temporary data dir and a built-in
	// demo backend.
	Dev bool `yaml:"dev"`

	// Cache lists the path prefixes ("/api/") or host-qualified prefixes
	// ("example.org/api/") whose GET and HEAD answers the response cache
	// keeps (none: the cache is off). CacheSize bounds its memory on this
	// node in bytes (default 64 MiB, at least 1 MiB); CacheOwnerLookup
	// (default true) sends a miss to the owner node of its key first,
	// false makes each node a cache of its own (cache.go).
	Cache            []string `yaml:"cache"`
	CacheSize        int64    `yaml:"cache-size"`
	CacheOwnerLookup bool     `yaml:"cache-owner-lookup"`
	// TLSCAKey is the private key (PEM) of the --tls-ca certificate that
	// signs the node certificates of joining nodes. Give it to the servers
	// that may sign (normally the voters); it never enters the replicated
	// state.
	TLSCAKey string `yaml:"tls-ca-key"`
	// CertTTL is the lifetime of the node certificates this node signs as
	// leader. Default 30 days; from 1m.
	CertTTL time.Duration `yaml:"cert-ttl"`
	// JoinToken (or the file JoinTokenFile) is a join token: a node with
	// --tls-ca but without --tls-cert requests its certificate with it
	// from JoinServers (peer-port addresses; default each --join host at
	// port 7947).
	JoinToken     string   `yaml:"join-token"`
	JoinTokenFile string   `yaml:"join-token-file"`
	JoinServers   []string `yaml:"join-server"`
}

// DefaultConfig returns the defaults documented in `loadmesh agent --help`.
func DefaultConfig() Config {
	return Config{
		Zone:              "default",
		Gossip:            "0.0.0.0:7946",
		Raft:              ":7948",
		Peer:              ":7947",
		HTTP:              ":8080",
		API:               "127.0.0.1:7950",
		Capacity:          64,
		MaxVoters:         5,
		DeadServerGrace:   30 * time.Second,
		LeftNodeRetention: 72 * time.Hour,

		DialTimeout:          5 * time.Second,
		RequestHeaderTimeout: 10 * time.Second,
		IdleTimeout:          2 * time.Minute,
		UpstreamTimeout:      5 * time.Minute,
		PeerTimeout:          3 * time.Second,

		Policy:         scheduler.DefaultPolicy,
		HealthPath:     "/",
		HealthInterval: time.Second,
		HealthTimeout:  500 * time.Millisecond,
		HealthRise:     2,
		HealthFall:     2,
		LoadInterval:   250 * time.Millisecond,
		SeriesInterval: 10 * time.Second,
		DrainTimeout:   30 * time.Second,
		ShutdownGrace:  2 * time.Second,

		RateLimitKey:     "ip",
		RateLimitScope:   "cluster",
		RateLimitMaxKeys: 100_000,
		MaxHeaderBytes:   1 << 20,
		MaxBodyBytes:     4 << 30,
		MaxConns:         10_000,
		ReadTimeout:      2 * time.Minute,
		WriteTimeout:     6 * time.Minute,
		MaxQueue:         64,
		QueueTarget:      5 * time.Millisecond,
		QueueInterval:    100 * time.Millisecond,

		SnapshotRetain: 5,

		CacheSize:        DefaultCacheSize,
		CacheOwnerLookup: true,
		CertTTL:          DefaultCertTTL,
	}
}

// DevAddresses are the loopback addresses --dev uses for any address not
// set explicitly.
var DevAddresses = map[string]string{
	"gossip": "127.0.0.1:7946",
	"raft":   "127.0.0.1:7948",
	"peer":   "127.0.0.1:7947",
	"http":   "127.0.0.1:8080",
	"api":    "127.0.0.1:7950",
}

// Validate reports every problem with c at once, one per line.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Name == "" {
		add("--name is empty")
	}
	if c.DataDir == "" && !c.Dev {
		add("--data-dir is required (or use --dev for a throwaway node)")
	}
	for flag, v := range map[string]string{"--gossip": c.Gossip, "--raft": c.Raft, "--peer": c.Peer, "--http": c.HTTP, "--api": c.API} {
		if err := validateListenAddr(v); err != nil {
			add("%s %q: %v", flag, v, err)
		}
	}
	if c.Advertise != "" && net.ParseIP(c.Advertise) == nil {
		add("--advertise %q is not an IP address", c.Advertise)
	}
	if c.Backend != "" {
		u, err := url.Parse(c.Backend)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("--backend %q is not an http:// or https:// URL", c.Backend)
		}
	}
	if c.Capacity < 1 {
		add("--capacity %d must be at least 1", c.Capacity)
	}
	if _, err := parseServices(c.Services); err != nil {
		errs = append(errs, err)
	}
	for _, j := range c.Join {
		if err := cluster.ValidateJoinAddr(j); err != nil {
			add("--join: %v", err)
		}
	}
	if tags, err := ParseTags(c.Tags); err != nil {
		add("%v", err)
	} else if svcs, err := parseServices(c.Services); err == nil {
		if err := checkMetaSize(c, tags, svcs); err != nil {
			add("%v", err)
		}
	}
	if c.BootstrapExpect < 0 {
		add("--bootstrap-expect %d is negative", c.BootstrapExpect)
	}
	if c.MaxVoters < 1 || c.MaxVoters > 9 {
		add("--max-voters %d is outside 1..9", c.MaxVoters)
	}
	if c.LeftNodeRetention < time.Second {
		add("--left-node-retention %s must be at least 1s", c.LeftNodeRetention)
	}
	if c.DeadServerGrace <= 0 {
		add("--dead-server-grace %s must be positive", c.DeadServerGrace)
	}
	errs = append(errs, c.validateJoin()...)
	if n := nonEmpty(c.HTTPTLSCert, c.HTTPTLSKey); n == 1 {
		add("--http-tls-cert and --http-tls-key go together")
	}
	if n := nonEmpty(c.APITLSCert, c.APITLSKey); n == 1 {
		add("--api-tls-cert and --api-tls-key go together")
	}
	if c.BootstrapToken != "" {
		if _, _, err := ParseToken(c.BootstrapToken); err != nil {
			add("--bootstrap-token: %v (create one with loadmesh token generate)", err)
		}
	}
	for flag, d := range map[string]time.Duration{"--dial-timeout": c.DialTimeout, "--request-header-timeout": c.RequestHeaderTimeout, "--idle-timeout": c.IdleTimeout} {
		if d <= 0 {
			add("%s %s must be positive", flag, d)
		}
	}
	if !slices.Contains(scheduler.PolicyNames(), c.Policy) {
		add("--policy %q: want one of %s", c.Policy, strings.Join(scheduler.PolicyNames(), ", "))
	}
	if c.Policy == "consistent-hash" && c.HashHeader == "" && c.HashCookie == "" {
		add("--policy consistent-hash needs --hash-header or --hash-cookie")
	}
	if c.HealthPath != "" {
		if c.HealthInterval <= 0 || c.HealthTimeout <= 0 || c.HealthTimeout >= c.HealthInterval {
			add("--health-timeout %s must be positive and below --health-interval %s", c.HealthTimeout, c.HealthInterval)
		}
		if c.HealthRise < 1 || c.HealthFall < 1 {
			add("--health-rise %d and --health-fall %d must be at least 1", c.HealthRise, c.HealthFall)
		}
	}
	if c.LoadInterval < 50*time.Millisecond || c.LoadInterval > time.Minute {
		add("--load-interval %s is outside 50ms..1m", c.LoadInterval)
	}
	if c.SeriesInterval != 0 && (c.SeriesInterval < 100*time.Millisecond || c.SeriesInterval > time.Minute) {
		add("SeriesInterval %s is outside 100ms..1m", c.SeriesInterval)
	}
	if c.CacheSize != 0 && c.CacheSize < 1<<20 {
		add("--cache-size %d bytes must be at least 1MiB", c.CacheSize)
	}
	for _, p := range c.Cache {
		if p == "" || strings.ContainsAny(p, " \t?#") || !strings.Contains(p, "/") {
			add("--cache %q: want a path prefix (/api/) or a host and path (example.org/api/)", p)
		}
	}
	if c.DrainTimeout <= 0 {
		add("--drain-timeout %s must be positive", c.DrainTimeout)
	}
	if c.ShutdownGrace < 0 || c.ShutdownGrace > 5*time.Minute {
		add("--shutdown-grace %s is outside 0..5m", c.ShutdownGrace)
	}
	if c.Dev && c.TLSCA == "" && (len(c.Join) > 0 || c.BootstrapExpect > 1) {
		add("--dev without --tls-* files uses a throwaway CA, so no other agent can join it: drop --join and --bootstrap-expect, or pass the cluster's --tls-ca, --tls-cert and --tls-key")
	}
	if c.PeerTimeout < time.Second || c.PeerTimeout > 10*time.Minute {
		add("--peer-timeout %s is outside 1s..10m", c.PeerTimeout)
	}
	if c.UpstreamTimeout < 0 {
		add("--upstream-timeout %s is negative", c.UpstreamTimeout)
	}
	if c.Encrypt != "" {
		if _, err := DecodeGossipKey(c.Encrypt); err != nil {
			add("--encrypt: %v", err)
		}
	}
	if c.SnapshotInterval != 0 && c.SnapshotInterval < time.Second {
		add("--snapshot-interval %s must be 0 (off) or at least 1s", c.SnapshotInterval)
	}
	if c.SnapshotRetain < 1 || c.SnapshotRetain > 10000 {
		add("--snapshot-retain %d is outside 1..10000", c.SnapshotRetain)
	}
	errs = append(errs, c.validateLimits()...)
	return errors.Join(errs...)
}

// DecodeGossipKey parses a base64 gossip key of 16, 24 or 32 bytes.
func DecodeGossipKey(s string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, errors.New("key is not valid base64 (create one with loadmesh keygen)")
	}
	switch len(k) {
	case 16, 24, 32:
		return k, nil
	}
	return nil, fmt.Errorf("key is %d bytes; want 16, 24 or 32 (create one with loadmesh keygen)", len(k))
}

func validateListenAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want IP:PORT")
	}
	if host != "" && net.ParseIP(host) == nil {
		return fmt.Errorf("%q is not an IP address", host)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("port %q is not in 0..65535", port)
	}
	return nil
}

func nonEmpty(s ...string) int {
	n := 0
	for _, x := range s {
		if x != "" {
			n++
		}
	}
	return n
}

// ErrNoTLS is returned outside --dev when no peer TLS files are given.
var ErrNoTLS = errors.New("mutual TLS between nodes is required: pass --tls-ca, --tls-cert and --tls-key " +
	"(create them with `loadmesh tls ca create` and `loadmesh tls cert create --node NAME`), or --tls-ca and a join token " +
	"(--join-token, from `loadmesh token create --role join`), or use --dev")

// ParseTags reads key=value node tags and checks them: keys are 1 to 32
// letters, digits, '_', '-' or '.'; values at most 64 bytes; at most 16
// tags and 256 bytes in all (they travel in every gossip message about the
// node). The autoscaler's own tags must hold valid values.
func ParseTags(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	tags := make(map[string]string, len(kvs))
	size := 0
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !validTagKey(k) || len(v) > 64 {
			return nil, fmt.Errorf("--tag %q: want key=value, the key 1 to 32 letters, digits, '_', '-' or '.', the value at most 64 bytes", kv)
		}
		if _, dup := tags[k]; dup {
			return nil, fmt.Errorf("--tag %q: %s given twice", kv, k)
		}
		tags[k] = v
		size += len(k) + len(v)
	}
	if len(tags) > 16 || size > 256 {
		return nil, fmt.Errorf("--tag: %d tags of %d bytes; at most 16 tags and 256 bytes", len(tags), size)
	}
	if _, err := autoscale.ParseNodeTags(tags); err != nil {
		return nil, fmt.Errorf("--tag: %v", err)
	}
	return tags, nil
}

func validTagKey(k string) bool {
	if k == "" || len(k) > 32 {
		return false
	}
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

// checkMetaSize refuses tags and services that, with the rest of the
// node's gossip metadata at its largest (the longest addresses of the
// family it uses, a full load summary, every service with a large open
// count), would not fit
// memberlist's 512 bytes: a node whose metadata cannot be published
// fails to start or, later, stops updating its load.
func checkMetaSize(c Config, tags map[string]string, svcs []transport.TCPServiceConfig) error {
	// The advertised addresses at their longest, in the family the node
	// binds or advertises.
	addr := "255.255.255.255:65535"
	for _, a := range []string{c.Advertise, c.Gossip, c.Peer, c.HTTP, c.API, c.Raft} {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			host = a
		}
		if strings.Contains(host, ":") {
			addr = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
		}
	}
	m := cluster.Meta{
		Zone: c.Zone, Tags: tags, HTTP: addr, Peer: addr, Raft: addr, API: addr,
		Serving: true, BootstrapExpect: c.BootstrapExpect, ClusterID: strings.Repeat("c", 32), NonVoter: true,
		Load: make([]byte, scheduler.MaxLoadSize), Leaving: true,
	}
	if len(svcs) > 0 {
		m.Services = cluster.ServiceMetas{}
		for _, s := range svcs {
			if s.Backend != "" {
				m.Services[s.Name] = cluster.ServiceMeta{Healthy: true, Open: 9_999_999}
			}
		}
	}
	if _, err := cluster.EncodeMeta(m); err != nil {
		return fmt.Errorf("--tag, --zone and --service together are too large for the node's gossip metadata (%v); use fewer or shorter tags", err)
	}
	return nil
}
