package transport

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// ptScale multiplies a test timeout by LOADMESH_TIMESCALE (default 1),
// which slow CI machines raise.
func ptScale(d time.Duration) time.Duration {
	if f, err := strconv.ParseFloat(os.Getenv("LOADMESH_TIMESCALE"), 64); err == nil && f > 0 {
		return time.Duration(float64(d) * f)
	}
	return d
}

// ptWait retries f until it returns nil, failing the test with f's last
// error once timeout (scaled) has passed.
func ptWait(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(ptScale(timeout))
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still failing after %s: %v", ptScale(timeout), err)
		}
		time.Sleep(10 * time.Millisecond) // retry interval, not a wait for a state change
	}
}

// ptLogWriter sends log lines to t.Log until the test has finished;
// logging through t after that panics.
type ptLogWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *ptLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func ptLogger(t testing.TB, node string) *slog.Logger {
	w := &ptLogWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	level := slog.LevelInfo
	if _, ok := t.(*testing.B); ok {
		level = slog.LevelWarn // keep benchmark output readable
	}
	if os.Getenv("LOADMESH_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})).With("node", node)
}

// ptConfig is the production configuration on an ephemeral loopback port,
// with a shorter dial timeout.
func ptConfig() PeerConfig {
	cfg := DefaultPeerConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.DialTimeout = ptScale(2 * time.Second)
	return cfg
}

// ptNode is one started PeerServer, shut down when the test ends.
type ptNode struct {
	name              string
	srv               *PeerServer
	tls               *MutualTLS
	reg               *prometheus.Registry
	ignoreShutdownErr bool
}

type ptSetup struct {
	cfg  PeerConfig
	deps PeerDeps
}

func ptStart(t testing.TB, name string, handler http.Handler, mods ...func(*ptSetup)) *ptNode {
	t.Helper()
	if handler == nil {
		handler = ptEcho()
	}
	reg := prometheus.NewPedanticRegistry()
	s := &ptSetup{cfg: ptConfig(), deps: PeerDeps{
		TLS:        testMutualTLS(t, testCA(t, "ca"), name),
		Handler:    handler,
		Logger:     ptLogger(t, name),
		Registerer: reg,
	}}
	for _, mod := range mods {
		mod(s)
	}
	srv, err := NewPeerServer(s.cfg, s.deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	n := &ptNode{name: name, srv: srv, tls: s.deps.TLS, reg: reg}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), ptScale(10*time.Second))
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil && !n.ignoreShutdownErr {
			t.Errorf("shutdown %s: %v", name, err)
		}
	})
	return n
}

func withTLS(m *MutualTLS) func(*ptSetup) { return func(s *ptSetup) { s.deps.TLS = m } }

func withAddr(addr string) func(*ptSetup) { return func(s *ptSetup) { s.cfg.Addr = addr } }

func (n *ptNode) target() PeerTarget {
	return PeerTarget{Name: n.name, Addr: n.srv.Addr().String()}
}

func (n *ptNode) client() *PeerClient { return n.srv.Client() }

// crash stops the node abruptly, as a killed process would: no
// CONNECTION_CLOSE is sent and the port is freed.
func (n *ptNode) crash() {
	n.ignoreShutdownErr = true
	_ = n.srv.qtr.Close()
	_ = n.srv.udp.Close()
}

func ptDials(n *ptNode, result string) float64 {
	return testutil.ToFloat64(n.srv.metrics.dials.WithLabelValues(result))
}

func ptRefused(n *ptNode, reason string) float64 {
	return testutil.ToFloat64(n.srv.metrics.refused.WithLabelValues(reason))
}

func ptConns(n *ptNode, direction string) float64 {
	return testutil.ToFloat64(n.srv.metrics.conns.WithLabelValues(direction))
}

