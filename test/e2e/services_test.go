//go:build unix

package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/loadmesh/loadmesh/test/retry"
)

// TCP passthrough services (--service name=...,mode=tcp) with real agent
// processes. Every backend is a server in the test process that names the
// node it belongs to in what it sends back, so the client can tell which
// node's backend served each connection.

// bulkSize is the size of each direction of the large transfer.
const bulkSize = 32 << 20

// tlsServerName is the DNS name in both TLS backends' certificates.
const tlsServerName = "tls.e2e.test"

// TestServices runs one cluster of three agents, each listening for four
// services; node2 and node3 offer them (backend=), node1 only accepts:
//
//   - tls: a TLS server demanding a client certificate of its own CA;
//   - bulk: reads to EOF, answers with the size and SHA-256 of what it got,
//     then sends bulkSize bytes of its own;
//   - pp: proxy_protocol=v2, answers with the addresses of the header;
//   - sick: answers with its node's name; node3's health check points at a
//     closed port, so node3 is unhealthy for it.
func TestServices(t *testing.T) {
	skipShort(t)
	t.Parallel()

	ca := newTestCA(t, "e2e-backend-ca")
	clientCert := ca.leaf(t, "e2e-client", nil, x509.ExtKeyUsageClientAuth)
	offering := []string{"node2", "node3"}
	tlsB, bulkB, ppB, sickB := map[string]*tcpServer{}, map[string]*tcpServer{}, map[string]*tcpServer{}, map[string]*tcpServer{}
	for _, n := range offering {
		cert := ca.leaf(t, "tls-backend-"+n, []string{tlsServerName}, x509.ExtKeyUsageServerAuth)
		tlsB[n] = startTCPServer(t, n, tlsServe(cert, ca.pool))
		bulkB[n] = startTCPServer(t, n, bulkServe)
		ppB[n] = startTCPServer(t, n, proxyServe)
		sickB[n] = startTCPServer(t, n, nameServe)
	}
	// Nothing listens here: node3's health check of sick fails.
	closed := freeAddr(t, true, false)
	names := []string{"tls", "bulk", "pp", "sick"}

	// No node fails in this cluster: a peer timeout longer than the default
	// 3s keeps a starved CI machine (the bulk transfers load it) from
	// closing peer connections, and the connections relayed over them, as
	// if a node had died. TestServicesNodeKilledMidStream keeps the default.
	c := startServiceCluster(t, 3, func(i int) []string {
		const l = "mode=tcp,listen=127.0.0.1:0"
		node := fmt.Sprintf("node%d", i+1)
		if i == 0 {
			var out []string
			for _, n := range names {
				out = append(out, "name="+n+","+l)
			}
			return out
		}
		sickHealth := ""
		if node == "node3" {
			sickHealth = ",health=tcp://" + closed
		}
		return []string{
			"name=tls," + l + ",backend=" + tlsB[node].addr(),
			"name=bulk," + l + ",backend=" + bulkB[node].addr(),
			"name=pp," + l + ",backend=" + ppB[node].addr() + ",proxy_protocol=v2",
			"name=sick," + l + ",backend=" + sickB[node].addr() + sickHealth,
		}
	}, "--peer-timeout", "10s")
	// sick on node3 starts healthy and turns unhealthy after its failed
	// checks; its subtest waits for that.
	var want []svcWant
	for _, svc := range names {
		for _, n := range offering {
			if svc != "sick" || n == "node2" {
				want = append(want, svcWant{svc, n, true})
			}
		}
	}
	start := time.Now()
	addrs := waitServices(t, c, c.agents, want, func(int) []string { return names })
	t.Logf("cluster up and services offered %s after the last agent started (%s of it waiting for services)",
		time.Since(c.lastStart).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))

	t.Run("TLSClientCertThroughEveryNode", func(t *testing.T) {
		t.Parallel()
		testTLSClientCert(t, c, addrs, ca, clientCert)
	})
	t.Run("HalfCloseLargeTransfers", func(t *testing.T) {
		t.Parallel()
		testHalfCloseLarge(t, c, addrs)
	})
	t.Run("ProxyProtocolV2", func(t *testing.T) {
		t.Parallel()
		testProxyV2(t, c, addrs, ppB)
	})
	t.Run("UnhealthyNodeGetsNoConnections", func(t *testing.T) {
		t.Parallel()
		testUnhealthy(t, c, addrs, sickB)
	})
}

