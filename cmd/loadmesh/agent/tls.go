package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/transport"
)

// raftALPN names the Raft protocol in the TLS handshake on the Raft port.
const raftALPN = "loadmesh-raft/1"

// loadTLS returns the node's mutual-TLS identity: the injected one, the
// --tls-* files, or under --dev a throwaway in-memory CA.
func (a *Agent) loadTLS(ctx context.Context) (*transport.MutualTLS, error) {
	if a.cfg.TLSCAKey != "" { // a key that cannot sign is reported at start, not at the first join
		if _, err := a.caSigner(); err != nil {
			return nil, err
		}
	}
	switch {
	case a.deps.TLS != nil:
		if a.deps.TLS.NodeName() != a.cfg.Name {
			return nil, fmt.Errorf("tls identity names node %q, not %q", a.deps.TLS.NodeName(), a.cfg.Name)
		}
		return a.deps.TLS, nil
	case a.cfg.TLSCA != "" && a.cfg.TLSCert == "":
		// A certificate the cluster issues (join_client.go).
		return a.clusterIssuedTLS(ctx)
	case a.cfg.TLSCA != "":
		m, err := transport.LoadMutualTLS(a.cfg.TLSCA, a.cfg.TLSCert, a.cfg.TLSKey, a.cfg.Name)
		if err != nil {
			return nil, fmt.Errorf("peer tls: %w", err)
		}
		return m, nil
	case a.cfg.Dev:
		ca, err := transport.NewCA("loadmesh dev CA", 24*time.Hour)
		if err != nil {
			return nil, err
		}
		a.log.Warn("using a throwaway in-memory CA (--dev); other agents cannot join this node")
		return transport.DevMutualTLS(a.cfg.Name, ca)
	}
	return nil, ErrNoTLS
}

// authorizePeer admits a peer-channel connection from a node whose
// certificate is valid only if gossip knows it as a live member.
func (a *Agent) authorizePeer(name string) error {
	// Runs on quic-go's handshake goroutines, possibly before Start has set
	// a.cluster: read it through the atomic pointer.
	c := a.liveCluster.Load()
	if c == nil {
		return errors.New("not yet part of a cluster")
	}
	m, ok := c.Member(name)
	if !ok {
		return fmt.Errorf("node %q is not a member", name)
	}
	if m.Status != cluster.StatusAlive && m.Status != cluster.StatusSuspect {
		return fmt.Errorf("node %q is %s", name, m.Status)
	}
	return nil
}

// startIngress serves the client ingress: plain HTTP/1.1, or with
// --http-tls-* HTTP/1.1 and HTTP/2 over TLS plus HTTP/3 on the same port
// number over UDP, advertised with Alt-Svc.
func (a *Agent) startIngress() error {
	handler := a.ingressHandler(a.cacheHandler(a.ingress))
	ln := a.limitListener(a.httpLn)
	a.httpSrv = &http.Server{
		ReadHeaderTimeout: a.cfg.RequestHeaderTimeout,
		WriteTimeout:      a.cfg.WriteTimeout,
		IdleTimeout:       a.cfg.IdleTimeout,
		MaxHeaderBytes:    a.cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
	}
	if a.cfg.HTTPTLSCert == "" {
		a.httpSrv.Handler = handler
		a.serve(a.httpSrv, ln)
		return nil
	}
	cert, err := tls.LoadX509KeyPair(a.cfg.HTTPTLSCert, a.cfg.HTTPTLSKey)
	if err != nil {
		return fmt.Errorf("ingress tls: %w", err)
	}
	a.ingressCert.Store(&cert)
	tlsConf := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Read on every handshake, so that a reload (SIGHUP) takes effect
		// for new connections.
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return a.ingressCert.Load(), nil },
		NextProtos:     []string{"h2", "http/1.1"},
	}
	port := a.httpLn.Addr().(*net.TCPAddr).Port
	host, _, _ := net.SplitHostPort(a.cfg.HTTP)
	if a.h3Conn, err = net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(port))); err != nil {
		return fmt.Errorf("http/3 listen: %w", err)
	}
	a.h3Srv = &http3.Server{
		Handler:     handler,
		TLSConfig:   http3.ConfigureTLSConfig(tlsConf.Clone()),
		IdleTimeout: a.cfg.IdleTimeout,
		// HTTP/3 has no header or write timeouts of its own: QUIC's idle
		// timeout and flow control bound a slow client.
		MaxHeaderBytes: a.cfg.MaxHeaderBytes,
		ConnContext:    a.h3ConnContext,
	}
	altSvc := `h3=":` + strconv.Itoa(port) + `"; ma=86400`
	a.httpSrv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Alt-Svc", altSvc)
		handler.ServeHTTP(w, r)
	})
	a.httpSrv.TLSConfig = tlsConf
	a.wg.Add(2)
	go func() {
		defer a.wg.Done()
		if err := a.httpSrv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("ingress stopped", "error", err)
		}
	}()
	go func() {
		defer a.wg.Done()
		if err := a.h3Srv.Serve(a.h3Conn); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, quic.ErrServerClosed) {
			a.log.Error("http/3 ingress stopped", "error", err)
		}
	}()
	return nil
}
