package test

// Abuse protection at the ingress, end to end: rate limits (node and
// cluster scope), body and header limits on the local and forwarded paths,
// slow clients, connection limits and load shedding.

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/test/harness"
	"github.com/loadmesh/loadmesh/test/retry"
	"github.com/loadmesh/loadmesh/transport"
)

// sprayRate sends requests with one client key to every node's ingress,
// from perNode paced senders each, for d, and returns the requests answered
// 200 per second during the last (d − warmup), and during all of d.
func sprayRate(t *testing.T, c *harness.Cluster, perNode int, every, warmup, d time.Duration) (steady, overall float64) {
	t.Helper()
	hc := client(t)
	var all, late atomic.Int64
	var other sync.Map
	start := time.Now()
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		url := "http://" + n.HTTPAddr() + "/spray"
		for range perNode {
			wg.Go(func() {
				tick := time.NewTicker(every)
				defer tick.Stop()
				for time.Since(start) < d {
					<-tick.C
					req, _ := http.NewRequest("GET", url, nil)
					req.Header.Set("X-Client", "sprayer")
					resp, err := hc.Do(req)
					if err != nil {
						other.Store(err.Error(), true)
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					switch resp.StatusCode {
					case http.StatusOK:
						all.Add(1)
						if time.Since(start) >= warmup {
							late.Add(1)
						}
					case http.StatusTooManyRequests:
						if resp.Header.Get("Retry-After") == "" {
							other.Store("429 without Retry-After", true)
						}
					default:
						other.Store(fmt.Sprintf("status %d", resp.StatusCode), true)
					}
				}
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	other.Range(func(k, _ any) bool { t.Errorf("spray: %v", k); return true })
	return float64(late.Load()) / (elapsed - warmup).Seconds(), float64(all.Load()) / elapsed.Seconds()
}

// TestClusterWideRateLimit sprays one client key over the ingresses of
// three nodes at several times the limit: with the cluster scope the
// accepted rate stays near the limit, with the node scope it is about
// three times the limit.
func TestClusterWideRateLimit(t *testing.T) {
	skipShort(t)
	const limit = 30.0
	for _, scope := range []string{"cluster", "node"} {
		t.Run(scope, func(t *testing.T) {
			c := harness.Start(t, 3, harness.Options{Backends: true, Tune: func(_ int, cfg *agent.Config) {
				cfg.RateLimit, cfg.RateBurst = limit, 5
				cfg.RateLimitKey, cfg.RateLimitScope = "header:X-Client", scope
			}})
			c.WaitForLeader(t)
			c.WaitForMembers(t)
			// 3 nodes × 4 senders × 25/s = 300 requests/s offered, 10× the limit.
			steady, overall := sprayRate(t, c, 4, 40*time.Millisecond, 2*time.Second, 6*time.Second)
			t.Logf("scope %s: limit %.0f/s; accepted %.1f/s after 2 s (%.2f×), %.1f/s over all 6 s (%.2f×)",
				scope, limit, steady, steady/limit, overall, overall/limit)
			switch scope {
			case "cluster":
				if steady > 1.5*limit {
					t.Errorf("cluster scope: %.1f/s accepted, over 1.5 × the limit %.0f/s", steady, limit)
				}
				if steady < 0.5*limit {
					t.Errorf("cluster scope: only %.1f/s accepted, under half the limit %.0f/s", steady, limit)
				}
			case "node":
				if steady < 2.4*limit {
					t.Errorf("node scope: %.1f/s accepted, want about 3 × %.0f/s", steady, limit)
				}
			}
		})
	}
}

// TestIngressRequestLimits: body and header limits on a node serving
// locally and on an ingress-only node forwarding over QUIC.
func TestIngressRequestLimits(t *testing.T) {
	skipShort(t)
	c := harness.Start(t, 2, harness.Options{Backends: true, IngressOnly: []int{1}, Tune: func(_ int, cfg *agent.Config) {
		cfg.MaxBodyBytes = 1000
		cfg.MaxHeaderBytes = 1024
	}})
	c.WaitForLeader(t)
	waitServingPeers(t, c, c.Nodes[1], 1)
	hc := client(t)
	for _, n := range c.Nodes {
		base := "http://" + n.HTTPAddr()
		put := func(body io.Reader, length int64) (int, string) {
			req, _ := http.NewRequest("PUT", base+"/upload", body)
			req.ContentLength = length
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatalf("%s: %v", n.Name(), err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		if code, body := put(strings.NewReader(strings.Repeat("a", 1000)), 1000); code != 200 || !strings.Contains(body, "received 1000 bytes") {
			t.Errorf("%s: body at the limit: %d %q", n.Name(), code, body)
		}
		if code, _ := put(strings.NewReader(strings.Repeat("a", 1001)), 1001); code != http.StatusRequestEntityTooLarge {
			t.Errorf("%s: declared body over the limit: %d, want 413", n.Name(), code)
		}
		// Streamed (chunked): cut at the limit while it is sent on.
		if code, body := put(io.MultiReader(strings.NewReader(strings.Repeat("b", 50_000))), -1); code != http.StatusRequestEntityTooLarge {
			t.Errorf("%s: streamed body over the limit: %d %q, want 413", n.Name(), code, body)
		}
		req, _ := http.NewRequest("GET", base+"/", nil)
		req.Header.Set("X-Big", strings.Repeat("h", 8<<10)) // over 1 KiB + net/http's 4 KiB slack
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("%s: 8 KiB header: %d, want 431", n.Name(), resp.StatusCode)
		}
	}
	// The client's oversized bodies were not blamed on the serving node.
	retry.Run(t, func(r *retry.R) {
		resp, err := hc.Get("http://" + c.Nodes[1].HTTPAddr() + "/after")
		r.Check(err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			r.Fatalf("after the 413s, the forwarding node answers %d", resp.StatusCode)
		}
	})
}

// TestSlowClientsAndConnectionLimits: a slowloris client is cut off by the
// header timeout without holding up others, and connections over the
// per-client limit are closed at once.
func TestSlowClientsAndConnectionLimits(t *testing.T) {
	skipShort(t)
	c := harness.Start(t, 1, harness.Options{Backends: true, Tune: func(_ int, cfg *agent.Config) {
		cfg.RequestHeaderTimeout = 300 * time.Millisecond
		cfg.MaxConnsPerClient = 3
	}})
	c.WaitForLeader(t)
	addr := c.Nodes[0].HTTPAddr()

	// Slowloris: one header byte every 100 ms, 20 s worth of them.
	slow, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	cut := make(chan int, 1)
	go func() {
		io.WriteString(slow, "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
		sent := 0
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for range 200 {
			<-tick.C
			if _, err := slow.Write([]byte{'z'}); err != nil {
				break
			}
			sent++
		}
		cut <- sent
	}()
	// Meanwhile other clients are served (each from an address of its own,
	// so that the per-client limit does not come into it).
	for i := range 10 {
		if !dialGet(t, addr, fmt.Sprintf("127.0.0.%d", 10+i)) {
			t.Fatalf("request %d of another client was not served while the slow client held its connection", i)
		}
	}
	// The server gave up on the slow client long before it was done:
	// reading shows the connection closed, and writes fail.
	slow.SetReadDeadline(time.Now().Add(retry.Scale(30 * time.Second)))
	if _, err := slow.Read(make([]byte, 1)); err == nil {
		t.Fatal("the slow client's connection was not closed")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the slow client's connection is still open")
	}
	if sent := <-cut; sent >= 200 {
		t.Fatalf("the slow client sent all %d bytes: never cut off", sent)
	}

	// Per-client connection limit of 3: three keep-alive connections are
	// served (once the server has let go of the ones above), a fourth is
	// closed at once, and a freed place is reused.
	var conns []*keepAlive
	retry.Run(t, func(r *retry.R) {
		for _, ka := range conns {
			ka.c.Close()
		}
		conns = conns[:0]
		for range 3 {
			ka := newKeepAlive(t, addr, "127.0.0.1")
			conns = append(conns, ka)
			if !ka.get(t) {
				r.Fatalf("a connection within the per-client limit was not served")
			}
		}
	})
	if newKeepAlive(t, addr, "127.0.0.1").get(t) {
		t.Fatal("a fourth connection from one client was served (limit 3)")
	}
	conns[0].c.Close()
	retry.Run(t, func(r *retry.R) {
		if !newKeepAlive(t, addr, "127.0.0.1").get(t) {
			r.Fatalf("no new connection after one closed")
		}
	})
}

// TestLoadSheddingAndRecovery: a backend slot held by slow requests and a
// short queue make further requests fail fast with 503 and Retry-After,
// and the node serves again once the slow ones are done.
func TestLoadSheddingAndRecovery(t *testing.T) {
	skipShort(t)
	c := harness.Start(t, 1, harness.Options{Backends: true, Tune: func(_ int, cfg *agent.Config) {
		cfg.Capacity, cfg.MaxInflight, cfg.MaxQueue = 1, 1, 1
	}})
	c.WaitForLeader(t)
	base := "http://" + c.Nodes[0].HTTPAddr()
	hc := client(t)
	slowDone := make(chan int, 2)
	for range 2 { // one holds the slot, one waits in the queue
		go func() {
			resp, err := hc.Get(base + "/?sleep=3s")
			if err != nil {
				slowDone <- 0
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			slowDone <- resp.StatusCode
		}()
	}
	var shed *http.Response
	retry.Run(t, func(r *retry.R) {
		resp, err := hc.Get(base + "/quick")
		r.Check(err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			r.Fatalf("with the backend busy: %d, want 503", resp.StatusCode)
		}
		shed = resp
	})
	if ra := shed.Header.Get("Retry-After"); ra != "1" {
		t.Errorf("shed answer has Retry-After %q, want 1", ra)
	}
	// The queued slow request waits at most the queue interval: it is shed
	// too, or served if the first finished; neither fails otherwise.
	for range 2 {
		if code := <-slowDone; code != 200 && code != http.StatusServiceUnavailable {
			t.Errorf("slow request: %d", code)
		}
	}
	retry.Run(t, func(r *retry.R) {
		resp, err := hc.Get(base + "/again")
		r.Check(err)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			r.Fatalf("after the load: %d, want 200", resp.StatusCode)
		}
	})
}

// dialGet sends one request on a new connection and reports whether it
// was answered 200.
func dialGet(t *testing.T, addr, fromIP string) bool {
	ka := newKeepAlive(t, addr, fromIP)
	defer ka.c.Close()
	return ka.get(t)
}

// keepAlive is one client connection that sends requests one by one.
type keepAlive struct {
	c  net.Conn
	br *bufio.Reader
}

func newKeepAlive(t *testing.T, addr, fromIP string) *keepAlive {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(fromIP)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &keepAlive{c: c, br: bufio.NewReader(c)}
}

// get reports whether a GET on the connection was answered 200; false when
// the server closed it.
func (k *keepAlive) get(t *testing.T) bool {
	k.c.SetDeadline(time.Now().Add(retry.Scale(30 * time.Second)))
	if _, err := io.WriteString(k.c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return false
	}
	resp, err := http.ReadResponse(k.br, nil)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("no answer and no close on a test connection: %v", err)
		}
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == 200
}

// TestHTTP3ConnectionLimit: the per-client connection limit holds on the
// HTTP/3 ingress too.
func TestHTTP3ConnectionLimit(t *testing.T) {
	skipShort(t)
	ca, err := transport.NewCA("ingress test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.IssueNodeCert("ingress", time.Hour, []net.IP{net.IPv4(127, 0, 0, 1)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, certPEM, 0o600)
	os.WriteFile(keyFile, keyPEM, 0o600)
	c := harness.Start(t, 1, harness.Options{Backends: true, Tune: func(_ int, cfg *agent.Config) {
		cfg.HTTPTLSCert, cfg.HTTPTLSKey = certFile, keyFile
		cfg.MaxConnsPerClient = 1
	}})
	c.WaitForLeader(t)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM)
	url := "https://" + c.Nodes[0].HTTPAddr() + "/h3"
	get := func(tr *http3.Transport) error {
		resp, err := (&http.Client{Transport: tr, Timeout: retry.Scale(10 * time.Second)}).Get(url)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	first := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	defer first.Close()
	if err := get(first); err != nil {
		t.Fatalf("first QUIC connection: %v", err)
	}
	second := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	if err := get(second); err == nil {
		t.Fatal("a second QUIC connection from one client was served (limit 1)")
	}
	second.Close()
	first.Close()
	retry.Run(t, func(r *retry.R) {
		tr := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
		defer tr.Close()
		r.Check(get(tr))
	})
}