// ptWaitGauge waits until f returns want.
// ptWaitAtLeast waits until f() >= want. A refused handshake is counted
// once per attempt, and a loaded machine can make quic-go resend its
// Initial packet, so that the server refuses the same dial twice.
func ptWaitAtLeast(t *testing.T, what string, f func() float64, want float64) {
	t.Helper()
	ptWait(t, 5*time.Second, func() error {
		if got := f(); got < want {
			return fmt.Errorf("%s = %v, want at least %v", what, got, want)
		}
		return nil
	})
}

func ptWaitValue(t *testing.T, what string, f func() float64, want float64) {
	t.Helper()
	ptWait(t, 5*time.Second, func() error {
		if got := f(); got != want {
			return fmt.Errorf("%s = %v, want %v", what, got, want)
		}
		return nil
	})
}

// ptEcho answers with the authenticated peer name, the request's host and
// URI in headers, and the request body as response body.
func ptEcho() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer, _ := PeerNameFromContext(r.Context())
		w.Header().Set("X-Peer", peer)
		w.Header().Set("X-Host", r.Host)
		w.Header().Set("X-Uri", r.URL.RequestURI())
		_, _ = io.Copy(w, r.Body)
	})
}

// ptDo sends a request to target through c and returns the response body.
func ptDo(ctx context.Context, c *PeerClient, target PeerTarget, method, uri string, body io.Reader) (*http.Response, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, ptScale(10*time.Second))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://placeholder"+uri, body)
	if err != nil {
		return nil, nil, err
	}
	resp, err := c.RoundTripPeer(req, target)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

func TestPeerRoundTrip(t *testing.T) {
	b := ptStart(t, "node-b", nil)
	a := ptStart(t, "node-a", nil)

	resp, body, err := ptDo(t.Context(), a.client(), b.target(), http.MethodPost, "/p/a?q=1", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || string(body) != "hello" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if got := resp.Header.Get("X-Peer"); got != "node-a" {
		t.Errorf("handler saw peer %q, want node-a", got)
	}
	if got := resp.Header.Get("X-Uri"); got != "/p/a?q=1" {
		t.Errorf("handler saw uri %q", got)
	}
	if got := resp.Header.Get("X-Host"); got != "placeholder" {
		t.Errorf("handler saw host %q, want the request's", got)
	}

	// RoundTrip with the target in the context, keeping the client's Host,
	// as an httputil.ReverseProxy would send it.
	req, _ := http.NewRequestWithContext(WithPeerTarget(t.Context(), b.target()), http.MethodGet, "http://example.com/x", nil)
	var rt http.RoundTripper = a.client()
	resp, err = rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("X-Host"); got != "example.com" {
		t.Errorf("handler saw host %q, want example.com", got)
	}
	if req.URL.Host != "example.com" {
		t.Errorf("RoundTrip modified the request URL to %s", req.URL)
	}

	// Both requests shared one connection.
	if got := ptDials(a, dialSuccess); got != 1 {
		t.Errorf("successful dials = %v, want 1", got)
	}
	ptWaitValue(t, "a outbound connections", func() float64 { return ptConns(a, directionOutbound) }, 1)
	ptWaitValue(t, "b inbound connections", func() float64 { return ptConns(b, directionInbound) }, 1)

	// No target in the context.
	req, _ = http.NewRequest(http.MethodGet, "http://example.com/x", nil)
	if _, err := rt.RoundTrip(req); err == nil || errors.Is(err, ErrDial) {
		t.Errorf("RoundTrip without target: err = %v", err)
	}
	if problems, err := testutil.GatherAndLint(a.reg); err != nil || len(problems) > 0 {
		t.Errorf("metrics lint: %v %v", problems, err)
	}
}

// ptPattern streams n bytes of a repeating random pattern.
type ptPattern struct {
	p    []byte
	off  int
	left int64
}

func newPTPattern(p []byte, n int64) *ptPattern { return &ptPattern{p: p, left: n} }

func (r *ptPattern) Read(b []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > r.left {
		b = b[:r.left]
	}
	n := copy(b, r.p[r.off:])
	r.off = (r.off + n) % len(r.p)
	r.left -= int64(n)
	return n, nil
}

// ptHeapPeak samples the in-use heap while a transfer runs.
type ptHeapPeak struct {
	base, peak uint64
	stop, done chan struct{}
}

func startPTHeapPeak() *ptHeapPeak {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	h := &ptHeapPeak{base: ms.HeapInuse, peak: ms.HeapInuse, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-tick.C:
				runtime.ReadMemStats(&ms)
				h.peak = max(h.peak, ms.HeapInuse)
			}
		}
	}()
	return h
}

