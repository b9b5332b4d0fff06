package transport

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// tcpNode is a peer server whose CONNECT streams go to its TCP services.
type tcpNode struct {
	*ptNode
	svcs *TCPServices
}

// tcpPicker places connections on the listed targets in order, skipping
// tried ones; it counts open connections per node.
type tcpPicker struct {
	mu      sync.Mutex
	targets []PeerTarget
	open    map[string]int
}

func (p *tcpPicker) PickConn(service string, client netip.Addr, tried []string) (PeerTarget, func(error), error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, t := range p.targets {
		if slices.Contains(tried, t.Name) {
			continue
		}
		if p.open == nil {
			p.open = map[string]int{}
		}
		p.open[t.Name]++
		name := t.Name
		var once sync.Once
		return t, func(error) {
			once.Do(func() {
				p.mu.Lock()
				p.open[name]--
				p.mu.Unlock()
			})
		}, nil
	}
	return PeerTarget{}, nil, ErrNoPeer
}

func (p *tcpPicker) set(ts ...PeerTarget) {
	p.mu.Lock()
	p.targets = ts
	p.mu.Unlock()
}

// startTCPNode starts a peer server and TCP services cfgs on it.
func startTCPNode(t testing.TB, name string, picker TCPPicker, cfgs ...TCPServiceConfig) *tcpNode {
	t.Helper()
	n := &tcpNode{}
	var ready atomic.Pointer[TCPServices] // set once the services exist
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s := ready.Load(); s != nil && IsTunnel(r) {
			s.ServeTunnel(w, r)
			return
		}
		http.NotFound(w, r)
	})
	n.ptNode = ptStart(t, name, handler)
	svcs, err := NewTCPServices(cfgs, TCPServicesDeps{Picker: picker, Peers: n.client(), Logger: ptLogger(t, name), Registerer: n.reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := svcs.Start(); err != nil {
		t.Fatal(err)
	}
	n.svcs = svcs
	ready.Store(svcs)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		svcs.Shutdown(ctx)
	})
	return n
}

func (n *tcpNode) addr(service string) string { return n.svcs.Addr(service).String() }

// tcpBackend is a test backend: serve runs per accepted connection.
func tcpBackend(t testing.TB, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				serve(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func echo(c net.Conn) {
	io.Copy(c, c)
	c.(*net.TCPConn).CloseWrite()
}

// meshPair is node a (listener only) and node b (backend only).
func meshPair(t testing.TB, backend string, mod func(*TCPServiceConfig)) (a, b *tcpNode, picker *tcpPicker) {
	t.Helper()
	picker = &tcpPicker{}
	bc := TCPServiceConfig{Name: "svc", Backend: backend}
	ac := TCPServiceConfig{Name: "svc", Listen: "127.0.0.1:0"}
	if mod != nil {
		mod(&ac)
		mod(&bc)
		ac.Backend, bc.Listen = "", ""
		ac.Health = ""
	}
	b = startTCPNode(t, "b", picker, bc)
	a = startTCPNode(t, "a", picker, ac)
	picker.set(b.target())
	return a, b, picker
}

func dialSvc(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(ptScale(20 * time.Second)))
	return c.(*net.TCPConn)
}

func TestTCPServiceConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  TCPServiceConfig
		want string
	}{
		{TCPServiceConfig{Name: "x", Listen: ":1"}, ""},
		{TCPServiceConfig{Name: "xroad", Listen: ":1", Backend: "127.0.0.1:2", Health: "http://127.0.0.1:3/", ProxyProtocol: true, Balance: "consistent-hash"}, ""},
		{TCPServiceConfig{Name: "Bad_Name", Listen: ":1"}, "service name"},
		{TCPServiceConfig{Name: "http", Listen: ":1"}, "HTTP ingress"},
		{TCPServiceConfig{Name: "x"}, "neither listen nor backend"},
		{TCPServiceConfig{Name: "x", Listen: "nope"}, "not host:port"},
		{TCPServiceConfig{Name: "x", Backend: "127.0.0.1:2", Health: "ftp://x/"}, "tcp:// URL"},
		{TCPServiceConfig{Name: "x", Listen: ":1", Health: "tcp://x:1"}, "needs a backend"},
		{TCPServiceConfig{Name: "x", Listen: ":1", Balance: "fastest"}, "balance"},
		{TCPServiceConfig{Name: "x", Listen: ":1", IdleTimeout: time.Millisecond}, "idle_timeout"},
		{TCPServiceConfig{Name: "x", Listen: ":1", Limits: ConnLimitConfig{MaxConns: -1}}, "negative"},
	} {
		err := tc.cfg.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc.cfg, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: error %v, want one containing %q", tc.cfg, err, tc.want)
		}
	}
	if _, err := NewTCPServices([]TCPServiceConfig{{Name: "x", Backend: "127.0.0.1:1"}, {Name: "x", Backend: "127.0.0.1:2"}}, TCPServicesDeps{}); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("duplicate service: %v", err)
	}
}

