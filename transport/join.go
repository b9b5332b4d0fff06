package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/quic-go/quic-go"
)

// JoinALPN names the join protocol on the QUIC peer port: a node without
// a certificate sends one JoinRequest (a join token and a certificate
// request) and gets one JoinResponse (its certificate, or why not). A
// node renewing its certificate, or a server carrying a request to the
// leader, speaks it too, authenticated by its node certificate instead of
// a token.
const JoinALPN = "loadmesh-join/1"

// maxJoinMessage bounds a join request or response, in bytes.
const maxJoinMessage = 256 << 10

// joinStreamTimeout bounds how long a join connection waits for its
// request.
const joinStreamTimeout = 10 * time.Second

// JoinRequest asks the cluster to sign a node certificate.
type JoinRequest struct {
	// Token is the join token (lm_<id>_<secret>); empty for a renewal,
	// which the node's current certificate authenticates.
	Token string `json:"token,omitempty"`
	// Node is the name the certificate is for.
	Node string `json:"node"`
	// CSR is the PEM certificate request, signed by the node's new key.
	CSR string `json:"csr"`
	// ForwardedBy names the server that carried the request to the
	// leader, and Source is the address the request came from there.
	ForwardedBy string `json:"forwarded_by,omitempty"`
	Source      string `json:"source,omitempty"`
}

// JoinResponse answers a JoinRequest: Error, or the certificate and what
// the node needs to join.
type JoinResponse struct {
	// Error says in one line why nothing was signed.
	Error string `json:"error,omitempty"`
	// Cert is the node certificate (PEM, leaf first).
	Cert string `json:"cert,omitempty"`
	// CABundle is every CA certificate the cluster trusts (PEM).
	CABundle string `json:"ca_bundle,omitempty"`
	// GossipKeys are the gossip encryption keys, primary first (base64).
	GossipKeys []string `json:"gossip_keys,omitempty"`
	// ClusterID is the cluster's ID.
	ClusterID string `json:"cluster_id,omitempty"`
	// Seeds are gossip addresses of live members, for --join.
	Seeds []string `json:"seeds,omitempty"`
	// Signer names the leader that signed the certificate.
	Signer string `json:"signer,omitempty"`
	// Retry marks a refusal that may pass later (no leader yet, leadership
	// moving): the client tries again.
	Retry bool `json:"retry,omitempty"`
}

// JoinCall is a join request as a PeerServer received it.
type JoinCall struct {
	Request JoinRequest
	// Peer is the node name of the client's certificate, verified against
	// the cluster CA, or "" if the client presented none.
	Peer string
	// Remote is the client's address.
	Remote net.Addr
}

// JoinHandler answers a join request. It runs on a goroutine per
// connection and must return once ctx ends.
type JoinHandler func(ctx context.Context, call JoinCall) JoinResponse

// JoinError is a refusal the answering server gave.
type JoinError struct {
	Server string
	Msg    string
	// Retry is set when trying again later may succeed.
	Retry bool
}

func (e *JoinError) Error() string { return e.Msg }

// serveJoin answers the one join request of conn.
func (s *PeerServer) serveJoin(ctx context.Context, conn *quic.Conn) {
	defer conn.CloseWithError(0, "")
	cs := conn.ConnectionState().TLS
	peer := ""
	if leaf := peerLeaf(cs); leaf != nil { // verified in the handshake
		peer, _ = NodeNameFromCert(leaf)
	}
	actx, cancel := context.WithTimeout(ctx, joinStreamTimeout)
	str, err := conn.AcceptStream(actx)
	cancel()
	if err != nil {
		s.logger.Debug("join connection without request", "addr", conn.RemoteAddr().String(), "error", err)
		return
	}
	defer str.Close()
	var req JoinRequest
	var resp JoinResponse
	str.SetReadDeadline(time.Now().Add(joinStreamTimeout))
	b, err := io.ReadAll(io.LimitReader(str, maxJoinMessage+1))
	switch {
	case err != nil:
		resp.Error = fmt.Sprintf("read join request: %v", err)
	case len(b) > maxJoinMessage:
		resp.Error = fmt.Sprintf("join request larger than %d bytes", maxJoinMessage)
	default:
		if err := json.Unmarshal(b, &req); err != nil {
			resp.Error = fmt.Sprintf("malformed join request: %v", err)
		} else {
			resp = s.join(ctx, JoinCall{Request: req, Peer: peer, Remote: conn.RemoteAddr()})
		}
	}
	out, _ := json.Marshal(resp)
	str.Write(out)
	str.Close()
	// Closing the connection now could discard the answer in flight: the
	// client closes it once it has read the answer.
	select {
	case <-conn.Context().Done():
	case <-ctx.Done():
	case <-time.After(joinStreamTimeout):
	}
}

