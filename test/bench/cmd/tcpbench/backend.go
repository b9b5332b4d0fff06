package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// The backends every path ends at. Each listens on its own port, because
// a loadmesh service and an HAProxy listen section have one backend
// address each:
//
//   - echo: writes back every byte it reads; at EOF it half-closes its
//     side, so a client can see whether a half-close travels the path.
//   - sink: reads an 8-byte big-endian length N, then N bytes, which it
//     discards, and answers with N as 8 bytes: the client's clock stops
//     only when every byte has arrived.
//   - source: reads an 8-byte length N and writes N zero bytes.
//   - tlsecho: echo behind crypto/tls (TLS 1.3, a self-signed ECDSA
//     certificate): the client's handshake runs end to end through the
//     path.
const (
	svcEcho    = "echo"
	svcSink    = "sink"
	svcSource  = "source"
	svcTLSEcho = "tlsecho"
)

var services = []string{svcEcho, svcSink, svcSource, svcTLSEcho}

// tlsServerName is the name in the backend certificate; clients verify it.
const tlsServerName = "tcpbench-backend"

// bulkBuf is the read and write size of the sink and source backends
// and of the bulk clients.
const bulkBuf = 256 << 10

// serveBackend accepts on ln until it is closed, serving kind.
func serveBackend(ln net.Listener, kind string) error {
	var handle func(net.Conn)
	switch kind {
	case svcEcho, svcTLSEcho:
		handle = handleEcho
	case svcSink:
		handle = handleSink
	case svcSource:
		handle = handleSource
	default:
		return fmt.Errorf("unknown backend %q", kind)
	}
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Out of descriptors or similar: back off as net/http does.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		go func() {
			defer c.Close()
			handle(c)
		}()
	}
}

func handleEcho(c net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				closeWrite(c)
			}
			return
		}
	}
}

func closeWrite(c net.Conn) {
	switch x := c.(type) {
	case interface{ CloseWrite() error }:
		_ = x.CloseWrite()
	}
}

func handleSink(c net.Conn) {
	var hdr [8]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	n := int64(binary.BigEndian.Uint64(hdr[:]))
	buf := make([]byte, bulkBuf)
	got, err := io.CopyBuffer(io.Discard, io.LimitReader(c, n), buf)
	if err != nil || got != n {
		return
	}
	binary.BigEndian.PutUint64(hdr[:], uint64(got))
	if _, err := c.Write(hdr[:]); err != nil {
		return
	}
	// Wait for the client to close, so that it is always the one that
	// closes first (its TIME_WAIT, not the backend's).
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, _ = io.Copy(io.Discard, c)
}

func handleSource(c net.Conn) {
	var hdr [8]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	n := int64(binary.BigEndian.Uint64(hdr[:]))
	buf := make([]byte, bulkBuf)
	for n > 0 {
		k := min(n, int64(len(buf)))
		w, err := c.Write(buf[:k])
		n -= int64(w)
		if err != nil {
			return
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, _ = io.Copy(io.Discard, c)
}

// selfSigned makes the backend's TLS certificate and key (PEM).
func selfSigned() (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: tlsServerName},
		DNSNames:              []string{tlsServerName},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

func serverTLSConfig(certPEM, keyPEM []byte) (*tls.Config, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}, nil
}

func clientTLSConfig(certPEM []byte) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(certPEM) {
		return nil, errors.New("bad backend certificate")
	}
	return &tls.Config{RootCAs: pool, ServerName: tlsServerName, MinVersion: tls.VersionTLS13}, nil
}

// backends are the four listeners of one backend set.
type backends struct {
	addr map[string]string
	lns  []net.Listener
	wg   sync.WaitGroup
}

// startBackends listens on addrs (service → address; ":0" style
// addresses are fine) and serves each kind.
func startBackends(addrs map[string]string, certPEM, keyPEM []byte) (*backends, error) {
	b := &backends{addr: map[string]string{}}
	for _, s := range services {
		a, ok := addrs[s]
		if !ok {
			continue
		}
		ln, err := net.Listen("tcp", a)
		if err != nil {
			b.Close()
			return nil, err
		}
		if s == svcTLSEcho {
			cfg, err := serverTLSConfig(certPEM, keyPEM)
			if err != nil {
				ln.Close()
				b.Close()
				return nil, err
			}
			ln = tls.NewListener(ln, cfg)
		}
		b.addr[s] = ln.Addr().String()
		b.lns = append(b.lns, ln)
		b.wg.Go(func() { _ = serveBackend(ln, s) })
	}
	return b, nil
}

func (b *backends) Close() {
	for _, ln := range b.lns {
		ln.Close()
	}
	b.wg.Wait()
}

// backendMain is `tcpbench backend ...`: the backends as their own
// process, so that their CPU is neither the client's nor a proxy's.
func backendMain(args []string) error {
	fs := flag.NewFlagSet("backend", flag.ContinueOnError)
	addrs := map[string]*string{}
	for _, s := range services {
		addrs[s] = fs.String(s, "", "listen address of the "+s+" backend")
	}
	certFile := fs.String("tls-cert", "", "PEM certificate of the tlsecho backend")
	keyFile := fs.String("tls-key", "", "PEM key of the tlsecho backend")
	if err := fs.Parse(args); err != nil {
		return err
	}
	certPEM, err := os.ReadFile(*certFile)
	if err != nil {
		return err
	}
	keyPEM, err := os.ReadFile(*keyFile)
	if err != nil {
		return err
	}
	m := map[string]string{}
	for s, a := range addrs {
		if *a != "" {
			m[s] = *a
		}
	}
	b, err := startBackends(m, certPEM, keyPEM)
	if err != nil {
		return err
	}
	for _, s := range services {
		if a, ok := b.addr[s]; ok {
			fmt.Printf("%s backend on %s\n", s, a)
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	b.Close()
	return nil
}
