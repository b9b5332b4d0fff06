package transport

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"
)

const pemTypeCSR = "CERTIFICATE REQUEST"

// NewSerial returns a random certificate serial number, so that a caller
// can record a certificate's serial before it signs it.
func NewSerial() (*big.Int, error) { return randomSerial() }

// NewNodeKeyCSR generates a new ECDSA P-256 private key and a certificate
// request for the node called nodeName, signed with it. The key never
// leaves the caller: only the request goes to the cluster. It returns the
// request and the key (PKCS #8), both PEM encoded.
func NewNodeKeyCSR(nodeName string) (csrPEM, keyPEM []byte, err error) {
	if err := validateNodeName(nodeName); err != nil {
		return nil, nil, fmt.Errorf("certificate request: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate request: generate key: %w", err)
	}
	if keyPEM, err = marshalPrivateKeyPEM(key); err != nil {
		return nil, nil, fmt.Errorf("certificate request: %w", err)
	}
	csrPEM, err = NodeCSR(nodeName, key)
	return csrPEM, keyPEM, err
}

// NodeCSR returns a PEM certificate request for nodeName signed with key.
func NodeCSR(nodeName string, key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: nodeName, Organization: []string{"loadmesh"}},
		URIs:    []*url.URL{nodeURI(nodeName)},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemTypeCSR, Bytes: der}), nil
}

// ParseNodeCSR parses a PEM certificate request, checks its signature
// (the requester holds the key) and that its key is ECDSA P-256 or
// Ed25519.
func ParseNodeCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != pemTypeCSR {
		return nil, errors.New("certificate request: no pem CERTIFICATE REQUEST block")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request: bad signature: %w", err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("certificate request: ecdsa key on %s, want P-256", k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	default:
		return nil, fmt.Errorf("certificate request: %T key, want ecdsa P-256 or ed25519", csr.PublicKey)
	}
	return csr, nil
}

// SignNodeCSR issues the certificate for the node called nodeName with
// the public key of csr (parsed and checked by ParseNodeCSR), with the
// same profile as IssueNodeCert: the node name as CommonName and URI SAN,
// server and client authentication. Whatever names csr asks for are
// ignored: the node name is the caller's decision. serial, if not nil,
// is the serial number (see NewSerial). The certificate is valid for
// validFor from now, backdated by a clock-skew allowance of at most a
// quarter of validFor, and never beyond the CA's own expiry. It returns
// the certificate in PEM form.
func (ca *CA) SignNodeCSR(csr *x509.CertificateRequest, nodeName string, validFor time.Duration, serial *big.Int) ([]byte, *x509.Certificate, error) {
	if err := validateNodeName(nodeName); err != nil {
		return nil, nil, fmt.Errorf("sign certificate: %w", err)
	}
	if ca.Cert == nil || ca.Key == nil {
		return nil, nil, errors.New("sign certificate: ca has no certificate or key")
	}
	if validFor <= 0 {
		return nil, nil, fmt.Errorf("sign certificate for node %q: lifetime %s is not positive", nodeName, validFor)
	}
	if serial == nil {
		var err error
		if serial, err = randomSerial(); err != nil {
			return nil, nil, fmt.Errorf("sign certificate for node %q: %w", nodeName, err)
		}
	}
	now := time.Now()
	notAfter := now.Add(validFor)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: nodeName, Organization: []string{"loadmesh"}},
		NotBefore:             now.Add(-min(clockSkew, validFor/4)),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{nodeURI(nodeName)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign certificate for node %q: %w", nodeName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("sign certificate for node %q: %w", nodeName, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemTypeCertificate, Bytes: der}), cert, nil
}
