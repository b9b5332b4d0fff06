package provision

import (
	"errors"
	"os"
	"path/filepath"
)

// joinTokenFile holds, in a node's tls dir, the join token it requests
// its certificate with (a file, so the token does not show in ps).
const joinTokenFile = "join-token"

// writeJoinTLS prepares dir/tls for a node that requests its certificate
// from the cluster with req's join token: the CA certificate it trusts
// and the token (owner-only). No key or certificate is made here: the
// agent makes its key itself.
func writeJoinTLS(dir string, req Request) error {
	if req.CACert == "" || len(req.JoinServers) == 0 {
		return errors.New("the request carries a join token but no ca_cert or join_servers")
	}
	tdir := filepath.Join(dir, "tls")
	if err := os.MkdirAll(tdir, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tdir, "ca.pem"), []byte(req.CACert), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(tdir, joinTokenFile), []byte(req.JoinToken+"\n"), 0o600)
}