// dialService connects to a service listener with a deadline for the
// whole exchange; the connection is closed at test end.
func dialService(t *testing.T, addr string, deadline time.Duration) *net.TCPConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, retry.Scale(5*time.Second))
	if err != nil {
		t.Fatalf("connect to %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(retry.Scale(deadline)))
	return conn.(*net.TCPConn)
}

// ---------------------------------------------------------------------------
// TLS with client certificates, end to end

// tlsServe is a TLS backend requiring a client certificate of clientCAs.
// It reads one line and answers "NODE CLIENT-CN LINE", then closes with a
// close_notify.
func tlsServe(cert tls.Certificate, clientCAs *x509.CertPool) func(*tcpServer, net.Conn) {
	conf := &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clientCAs,
		MinVersion:   tls.VersionTLS12,
	}
	return func(s *tcpServer, c net.Conn) {
		c.SetDeadline(time.Now().Add(retry.Scale(30 * time.Second)))
		tc := tls.Server(c, conf)
		if err := tc.Handshake(); err != nil {
			// Health checks, and the client without a certificate. A
			// lingering close: whatever the client sent after its
			// handshake is read, lest a reset overtake the alert.
			s.note("handshake failed")
			c.(*net.TCPConn).CloseWrite()
			io.Copy(io.Discard, c)
			return
		}
		line, err := bufio.NewReader(tc).ReadString('\n')
		if err != nil {
			return
		}
		cn := tc.ConnectionState().PeerCertificates[0].Subject.CommonName
		fmt.Fprintf(tc, "%s %s %s", s.name, cn, line)
		tc.Close()
	}
}

func testTLSClientCert(t *testing.T, c *testCluster, addrs map[string]map[string]string, ca *testCA, clientCert tls.Certificate) {
	const perNode = 4
	servedBy := map[string]int{}
	for _, a := range c.agents {
		for k := range perNode {
			conn := dialService(t, addrs[a.name]["tls"], 20*time.Second)
			tc := tls.Client(conn, &tls.Config{
				RootCAs: ca.pool, ServerName: tlsServerName,
				Certificates: []tls.Certificate{clientCert}, MinVersion: tls.VersionTLS12,
			})
			// Verification against the test's own CA: the mesh's
			// certificates would not pass.
			if err := tc.Handshake(); err != nil {
				t.Fatalf("via %s, connection %d: TLS handshake with the backend: %v", a.name, k, err)
			}
			leaf := tc.ConnectionState().PeerCertificates[0]
			node, ok := strings.CutPrefix(leaf.Subject.CommonName, "tls-backend-")
			if !ok || leaf.Issuer.CommonName != "e2e-backend-ca" {
				t.Fatalf("via %s: served certificate %q issued by %q, want a tls-backend-* one of the test CA", a.name, leaf.Subject.CommonName, leaf.Issuer.CommonName)
			}
			msg := fmt.Sprintf("hello via %s #%d", a.name, k)
			fmt.Fprintf(tc, "%s\n", msg)
			reply, err := io.ReadAll(tc) // to the close_notify
			if err != nil {
				t.Fatalf("via %s: reading the backend's answer: %v (got %q)", a.name, err, reply)
			}
			if want := fmt.Sprintf("%s e2e-client %s\n", node, msg); string(reply) != want {
				t.Fatalf("via %s: backend answered %q, want %q (the backend behind certificate %s, seeing client CN e2e-client)", a.name, reply, want, leaf.Subject.CommonName)
			}
			tc.Close()
			servedBy[a.name+"->"+node]++
		}
	}
	t.Logf("TLS connections by accepting node -> serving backend: %v", servedBy)
	for _, a := range c.agents {
		retry.Run(t, func(r *retry.R) {
			s, _ := getSvcStatus(r, a).service("tls")
			t.Logf("%s status of tls: accepted %d, errors %v, placed %v", a.name, s.Accepted, s.Errors, s.Placed)
		})
	}

	// Without a client certificate the backend itself refuses: TLS 1.3
	// ends the client's handshake before the server has checked it, so the
	// refusal arrives as an alert on the first read. The client sends
	// nothing after its handshake, and the server reads what comes before
	// it closes: bytes left unread would make its kernel answer with a
	// reset, which may overtake the alert (as it may without a relay).
	conn := dialService(t, addrs["node1"]["tls"], 20*time.Second)
	tc := tls.Client(conn, &tls.Config{RootCAs: ca.pool, ServerName: tlsServerName, MinVersion: tls.VersionTLS13})
	err := tc.Handshake()
	if err == nil {
		var reply []byte
		reply, err = io.ReadAll(tc)
		if err == nil {
			t.Fatalf("a client without a certificate got an answer: %q", reply)
		}
	}
	if !strings.Contains(err.Error(), "certificate required") {
		t.Errorf("client without a certificate: %v, want the backend's \"certificate required\" alert", err)
	}
}