// growth stops sampling and returns the peak growth over the baseline.
func (h *ptHeapPeak) growth() uint64 {
	close(h.stop)
	<-h.done
	return h.peak - h.base
}

func TestPeerStreamsLargeBodiesWithBoundedMemory(t *testing.T) {
	// LOADMESH_TEST_STREAM_MIB overrides the body size, e.g. 1024 for the
	// 1 GiB check; -short uses a small body and skips the heap check.
	size := int64(256 << 20)
	if mib, err := strconv.ParseInt(os.Getenv("LOADMESH_TEST_STREAM_MIB"), 10, 64); err == nil && mib > 0 {
		size = mib << 20
	} else if testing.Short() {
		size = 32 << 20
	}
	// The flow-control windows (8 MiB per stream, 32 MiB per connection by
	// default) bound what is buffered; a quarter of the body is far above
	// that yet far below buffering the body.
	limit := uint64(size / 4)
	if testing.Short() {
		limit = max(limit, 256<<20)
	}
	pattern := make([]byte, 64<<10+7) // odd length: chunks never line up
	_, _ = rand.Read(pattern)
	want := sha256.New()
	_, _ = io.Copy(want, newPTPattern(pattern, size))
	wantSum := fmt.Sprintf("%d %x", size, want.Sum(nil))

	mux := http.NewServeMux()
	mux.HandleFunc("PUT /upload", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
	})
	mux.HandleFunc("GET /download", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		_, _ = io.Copy(w, newPTPattern(pattern, size))
	})
	b := ptStart(t, "node-b", mux)
	a := ptStart(t, "node-a", nil)

	// Warm up the connection so that its set-up is not measured.
	if _, _, err := ptDo(t.Context(), a.client(), b.target(), http.MethodGet, "/none", nil); err != nil {
		t.Fatal(err)
	}
	t.Run("upload", func(t *testing.T) {
		heap := startPTHeapPeak()
		start := time.Now()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, "https://x/upload", newPTPattern(pattern, size))
		req.ContentLength = size
		resp, err := a.client().RoundTripPeer(req, b.target())
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		growth := heap.growth()
		if err != nil || string(got) != wantSum {
			t.Fatalf("peer received %q (%v), want %q", got, err, wantSum)
		}
		t.Logf("uploaded %d MiB in %s, peak heap growth %d MiB", size>>20, time.Since(start).Round(time.Millisecond), growth>>20)
		if growth > limit {
			t.Errorf("heap grew by %d MiB while streaming %d MiB, want at most %d MiB", growth>>20, size>>20, limit>>20)
		}
	})
	t.Run("download", func(t *testing.T) {
		heap := startPTHeapPeak()
		start := time.Now()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://x/download", nil)
		resp, err := a.client().RoundTripPeer(req, b.target())
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		growth := heap.growth()
		if got := fmt.Sprintf("%d %x", n, h.Sum(nil)); err != nil || got != wantSum {
			t.Fatalf("received %q (%v), want %q", got, err, wantSum)
		}
		t.Logf("downloaded %d MiB in %s, peak heap growth %d MiB", size>>20, time.Since(start).Round(time.Millisecond), growth>>20)
		if growth > limit {
			t.Errorf("heap grew by %d MiB while streaming %d MiB, want at most %d MiB", growth>>20, size>>20, limit>>20)
		}
	})
	if got := ptDials(a, dialSuccess); got != 1 {
		t.Errorf("successful dials = %v, want 1 (one connection for everything)", got)
	}
}

