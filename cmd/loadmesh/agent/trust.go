package agent

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/loadmesh/loadmesh/transport"
)

// reloadPeerTLS applies --tls-ca and --tls-cert/--tls-key read again by a
// reload: the trusted CA bundle and the node certificate are replaced
// together, and refused together unless the certificate chains to the new
// bundle. It says what changed, or nothing if neither did.
//
// This is how the cluster CA is rotated without downtime: every node
// first trusts a bundle of the old and the new CA, then gets a
// certificate from the new CA, then trusts the new CA alone.
func (a *Agent) reloadPeerTLS(caPEM, certPEM, keyPEM []byte) ([]string, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert: %w", err)
	}
	cas, err := transport.ParseCABundle(caPEM)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	prevLeaf, prevCAs := a.mtls.Leaf(), a.mtls.TrustedCAs()
	sameCert, sameCA := bytes.Equal(pair.Certificate[0], prevLeaf.Raw), sameCerts(cas, prevCAs)
	if sameCert && sameCA {
		return nil, nil
	}
	if err := a.mtls.ReloadAll(caPEM, certPEM, keyPEM); err != nil {
		what := "--tls-ca and --tls-cert refused together"
		switch {
		case sameCA:
			what = "--tls-cert refused"
		case sameCert:
			what = "--tls-ca refused"
		}
		return nil, fmt.Errorf("%s, nothing changed: %w", what, err)
	}
	var applied []string
	if !sameCA {
		applied = append(applied, fmt.Sprintf("tls-ca: trusted CAs %s → %s (peer channel and raft)", shortFingerprints(prevCAs), shortFingerprints(cas)))
	}
	if !sameCert {
		change := certChange(prevLeaf, a.mtls.Leaf())
		if ca := a.mtls.Issuer(); ca != nil {
			change += ", from CA " + shortFingerprint(ca)
		}
		applied = append(applied, "tls-cert: "+change+" (peer channel and raft)")
	}
	return applied, nil
}

// shortFingerprint is the first 16 hex digits of a CA's SHA-256
// fingerprint, enough to tell CAs apart in a log line.
func shortFingerprint(c *x509.Certificate) string { return transport.Fingerprint(c)[:16] }

func shortFingerprints(cas []*x509.Certificate) string {
	fps := make([]string, len(cas))
	for i, c := range cas {
		fps[i] = shortFingerprint(c)
	}
	return "[" + strings.Join(fps, " ") + "]"
}

// trustedCAs are the cluster CAs whose expiry is watched: those of
// --tls-ca as currently loaded (a reload may change them), none with an
// injected or --dev identity.
func (s *security) trustedCAs() []*x509.Certificate {
	if s.a.cfg.TLSCA == "" || s.a.deps.TLS != nil || s.a.mtls == nil {
		return nil
	}
	return s.a.mtls.TrustedCAs()
}

// CAStatus describes one trusted cluster CA in GET /v1/status.
type CAStatus struct {
	Subject string `json:"subject"`
	Serial  string `json:"serial"`
	// Fingerprint is the SHA-256 of the certificate, in hex, as
	// `loadmesh tls ca inspect` prints it.
	Fingerprint string    `json:"fingerprint"`
	NotAfter    time.Time `json:"not_after"`
}

// NewCAStatus describes c.
func NewCAStatus(c *x509.Certificate) CAStatus {
	return CAStatus{Subject: c.Subject.String(), Serial: fmt.Sprintf("%x", c.SerialNumber), Fingerprint: transport.Fingerprint(c), NotAfter: c.NotAfter}
}

// addTrust fills in the CAs this node trusts and the one that signed its
// certificate, so that an operator rotating the CA can check every node.
func (s *security) addTrust(st *TLSStatus) {
	m := s.a.mtls
	if m == nil {
		return
	}
	for _, c := range m.TrustedCAs() {
		st.TrustedCAs = append(st.TrustedCAs, NewCAStatus(c))
	}
	if ca := m.Issuer(); ca != nil {
		st.NodeCertIssuer = transport.Fingerprint(ca)
	}
}

var trustedCAsDesc = prometheus.NewDesc("loadmesh_tls_trusted_cas",
	"How many cluster CAs this node trusts for mutual TLS between nodes (2 while the CA is rotated).", nil, nil)

// trustCollector reads the trusted CAs at every scrape, so a reload shows
// at once.
type trustCollector struct{ s *security }

func (c trustCollector) Describe(ch chan<- *prometheus.Desc) { ch <- trustedCAsDesc }

func (c trustCollector) Collect(ch chan<- prometheus.Metric) {
	if m := c.s.a.mtls; m != nil {
		ch <- prometheus.MustNewConstMetric(trustedCAsDesc, prometheus.GaugeValue, float64(len(m.TrustedCAs())))
	}
}
