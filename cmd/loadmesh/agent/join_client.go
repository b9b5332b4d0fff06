package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/loadmesh/loadmesh/transport"
)

// Files of a node whose certificate the cluster issued (joined with a
// join token), in DATA_DIR/tls. The private key is made here and never
// leaves the node.
const (
	joinedDir      = "tls"
	joinedCertFile = "node.pem"
	joinedKeyFile  = "node-key.pem"
	joinedCAFile   = "ca.pem"
	joinedInfoFile = "join.json"
)

// joinAttemptTimeout bounds one join request to one server.
const joinAttemptTimeout = 10 * time.Second

// joinedIdentity is what a node whose certificate the cluster issued
// keeps: where its files are, and what it received with the certificate.
type joinedIdentity struct {
	dir        string
	gossipKeys [][]byte
	seeds      []string
	// renewNow asks the renewal loop to renew at once (SIGHUP).
	renewNow chan struct{}
}

// joinInfo is DATA_DIR/tls/join.json: what the node received when it
// joined, besides its certificate, for its restarts.
type joinInfo struct {
	GossipKeys []string `json:"gossip_keys,omitempty"`
	Seeds      []string `json:"seeds,omitempty"`
	ClusterID  string   `json:"cluster_id,omitempty"`
	Signer     string   `json:"signer,omitempty"`
}