func TestPeerCancellationReachesHandler(t *testing.T) {
	started := make(chan string, 1)
	cancelled := make(chan string, 1)
	b := ptStart(t, "node-b", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			// Stream until the client goes away.
			w.WriteHeader(http.StatusOK)
			for r.Context().Err() == nil {
				if _, err := w.Write(make([]byte, 32<<10)); err != nil {
					break
				}
				w.(http.Flusher).Flush()
			}
		} else {
			started <- r.URL.Path
		}
		<-r.Context().Done()
		cancelled <- r.URL.Path
	}))
	a := ptStart(t, "node-a", nil)
	wait := func(ch chan string, want string) {
		t.Helper()
		select {
		case got := <-ch:
			if got != want {
				t.Fatalf("got %s, want %s", got, want)
			}
		case <-time.After(ptScale(10 * time.Second)):
			t.Fatalf("handler for %s: timed out", want)
		}
	}

	t.Run("before response", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://x/wait", nil)
			_, err := a.client().RoundTripPeer(req, b.target())
			errc <- err
		}()
		wait(started, "/wait")
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) || errors.Is(err, ErrDial) {
			t.Errorf("err = %v, want context.Canceled and not ErrDial", err)
		}
		wait(cancelled, "/wait")
	})
	t.Run("during response body", func(t *testing.T) {
		for _, how := range []string{"cancel context", "close body"} {
			ctx, cancel := context.WithCancel(t.Context())
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://x/stream", nil)
			resp, err := a.client().RoundTripPeer(req, b.target())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(resp.Body, make([]byte, 1<<20)); err != nil {
				t.Fatal(err)
			}
			if how == "cancel context" {
				cancel()
			} else {
				resp.Body.Close()
			}
			wait(cancelled, "/stream")
			resp.Body.Close()
			cancel()
		}
	})
}

func TestPeerManyConcurrentRequestsShareOneConnection(t *testing.T) {
	const n = 500 // well above quic-go's default limit of 100 streams
	var arrived atomic.Int32
	all := make(chan struct{})
	b := ptStart(t, "node-b", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if arrived.Add(1) == n {
			close(all)
		}
		// Hold every request until all are in flight at once.
		select {
		case <-all:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, r.URL.Path)
	}))
	a := ptStart(t, "node-a", nil)

	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			path := fmt.Sprintf("/%d", i)
			_, body, err := ptDo(t.Context(), a.client(), b.target(), http.MethodGet, path, nil)
			if err == nil && string(body) != path {
				err = fmt.Errorf("request %s got %q", path, body)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := ptDials(a, dialSuccess); got != 1 {
		t.Errorf("successful dials = %v, want 1", got)
	}
	ptWaitValue(t, "b inbound connections", func() float64 { return ptConns(b, directionInbound) }, 1)
}

func TestPeerRedialsAfterRestart(t *testing.T) {
	for _, mode := range []string{"graceful", "crash"} {
		t.Run(mode, func(t *testing.T) {
			b := ptStart(t, "node-b", nil)
			cfg := ptConfig()
			cfg.DialTimeout = ptScale(500 * time.Millisecond)
			a := ptStart(t, "node-a", nil, func(s *ptSetup) { s.cfg = cfg })
			target := b.target()
			if _, _, err := ptDo(t.Context(), a.client(), target, http.MethodGet, "/", nil); err != nil {
				t.Fatal(err)
			}

			if mode == "graceful" {
				if err := b.srv.Shutdown(t.Context()); err != nil {
					t.Fatal(err)
				}
				_, _, err := ptDo(t.Context(), a.client(), target, http.MethodGet, "/", nil)
				if !errors.Is(err, ErrDial) {
					t.Fatalf("request to a stopped peer: err = %v, want ErrDial", err)
				}
			} else {
				b.crash()
			}

			// Same identity, same address: the restarted node. After a
			// crash, its stateless resets tell the client at once that the
			// old connection is gone (MaxIdleTimeout is a minute).
			ptStart(t, "node-b", nil, withAddr(target.Addr), withTLS(b.tls))
			ptWait(t, 10*time.Second, func() error {
				ctx, cancel := context.WithTimeout(t.Context(), ptScale(time.Second))
				defer cancel()
				_, _, err := ptDo(ctx, a.client(), target, http.MethodGet, "/", nil)
				return err
			})
			if got := ptDials(a, dialSuccess); got != 2 {
				t.Errorf("successful dials = %v, want 2", got)
			}
		})
	}
}