// ---------------------------------------------------------------------------
// Half-close and large transfers both ways

// bulkServe reads to EOF (the client's half-close), answers
// "NODE SIZE SHA256HEX\n" and sends bulkSize bytes of newPattern(2).
func bulkServe(s *tcpServer, c net.Conn) {
	c.SetDeadline(time.Now().Add(retry.Scale(3 * time.Minute)))
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil || n == 0 {
		return // a health check, or a failed client
	}
	fmt.Fprintf(c, "%s %d %x\n", s.name, n, h.Sum(nil))
	if _, err := io.CopyN(c, newPattern(2), bulkSize); err != nil {
		return
	}
	c.(*net.TCPConn).CloseWrite()
	// Wait for the client to close, so that the end is the client's.
	io.Copy(io.Discard, c)
}

func testHalfCloseLarge(t *testing.T, c *testCluster, addrs map[string]map[string]string) {
	h := sha256.New()
	io.CopyN(h, newPattern(1), bulkSize)
	wantUp := hex.EncodeToString(h.Sum(nil))

	type result struct {
		node, served string
		header       int
		up, down     time.Duration
		err          error
	}
	results := make([]result, len(c.agents))
	var wg sync.WaitGroup
	for i, a := range c.agents {
		conn := dialService(t, addrs[a.name]["bulk"], 3*time.Minute)
		wg.Go(func() {
			r := &results[i]
			r.node = a.name
			r.served, r.header, r.up, r.down, r.err = bulkExchange(conn, wantUp)
		})
	}
	wg.Wait()
	for _, r := range results {
		if r.err != nil {
			t.Errorf("via %s: %v", r.node, r.err)
			continue
		}
		t.Logf("via %s, served by %s: %d MiB up in %s, %d MiB down in %s", r.node, r.served,
			bulkSize>>20, r.up.Round(time.Millisecond), bulkSize>>20, r.down.Round(time.Millisecond))
	}
	if t.Failed() {
		return
	}
	// Each accepting node relayed exactly one connection of bulk.
	for _, r := range results {
		a := c.agent(r.node)
		retry.Run(t, func(rr *retry.R) {
			s, _ := getSvcStatus(rr, a).service("bulk")
			wantDown := uint64(bulkSize + r.header)
			if s.Accepted != 1 || s.BytesUp != bulkSize || s.BytesDown != wantDown || len(s.Errors) != 0 || s.OpenClients != 0 {
				rr.Fatalf("%s status of bulk: %s; want 1 accepted, %d bytes up, %d down, no errors, none open",
					a.name, jsonString(s), bulkSize, wantDown)
			}
		})
	}
}