// A TLS server that requires client certificates, behind the mesh: the
// client's handshake goes through node a and the mesh to node b's
// backend, sees the backend's certificate (not the mesh's), and the
// backend sees the client's certificate.
func TestTCPTLSPassthroughMutualAuth(t *testing.T) {
	ca := testCA(t, "service-ca")
	serverCert := testLeaf(t, ca, "xroad-ss1")
	clientCert := testLeaf(t, ca, "member-client")
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	seen := make(chan string, 1)
	backend := tcpBackend(t, func(c net.Conn) {
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool})
		if err := tc.Handshake(); err != nil {
			return // the TCP health checks connect and close
		}
		select {
		case seen <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName:
		default:
		}
		io.Copy(tc, tc)
		tc.CloseWrite()
	})
	a, b, _ := meshPair(t, backend, nil)
	raw := dialSvc(t, a.addr("svc"))
	c := tls.Client(raw, &tls.Config{ServerName: "xroad-ss1", RootCAs: pool, Certificates: []tls.Certificate{clientCert}})
	if err := c.Handshake(); err != nil {
		t.Fatalf("handshake through the mesh: %v", err)
	}
	if got := c.ConnectionState().PeerCertificates[0].Subject.CommonName; got != "xroad-ss1" {
		t.Errorf("client saw certificate %q, want the backend's", got)
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q %v", buf, err)
	}
	if got := <-seen; got != "member-client" {
		t.Errorf("backend saw client %q, want member-client", got)
	}
	c.Close()
	ptWait(t, 5*time.Second, func() error {
		if n := b.svcs.Status()[0].OpenBackend; n != 0 {
			return fmt.Errorf("b still has %d backend connections open", n)
		}
		return nil
	})
	st := a.svcs.Status()[0]
	if st.Placed["b"] != 1 || st.BytesUp == 0 || st.BytesDown == 0 {
		t.Errorf("a's status: %+v", st)
	}
	// b counts what it carried for a at its backend side, the same bytes.
	ptWait(t, 5*time.Second, func() error {
		bs := b.svcs.Status()[0]
		if bs.RelayedForPeers != 1 || bs.BackendBytesUp != st.BytesUp || bs.BackendBytesDown != st.BytesDown {
			return fmt.Errorf("b's status: relayed %d, backend bytes %d/%d; a's bytes %d/%d", bs.RelayedForPeers, bs.BackendBytesUp, bs.BackendBytesDown, st.BytesUp, st.BytesDown)
		}
		return nil
	})
	if v := testutil.ToFloat64(a.svcs.metrics.conns.WithLabelValues("svc", "forwarded")); v != 1 {
		t.Errorf("forwarded connections metric %v, want 1", v)
	}
}

// Large transfers both ways with half-close: the client uploads, closes
// its side, and the backend answers with the size and digest of what it
// got, then a large download, after the client's end of data.
func TestTCPHalfCloseLargeTransfers(t *testing.T) {
	const size = 24 << 20
	backend := tcpBackend(t, func(c net.Conn) {
		h := sha256.New()
		n, err := io.Copy(h, c) // until the client's FIN
		if err != nil {
			return
		}
		fmt.Fprintf(c, "%d %x\n", n, h.Sum(nil))
		io.Copy(c, &offsetPattern{left: size})
		c.(*net.TCPConn).CloseWrite()
	})
	want := sha256.New()
	io.Copy(want, &offsetPattern{left: size})
	wantSum := want.Sum(nil)
	for _, route := range []string{"forwarded", "local"} {
		t.Run(route, func(t *testing.T) {
			a, _, picker := meshPair(t, backend, nil)
			addr := a.addr("svc")
			if route == "local" {
				l := startTCPNode(t, "l", picker, TCPServiceConfig{Name: "svc", Listen: "127.0.0.1:0", Backend: backend})
				picker.set(PeerTarget{Name: "l", Local: true})
				addr = l.addr("svc")
			}
			c := dialSvc(t, addr)
			go func() {
				io.Copy(c, &offsetPattern{left: size})
				c.CloseWrite()
			}()
			br := bufio.NewReader(c)
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("digest line: %v", err)
			}
			if w := fmt.Sprintf("%d %x\n", size, wantSum); line != w {
				t.Fatalf("backend got %q, want %q", line, w)
			}
			got := sha256.New()
			n, err := io.Copy(got, br)
			if err != nil || n != size {
				t.Fatalf("download: %d bytes, %v", n, err)
			}
			if !bytes.Equal(got.Sum(nil), wantSum) {
				t.Fatal("download corrupted")
			}
		})
	}
}