func TestPeerClosePeer(t *testing.T) {
	b := ptStart(t, "node-b", nil)
	a := ptStart(t, "node-a", nil)
	if _, _, err := ptDo(t.Context(), a.client(), b.target(), http.MethodGet, "/", nil); err != nil {
		t.Fatal(err)
	}
	a.client().ClosePeer("node-b")
	ptWaitValue(t, "a outbound connections", func() float64 { return ptConns(a, directionOutbound) }, 0)
	ptWaitValue(t, "b inbound connections", func() float64 { return ptConns(b, directionInbound) }, 0)

	if _, _, err := ptDo(t.Context(), a.client(), b.target(), http.MethodGet, "/", nil); err != nil {
		t.Fatal(err)
	}
	if got := ptDials(a, dialSuccess); got != 2 {
		t.Errorf("successful dials = %v, want 2", got)
	}

	// A new address for the same peer replaces the connection.
	b2 := ptStart(t, "node-b", nil, withTLS(b.tls))
	if _, _, err := ptDo(t.Context(), a.client(), b2.target(), http.MethodGet, "/", nil); err != nil {
		t.Fatal(err)
	}
	ptWaitValue(t, "b inbound connections", func() float64 { return ptConns(b, directionInbound) }, 0)
	ptWaitValue(t, "a outbound connections", func() float64 { return ptConns(a, directionOutbound) }, 1)

	if err := a.client().Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ptDo(t.Context(), a.client(), b2.target(), http.MethodGet, "/", nil); !errors.Is(err, net.ErrClosed) {
		t.Errorf("request after Close: err = %v, want net.ErrClosed", err)
	}
}

func TestPeerRefusesWrongIdentity(t *testing.T) {
	ca := testCA(t, "ca")

	t.Run("client certificate from another ca", func(t *testing.T) {
		b := ptStart(t, "node-b", nil)
		a := ptStart(t, "node-a", nil, withTLS(impostorMutualTLS(t, ca, "node-a")))
		_, _, err := ptDo(t.Context(), a.client(), b.target(), http.MethodGet, "/", nil)
		if !errors.Is(err, ErrDial) {
			t.Fatalf("err = %v, want ErrDial", err)
		}
		ptWaitAtLeast(t, "refused for certificate", func() float64 { return ptRefused(b, refusedCertificate) }, 1)
		if got := ptConns(b, directionInbound); got != 0 {
			t.Errorf("inbound connections = %v, want 0", got)
		}
	})
	t.Run("server certificate from another ca", func(t *testing.T) {
		b := ptStart(t, "node-b", nil, withTLS(impostorMutualTLS(t, ca, "node-b")))
		a := ptStart(t, "node-a", nil)
		_, _, err := ptDo(t.Context(), a.client(), b.target(), http.MethodGet, "/", nil)
		if !errors.Is(err, ErrDial) || !strings.Contains(err.Error(), "not issued by the cluster ca") {
			t.Fatalf("err = %v, want ErrDial naming the ca", err)
		}
		if got := ptDials(a, dialTLS); got != 1 {
			t.Errorf("tls dial failures = %v, want 1", got)
		}
	})
	t.Run("server name mismatch", func(t *testing.T) {
		b := ptStart(t, "node-b", nil)
		a := ptStart(t, "node-a", nil)
		target := b.target()
		target.Name = "node-c"
		_, _, err := ptDo(t.Context(), a.client(), target, http.MethodGet, "/", nil)
		if !errors.Is(err, ErrDial) || !strings.Contains(err.Error(), `names node "node-b", want "node-c"`) {
			t.Fatalf("err = %v, want ErrDial naming both nodes", err)
		}
	})
	t.Run("unauthorized node", func(t *testing.T) {
		b := ptStart(t, "node-b", nil, func(s *ptSetup) {
			s.deps.Authorize = func(peer string) error {
				if peer == "node-a" {
					return errors.New("node removed")
				}
				return nil
			}
		})
		a := ptStart(t, "node-a", nil)
		c := ptStart(t, "node-c", nil)
		_, _, err := ptDo(t.Context(), a.client(), b.target(), http.MethodGet, "/", nil)
		if !errors.Is(err, ErrDial) {
			t.Fatalf("err = %v, want ErrDial", err)
		}
		ptWaitAtLeast(t, "refused as unauthorized", func() float64 { return ptRefused(b, refusedUnauthorized) }, 1)
		if _, _, err := ptDo(t.Context(), c.client(), b.target(), http.MethodGet, "/", nil); err != nil {
			t.Fatalf("authorized node: %v", err)
		}
	})
}

