package transport

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"
)

const (
	// DefaultCALifetime is the validity period the CLI uses for a new
	// cluster CA.
	DefaultCALifetime = 10 * 365 * 24 * time.Hour

	// DefaultNodeCertLifetime is the validity period the CLI uses for a
	// new node certificate.
	DefaultNodeCertLifetime = 365 * 24 * time.Hour

	// MaxNodeNameLen is the longest node name, in bytes, that a node
	// certificate can carry.
	MaxNodeNameLen = 255

	// nodeURIScheme and nodeURIHost form the URI SAN that names a node:
	// loadmesh://node/<url-escaped node name>.
	nodeURIScheme = "loadmesh"
	nodeURIHost   = "node"

	// clockSkew backdates NotBefore so that a certificate issued on one
	// machine is immediately valid on peers whose clocks run a little
	// behind.
	clockSkew = 5 * time.Minute

	pemTypeCertificate = "CERTIFICATE"
	pemTypePrivateKey  = "PRIVATE KEY"
	pemTypeECKey       = "EC PRIVATE KEY"
)

// CA is the cluster certificate authority. Every node certificate is
// signed by it, and every peer connection is authenticated against it in
// both directions.
//
// The private key never leaves the machine the operator runs the CA
// commands on; agents only need CertPEM.
type CA struct {
	// Cert is the parsed, self-signed CA certificate.
	Cert *x509.Certificate
	// Key is the CA's ECDSA P-256 private key.
	Key *ecdsa.PrivateKey
	// CertPEM is Cert in PEM form, as distributed to agents.
	CertPEM []byte
}

// NewCA creates a self-signed ECDSA P-256 CA named commonName that is
// valid from now (minus a small clock-skew allowance) for validFor.
func NewCA(commonName string, validFor time.Duration) (*CA, error) {
	if strings.TrimSpace(commonName) == "" {
		return nil, errors.New("new ca: empty common name")
	}
	if validFor <= 0 {
		return nil, fmt.Errorf("new ca: lifetime %s is not positive", validFor)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("new ca: generate key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("new ca: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"loadmesh"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validFor),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// Node certificates are signed directly by this CA; there are no
		// intermediates.
		MaxPathLen:     0,
		MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("new ca: create certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("new ca: parse certificate: %w", err)
	}
	return &CA{
		Cert:    cert,
		Key:     key,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: pemTypeCertificate, Bytes: der}),
	}, nil
}

// LoadCA reads a CA certificate (or a bundle, see ParseCA) and its private
// key from PEM files, as written by CertPEM and KeyPEM. It is what a server
// loads from --tls-ca and --tls-ca-key to sign node certificates.
func LoadCA(certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("load ca key: %w", err)
	}
	ca, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load ca from %s and %s: %w", certFile, keyFile, err)
	}
	return ca, nil
}

// ParseCA parses PEM CA certificates and a PEM private key (PKCS #8 or
// SEC 1 "EC PRIVATE KEY"). certPEM may hold a bundle of several CA
// certificates (during a CA rotation): the CA is the one the key belongs
// to. A certificate that is not a CA certificate does not count.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	certs, err := parseCertificatesPEM(certPEM)
	if err != nil {
		return nil, err
	}
	if len(certs) == 1 && !certs[0].IsCA {
		return nil, fmt.Errorf("certificate %q is not a ca certificate", certs[0].Subject.CommonName)
	}
	key, err := parseECPrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, err
	}
	for _, c := range certs {
		if key.PublicKey.Equal(c.PublicKey) {
			if !c.IsCA {
				return nil, fmt.Errorf("certificate %q is not a ca certificate", c.Subject.CommonName)
			}
			return &CA{Cert: c, Key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: pemTypeCertificate, Bytes: c.Raw})}, nil
		}
	}
	if len(certs) == 1 {
		return nil, errors.New("private key does not match the ca certificate")
	}
	return nil, fmt.Errorf("the private key belongs to none of the %d ca certificate(s)", len(certs))
}

// KeyPEM returns the CA private key as a PKCS #8 PEM block. Write it with
// file mode 0600.
func (ca *CA) KeyPEM() ([]byte, error) {
	return marshalPrivateKeyPEM(ca.Key)
}

