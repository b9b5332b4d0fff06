package agent

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/store"
)

// security owns one agent's access control and certificate checks: the
// API's optional TLS, the certificate expiry watch (every node logs its
// own; the leader also records an audit event), and, as a leader hook,
// the cluster's first operator token.
//
// Its goroutines are its own: start launches the expiry watch, which stop
// ends; Establish launches the leader's work, which Revoke ends. Both wait.
type security struct {
	a   *Agent
	now func() time.Time

	// caCerts are the cluster CA certificates from --tls-ca at start (none
	// with an injected or --dev identity), trusted by forward; the expiry
	// watch reads the live ones (trustedCAs). apiCert is the API's --api-tls-cert
	// and apiPair its key pair, both replaced by a reload.
	caCerts []*x509.Certificate
	apiCert atomic.Pointer[x509.Certificate]
	apiPair atomic.Pointer[tls.Certificate]
	// forward carries writes to the leader's API; nil means the default
	// transport (plain HTTP).
	forward http.RoundTripper
	// throwaway is set for --dev's in-memory CA, made anew at every start:
	// its short life is no news, so it is not warned about.
	throwaway bool

	stopCh chan struct{}
	wg     sync.WaitGroup

	// leader runs leaderLoop while this node leads.
	leader leaderTask
}

var _ cluster.LeaderHook = (*security)(nil)

func newSecurity(a *Agent) *security { return &security{a: a, now: a.now} }

// certExpiryCheck is how often certificates are checked.
const certExpiryCheck = 24 * time.Hour

// start loads the certificates, turns on TLS on the API listener if asked
// to, registers the expiry metric, logs certificates near expiry and
// starts the daily check. It needs the API listener and the node's TLS
// identity.
func (s *security) start() error {
	a := s.a
	s.throwaway = a.cfg.Dev && a.cfg.TLSCA == "" && a.deps.TLS == nil
	if a.cfg.TLSCA != "" {
		b, err := os.ReadFile(a.cfg.TLSCA)
		if err != nil {
			return fmt.Errorf("read --tls-ca: %w", err)
		}
		s.caCerts = parseCerts(b)
	}
	if a.cfg.APITLSCert != "" {
		pair, err := tls.LoadX509KeyPair(a.cfg.APITLSCert, a.cfg.APITLSKey)
		if err != nil {
			return fmt.Errorf("api tls: %w", err)
		}
		s.apiCert.Store(pair.Leaf)
		s.apiPair.Store(&pair)
		a.apiLn = tls.NewListener(a.apiLn, &tls.Config{MinVersion: tls.VersionTLS12,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.apiPair.Load(), nil }})
		// Writes carried to the leader go over HTTPS too, verified with
		// the system roots, the cluster CA and, for a self-signed API
		// certificate, that certificate.
		roots, err := x509.SystemCertPool()
		if err != nil {
			roots = x509.NewCertPool()
		}
		for _, c := range s.caCerts {
			roots.AddCert(c)
		}
		for _, der := range pair.Certificate {
			if c, err := x509.ParseCertificate(der); err == nil && (c.IsCA || c.CheckSignatureFrom(c) == nil) {
				roots.AddCert(c)
			}
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}
		s.forward = tr
	}
	a.reg.MustRegister(certCollector{s})
	a.reg.MustRegister(trustCollector{s})
	s.warnExpiring()
	s.stopCh = make(chan struct{})
	s.wg.Add(1)
	go s.watch(s.stopCh)
	return nil
}

// stop ends the expiry watch and waits for it. Safe to call more than once
// and before start.
func (s *security) stop() {
	if s.stopCh != nil {
		close(s.stopCh)
		s.stopCh = nil
	}
	s.wg.Wait()
}

// apiScheme is how this cluster's APIs are reached: nodes are expected to
// agree on --api-tls-*.
func (s *security) apiScheme() string {
	if s.apiCert.Load() != nil {
		return "https"
	}
	return "http"
}

func (s *security) watch(stop chan struct{}) {
	defer s.wg.Done()
	t := time.NewTicker(certExpiryCheck)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		s.warnExpiring()
	}
}

// warnExpiring logs each certificate within its warning window.
func (s *security) warnExpiring() {
	for _, c := range s.watched() {
		if msg, soon := expiring(c, s.now()); soon {
			s.a.log.Warn(msg, "cert", c.name, "not_after", c.cert.NotAfter)
		}
	}
}

// watched are the certificates to warn about: all but --dev's throwaway
// node certificate.
func (s *security) watched() []namedCert {
	certs := s.certs()
	if s.throwaway {
		certs = slices.DeleteFunc(certs, func(c namedCert) bool { return c.name == "node" })
	}
	return certs
}

