package agent

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/store"
	"github.com/loadmesh/loadmesh/transport"
)

// Join tokens and issued node certificates.
const (
	// DefaultCertTTL is the lifetime of node certificates the leader
	// signs (--cert-ttl).
	DefaultCertTTL = 30 * 24 * time.Hour
	// minCertTTL is the shortest --cert-ttl, for tests.
	minCertTTL = time.Minute
	// DefaultJoinTokenTTL is a join token's lifetime when none is given.
	DefaultJoinTokenTTL = time.Hour
	// maxJoinTokenTTL bounds a join token's lifetime.
	maxJoinTokenTTL = 24 * time.Hour
	// defaultPeerPort is the peer port a --join seed's host is assumed to
	// serve the join protocol on when --join-server is not given.
	defaultPeerPort = "7947"
	// joinForwardTimeout bounds carrying a join request to the leader.
	joinForwardTimeout = 15 * time.Second
)

// Failed join attempts are limited per source IP: a burst of
// joinFailBurst, then one per joinFailEvery.
const (
	joinFailBurst    = 5
	joinFailEvery    = 10 * time.Second
	joinLimiterLimit = 10_000
)

// joinLimiter counts failed join attempts per source IP.
type joinLimiter struct {
	mu  sync.Mutex
	ips map[string]*rate.Limiter
}

func (l *joinLimiter) get(ip string) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ips == nil || len(l.ips) >= joinLimiterLimit {
		l.ips = map[string]*rate.Limiter{} // forget everyone rather than grow without bound
	}
	lim, ok := l.ips[ip]
	if !ok {
		lim = rate.NewLimiter(rate.Every(joinFailEvery), joinFailBurst)
		l.ips[ip] = lim
	}
	return lim
}

// blocked reports whether ip has used up its failed attempts.
func (l *joinLimiter) blocked(ip string) bool { return l.get(ip).Tokens() < 1 }

// failed spends one failed attempt of ip.
func (l *joinLimiter) failed(ip string) { l.get(ip).Allow() }

// handleJoin answers a join or renewal request that arrived on this
// node's peer port (transport.JoinHandler). The leader decides; a
// follower carries a token request to the leader.
func (a *Agent) handleJoin(ctx context.Context, call transport.JoinCall) transport.JoinResponse {
	req := call.Request
	source := hostOf(call.Remote)
	// Only a cluster node may carry a request on someone else's behalf,
	// and only in its own name.
	forwarded := req.ForwardedBy != "" && req.ForwardedBy == call.Peer
	if forwarded {
		source = req.Source
	} else {
		req.ForwardedBy, req.Source = "", ""
	}
	if !forwarded && a.joinLimit.blocked(source) {
		a.log.Warn("join refused", "addr", source, "reason", "too many failed attempts")
		return transport.JoinResponse{Error: fmt.Sprintf("too many failed join attempts from %s; try again in a minute", source)}
	}
	resp := a.answerJoin(ctx, call.Peer, req, forwarded, source)
	if resp.Error != "" {
		if !forwarded && !resp.Retry {
			a.joinLimit.failed(source)
		}
		a.log.Warn("join refused", "node", req.Node, "addr", source, "via", req.ForwardedBy, "error", resp.Error)
	}
	return resp
}