// joinTLSConfig is the server side of the join protocol: a client
// certificate is optional, but verified (and the node authorized) if one
// is presented.
func (s *PeerServer) joinTLSConfig(base *tls.Config, check func(tls.ConnectionState) error) *tls.Config {
	cfg := base.Clone()
	cfg.NextProtos = []string{JoinALPN}
	cfg.ClientAuth = tls.RequestClientCert
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return nil
		}
		return check(cs)
	}
	return cfg
}

// JoinClientTLS returns the client tls.Config of a node that has no
// certificate yet: it trusts any node certificate of the CA(s) in caPEM
// (the server's node name is not known in advance) and presents none.
func JoinClientTLS(caPEM []byte) (*tls.Config, error) {
	trust, err := newTrustBundle(caPEM)
	if err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Verified in VerifyConnection: node names are not DNS names.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := trust.verifyPeer(cs.PeerCertificates, x509.ExtKeyUsageServerAuth, "")
			if err != nil {
				return fmt.Errorf("the server's certificate does not verify against the given --tls-ca: %w", err)
			}
			return nil
		},
		NextProtos: []string{JoinALPN},
	}, nil
}

// RequestJoin sends req to the join server at addr (the QUIC peer port)
// over conf (JoinClientTLS, or MutualTLS.ClientConfig with JoinALPN for a
// node that has a certificate) and returns its answer. A refusal is a
// *JoinError.
func RequestJoin(ctx context.Context, addr string, conf *tls.Config, req JoinRequest) (JoinResponse, error) {
	var resp JoinResponse
	conf = conf.Clone()
	conf.NextProtos = []string{JoinALPN}
	conn, err := quic.DialAddr(ctx, addr, conf, &quic.Config{HandshakeIdleTimeout: 5 * time.Second, MaxIdleTimeout: 30 * time.Second})
	if err != nil {
		return resp, fmt.Errorf("join server %s: %w", addr, err)
	}
	defer conn.CloseWithError(0, "")
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return resp, fmt.Errorf("join server %s: %w", addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		str.SetDeadline(dl)
	}
	body, _ := json.Marshal(req)
	if _, err := str.Write(body); err != nil {
		return resp, fmt.Errorf("join server %s: send request: %w", addr, err)
	}
	str.Close() // no more to send
	b, err := io.ReadAll(io.LimitReader(str, maxJoinMessage+1))
	if err != nil {
		return resp, fmt.Errorf("join server %s: read answer: %w", addr, err)
	}
	if err := json.Unmarshal(b, &resp); err != nil {
		return resp, fmt.Errorf("join server %s: malformed answer: %w", addr, err)
	}
	if resp.Error != "" {
		return resp, &JoinError{Server: addr, Msg: resp.Error, Retry: resp.Retry}
	}
	if resp.Cert == "" {
		return resp, fmt.Errorf("join server %s: answer carries no certificate", addr)
	}
	return resp, nil
}

// IsJoinRefusal reports whether err is a refusal by a join server (as
// opposed to a server that could not be reached).
func IsJoinRefusal(err error) bool {
	var je *JoinError
	return errors.As(err, &je)
}

// IsFinalJoinRefusal reports whether err is a refusal that trying again
// will not change (a bad token, say).
func IsFinalJoinRefusal(err error) bool {
	var je *JoinError
	return errors.As(err, &je) && !je.Retry
}