// namedCert is a certificate this node uses: "node" (mutual TLS between
// nodes), "ca" (the cluster CA; the one expiring first) or "api".
type namedCert struct {
	name string
	cert *x509.Certificate
	// renews is set for a node certificate the cluster issued, which
	// renews itself (join_client.go): it is expiring only once renewal is
	// overdue.
	renews bool
}

func (s *security) certs() []namedCert {
	var out []namedCert
	if s.a.mtls != nil {
		if leaf := s.a.mtls.Leaf(); leaf != nil {
			out = append(out, namedCert{name: "node", cert: leaf, renews: s.a.joined != nil})
		}
	}
	var ca *x509.Certificate
	for _, c := range s.trustedCAs() {
		if ca == nil || c.NotAfter.Before(ca.NotAfter) {
			ca = c
		}
	}
	if ca != nil {
		out = append(out, namedCert{name: "ca", cert: ca})
	}
	if c := s.apiCert.Load(); c != nil {
		out = append(out, namedCert{name: "api", cert: c})
	}
	return out
}

// expiryWarning is how long before NotAfter a certificate counts as
// expiring: 30 days, or a fifth of its lifetime if that is longer.
func expiryWarning(c *x509.Certificate) time.Duration {
	return max(30*24*time.Hour, c.NotAfter.Sub(c.NotBefore)/5)
}

// expiring reports whether c is within its warning window at now, and
// says so in one line.
func expiring(c namedCert, now time.Time) (string, bool) {
	left := c.cert.NotAfter.Sub(now)
	warn := expiryWarning(c.cert)
	if c.renews {
		warn = c.cert.NotAfter.Sub(c.cert.NotBefore) / 4
	}
	if left >= warn {
		return "", false
	}
	what := map[string]string{"node": "node certificate (--tls-cert)", "ca": "cluster CA certificate (--tls-ca)", "api": "API certificate (--api-tls-cert)"}[c.name]
	if c.renews {
		what = "node certificate (issued by the cluster; its renewal is overdue)"
	}
	if left <= 0 {
		return fmt.Sprintf("%s expired on %s; renew it now", what, c.cert.NotAfter.UTC().Format(time.DateOnly)), true
	}
	return fmt.Sprintf("%s expires on %s, in %d days; renew it", what, c.cert.NotAfter.UTC().Format(time.DateOnly), int(left.Hours()/24)), true
}

// TLSStatus is the "tls" part of GET /v1/status: when this node's
// certificates expire, and which are within their warning window.
type TLSStatus struct {
	NodeCertExpires time.Time `json:"node_cert_expires,omitzero"`
	CAExpires       time.Time `json:"ca_expires,omitzero"`
	APICertExpires  time.Time `json:"api_cert_expires,omitzero"`
	Expiring        []string  `json:"expiring,omitempty"`
	// TrustedCAs are the cluster CAs peers are verified against (two
	// while the CA is rotated); NodeCertIssuer is the fingerprint of the
	// one that signed this node's certificate.
	TrustedCAs     []CAStatus `json:"trusted_cas,omitempty"`
	NodeCertIssuer string     `json:"node_cert_issuer,omitempty"`
}

func (s *security) tlsStatus() *TLSStatus {
	certs := s.certs()
	if len(certs) == 0 {
		return nil
	}
	st := &TLSStatus{}
	now := s.now()
	for _, c := range certs {
		switch c.name {
		case "node":
			st.NodeCertExpires = c.cert.NotAfter
		case "ca":
			st.CAExpires = c.cert.NotAfter
		case "api":
			st.APICertExpires = c.cert.NotAfter
		}
		if _, soon := expiring(c, now); soon {
			st.Expiring = append(st.Expiring, c.name)
		}
	}
	s.addTrust(st)
	return st
}

var certExpiryDesc = prometheus.NewDesc("loadmesh_tls_certificate_expiry_timestamp_seconds",
	"When this node's certificate expires (NotAfter), as a Unix time.", []string{"cert"}, nil)

// certCollector reads the certificates at every scrape, so a reloaded
// certificate shows at once.
type certCollector struct{ s *security }

func (c certCollector) Describe(ch chan<- *prometheus.Desc) { ch <- certExpiryDesc }

func (c certCollector) Collect(ch chan<- prometheus.Metric) {
	for _, nc := range c.s.certs() {
		ch <- prometheus.MustNewConstMetric(certExpiryDesc, prometheus.GaugeValue, float64(nc.cert.NotAfter.Unix()), nc.name)
	}
}