func hostOf(addr net.Addr) string {
	if addr == nil {
		return "unknown"
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	return host
}

func refuse(format string, args ...any) transport.JoinResponse {
	return transport.JoinResponse{Error: fmt.Sprintf(format, args...)}
}

// refuseRetry is a refusal that may pass later.
func refuseRetry(format string, args ...any) transport.JoinResponse {
	return transport.JoinResponse{Error: fmt.Sprintf(format, args...), Retry: true}
}

func (a *Agent) answerJoin(ctx context.Context, peer string, req transport.JoinRequest, forwarded bool, source string) transport.JoinResponse {
	c := a.liveCluster.Load()
	if c == nil {
		return refuseRetry("server %s is still starting; try again", a.cfg.Name)
	}
	renewal := req.Token == ""
	if renewal && (peer == "" || forwarded) {
		return refuse("no join token: a new node needs one (loadmesh token create --role join), a renewal the node's own certificate")
	}
	if !c.IsLeader() {
		leader := c.Leader()
		if renewal || forwarded {
			return refuseRetry("server %s is not the leader (leader: %q); try again", a.cfg.Name, leader)
		}
		return a.forwardJoin(ctx, c, req, source)
	}
	if err := validateName(req.Node); err != nil {
		return refuse("node name: %v", err)
	}
	if renewal && req.Node != peer {
		return refuse("node %q may renew only its own certificate, not %q's", peer, req.Node)
	}
	csr, err := transport.ParseNodeCSR([]byte(req.CSR))
	if err != nil {
		return refuse("%v", err)
	}
	var tok store.Token
	if !renewal {
		var msg string
		if tok, msg = a.checkJoinToken(req.Token); msg != "" {
			return refuse("join token refused: %s", msg)
		}
		if m, ok := c.Member(req.Node); ok && (m.Status == cluster.StatusAlive || m.Status == cluster.StatusSuspect) {
			return refuse("node name %q is in use by a live member; give the new node another --name", req.Node)
		}
	}
	if a.nodeRevoked(req.Node) {
		return refuse("node %q is revoked; it gets no certificate", req.Node)
	}
	signer, err := a.caSigner()
	if err != nil {
		return refuse("%v", err)
	}

	// Record the issuance through Raft first (for a join, spending the
	// token's use cluster-wide), then sign: nothing is signed for a token
	// the cluster refused.
	serial, err := transport.NewSerial()
	if err != nil {
		return refuse("%v", err)
	}
	ttl := a.cfg.CertTTL
	if ttl <= 0 {
		ttl = DefaultCertTTL
	}
	now := a.now().UTC()
	expires := time.Now().Add(ttl)
	if expires.After(signer.Cert.NotAfter) {
		expires = signer.Cert.NotAfter
	}
	issued := fmt.Sprintf("node certificate serial=%s expires=%s", serial.Text(16), expires.UTC().Format(time.RFC3339))
	via := "from " + source
	if forwarded {
		via = fmt.Sprintf("from %s via %s", source, req.ForwardedBy)
	}
	cmd := store.Command{Op: store.OpTokenUse, Token: &store.Token{Name: tok.Name}, Node: req.Node, Time: now,
		Who: tok.Name, Why: "node certificate issued to a joining node " + via, After: issued}
	if renewal {
		cmd = store.Command{Op: store.OpRecord, Kind: "cert.renew", Node: req.Node, Time: now, Who: req.Node,
			Why: "node certificate renewed " + via, After: issued}
	}
	if _, err := a.apply(cmd); err != nil {
		switch {
		case errors.Is(err, store.ErrTokenUsedUp), errors.Is(err, store.ErrTokenExpired),
			errors.Is(err, store.ErrTokenWrongRole), errors.Is(err, store.ErrUnknownToken):
			return refuse("join token refused: %v", err)
		}
		if errors.Is(err, cluster.ErrNotLeader) {
			return refuseRetry("leadership moved while recording the issuance; try again")
		}
		return refuse("record the issuance: %v", err)
	}
	certPEM, _, err := signer.SignNodeCSR(csr, req.Node, ttl, serial)
	if err != nil {
		return refuse("%v", err)
	}
	a.log.Info("node certificate issued", "node", req.Node, "serial", serial.Text(16), "expires", expires.UTC(),
		"renewal", renewal, "addr", source, "via", req.ForwardedBy)
	return a.joinAnswer(c, certPEM)
}

// checkJoinToken checks a presented join token against the local replica
// (the leader's, which is current): it returns the token, or why it is
// refused. The secret is compared in constant time.
func (a *Agent) checkJoinToken(s string) (store.Token, string) {
	tok, id, match, err := checkTokenSecret(a.fsm, s)
	if err != nil {
		return store.Token{}, err.Error()
	}
	switch {
	case match == tokenUnknown:
		return tok, fmt.Sprintf("no token with id %s (unknown or revoked)", id)
	case match == tokenWrongSecret:
		return tok, fmt.Sprintf("wrong secret for token id %s", id)
	case tok.Role != store.RoleJoin:
		return tok, fmt.Sprintf("token %q has role %s, not join", tok.Name, tok.Role)
	case tok.Expired(a.now()):
		return tok, fmt.Sprintf("token %q expired at %s", tok.Name, tok.Expires.UTC().Format(time.RFC3339))
	case tok.UsesLeft() == 0:
		return tok, fmt.Sprintf("token %q is used up (%d of %d uses)", tok.Name, tok.Used, tok.Uses)
	}
	return tok, ""
}

// caSigner loads the CA that signs node certificates from --tls-ca and
// --tls-ca-key. It reads the files at every issuance, so a replaced key
// takes effect without a restart (and SIGHUP needs to do nothing).
func (a *Agent) caSigner() (*transport.CA, error) {
	if a.cfg.TLSCAKey == "" || a.cfg.TLSCA == "" {
		return nil, fmt.Errorf("leader %s holds no CA key (--tls-ca-key); start the servers that may sign node certificates with --tls-ca-key", a.cfg.Name)
	}
	ca, err := transport.LoadCA(a.cfg.TLSCA, a.cfg.TLSCAKey)
	if err != nil {
		return nil, fmt.Errorf("leader %s cannot sign: %w", a.cfg.Name, err)
	}
	return ca, nil
}

// joinAnswer is a successful answer: the certificate and what the node
// needs to join the cluster.
func (a *Agent) joinAnswer(c *cluster.Cluster, certPEM []byte) transport.JoinResponse {
	resp := transport.JoinResponse{Cert: string(certPEM), ClusterID: c.ClusterID(), Signer: a.cfg.Name}
	if b, err := os.ReadFile(a.cfg.TLSCA); err == nil {
		resp.CABundle = string(b)
	}
	for _, k := range a.joinGossipKeys() {
		resp.GossipKeys = append(resp.GossipKeys, base64.StdEncoding.EncodeToString(k))
	}
	for _, m := range c.Members() {
		if m.Status == cluster.StatusAlive && m.Addresses.Gossip != "" {
			resp.Seeds = append(resp.Seeds, m.Addresses.Gossip)
		}
	}
	return resp
}

// forwardJoin carries a token request to the leader's peer port over this
// node's own mutual-TLS identity; the leader checks the token itself.
func (a *Agent) forwardJoin(ctx context.Context, c *cluster.Cluster, req transport.JoinRequest, source string) transport.JoinResponse {
	leader := c.Leader()
	m, ok := c.Member(leader)
	if leader == "" || !ok || m.Addresses.Peer == "" {
		return refuseRetry("no raft leader known to server %s; try again when the cluster has one", a.cfg.Name)
	}
	req.ForwardedBy, req.Source = a.cfg.Name, source
	ctx, cancel := context.WithTimeout(ctx, joinForwardTimeout)
	defer cancel()
	resp, err := transport.RequestJoin(ctx, m.Addresses.Peer, a.mtls.ClientConfig(leader), req)
	if err != nil && !transport.IsJoinRefusal(err) {
		return refuseRetry("server %s cannot reach the leader %s at %s: %v", a.cfg.Name, leader, m.Addresses.Peer, err)
	}
	return resp
}