// IssueNodeCert issues a certificate for the node called nodeName, usable
// for both ends of a mutual-TLS peer connection (server and client
// authentication). The node name is carried as the subject CommonName and,
// authoritatively, as the URI SAN loadmesh://node/<url-escaped name>; ips
// and dnsNames are added as SANs for operators' tools and are not used by
// loadmesh itself.
//
// The certificate is valid from now (minus a small clock-skew allowance)
// for validFor, but never beyond the CA's own expiry: a longer request is
// shortened to the CA's NotAfter. It returns the certificate and a new
// ECDSA P-256 private key (PKCS #8), both PEM encoded.
func (ca *CA) IssueNodeCert(nodeName string, validFor time.Duration, ips []net.IP, dnsNames []string) (certPEM, keyPEM []byte, err error) {
	now := time.Now()
	if validFor <= 0 {
		return nil, nil, fmt.Errorf("issue certificate for node %q: lifetime %s is not positive", nodeName, validFor)
	}
	notAfter := now.Add(validFor)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	return ca.issueNodeCert(nodeName, now.Add(-clockSkew), notAfter, ips, dnsNames)
}

// issueNodeCert is IssueNodeCert with explicit validity bounds, so that
// tests can create certificates that are already expired.
func (ca *CA) issueNodeCert(nodeName string, notBefore, notAfter time.Time, ips []net.IP, dnsNames []string) (certPEM, keyPEM []byte, err error) {
	if err := validateNodeName(nodeName); err != nil {
		return nil, nil, fmt.Errorf("issue certificate: %w", err)
	}
	if ca.Cert == nil || ca.Key == nil {
		return nil, nil, errors.New("issue certificate: ca has no certificate or key")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate for node %q: generate key: %w", nodeName, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate for node %q: %w", nodeName, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: nodeName, Organization: []string{"loadmesh"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{nodeURI(nodeName)},
		IPAddresses:           slices.Clone(ips),
		DNSNames:              slices.Clone(dnsNames),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate for node %q: %w", nodeName, err)
	}
	keyPEM, err = marshalPrivateKeyPEM(key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate for node %q: %w", nodeName, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemTypeCertificate, Bytes: der}), keyPEM, nil
}

// NodeNameFromCert returns the node name carried by a node certificate's
// loadmesh://node/<name> URI SAN. It does not verify the certificate; use
// it only on certificates that were verified against the cluster CA (as
// MutualTLS does).
func NodeNameFromCert(cert *x509.Certificate) (string, error) {
	if cert == nil {
		return "", errors.New("no certificate")
	}
	var found []*url.URL
	for _, u := range cert.URIs {
		if u.Scheme == nodeURIScheme && u.Host == nodeURIHost {
			found = append(found, u)
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("certificate %q has no %s://%s/ uri san", cert.Subject.CommonName, nodeURIScheme, nodeURIHost)
	case 1:
	default:
		return "", fmt.Errorf("certificate %q has %d %s://%s/ uri sans, want one", cert.Subject.CommonName, len(found), nodeURIScheme, nodeURIHost)
	}
	u := found[0]
	escaped, ok := strings.CutPrefix(u.EscapedPath(), "/")
	if !ok || strings.Contains(escaped, "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("certificate %q has malformed node uri %q", cert.Subject.CommonName, u.String())
	}
	name, err := url.PathUnescape(escaped)
	if err != nil {
		return "", fmt.Errorf("certificate %q has malformed node uri %q: %w", cert.Subject.CommonName, u.String(), err)
	}
	if err := validateNodeName(name); err != nil {
		return "", fmt.Errorf("certificate %q: %w", cert.Subject.CommonName, err)
	}
	return name, nil
}

// nodeURI returns loadmesh://node/<name>, escaping the name as a single
// path segment so that names containing '/', '%' or spaces round-trip.
func nodeURI(name string) *url.URL {
	return &url.URL{
		Scheme:  nodeURIScheme,
		Host:    nodeURIHost,
		Path:    "/" + name,
		RawPath: "/" + url.PathEscape(name),
	}
}

func validateNodeName(name string) error {
	switch {
	case name == "":
		return errors.New("empty node name")
	case len(name) > MaxNodeNameLen:
		return fmt.Errorf("node name %.32q... is %d bytes, longer than %d", name, len(name), MaxNodeNameLen)
	case !utf8.ValidString(name):
		return fmt.Errorf("node name %q is not valid utf-8", name)
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return fmt.Errorf("node name %q contains control characters", name)
	}
	return nil
}

// MutualTLS holds one node's identity (certificate and key) and the
// cluster CA, and builds the tls.Configs for both directions of a peer
// connection. Peers are identified by node name, carried in their
// certificate's URI SAN, not by DNS name or IP address.
//
// The configs it returns read the node certificate through an atomic
// pointer on every handshake, so Reload takes effect for new connections
// without rebuilding listeners or clients. A MutualTLS is safe for
// concurrent use.
type MutualTLS struct {
	nodeName string
	// trust is the cluster CA bundle peers are verified against; ReloadAll
	// replaces it (see trust.go).
	trust atomic.Pointer[trustBundle]
	cert  atomic.Pointer[tls.Certificate]
	// reloadMu makes Reload and ReloadAll one at a time, so that a
	// certificate is always validated against the bundle it is used with.
	reloadMu sync.Mutex
}

// NewMutualTLS builds a MutualTLS from the PEM cluster CA certificate(s)
// (several may be concatenated, e.g. during CA rotation), this node's PEM
// certificate (optionally followed by intermediates) and PEM private key.
// It refuses a certificate that is not signed by the CA, is expired, lacks
// server or client authentication usage, or does not name nodeName.
func NewMutualTLS(caPEM, certPEM, keyPEM []byte, nodeName string) (*MutualTLS, error) {
	if err := validateNodeName(nodeName); err != nil {
		return nil, fmt.Errorf("mutual tls: %w", err)
	}
	m := &MutualTLS{nodeName: nodeName}
	if err := m.ReloadAll(caPEM, certPEM, keyPEM); err != nil {
		return nil, fmt.Errorf("mutual tls: %w", err)
	}
	return m, nil
}

// LoadMutualTLS is NewMutualTLS reading its PEM inputs from files.
func LoadMutualTLS(caFile, certFile, keyFile, nodeName string) (*MutualTLS, error) {
	var pems [3][]byte
	for i, f := range []string{caFile, certFile, keyFile} {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("mutual tls: %w", err)
		}
		pems[i] = b
	}
	return NewMutualTLS(pems[0], pems[1], pems[2], nodeName)
}

// DevMutualTLS issues an in-memory certificate for nodeName, signed by ca,
// and returns a MutualTLS for it. With a nil ca it first creates a
// throw-away CA, which only suits a single node. It is meant for --dev and
// tests; nodes that must talk to each other need to share ca.
func DevMutualTLS(nodeName string, ca *CA) (*MutualTLS, error) {
	if ca == nil {
		var err error
		if ca, err = NewCA("loadmesh dev ca", DefaultCALifetime); err != nil {
			return nil, fmt.Errorf("dev mutual tls: %w", err)
		}
	}
	certPEM, keyPEM, err := ca.IssueNodeCert(nodeName, DefaultNodeCertLifetime,
		[]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, []string{"localhost"})
	if err != nil {
		return nil, fmt.Errorf("dev mutual tls: %w", err)
	}
	return NewMutualTLS(ca.CertPEM, certPEM, keyPEM, nodeName)
}

// Reload replaces this node's certificate and key. The new certificate is
// validated exactly as in NewMutualTLS; on error the current one stays in
// use. Connections established earlier keep their certificate; new
// handshakes use the new one.
func (m *MutualTLS) Reload(certPEM, keyPEM []byte) error {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	pair, err := m.checkNodeCert(m.trust.Load(), certPEM, keyPEM)
	if err != nil {
		return err
	}
	m.cert.Store(pair)
	return nil
}

// checkNodeCert parses this node's certificate and key and checks them
// against trust as NewMutualTLS does.
func (m *MutualTLS) checkNodeCert(trust *trustBundle, certPEM, keyPEM []byte) (*tls.Certificate, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load node certificate: %w", err)
	}
	chain := make([]*x509.Certificate, 0, len(pair.Certificate))
	for _, der := range pair.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("load node certificate: %w", err)
		}
		chain = append(chain, c)
	}
	pair.Leaf = chain[0]
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := trust.verifyPeer(chain, usage, m.nodeName); err != nil {
			return nil, fmt.Errorf("node certificate: %w", err)
		}
	}
	return &pair, nil
}