func TestPeerDialErrors(t *testing.T) {
	cfg := ptConfig()
	cfg.DialTimeout = ptScale(300 * time.Millisecond)
	a := ptStart(t, "node-a", nil, func(s *ptSetup) { s.cfg = cfg })

	t.Run("nobody answers", func(t *testing.T) {
		// A bound UDP socket that never answers: packets are not refused,
		// so only the dial timeout ends the attempt.
		silent, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer silent.Close()
		target := PeerTarget{Name: "node-x", Addr: silent.LocalAddr().String()}
		start := time.Now()
		_, _, err = ptDo(t.Context(), a.client(), target, http.MethodPost, "/", strings.NewReader("body"))
		var de *DialError
		if !errors.As(err, &de) || !errors.Is(err, ErrDial) || de.Peer != "node-x" || de.Addr != target.Addr {
			t.Fatalf("err = %#v, want a *DialError for %v", err, target)
		}
		// Whichever fires first — the dial deadline or QUIC's handshake idle
		// timeout (same length) — the error must say it was a timeout.
		var ne net.Error
		if !errors.Is(err, context.DeadlineExceeded) && !(errors.As(err, &ne) && ne.Timeout()) {
			t.Errorf("err = %v, want a timeout", err)
		}
		if elapsed := time.Since(start); elapsed > ptScale(5*time.Second) {
			t.Errorf("dial took %s with a %s timeout", elapsed, cfg.DialTimeout)
		}
		if got := ptDials(a, dialTimeout); got != 1 {
			t.Errorf("timed-out dials = %v, want 1", got)
		}
	})
	t.Run("bad address", func(t *testing.T) {
		for _, target := range []PeerTarget{{Name: "node-x", Addr: "no-port"}, {Name: "", Addr: "127.0.0.1:1"}} {
			_, _, err := ptDo(t.Context(), a.client(), target, http.MethodGet, "/", nil)
			if !errors.Is(err, ErrDial) {
				t.Errorf("%v: err = %v, want ErrDial", target, err)
			}
		}
	})
	t.Run("failure after delivery is not a dial error", func(t *testing.T) {
		b := ptStart(t, "node-b", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			panic(http.ErrAbortHandler) // resets the stream
		}))
		_, _, err := ptDo(t.Context(), a.client(), b.target(), http.MethodGet, "/", nil)
		if err == nil || errors.Is(err, ErrDial) {
			t.Fatalf("err = %v, want a non-dial error", err)
		}
	})
}