// joinToken is the join token from --join-token (LOADMESH_JOIN_TOKEN) or
// --join-token-file, or "".
func (a *Agent) joinToken() (string, error) {
	if a.cfg.JoinToken != "" {
		return strings.TrimSpace(a.cfg.JoinToken), nil
	}
	if a.cfg.JoinTokenFile != "" {
		b, err := os.ReadFile(a.cfg.JoinTokenFile)
		if err != nil {
			return "", fmt.Errorf("--join-token-file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return "", nil
}

// joinServers are the peer-port addresses to send a join request to:
// --join-server, else each --join seed's host at the default peer port.
func (a *Agent) joinServers() []string {
	if len(a.cfg.JoinServers) > 0 {
		return a.cfg.JoinServers
	}
	var out []string
	for _, j := range a.cfg.Join {
		host, _, err := net.SplitHostPort(j)
		if err != nil {
			host = j
		}
		out = append(out, net.JoinHostPort(host, defaultPeerPort))
	}
	return out
}

// clusterIssuedTLS returns the identity of a node started with --tls-ca
// but without --tls-cert: the certificate in DATA_DIR/tls from an earlier
// join, or else a new one, requested with the join token.
func (a *Agent) clusterIssuedTLS(ctx context.Context) (*transport.MutualTLS, error) {
	dir := filepath.Join(a.dataDir.Path, joinedDir)
	a.joined = &joinedIdentity{dir: dir}
	caPEM, err := os.ReadFile(a.cfg.TLSCA)
	if err != nil {
		return nil, fmt.Errorf("read --tls-ca: %w", err)
	}
	certPEM, cerr := os.ReadFile(filepath.Join(dir, joinedCertFile))
	keyPEM, kerr := os.ReadFile(filepath.Join(dir, joinedKeyFile))
	token, err := a.joinToken()
	if err != nil {
		return nil, err
	}
	if cerr == nil && kerr == nil {
		bundle := caPEM
		if b, err := os.ReadFile(filepath.Join(dir, joinedCAFile)); err == nil {
			bundle = b
		}
		m, err := transport.NewMutualTLS(bundle, certPEM, keyPEM, a.cfg.Name)
		if err == nil {
			a.readJoinInfo()
			a.log.Info("using the node certificate the cluster issued", "dir", dir, "expires", m.Leaf().NotAfter.UTC())
			return m, nil
		}
		if token == "" {
			return nil, fmt.Errorf("node certificate in %s: %w; join again with a new --join-token", dir, err)
		}
		a.log.Warn("node certificate unusable; joining again with the join token", "dir", dir, "error", err)
	} else if !errors.Is(cerr, os.ErrNotExist) || !errors.Is(kerr, os.ErrNotExist) {
		if token == "" {
			return nil, fmt.Errorf("node certificate in %s: %w", dir, errors.Join(cerr, kerr))
		}
	}
	if token == "" {
		return nil, fmt.Errorf("no node certificate in %s and no join token: pass --join-token (or --join-token-file, LOADMESH_JOIN_TOKEN), or --tls-cert and --tls-key", dir)
	}
	conf, err := transport.JoinClientTLS(caPEM)
	if err != nil {
		return nil, err
	}
	csrPEM, keyPEM, err := transport.NewNodeKeyCSR(a.cfg.Name)
	if err != nil {
		return nil, err
	}
	resp, err := a.requestCert(ctx, conf, transport.JoinRequest{Token: token, Node: a.cfg.Name, CSR: string(csrPEM)})
	if err != nil {
		return nil, err
	}
	bundle := []byte(resp.CABundle)
	if len(bundle) == 0 {
		bundle = caPEM
	}
	m, err := transport.NewMutualTLS(bundle, []byte(resp.Cert), keyPEM, a.cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("join: the certificate from %s does not work: %w", resp.Signer, err)
	}
	info := joinInfo{GossipKeys: resp.GossipKeys, Seeds: resp.Seeds, ClusterID: resp.ClusterID, Signer: resp.Signer}
	if err := a.writeJoined(keyPEM, []byte(resp.Cert), bundle, &info); err != nil {
		return nil, err
	}
	a.readJoinInfo()
	a.log.Info("joined with a join token: node certificate issued", "signer", resp.Signer,
		"serial", m.Leaf().SerialNumber.Text(16), "expires", m.Leaf().NotAfter.UTC(), "dir", dir)
	return m, nil
}

// requestCert sends req to the join servers in turn until one answers.
// A refusal is final; unreachable servers are tried again until ctx ends.
func (a *Agent) requestCert(ctx context.Context, conf *tls.Config, req transport.JoinRequest) (transport.JoinResponse, error) {
	servers := a.joinServers()
	if len(servers) == 0 {
		return transport.JoinResponse{}, errors.New("join: no server to ask: pass --join or --join-server")
	}
	var last error
	for round := 0; ; round++ {
		for _, s := range servers {
			actx, cancel := context.WithTimeout(ctx, joinAttemptTimeout)
			resp, err := transport.RequestJoin(actx, s, conf, req)
			cancel()
			if err == nil {
				return resp, nil
			}
			if transport.IsFinalJoinRefusal(err) {
				return resp, fmt.Errorf("join: %s refused: %w", s, err)
			}
			if strings.Contains(err.Error(), "does not verify against the given --tls-ca") {
				return resp, fmt.Errorf("join: %s: %w", s, err)
			}
			last = err
			a.log.Warn("join server unreachable", "addr", s, "error", err)
		}
		select {
		case <-ctx.Done():
			return transport.JoinResponse{}, fmt.Errorf("join: no join server reachable (tried %s): %w", strings.Join(servers, ", "), last)
		case <-time.After(time.Duration(min(round+1, 5)) * time.Second):
		}
	}
}

// readJoinInfo loads join.json into a.joined.
func (a *Agent) readJoinInfo() {
	b, err := os.ReadFile(filepath.Join(a.joined.dir, joinedInfoFile))
	if err != nil {
		return
	}
	var info joinInfo
	if err := json.Unmarshal(b, &info); err != nil {
		a.log.Warn("ignoring unreadable join info", "file", filepath.Join(a.joined.dir, joinedInfoFile), "error", err)
		return
	}
	a.joined.gossipKeys = nil
	for _, k := range info.GossipKeys {
		if key, err := base64.StdEncoding.DecodeString(k); err == nil {
			a.joined.gossipKeys = append(a.joined.gossipKeys, key)
		}
	}
	a.joined.seeds = info.Seeds
}

// writeJoined stores the node's key, certificate, CA bundle and join info
// in DATA_DIR/tls, each file replaced atomically; the key and the join
// info (gossip keys) are readable by the owner only.
func (a *Agent) writeJoined(keyPEM, certPEM, caPEM []byte, info *joinInfo) error {
	dir := a.joined.dir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("node certificate dir: %w", err)
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{joinedKeyFile, keyPEM, 0o600},
		{joinedCertFile, certPEM, 0o644},
		{joinedCAFile, caPEM, 0o644},
	}
	if info != nil {
		b, _ := json.MarshalIndent(info, "", "  ")
		files = append(files, struct {
			name string
			data []byte
			mode os.FileMode
		}{joinedInfoFile, b, 0o600})
	}
	for _, f := range files {
		if f.data == nil {
			continue
		}
		if err := writeFileAtomic(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Renewal: a node whose certificate the cluster issued asks the leader
// for a new one, with a new key, when less than a third of its lifetime
// is left, authenticated by its current certificate.

// startRenewal starts the renewal loop of a node whose certificate the
// cluster issued; stopRenewal ends it.
func (a *Agent) startRenewal() {
	if a.joined == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.renewCancel = cancel
	if a.joined.renewNow == nil {
		a.joined.renewNow = make(chan struct{}, 1)
	}
	a.renewWG.Go(func() { a.renewLoop(ctx) })
}

func (a *Agent) stopRenewal() {
	if a.renewCancel != nil {
		a.renewCancel()
		a.renewWG.Wait()
		a.renewCancel = nil
	}
}

// renewCheck is how often the renewal loop looks at the certificate: a
// twentieth of its lifetime, from 1s to 1h, jittered by ±20% so that
// nodes joined together do not renew together.
func renewCheck(c *x509.Certificate) time.Duration {
	d := min(max(c.NotAfter.Sub(c.NotBefore)/20, time.Second), time.Hour)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// renewDue reports whether less than a third of c's lifetime is left.
func renewDue(c *x509.Certificate, now time.Time) bool {
	return c.NotAfter.Sub(now) < c.NotAfter.Sub(c.NotBefore)/3
}

func (a *Agent) renewLoop(ctx context.Context) {
	// requested is a renewal asked for (SIGHUP) and not yet done: it is
	// retried every renewRetry until it succeeds.
	requested := false
	for {
		wait := renewCheck(a.mtls.Leaf())
		if requested {
			wait = min(wait, renewRetry)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-a.joined.renewNow:
			t.Stop()
			requested = true
		}
		if !requested && !renewDue(a.mtls.Leaf(), time.Now()) {
			continue
		}
		if err := a.RenewCert(ctx); err != nil {
			if ctx.Err() == nil {
				a.log.Warn("node certificate renewal failed; retrying", "expires", a.mtls.Leaf().NotAfter.UTC(), "error", err)
			}
			continue
		}
		requested = false
	}
}

// renewRetry is how soon a requested renewal that failed (no leader yet,
// say) is tried again.
const renewRetry = 2 * time.Second

// RenewCert renews the node certificate now: a new key, a request to the
// leader authenticated by the current certificate, and the new
// certificate in force for new connections (and in DATA_DIR/tls). Only a
// node whose certificate the cluster issued can renew.
func (a *Agent) RenewCert(ctx context.Context) error {
	if a.joined == nil {
		return errors.New("renew: this node's certificate was not issued by the cluster (--tls-cert); renew it with loadmesh tls cert create")
	}
	c := a.liveCluster.Load()
	if c == nil {
		return errors.New("renew: not running")
	}
	csrPEM, keyPEM, err := transport.NewNodeKeyCSR(a.cfg.Name)
	if err != nil {
		return err
	}
	req := transport.JoinRequest{Node: a.cfg.Name, CSR: string(csrPEM)}
	leader := c.Leader()
	var resp transport.JoinResponse
	switch m, ok := c.Member(leader); {
	case leader == "":
		return errors.New("renew: no raft leader known")
	case leader == a.cfg.Name:
		if resp = a.answerJoin(ctx, a.cfg.Name, req, false, "local"); resp.Error != "" {
			return fmt.Errorf("renew: %s", resp.Error)
		}
	case !ok || m.Addresses.Peer == "":
		return fmt.Errorf("renew: leader %s has no known peer address", leader)
	default:
		rctx, cancel := context.WithTimeout(ctx, joinAttemptTimeout)
		resp, err = transport.RequestJoin(rctx, m.Addresses.Peer, a.mtls.ClientConfig(leader), req)
		cancel()
		if err != nil {
			return fmt.Errorf("renew with leader %s: %w", leader, err)
		}
	}
	// The answer carries the servers' trust bundle (--tls-ca): taking it
	// with the certificate is how a joined node follows a CA rotation.
	var bundle []byte
	if resp.CABundle != "" {
		bundle = []byte(resp.CABundle)
		err = a.mtls.ReloadAll(bundle, []byte(resp.Cert), keyPEM)
	} else {
		err = a.mtls.Reload([]byte(resp.Cert), keyPEM)
	}
	if err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	if err := a.writeJoined(keyPEM, []byte(resp.Cert), bundle, nil); err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	leaf := a.mtls.Leaf()
	a.log.Info("node certificate renewed", "signer", resp.Signer, "serial", leaf.SerialNumber.Text(16), "expires", leaf.NotAfter.UTC(),
		"trusted_cas", len(a.mtls.TrustedCAs()))
	return nil
}

// renewSoon asks the renewal loop of a node whose certificate the cluster
// issued to renew at once (on SIGHUP); it reports whether there is one.
func (a *Agent) renewSoon() bool {
	if a.joined == nil || a.joined.renewNow == nil {
		return false
	}
	select {
	case a.joined.renewNow <- struct{}{}:
	default: // one is pending already
	}
	return true
}