// NodeName returns the name of the local node.
func (m *MutualTLS) NodeName() string { return m.nodeName }

// Leaf returns the local node's current certificate, for example to
// export its expiry as a metric.
func (m *MutualTLS) Leaf() *x509.Certificate { return m.cert.Load().Leaf }

// ServerConfig returns a tls.Config for accepting peer connections. It
// requires TLS 1.3 and a client certificate that chains to the cluster CA,
// is valid for client authentication and names a node. Any node is
// accepted; use PeerName to learn which one, and refuse unwanted nodes
// above this layer.
func (m *MutualTLS) ServerConfig(nextProtos ...string) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: m.getCertificate,
		// crypto/tls would verify client certificates against DNS-style
		// expectations only; we need the loadmesh URI SAN, so we ask for
		// any certificate and verify it ourselves in VerifyConnection,
		// which crypto/tls calls on every handshake, after it has checked
		// the client's proof of possession of the key.
		ClientAuth: tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := m.verifyPeer(cs.PeerCertificates, x509.ExtKeyUsageClientAuth, "")
			return err
		},
		NextProtos: slices.Clone(nextProtos),
		// Peer connections are long-lived; resumption would save little
		// and would carry authorisation decisions across handshakes.
		SessionTicketsDisabled: true,
	}
}

