package transport

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// clConn is a keep-alive client connection from a chosen loopback IP.
type clConn struct {
	c  net.Conn
	br *bufio.Reader
}

func clDial(t *testing.T, addr, fromIP string) *clConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(fromIP)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &clConn{c: c, br: bufio.NewReader(c)}
}

// get sends one request and reports whether it was answered 200; false
// when the server closed the connection instead.
func (c *clConn) get(t *testing.T) bool {
	t.Helper()
	c.c.SetDeadline(time.Now().Add(ptScale(20 * time.Second)))
	if _, err := io.WriteString(c.c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return false
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("no answer and no close: %v", err)
		}
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == 200
}

func TestConnLimiterListener(t *testing.T) {
	reg := prometheus.NewRegistry()
	cl, err := NewConnLimiter(ConnLimitConfig{MaxConns: 3, MaxConnsPerClient: 2}, reg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
	done := make(chan struct{})
	go func() { srv.Serve(cl.Listener(ln)); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
	addr := ln.Addr().String()

	a1, a2 := clDial(t, addr, "127.0.0.1"), clDial(t, addr, "127.0.0.1")
	if !a1.get(t) || !a2.get(t) {
		t.Fatal("connections within the per-client limit were refused")
	}
	if clDial(t, addr, "127.0.0.1").get(t) {
		t.Fatal("a third connection from one client was served (per-client limit 2)")
	}
	b1 := clDial(t, addr, "127.0.0.2")
	if !b1.get(t) {
		t.Fatal("another client was refused below the total limit")
	}
	if clDial(t, addr, "127.0.0.3").get(t) {
		t.Fatal("a fourth connection was served (total limit 3)")
	}
	// Closing a connection frees its place.
	a1.c.Close()
	limWait(t, func() bool { return cl.Open() == 2 })
	if !clDial(t, addr, "127.0.0.3").get(t) {
		t.Fatal("a connection was refused after another closed")
	}
	if got := testutil.ToFloat64(cl.metrics.rejected[1]); got != 1 {
		t.Errorf("rejected{limit=per_client} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(cl.metrics.rejected[0]); got != 1 {
		t.Errorf("rejected{limit=total} = %v, want 1", got)
	}
}

func TestConnLimiterCounts(t *testing.T) {
	cl, err := NewConnLimiter(ConnLimitConfig{MaxConnsPerClient: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b := KeyFromName("a"), KeyFromName("b")
	if !cl.Acquire(a) || !cl.Acquire(b) || cl.Acquire(a) {
		t.Fatal("per-client limit of 1 not applied")
	}
	cl.Release(a)
	cl.Release(b)
	if cl.Open() != 0 || len(cl.per) != 0 {
		t.Fatalf("after releasing all: %d open, %d clients tracked", cl.Open(), len(cl.per))
	}
	if _, err := NewConnLimiter(ConnLimitConfig{MaxConns: -1}, nil); err == nil {
		t.Fatal("a negative limit was accepted")
	}
}