func parseCerts(b []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(blk.Bytes); err == nil {
			out = append(out, c)
		}
	}
}

// Establish starts the leader's work: create the first operator token if
// the cluster has none yet, and record certificates near expiry in the
// audit log, daily.
func (s *security) Establish() error {
	s.leader.start(s.leaderLoop)
	return nil
}

// Revoke stops the leader's work and waits for it.
func (s *security) Revoke() { s.leader.stop() }

func (s *security) leaderLoop(stop chan struct{}) {
	retry := time.NewTimer(0)
	defer retry.Stop()
	for done := false; !done; {
		select {
		case <-stop:
			return
		case <-retry.C:
		}
		var err error
		if done, err = s.bootstrapToken(); err != nil {
			s.a.log.Warn("cannot create the bootstrap token yet; retrying", "error", err)
			retry.Reset(time.Second)
		}
	}
	t := time.NewTicker(certExpiryCheck)
	defer t.Stop()
	for {
		s.recordExpiring()
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// bootstrapName is the name of the cluster's first operator token.
const bootstrapName = "bootstrap"

// bootstrapToken creates the cluster's first operator token through Raft
// once per cluster; the state's flag makes a second leader (or a
// concurrent one) do nothing. A token made up here is printed once, to
// Deps.BootstrapOut, and is never logged. done is false when it should be
// tried again.
func (s *security) bootstrapToken() (done bool, err error) {
	a := s.a
	if a.fsm.TokensBootstrapped() {
		return true, nil
	}
	secret, given := a.cfg.BootstrapToken, true
	if secret == "" {
		given = false
		if secret, err = NewToken(); err != nil {
			return false, err
		}
	}
	now := s.now().UTC()
	tok := tokenRecord(secret, bootstrapName, store.RoleOperator, now, a.cfg.Name)
	tok.Bootstrap = true
	_, err = a.apply(store.Command{Op: store.OpTokenCreate, Token: &tok, Time: now, Who: a.cfg.Name,
		Why: "the cluster's first operator token, created once by the leader"})
	switch {
	case errors.Is(err, store.ErrTokensBootstrapped):
		return true, nil
	case errors.Is(err, cluster.ErrNotLeader):
		// The next leader tries; if this write did commit, the flag
		// stops it. A made-up token that may have committed is shown
		// below, or it would be lost.
		if _, ok := a.fsm.TokenByID(tok.ID); !ok {
			return true, nil
		}
	case err != nil:
		if _, ok := a.fsm.TokenByID(tok.ID); !ok {
			return false, err
		}
	}
	a.log.Info("created the bootstrap operator token", "token", bootstrapName, "id", tok.ID, "from_flag", given)
	if !given {
		s.printBootstrap(secret)
	}
	return true, nil
}

func (s *security) printBootstrap(secret string) {
	out := s.a.deps.BootstrapOut
	if out == nil {
		out = os.Stderr
	}
	fmt.Fprintf(out, `
==> loadmesh: this cluster's first operator API token (name %q).
    It is shown only this once and stored only as a hash; keep it safe:

        %s

    Use it with:  export LOADMESH_TOKEN=<token>   (or --token on any command)
    Then create named tokens (loadmesh token create) and revoke this one.

`, bootstrapName, secret)
}

// recordExpiring records, at most daily, an audit event for each of this
// node's certificates within its warning window.
func (s *security) recordExpiring() {
	a := s.a
	now := s.now().UTC()
	for _, c := range s.watched() {
		msg, soon := expiring(c, now)
		if !soon || s.recordedSince(c.name, now.Add(-certExpiryCheck+time.Hour)) {
			continue
		}
		_, err := a.apply(store.Command{Op: store.OpRecord, Kind: "tls.cert_expiring", Node: a.cfg.Name, Time: now, Who: "tls",
			Why: msg, Before: c.name, After: c.cert.NotAfter.UTC().Format(time.RFC3339)})
		if err != nil {
			a.log.Warn("cannot record certificate expiry", "cert", c.name, "error", err)
		}
	}
}

// recordedSince reports whether the audit log has a tls.cert_expiring
// event for this node's certificate name since t.
func (s *security) recordedSince(name string, t time.Time) bool {
	evs := s.a.fsm.Events(0)
	for i := len(evs) - 1; i >= 0 && !evs[i].Time.Before(t); i-- {
		if e := evs[i]; e.Kind == "tls.cert_expiring" && e.Node == s.a.cfg.Name && e.Before == name {
			return true
		}
	}
	return false
}