// ClientConfig returns a tls.Config for dialling the node called
// peerName. It requires TLS 1.3 and a server certificate that chains to
// the cluster CA, is valid for server authentication and names exactly
// peerName; an empty peerName accepts any cluster node. The local node's
// certificate is presented as client certificate.
func (m *MutualTLS) ClientConfig(peerName string, nextProtos ...string) *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		GetClientCertificate: m.getClientCertificate,
		// Node names are not DNS names, so crypto/tls' hostname
		// verification cannot be used. The chain and the name are
		// verified in VerifyConnection, which runs on every handshake.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := m.verifyPeer(cs.PeerCertificates, x509.ExtKeyUsageServerAuth, peerName)
			return err
		},
		NextProtos: slices.Clone(nextProtos),
	}
}

// PeerName verifies the peer certificate of an established connection
// against the cluster CA and returns the node name it carries.
func (m *MutualTLS) PeerName(cs tls.ConnectionState) (string, error) {
	return m.verifyPeer(cs.PeerCertificates, x509.ExtKeyUsageAny, "")
}

func (m *MutualTLS) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return m.cert.Load(), nil
}

func (m *MutualTLS) getClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return m.cert.Load(), nil
}

// verifyPeer verifies that chain (leaf first) chains to the cluster CA for
// usage and, if want is not empty, names node want. It returns the node
// name of the leaf.
func (m *MutualTLS) verifyPeer(chain []*x509.Certificate, usage x509.ExtKeyUsage, want string) (string, error) {
	return m.trust.Load().verifyPeer(chain, usage, want)
}

// verifyPeer verifies that chain (leaf first) chains to one of the CAs of
// the bundle for usage and, if want is not empty, names node want. It
// returns the node name of the leaf.
func (t *trustBundle) verifyPeer(chain []*x509.Certificate, usage x509.ExtKeyUsage, want string) (string, error) {
	if len(chain) == 0 {
		return "", errors.New("peer presented no certificate")
	}
	leaf := chain[0]
	opts := x509.VerifyOptions{
		Roots:       t.pool,
		CurrentTime: time.Now(),
		KeyUsages:   []x509.ExtKeyUsage{usage},
	}
	if len(chain) > 1 {
		opts.Intermediates = x509.NewCertPool()
		for _, c := range chain[1:] {
			opts.Intermediates.AddCert(c)
		}
	}
	if _, err := leaf.Verify(opts); err != nil {
		var unknown x509.UnknownAuthorityError
		if errors.As(err, &unknown) {
			return "", fmt.Errorf("certificate %q is not issued by the cluster ca: %w", leaf.Subject.CommonName, err)
		}
		return "", fmt.Errorf("certificate %q: %w", leaf.Subject.CommonName, err)
	}
	name, err := NodeNameFromCert(leaf)
	if err != nil {
		return "", err
	}
	if want != "" && name != want {
		return "", fmt.Errorf("certificate names node %q, want %q", name, want)
	}
	return name, nil
}

// deriveSecret derives a 32-byte secret, bound to label, from this node's
// private key. It lets the node regenerate the same secret after a
// restart without storing it, for example QUIC's stateless reset key,
// which lets peers detect a crashed and restarted node at once instead of
// after an idle timeout. The secret changes when the key does.
func (m *MutualTLS) deriveSecret(label string) ([32]byte, error) {
	var out [32]byte
	der, err := x509.MarshalPKCS8PrivateKey(m.cert.Load().PrivateKey)
	if err != nil {
		return out, fmt.Errorf("derive %s: %w", label, err)
	}
	mac := hmac.New(sha256.New, der)
	mac.Write([]byte("loadmesh/transport/v1 " + label))
	copy(out[:], mac.Sum(nil))
	return out, nil
}

func randomSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return serial, nil
}

func marshalPrivateKeyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemTypePrivateKey, Bytes: der}), nil
}

// parseCertificatesPEM returns every CERTIFICATE block in data, in order,
// ignoring other block types. It fails if there is none.
func parseCertificatesPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != pemTypeCertificate {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no pem certificate found")
	}
	return certs, nil
}

func parseECPrivateKeyPEM(data []byte) (*ecdsa.PrivateKey, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no pem private key found")
		}
		switch block.Type {
		case pemTypePrivateKey:
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse private key: %w", err)
			}
			ec, ok := k.(*ecdsa.PrivateKey)
			if !ok {
				return nil, fmt.Errorf("private key is %T, want ecdsa", k)
			}
			return ec, nil
		case pemTypeECKey:
			k, err := x509.ParseECPrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse private key: %w", err)
			}
			return k, nil
		}
	}
}
