package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"
)

// Config holds the cluster's tunables. Start from DefaultConfig.
type Config struct {
	// NodeName identifies the node in gossip and in Raft (its server ID).
	// Required; at most 128 bytes.
	NodeName string
	// Zone is the availability-zone label gossiped with the node.
	Zone string
	// Tags are node tags gossiped with the node and kept in the plan.
	Tags map[string]string

	// GossipAddr is the memberlist bind address, IP:PORT. Port 0 picks one.
	// Default 0.0.0.0:7946.
	GossipAddr string
	// RaftAddr is the Raft transport bind address, IP:PORT. Default :7948.
	RaftAddr string
	// AdvertiseIP is the address peers use to reach this node. Empty means:
	// the gossip bind IP when it is specific, else the first private IP.
	AdvertiseIP string

	// Addrs are this node's other service addresses (already advertised
	// form), carried in gossip metadata so any node can reach them.
	HTTPAddr, PeerAddr, APIAddr string
	// Serving is gossiped so peers know this node can take forwarded
	// requests (it has a backend).
	Serving bool

	// Join lists seed gossip addresses (host:port; port defaults to 7946).
	Join []string
	// LookupHost resolves DNS names among the Join seeds; nil means the
	// system resolver. Tests replace it.
	LookupHost func(ctx context.Context, host string) ([]string, error)
	// RetryJoinMin and RetryJoinMax bound the join backoff. Defaults 500ms and 30s.
	RetryJoinMin, RetryJoinMax time.Duration

	// BootstrapExpect makes the first Raft configuration once this many
	// agents with the same setting see each other. 0 with no Join means a
	// single-node cluster bootstraps itself.
	BootstrapExpect int
	// NonVoter keeps this node out of the Raft voters (and so out of
	// leadership): the leader adds it as a non-voter and never promotes it.
	NonVoter bool
	// MaxVoters caps Raft voters; further members join as non-voters.
	// Default 5; range 1..9 (odd numbers recommended).
	MaxVoters int
	// DeadServerGrace is how long a member must be dead (or unknown to
	// gossip) before the leader removes it from Raft. Default 30s.
	DeadServerGrace time.Duration
	// LeftNodeRetention is how long the plan keeps the entry (state,
	// tags) of a node that left or died, so that it returns to them when
	// it comes back; after it the entry is removed.
	LeftNodeRetention time.Duration
	// DrainTimeout bounds how long a node stays draining before the leader
	// moves it to standby even with requests still in flight. Default 30s.
	DrainTimeout time.Duration
	// ReconcileInterval is how often the leader reconciles membership with
	// the Raft configuration even without events. Default 2s.
	ReconcileInterval time.Duration

	// Gossip timers (memberlist). Defaults follow memberlist's LAN profile,
	// with a 5s push-pull interval for faster convergence.
	GossipInterval   time.Duration
	ProbeInterval    time.Duration
	ProbeTimeout     time.Duration
	SuspicionMult    int
	PushPullInterval time.Duration

	// Raft timers. Defaults 500ms/500ms/250ms: measured on 2-core machines,
	// going lower risks spurious elections under GC or CPU stalls.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration

	// GossipKey enables memberlist encryption (16, 24 or 32 bytes). Empty
	// means gossip in the clear.
	GossipKey []byte
	// GossipKeys are further keys of the gossip keyring (tried on what is
	// received, never used to send), e.g. from the keyring file; only with
	// GossipKey.
	GossipKeys [][]byte
	// RetryKeyMismatch keeps retrying a first join that fails on the
	// gossip key instead of failing: a node that missed a key rotation
	// while it was down catches up with the keyring through Raft, then
	// joins.
	RetryKeyMismatch bool
}