// offsetPattern yields left bytes whose value depends on their offset.
type offsetPattern struct{ off, left int64 }

func (p *offsetPattern) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	b = b[:min(int64(len(b)), p.left)]
	for i := range b {
		b[i] = byte((p.off + int64(i)) % 251)
	}
	p.off += int64(len(b))
	p.left -= int64(len(b))
	return len(b), nil
}

func TestTCPProxyProtocolV2(t *testing.T) {
	got := make(chan *proxyproto.Header, 1)
	var healthChecks atomic.Int32
	backend := tcpBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		h, err := proxyproto.Read(br)
		if err == nil && h.Command == proxyproto.LOCAL {
			healthChecks.Add(1) // a health check's header
			return
		}
		select {
		case got <- h: // nil when unreadable
		default:
		}
		c.Write([]byte("ok"))
	})
	a, _, _ := meshPair(t, backend, func(c *TCPServiceConfig) { c.ProxyProtocol = true })
	c := dialSvc(t, a.addr("svc"))
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read: %v", err)
	}
	h := <-got
	if h == nil {
		t.Fatal("backend got no valid PROXY header")
	}
	if h.Version != 2 || h.Command != proxyproto.PROXY || h.TransportProtocol != proxyproto.TCPv4 {
		t.Errorf("header %+v", h)
	}
	if h.SourceAddr.String() != c.LocalAddr().String() {
		t.Errorf("source %s, want the client's %s", h.SourceAddr, c.LocalAddr())
	}
	if h.DestinationAddr.String() != a.addr("svc") {
		t.Errorf("destination %s, want a's listener %s", h.DestinationAddr, a.addr("svc"))
	}
	// b's health check sends a LOCAL header, so the backend never sees a
	// connection without one.
	ptWait(t, 10*time.Second, func() error {
		if healthChecks.Load() == 0 {
			return errors.New("no health check with a LOCAL header yet")
		}
		return nil
	})
}

// A node whose backend is unhealthy refuses relay streams; the placing
// node tries the next one before sending any byte.
func TestTCPUnhealthyNodeRefusesAndNextIsTried(t *testing.T) {
	good := tcpBackend(t, echo)
	picker := &tcpPicker{}
	sick := startTCPNode(t, "sick", picker, TCPServiceConfig{Name: "svc", Backend: good, Health: "tcp://127.0.0.1:1"})
	well := startTCPNode(t, "well", picker, TCPServiceConfig{Name: "svc", Backend: good})
	a := startTCPNode(t, "a", picker, TCPServiceConfig{Name: "svc", Listen: "127.0.0.1:0"})
	ptWait(t, 10*time.Second, func() error {
		if sick.svcs.Offered()["svc"].Healthy {
			return errors.New("sick still healthy")
		}
		return nil
	})
	picker.set(sick.target(), well.target())
	c := dialSvc(t, a.addr("svc"))
	c.Write([]byte("hi"))
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hi" {
		t.Fatalf("echo: %q %v", buf, err)
	}
	st := a.svcs.Status()[0]
	if st.Placed["well"] != 1 || st.Placed["sick"] != 0 || st.Errors["peer_refused"] != 1 {
		t.Errorf("status %+v", st)
	}
}