// bulkExchange sends bulkSize bytes of newPattern(1), half-closes, checks
// the backend's account of them, then receives and checks bulkSize bytes
// of newPattern(2) and a clean end.
func bulkExchange(conn *net.TCPConn, wantUp string) (served string, header int, up, down time.Duration, err error) {
	start := time.Now()
	if _, err := io.CopyN(conn, newPattern(1), bulkSize); err != nil {
		return "", 0, 0, 0, fmt.Errorf("upload: %w", err)
	}
	if err := conn.CloseWrite(); err != nil {
		return "", 0, 0, 0, fmt.Errorf("half-close: %w", err)
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	line, err := br.ReadString('\n')
	if err != nil {
		return "", 0, 0, 0, fmt.Errorf("after the half-close, reading the backend's answer: %w (got %q)", err, line)
	}
	up = time.Since(start)
	f := strings.Fields(line)
	if len(f) != 3 || f[1] != strconv.Itoa(bulkSize) || f[2] != wantUp {
		return "", 0, 0, 0, fmt.Errorf("backend answered %q, want NODE %d %s", line, bulkSize, wantUp)
	}
	served, header = f[0], len(line)
	start = time.Now()
	exp := newPattern(2)
	buf, ebuf := make([]byte, 64<<10), make([]byte, 64<<10)
	var got int64
	for {
		n, rerr := br.Read(buf)
		if n > 0 {
			if got+int64(n) > bulkSize {
				return served, header, up, 0, fmt.Errorf("download: more than %d bytes", bulkSize)
			}
			exp.Read(ebuf[:n])
			if !bytes.Equal(buf[:n], ebuf[:n]) {
				for i := range n {
					if buf[i] != ebuf[i] {
						return served, header, up, 0, fmt.Errorf("download: byte %d is %#x, want %#x", got+int64(i), buf[i], ebuf[i])
					}
				}
			}
			got += int64(n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return served, header, up, 0, fmt.Errorf("download: after %d of %d bytes: %w", got, bulkSize, rerr)
		}
	}
	if got != bulkSize {
		return served, header, up, 0, fmt.Errorf("download: %d bytes then EOF, want %d", got, bulkSize)
	}
	return served, header, up, time.Since(start), nil
}

// ---------------------------------------------------------------------------
// PROXY protocol v2

// proxyServe parses the PROXY v2 header; a LOCAL one (the health check)
// ends the connection. Otherwise it reads one line and answers
// "NODE SOURCE DESTINATION LINE".
func proxyServe(s *tcpServer, c net.Conn) {
	c.SetDeadline(time.Now().Add(retry.Scale(30 * time.Second)))
	br := bufio.NewReader(c)
	h, err := proxyproto.Read(br)
	switch {
	case err != nil:
		s.note("bad header")
		return
	case h.Version != 2:
		s.note("bad header")
		return
	case h.Command == proxyproto.LOCAL:
		s.note("local")
		return
	}
	s.note("proxy")
	line, err := br.ReadString('\n')
	if err != nil {
		return
	}
	fmt.Fprintf(c, "%s %s %s %s", s.name, h.SourceAddr, h.DestinationAddr, line)
}

func testProxyV2(t *testing.T, c *testCluster, addrs map[string]map[string]string, backends map[string]*tcpServer) {
	const perNode = 3
	servedBy := map[string]int{}
	for _, a := range c.agents {
		listener := addrs[a.name]["pp"]
		for k := range perNode {
			conn := dialService(t, listener, 20*time.Second)
			// The first bytes go out at once: they must not mix with the
			// header.
			msg := fmt.Sprintf("hello via %s #%d", a.name, k)
			fmt.Fprintf(conn, "%s\n", msg)
			reply, err := bufio.NewReader(conn).ReadString('\n')
			if err != nil {
				t.Fatalf("via %s: %v (got %q)", a.name, err, reply)
			}
			f := strings.Fields(reply)
			src, dst := conn.LocalAddr().String(), listener
			if len(f) < 3 || f[1] != src || f[2] != dst || strings.Join(f[3:], " ") != msg {
				t.Fatalf("via %s: backend answered %q, want NODE %s %s %s (source: the client as the accepting node saw it; destination: its listener)",
					a.name, reply, src, dst, msg)
			}
			servedBy[a.name+"->"+f[0]]++
		}
	}
	t.Logf("PROXY v2 connections by accepting node -> serving backend: %v", servedBy)
	// The health checks sent LOCAL headers, and nothing came without a
	// valid header.
	retry.Run(t, func(r *retry.R) {
		for n, b := range backends {
			if b.noted("local") == 0 {
				r.Fatalf("%s's backend has seen no LOCAL header (health check) yet", n)
			}
		}
	})
	for n, b := range backends {
		if bad := b.noted("bad header"); bad != 0 {
			t.Errorf("%s's backend got %d connections without a valid PROXY v2 header", n, bad)
		}
		t.Logf("%s's backend: %d PROXY headers, %d LOCAL (health checks)", n, b.noted("proxy"), b.noted("local"))
	}
}

// ---------------------------------------------------------------------------
// An unhealthy node gets nothing

// nameServe sends "NODE\n" and waits for the client to close.
func nameServe(s *tcpServer, c net.Conn) {
	c.SetDeadline(time.Now().Add(retry.Scale(time.Minute)))
	fmt.Fprintf(c, "%s\n", s.name)
	io.Copy(io.Discard, c)
}

func testUnhealthy(t *testing.T, c *testCluster, addrs map[string]map[string]string, backends map[string]*tcpServer) {
	start := time.Now()
	retry.RunFor(t, 30*time.Second, func(r *retry.R) {
		for _, a := range c.agents {
			ms := getSvcMembers(r, a)
			if s := ms["node3"].Services["sick"]; s.Healthy {
				r.Fatalf("%s still sees node3 healthy for sick", a.name)
			}
			if s := ms["node2"].Services["sick"]; !s.Healthy {
				r.Fatalf("%s sees node2 unhealthy for sick", a.name)
			}
		}
		if s, _ := getSvcStatus(r, c.agent("node3")).service("sick"); s.Healthy {
			r.Fatalf("node3 says its sick backend is healthy")
		}
	})
	t.Logf("every node saw node3 unhealthy for sick %s after the services were up", time.Since(start).Round(time.Millisecond))

	// All open at once, so that least-conn would spread them if it could.
	const perNode = 8
	servedBy := map[string]int{}
	for _, a := range c.agents {
		for range perNode {
			conn := dialService(t, addrs[a.name]["sick"], 20*time.Second)
			line, err := bufio.NewReader(conn).ReadString('\n')
			if err != nil {
				t.Fatalf("via %s: %v", a.name, err)
			}
			servedBy[a.name+"->"+strings.TrimSpace(line)]++
		}
	}
	t.Logf("connections by accepting node -> serving backend: %v", servedBy)
	for k, n := range servedBy {
		if !strings.HasSuffix(k, "->node2") {
			t.Errorf("%d connections %s; the unhealthy node3 must get none", n, k)
		}
	}
	if n := backends["node3"].acceptedCount(); n != 0 {
		t.Errorf("node3's unhealthy backend accepted %d connections", n)
	}
	for _, a := range c.agents {
		retry.Run(t, func(r *retry.R) {
			s, _ := getSvcStatus(r, a).service("sick")
			if !maps.Equal(s.Placed, map[string]uint64{"node2": perNode}) || s.Accepted != perNode {
				r.Fatalf("%s status of sick: %s; want %d accepted, all placed on node2", a.name, jsonString(s), perNode)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// A node killed mid-stream

// echoServe sends "NODE\n", then echoes.
func echoServe(s *tcpServer, c net.Conn) {
	fmt.Fprintf(c, "%s\n", s.name)
	io.Copy(c, c)
	c.(*net.TCPConn).CloseWrite()
}

// streamConn is a client connection of the echo service.
type streamConn struct {
	via, node string
	conn      *net.TCPConn
	br        *bufio.Reader
	// set by the pinger, under mu
	mu       sync.Mutex
	failedAt time.Time
	err      error
	pings    int
	lastOK   time.Time
}

// ping sends a line and reads its echo.
func (s *streamConn) ping(i int) error {
	msg := fmt.Sprintf("ping %s %d\n", s.via, i)
	if _, err := io.WriteString(s.conn, msg); err != nil {
		return err
	}
	got, err := s.br.ReadString('\n')
	if err != nil {
		return err
	}
	if got != msg {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}

// TestServicesNodeKilledMidStream: node1 and node2 accept connections of
// an echo service offered by node2 and node3. node3 is killed with
// SIGKILL while connections are open through it: exactly those break,
// with a reset (not a clean EOF), within seconds, and the others go on.
// With the agents' default --peer-timeout (3s) the silent QUIC peer
// connection times out first; with a long one, the peer connection is
// closed when gossip declares node3 dead (about 6s here). Either is far
// below the bound of 30s.
func TestServicesNodeKilledMidStream(t *testing.T) {
	skipShort(t)
	t.Parallel()
	offering := []string{"node2", "node3"}
	backends := map[string]*tcpServer{}
	for _, n := range offering {
		backends[n] = startTCPServer(t, n, echoServe)
	}
	c := startServiceCluster(t, 3, func(i int) []string {
		s := "name=echo,mode=tcp,listen=127.0.0.1:0"
		if i > 0 {
			s += ",backend=" + backends[fmt.Sprintf("node%d", i+1)].addr()
		}
		return []string{s}
	})
	accepting := []*agentNode{c.agents[0], c.agents[1]}
	addrs := waitServices(t, c, accepting, []svcWant{{"echo", "node2", true}, {"echo", "node3", true}},
		func(int) []string { return []string{"echo"} })

	// Open connections through node1 and node2 until each of them has
	// connections placed on node2 and on node3, at least 12 in all.
	var conns []*streamConn
	count := map[string]int{}
	for i := 0; ; i++ {
		done := i >= 12
		for _, via := range []string{"node1", "node2"} {
			for _, on := range offering {
				done = done && count[via+"->"+on] > 0
			}
		}
		if done {
			break
		}
		if i == 60 {
			t.Fatalf("after %d connections, placements by accepting node -> serving node are %v; want both serving nodes behind both accepting ones", i, count)
		}
		via := accepting[i%2].name
		conn := dialService(t, addrs[via]["echo"], 2*time.Minute)
		sc := &streamConn{via: via, conn: conn, br: bufio.NewReader(conn)}
		line, err := sc.br.ReadString('\n')
		if err != nil {
			t.Fatalf("via %s: %v", via, err)
		}
		sc.node = strings.TrimSpace(line)
		if err := sc.ping(-1); err != nil {
			t.Fatalf("via %s to %s: %v", via, sc.node, err)
		}
		count[via+"->"+sc.node]++
		conns = append(conns, sc)
	}
	t.Logf("open connections by accepting node -> serving node: %v", count)

	// Watch node1's view of node3 from the kill on, until it is dead.
	victim := c.agent("node3")
	stop, watchStop := make(chan struct{}), make(chan struct{})
	var wg, watch sync.WaitGroup
	defer func() {
		for _, ch := range []chan struct{}{stop, watchStop} {
			select {
			case <-ch:
			default:
				close(ch)
			}
		}
		for _, sc := range conns {
			sc.conn.Close() // a pinger stuck in a read
		}
		wg.Wait()
		watch.Wait()
	}()
	var seenMu sync.Mutex
	seen := map[string]time.Time{} // status -> first seen by node1
	watch.Go(func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-watchStop:
				return
			case <-tick.C:
			}
			dead := false
			retry.Until(0, func(r *retry.R) {
				st := getSvcMembers(r, c.agents[0])["node3"].Status
				seenMu.Lock()
				if _, ok := seen[st]; !ok {
					seen[st] = time.Now()
				}
				seenMu.Unlock()
				dead = st == "dead"
			})
			if dead {
				return
			}
		}
	})

	killedAt := time.Now()
	victim.proc.kill()
	var doomed sync.WaitGroup
	for _, sc := range conns {
		g := &wg
		if sc.node == "node3" {
			g = &doomed
		}
		g.Go(func() {
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for i := 0; ; i++ {
				err := sc.ping(i)
				sc.mu.Lock()
				if err != nil {
					sc.failedAt, sc.err = time.Now(), err
				} else {
					sc.pings++
					sc.lastOK = time.Now()
				}
				sc.mu.Unlock()
				if err != nil {
					return
				}
				select {
				case <-stop:
					return
				case <-tick.C:
				}
			}
		})
	}
	allBroken := make(chan struct{})
	go func() { doomed.Wait(); close(allBroken) }()
	bound := retry.Scale(30 * time.Second)
	select {
	case <-allBroken:
	case <-time.After(bound):
		close(stop)
		for _, sc := range conns {
			sc.conn.Close()
		}
		<-allBroken
		t.Fatalf("connections carried by the killed node3 still open %s after SIGKILL", bound)
	}
	brokenAt := time.Now()
	// The survivors must go on working after the last broken one failed.
	retry.Run(t, func(r *retry.R) {
		for _, sc := range conns {
			sc.mu.Lock()
			waiting := sc.node == "node2" && !sc.lastOK.After(brokenAt) && sc.err == nil
			sc.mu.Unlock()
			if waiting {
				r.Fatalf("waiting for a ping via %s to node2 after the broken connections failed", sc.via)
			}
		}
	})
	close(stop)
	wg.Wait()

	var slowest time.Duration
	for _, sc := range conns {
		switch {
		case sc.node == "node2" && sc.err != nil:
			t.Errorf("via %s to node2: failed %s after the kill of node3, after %d pings: %v",
				sc.via, sc.failedAt.Sub(killedAt).Round(time.Millisecond), sc.pings, sc.err)
		case sc.node == "node3":
			took := sc.failedAt.Sub(killedAt)
			slowest = max(slowest, took)
			t.Logf("via %s to node3: broke %s after SIGKILL, after %d pings: %v", sc.via, took.Round(time.Millisecond), sc.pings, sc.err)
			if errors.Is(sc.err, io.EOF) {
				t.Errorf("via %s to node3: ended with a clean EOF; a connection broken by a dead node must be reset", sc.via)
			}
		}
	}
	t.Logf("kill of node3: its %d connections all broke within %s (bound %s)", count["node1->node3"]+count["node2->node3"],
		slowest.Round(time.Millisecond), bound)
	for _, sc := range conns {
		if sc.node == "node2" {
			if err := sc.ping(1 << 20); err != nil {
				t.Errorf("via %s to node2, at the end: %v", sc.via, err)
			}
		}
	}

	// Once node3 is known dead, new connections all go to node2.
	retry.Run(t, func(r *retry.R) {
		for _, a := range accepting {
			if st := getSvcMembers(r, a)["node3"].Status; st != "dead" {
				r.Fatalf("%s sees node3 %q", a.name, st)
			}
		}
	})
	watch.Wait() // it ends once it has seen node3 dead
	var views []string
	for _, st := range slices.SortedFunc(maps.Keys(seen), func(a, b string) int { return seen[a].Compare(seen[b]) }) {
		views = append(views, fmt.Sprintf("%s at +%s", st, seen[st].Sub(killedAt).Round(time.Millisecond)))
	}
	t.Logf("node1's view of node3 after the SIGKILL: %s", strings.Join(views, ", "))
	for _, a := range accepting {
		for range 4 {
			conn := dialService(t, addrs[a.name]["echo"], 20*time.Second)
			line, err := bufio.NewReader(conn).ReadString('\n')
			if err != nil || line != "node2\n" {
				t.Errorf("new connection via %s after node3 died: %q, %v; want node2", a.name, line, err)
			}
		}
	}
}