// DefaultConfig returns production defaults; NodeName must still be set.
func DefaultConfig() Config {
	return Config{
		Zone:               "default",
		GossipAddr:         "0.0.0.0:7946",
		RaftAddr:           ":7948",
		RetryJoinMin:       500 * time.Millisecond,
		RetryJoinMax:       30 * time.Second,
		MaxVoters:          5,
		DeadServerGrace:    30 * time.Second,
		LeftNodeRetention:  72 * time.Hour,
		DrainTimeout:       30 * time.Second,
		ReconcileInterval:  2 * time.Second,
		GossipInterval:     200 * time.Millisecond,
		ProbeInterval:      time.Second,
		ProbeTimeout:       500 * time.Millisecond,
		SuspicionMult:      4,
		PushPullInterval:   5 * time.Second,
		HeartbeatTimeout:   500 * time.Millisecond,
		ElectionTimeout:    500 * time.Millisecond,
		LeaderLeaseTimeout: 250 * time.Millisecond,
	}
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.NodeName == "" {
		add("node name is empty")
	} else if len(c.NodeName) > 128 {
		add("node name %q is longer than 128 bytes", c.NodeName)
	}
	if _, _, err := splitHostPort(c.GossipAddr); err != nil {
		add("gossip address %q: %v", c.GossipAddr, err)
	}
	if _, _, err := splitHostPort(c.RaftAddr); err != nil {
		add("raft address %q: %v", c.RaftAddr, err)
	}
	if c.AdvertiseIP != "" && net.ParseIP(c.AdvertiseIP) == nil {
		add("advertise address %q is not an IP address", c.AdvertiseIP)
	}
	for _, j := range c.Join {
		if err := ValidateJoinAddr(j); err != nil {
			errs = append(errs, err)
		}
	}
	if c.BootstrapExpect < 0 {
		add("bootstrap-expect %d is negative", c.BootstrapExpect)
	}
	if c.MaxVoters < 1 || c.MaxVoters > 9 {
		add("max voters %d is outside 1..9", c.MaxVoters)
	}
	if c.LeftNodeRetention <= 0 {
		add("left node retention %s must be positive", c.LeftNodeRetention)
	}
	if c.DeadServerGrace <= 0 {
		add("dead server grace %s must be positive", c.DeadServerGrace)
	}
	if c.DrainTimeout <= 0 {
		add("drain timeout %s must be positive", c.DrainTimeout)
	}
	if c.ReconcileInterval <= 0 {
		add("reconcile interval %s must be positive", c.ReconcileInterval)
	}
	if c.RetryJoinMin <= 0 || c.RetryJoinMax < c.RetryJoinMin {
		add("retry join backoff %s..%s is invalid", c.RetryJoinMin, c.RetryJoinMax)
	}
	if c.ProbeTimeout >= c.ProbeInterval {
		add("probe timeout %s must be below probe interval %s", c.ProbeTimeout, c.ProbeInterval)
	}
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		add("leader lease timeout %s cannot exceed heartbeat timeout %s", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	}
	switch len(c.GossipKey) {
	case 0, 16, 24, 32:
	default:
		add("gossip key is %d bytes; want 16, 24 or 32", len(c.GossipKey))
	}
	for _, k := range c.GossipKeys {
		switch {
		case len(c.GossipKey) == 0:
			add("gossip keys are set without a primary gossip key")
		case len(k) != 16 && len(k) != 24 && len(k) != 32:
			add("a gossip keyring key is %d bytes; want 16, 24 or 32", len(k))
		}
	}
	return errors.Join(errs...)
}

// ValidateJoinAddr checks a seed address: host[:port] with a valid port.
func ValidateJoinAddr(addr string) error {
	if addr == "" {
		return errors.New("join address is empty")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		// A bare host is fine; the default gossip port is used.
		var ae *net.AddrError
		if errors.As(err, &ae) && ae.Err == "missing port in address" {
			host, port = addr, "7946"
		} else {
			return fmt.Errorf("join address %q: %v", addr, err)
		}
	}
	if host == "" {
		return fmt.Errorf("join address %q: missing host", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("join address %q: port %q is not in 1..65535", addr, port)
	}
	return nil
}

func splitHostPort(addr string) (net.IP, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, 0, err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, 0, fmt.Errorf("port %q is not in 0..65535", portStr)
	}
	var ip net.IP
	if host != "" {
		if ip = net.ParseIP(host); ip == nil {
			return nil, 0, fmt.Errorf("host %q is not an IP address", host)
		}
	}
	return ip, port, nil
}