// Killing the node that carries one connection breaks only that one.
func TestTCPNodeKilledBreaksOnlyItsConnections(t *testing.T) {
	backend := tcpBackend(t, echo)
	picker := &tcpPicker{}
	b := startTCPNode(t, "b", picker, TCPServiceConfig{Name: "svc", Backend: backend})
	c := startTCPNode(t, "c", picker, TCPServiceConfig{Name: "svc", Backend: backend})
	a := startTCPNode(t, "a", picker, TCPServiceConfig{Name: "svc", Listen: "127.0.0.1:0", IdleTimeout: time.Minute})
	roundTrip := func(conn net.Conn, msg string) error {
		if _, err := conn.Write([]byte(msg)); err != nil {
			return err
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(conn, buf); err != nil {
			return err
		}
		if string(buf) != msg {
			return fmt.Errorf("got %q", buf)
		}
		return nil
	}
	// Each connection is placed when the first attempt to use it is made
	// after accept, so use it before changing the picker.
	picker.set(b.target())
	viaB := dialSvc(t, a.addr("svc"))
	if err := roundTrip(viaB, "placed"); err != nil {
		t.Fatal(err)
	}
	picker.set(c.target())
	viaC := dialSvc(t, a.addr("svc"))
	for _, conn := range []net.Conn{viaB, viaC} {
		if err := roundTrip(conn, "before"); err != nil {
			t.Fatal(err)
		}
	}
	b.crash()
	b.svcs.Shutdown(context.Background()) // its backend connections go with it
	// A dead node sends nothing, so QUIC alone notices only after its
	// idle timeout (60s); the agent closes the peer connection as soon
	// as gossip declares the node dead, as here.
	a.client().ClosePeer("b")
	viaB.SetDeadline(time.Now().Add(ptScale(10 * time.Second)))
	start := time.Now()
	if err := roundTrip(viaB, "after"); err == nil {
		t.Error("the connection through the killed node still works")
	}
	t.Logf("the connection through the killed node broke after %s", time.Since(start))
	if err := roundTrip(viaC, "after"); err != nil {
		t.Errorf("the connection through the surviving node broke: %v", err)
	}
}

func TestTCPDrainWaitsThenCloses(t *testing.T) {
	backend := tcpBackend(t, echo)
	a, _, _ := meshPair(t, backend, nil)
	addr := a.addr("svc")
	conn := dialSvc(t, addr)
	conn.Write([]byte("x"))
	io.ReadFull(conn, make([]byte, 1))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- a.svcs.Drain(ctx) }()
	// While draining, the open connection still works...
	ptWait(t, 5*time.Second, func() error {
		if !a.svcs.Draining() {
			return errors.New("not draining yet")
		}
		return nil
	})
	if _, err := conn.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(conn, make([]byte, 1)); err != nil {
		t.Fatalf("open connection broke while draining: %v", err)
	}
	// ...new ones are not accepted...
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("the listener still accepts while draining")
	}
	// ...and at the deadline it is closed.
	if err := <-errc; err == nil || !strings.Contains(err.Error(), "1 connections still open") {
		t.Errorf("drain: %v", err)
	}
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Error("connection still open after the drain deadline")
	}
}

func TestTCPIdleTimeoutAndLimits(t *testing.T) {
	backend := tcpBackend(t, echo)
	a, _, _ := meshPair(t, backend, func(c *TCPServiceConfig) {
		c.IdleTimeout = 300 * time.Millisecond
		c.Limits.MaxConnsPerClient = 1
	})
	first := dialSvc(t, a.addr("svc"))
	first.Write([]byte("x"))
	io.ReadFull(first, make([]byte, 1))
	second := dialSvc(t, a.addr("svc"))
	if _, err := second.Read(make([]byte, 1)); err == nil {
		t.Error("a second connection from the same client was relayed over the per-client limit")
	}
	start := time.Now()
	if _, err := first.Read(make([]byte, 1)); err == nil {
		t.Error("idle connection not closed")
	}
	if d := time.Since(start); d > ptScale(10*time.Second) {
		t.Errorf("idle connection closed after %s", d)
	}
	ptWait(t, 5*time.Second, func() error {
		st := a.svcs.Status()[0]
		if st.Errors["conn_limit"] != 1 || st.Errors["idle_timeout"] != 1 {
			return fmt.Errorf("errors %v, want one conn_limit and one idle_timeout", st.Errors)
		}
		return nil
	})
}

func TestTCPRateLimitNewConnections(t *testing.T) {
	backend := tcpBackend(t, echo)
	a, _, _ := meshPair(t, backend, func(c *TCPServiceConfig) { c.Rate, c.Burst = 0.001, 2 })
	var ok, refused int
	for range 4 {
		conn, err := net.DialTimeout("tcp", a.addr("svc"), 5*time.Second)
		if err != nil { // reset before connect returned: refused
			refused++
			continue
		}
		c := conn.(*net.TCPConn)
		c.SetDeadline(time.Now().Add(ptScale(10 * time.Second)))
		c.Write([]byte("x"))
		if _, err := io.ReadFull(c, make([]byte, 1)); err == nil {
			ok++
		} else {
			refused++
		}
		c.Close()
	}
	if ok != 2 || refused != 2 {
		t.Errorf("%d relayed and %d refused, want 2 and 2 (burst 2)", ok, refused)
	}
}

func testLeaf(t *testing.T, ca *CA, name string) tls.Certificate {
	t.Helper()
	certPEM, keyPEM, err := ca.IssueNodeCert(name, time.Hour, nil, []string{name})
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestProxyHeaderMixedFamiliesIsLocal(t *testing.T) {
	h := proxyHeader(netip.MustParseAddrPort("[2001:db8::1]:5"), netip.MustParseAddrPort("10.0.0.1:80"))
	if h.Command != proxyproto.LOCAL {
		t.Errorf("mixed families: %+v", h)
	}
	h = proxyHeader(netip.MustParseAddrPort("[::ffff:10.0.0.2]:5"), netip.MustParseAddrPort("10.0.0.1:80"))
	if h.Command != proxyproto.PROXY || h.TransportProtocol != proxyproto.TCPv4 {
		t.Errorf("v4-mapped: %+v", h)
	}
}