func TestPeerShutdownDrainsAndRefusesNewConnections(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	b := ptStart(t, "node-b", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		_, _ = io.WriteString(w, "done")
	}))
	a := ptStart(t, "node-a", nil)
	c := ptStart(t, "node-c", nil)

	type result struct {
		body []byte
		err  error
	}
	inflight := make(chan result, 1)
	go func() {
		_, body, err := ptDo(t.Context(), a.client(), b.target(), http.MethodGet, "/slow", nil)
		inflight <- result{body, err}
	}()
	<-started

	shutdown := make(chan error, 1)
	go func() { shutdown <- b.srv.Shutdown(context.Background()) }()
	ptWait(t, 5*time.Second, func() error {
		if !b.srv.draining.Load() {
			return errors.New("not draining yet")
		}
		return nil
	})

	// A node without a connection is refused at once, not left to time out.
	start := time.Now()
	_, _, err := ptDo(t.Context(), c.client(), b.target(), http.MethodGet, "/", nil)
	if !errors.Is(err, ErrDial) {
		t.Fatalf("new connection while draining: err = %v, want ErrDial", err)
	}
	if elapsed := time.Since(start); elapsed >= c.srv.cfg.DialTimeout {
		t.Errorf("refusal took %s, as long as a dial timeout", elapsed)
	}
	if got := ptDials(c, dialRefused); got != 1 {
		t.Errorf("refused dials = %v, want 1", got)
	}
	if got := ptRefused(b, refusedShuttingDown); got < 1 {
		t.Errorf("refused while shutting down = %v, want >= 1", got)
	}

	// The request in flight completes.
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned %v before the request in flight finished", err)
	default:
	}
	close(release)
	if r := <-inflight; r.err != nil || string(r.body) != "done" {
		t.Fatalf("in-flight request: %q, %v", r.body, r.err)
	}
	if err := <-shutdown; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := b.srv.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}

func TestPeerShutdownDeadlineCancelsHandlers(t *testing.T) {
	started := make(chan struct{})
	handlerDone := make(chan error, 1)
	b := ptStart(t, "node-b", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
		handlerDone <- r.Context().Err()
	}))
	a := ptStart(t, "node-a", nil)
	go func() { _, _, _ = ptDo(t.Context(), a.client(), b.target(), http.MethodGet, "/", nil) }()
	<-started

	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	b.ignoreShutdownErr = true
	if err := b.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want context.DeadlineExceeded", err)
	}
	select {
	case <-handlerDone:
	default:
		t.Error("Shutdown returned before the handler did")
	}
}

func TestPeerServerLifecycle(t *testing.T) {
	deps := PeerDeps{TLS: testMutualTLS(t, testCA(t, "ca"), "node-a"), Handler: ptEcho()}
	srv, err := NewPeerServer(ptConfig(), deps)
	if err != nil {
		t.Fatal(err)
	}
	if srv.Addr() != nil {
		t.Error("Addr before Start is not nil")
	}
	if err := srv.Shutdown(t.Context()); err != nil {
		t.Errorf("Shutdown before Start: %v", err)
	}
	if err := srv.Start(t.Context()); err == nil {
		t.Error("Start after Shutdown succeeded")
	}

	srv, err = NewPeerServer(ptConfig(), deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(t.Context()); err == nil {
		t.Error("second Start succeeded")
	}
	if err := srv.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}

	// Metrics register once per registry.
	reg := prometheus.NewRegistry()
	deps.Registerer = reg
	if _, err := NewPeerServer(ptConfig(), deps); err != nil {
		t.Fatal(err)
	}
	if _, err := NewPeerServer(ptConfig(), deps); err == nil {
		t.Error("registering the metrics twice succeeded")
	}
	if _, err := NewPeerServer(ptConfig(), PeerDeps{}); err == nil || !strings.Contains(err.Error(), "TLS") || !strings.Contains(err.Error(), "Handler") {
		t.Errorf("missing deps: err = %v", err)
	}
}

