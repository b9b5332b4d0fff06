package transport

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"
)

// trustBundle is the set of cluster CAs a node trusts at once: one
// normally, two while the cluster CA is rotated (the old one and the new
// one). Node certificates are signed directly by one of them; there are
// no intermediates.
type trustBundle struct {
	certs []*x509.Certificate
	pool  *x509.CertPool
}

// newTrustBundle parses a PEM CA bundle (one or more concatenated CA
// certificates). Every certificate must be a CA certificate.
func newTrustBundle(caPEM []byte) (*trustBundle, error) {
	cas, err := ParseCABundle(caPEM)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	t := &trustBundle{certs: cas, pool: x509.NewCertPool()}
	for _, c := range cas {
		t.pool.AddCert(c)
	}
	return t, nil
}

// ParseCABundle returns the CA certificates of a PEM bundle, in order. It
// fails if there is none or if one is not a CA certificate.
func ParseCABundle(caPEM []byte) ([]*x509.Certificate, error) {
	cas, err := parseCertificatesPEM(caPEM)
	if err != nil {
		return nil, err
	}
	for _, c := range cas {
		if !c.IsCA {
			return nil, fmt.Errorf("certificate %q is not a ca certificate", c.Subject.CommonName)
		}
	}
	return cas, nil
}

// CheckCABundle checks a bundle meant for --tls-ca: at least one CA, each
// valid at now, none twice. It is stricter than what an agent accepts, to
// catch a mistake before the bundle is installed.
func CheckCABundle(cas []*x509.Certificate, now time.Time) error {
	if len(cas) == 0 {
		return errors.New("no ca certificate")
	}
	for i, c := range cas {
		switch {
		case !c.IsCA:
			return fmt.Errorf("certificate %q (%s) is not a ca certificate", c.Subject.CommonName, Fingerprint(c))
		case now.After(c.NotAfter):
			return fmt.Errorf("ca %q (%s) expired on %s", c.Subject.CommonName, Fingerprint(c), c.NotAfter.UTC().Format(time.DateOnly))
		case now.Before(c.NotBefore):
			return fmt.Errorf("ca %q (%s) is not valid before %s", c.Subject.CommonName, Fingerprint(c), c.NotBefore.UTC().Format(time.RFC3339))
		}
		if slices.ContainsFunc(cas[:i], c.Equal) {
			return fmt.Errorf("ca %q (%s) is in the bundle twice", c.Subject.CommonName, Fingerprint(c))
		}
	}
	return nil
}

// Fingerprint is the SHA-256 digest of a certificate's DER encoding, in
// lower-case hex: what `openssl x509 -noout -fingerprint -sha256` prints,
// without the colons.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// IssuerIn returns the CA of cas that signed cert, or nil.
func IssuerIn(cert *x509.Certificate, cas []*x509.Certificate) *x509.Certificate {
	if cert == nil {
		return nil
	}
	for _, ca := range cas {
		if bytes.Equal(cert.RawIssuer, ca.RawSubject) && cert.CheckSignatureFrom(ca) == nil {
			return ca
		}
	}
	return nil
}

// ReloadAll replaces the trusted CA bundle and this node's certificate and
// key together: the new certificate must chain to the new bundle (and be
// valid as in NewMutualTLS), else nothing changes. It is how the cluster
// CA is rotated without downtime: trust the old and the new CA, re-issue
// the node certificate from the new one, then trust the new one alone.
//
// Connections established earlier are not re-verified; new handshakes
// verify peers against the new bundle and present the new certificate.
// The bundle and the certificate are published one right after the
// other: a handshake in between verifies peers with the new bundle while
// presenting the old certificate, which is harmless, as a node never
// verifies its own certificate.
func (m *MutualTLS) ReloadAll(caPEM, certPEM, keyPEM []byte) error {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	trust, err := newTrustBundle(caPEM)
	if err != nil {
		return err
	}
	pair, err := m.checkNodeCert(trust, certPEM, keyPEM)
	if err != nil {
		return err
	}
	m.trust.Store(trust)
	m.cert.Store(pair)
	return nil
}

// TrustedCAs returns the CA certificates peers are verified against, in
// bundle order. The caller must not modify them.
func (m *MutualTLS) TrustedCAs() []*x509.Certificate {
	return slices.Clone(m.trust.Load().certs)
}

// Issuer returns the trusted CA that signed this node's current
// certificate.
func (m *MutualTLS) Issuer() *x509.Certificate {
	return IssuerIn(m.Leaf(), m.trust.Load().certs)
}
