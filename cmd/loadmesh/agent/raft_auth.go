package agent

import (
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/loadmesh/loadmesh/transport"
)

// raftServerTLS is the Raft port's server TLS: a certificate from the
// cluster CA is not enough, the node it names must also be a live gossip
// member (as on the QUIC peer channel). Otherwise any holder of a CA-signed
// certificate — a node revoked from the cluster, a test machine — could
// send Raft RPCs (a TimeoutNow starts an election).
func (a *Agent) raftServerTLS() *tls.Config {
	cfg := a.mtls.ServerConfig(raftALPN)
	verify := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := verify(cs); err != nil {
			return err
		}
		if len(cs.PeerCertificates) == 0 {
			return errors.New("raft: peer presented no certificate")
		}
		name, err := transport.NodeNameFromCert(cs.PeerCertificates[0])
		if err != nil {
			return err
		}
		if err := a.certRevoked(cs.PeerCertificates[0]); err != nil { // revoke.go
			a.log.Warn("refused a raft connection from a revoked node", "peer", name, "error", err)
			return fmt.Errorf("raft: %w", err)
		}
		if err := a.authorizeRaftPeer(name); err != nil {
			a.log.Warn("refused a raft connection from a non-member", "peer", name, "error", err)
			return fmt.Errorf("raft: %w", err)
		}
		return nil
	}
	return cfg
}