func TestPeerConfigValidate(t *testing.T) {
	if err := DefaultPeerConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*PeerConfig)
		want []string
	}{
		{"addr", func(c *PeerConfig) { c.Addr = "7443" }, []string{"Addr"}},
		{"timeouts", func(c *PeerConfig) { c.DialTimeout = 0; c.MaxIdleTimeout = time.Hour }, []string{"DialTimeout", "MaxIdleTimeout"}},
		{"keepalive above idle", func(c *PeerConfig) { c.KeepAlivePeriod = c.MaxIdleTimeout }, []string{"KeepAlivePeriod"}},
		{"keepalive disabled", func(c *PeerConfig) { c.KeepAlivePeriod = 0 }, nil},
		{"streams", func(c *PeerConfig) { c.MaxConcurrentStreams = 10 }, []string{"MaxConcurrentStreams"}},
		{"windows", func(c *PeerConfig) { c.StreamReceiveWindow = 1 << 20; c.ConnectionReceiveWindow = 512 << 10 }, []string{"ConnectionReceiveWindow"}},
		{"everything", func(c *PeerConfig) { *c = PeerConfig{} }, []string{"Addr", "DialTimeout", "MaxIdleTimeout", "MaxConcurrentStreams", "StreamReceiveWindow", "MaxHeaderBytes"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultPeerConfig()
			tc.mod(&cfg)
			err := cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %s", err, w)
				}
			}
		})
	}
}

func TestPeerLogLimiter(t *testing.T) {
	l := newPeerLogLimiter(time.Hour)
	if _, ok := l.allow("a"); !ok {
		t.Fatal("first message suppressed")
	}
	for range 3 {
		if _, ok := l.allow("a"); ok {
			t.Fatal("message within the interval allowed")
		}
	}
	if _, ok := l.allow("b"); !ok {
		t.Fatal("other key suppressed")
	}
	l.last["a"] = time.Now().Add(-2 * time.Hour)
	if n, ok := l.allow("a"); !ok || n != 3 {
		t.Fatalf("allow = %d, %v; want 3 suppressed", n, ok)
	}
}

func TestPeerErrorClassification(t *testing.T) {
	srv, err := NewPeerServer(ptConfig(), PeerDeps{TLS: testMutualTLS(t, testCA(t, "ca"), "node-a"), Handler: ptEcho()})
	if err != nil {
		t.Fatal(err)
	}
	c := srv.Client()
	target := PeerTarget{Name: "node-b", Addr: "127.0.0.1:7443"}
	cryptoErr := quic.TransportErrorCode(0x100 + 42) // TLS alert bad_certificate
	rejected := &http3.Error{Remote: true, ErrorCode: http3.ErrCodeRequestRejected}
	for _, tc := range []struct {
		name     string
		err      error
		wantDial bool
		result   string // dialResult of err
	}{
		{"dial error", &DialError{Peer: "node-b", Err: errors.New("x")}, true, dialError},
		{"closed by ClosePeer", http3.ErrTransportClosed, true, dialError},
		{"peer refused our certificate", &quic.TransportError{Remote: true, ErrorCode: cryptoErr}, true, dialTLS},
		{"we refused its certificate", &quic.TransportError{ErrorCode: cryptoErr}, false, dialTLS},
		{"connection refused", &quic.TransportError{Remote: true, ErrorCode: quic.ConnectionRefused}, true, dialRefused},
		{"request rejected", rejected, true, dialError},
		{"rejected, body not replayable", fmt.Errorf("http3: cannot retry err [%w] after Request.Body was written", rejected), true, dialError},
		{"request cancelled by peer", &http3.Error{Remote: true, ErrorCode: http3.ErrCodeRequestCanceled}, false, dialError},
		{"handshake timeout", &quic.HandshakeTimeoutError{}, false, dialTimeout},
		{"deadline", fmt.Errorf("no handshake within 1s: %w", context.DeadlineExceeded), false, dialTimeout},
		{"canceled", context.Canceled, false, dialCanceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := c.classify(target, tc.err)
			if errors.Is(got, ErrDial) != tc.wantDial {
				t.Errorf("classify(%v) = %v; ErrDial = %v, want %v", tc.err, got, !tc.wantDial, tc.wantDial)
			}
			if !errors.Is(got, tc.err) {
				t.Errorf("classify(%v) = %v, which does not wrap the cause", tc.err, got)
			}
			if r := dialResult(tc.err); r != tc.result {
				t.Errorf("dialResult(%v) = %s, want %s", tc.err, r, tc.result)
			}
		})
	}
	if err := srv.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
}
