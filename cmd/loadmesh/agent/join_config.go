package agent

import (
	"fmt"
	"net"
	"time"
)

// validateJoin checks the TLS and join flags: --tls-ca with --tls-cert
// and --tls-key (a certificate the operator issued), or --tls-ca alone (a
// certificate the cluster issues: from an earlier join in DATA_DIR/tls,
// or with a join token).
func (c Config) validateJoin() []error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	switch n := nonEmpty(c.TLSCert, c.TLSKey); {
	case n == 1:
		add("--tls-cert and --tls-key go together")
	case n == 2 && c.TLSCA == "":
		add("--tls-cert and --tls-key need --tls-ca")
	}
	token := c.JoinToken != "" || c.JoinTokenFile != ""
	if c.JoinToken != "" && c.JoinTokenFile != "" {
		add("--join-token and --join-token-file: give one")
	}
	if token && c.TLSCA == "" {
		add("--join-token needs --tls-ca, the cluster CA certificate, to trust the cluster")
	}
	if token && c.TLSCert != "" {
		add("--join-token is for a node without --tls-cert: the cluster issues its certificate")
	}
	if c.TLSCAKey != "" && c.TLSCA == "" {
		add("--tls-ca-key needs --tls-ca")
	}
	if c.CertTTL != 0 && (c.CertTTL < minCertTTL || c.CertTTL > 10*365*24*time.Hour) {
		add("--cert-ttl %s is outside 1m..87600h", c.CertTTL)
	}
	for _, s := range c.JoinServers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			add("--join-server %q: want host:port (the peer port)", s)
		}
	}
	return errs
}
