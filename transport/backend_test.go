package transport

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// btEnv is a backend server, a Backend in front of it and an HTTP server
// serving that Backend, as an agent's ingress does.
type btEnv struct {
	be      *httptest.Server
	b       *Backend
	front   *httptest.Server
	reg     *prometheus.Registry
	conns   atomic.Int64 // connections the backend accepted
	fastUse bool
}

// btStart starts the three; fast false forces the ReverseProxy path, so
// that every test checks both paths behave the same.
func btStart(t *testing.T, fast bool, h http.Handler, tune func(*BackendConfig)) *btEnv {
	t.Helper()
	e := &btEnv{reg: prometheus.NewRegistry(), fastUse: fast}
	e.be = httptest.NewUnstartedServer(h)
	e.be.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			e.conns.Add(1)
		}
	}
	e.be.Start()
	t.Cleanup(e.be.Close)
	cfg := BackendConfig{NodeName: "node-1", URL: e.be.URL, Capacity: 8}
	if tune != nil {
		tune(&cfg)
	}
	b, err := NewBackend(cfg, nil, e.reg)
	if err != nil {
		t.Fatal(err)
	}
	if b.fast == nil {
		t.Fatal("no fast path for a plain-HTTP backend")
	}
	if !fast {
		b.fast = nil
	}
	e.b = b
	t.Cleanup(b.CloseIdleConnections)
	e.front = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 {
			// As the Ingress does.
			http.NewResponseController(w).EnableFullDuplex()
		}
		b.ServeHTTP(w, r)
	}))
	t.Cleanup(e.front.Close)
	return e
}

func (e *btEnv) client(t *testing.T) *http.Client {
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func bothPaths(t *testing.T, f func(t *testing.T, fast bool)) {
	for _, fast := range []bool{true, false} {
		name := "reverseproxy"
		if fast {
			name = "fast"
		}
		t.Run(name, func(t *testing.T) { f(t, fast) })
	}
}

func btDo(t *testing.T, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, string(body)
}

func TestBackendHeaders(t *testing.T) {
	bothPaths(t, func(t *testing.T, fast bool) {
		var got atomic.Pointer[http.Request]
		e := btStart(t, fast, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got.Store(r.Clone(context.Background()))
			w.Header().Set("Connection", "X-Hop")
			w.Header().Set("X-Hop", "hop")
			w.Header().Set("Keep-Alive", "timeout=5")
			w.Header().Add("X-Multi", "a")
			w.Header().Add("X-Multi", "b")
			w.Header().Set(HeaderNode, "someone-else")
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, "created "+r.URL.RequestURI())
		}), nil)
		req, _ := http.NewRequest("GET", e.front.URL+"/p/a%2Fb?q=1&r=%20", nil)
		req.Host = "example.com:8080"
		req.Header.Set("X-Forwarded-For", "203.0.113.1")
		req.Header.Set("X-Forwarded-Host", "spoofed")
		req.Header.Set("X-Forwarded-Proto", "spoofed")
		req.Header.Set("Forwarded", "for=spoofed")
		req.Header.Set("Via", "1.0 upstream")
		req.Header.Set("Connection", "keep-alive, X-Secret")
		req.Header.Set("X-Secret", "hop-by-hop")
		req.Header.Set("Proxy-Authorization", "Basic x")
		req.Header.Set("Te", "trailers, deflate")
		req.Header.Add("X-Multi", "1")
		req.Header.Add("X-Multi", "2")
		req.Header.Set("User-Agent", "") // none at all
		resp, body := btDo(t, e.client(t), req)
		if resp.StatusCode != http.StatusCreated || body != "created /p/a%2Fb?q=1&r=%20" {
			t.Fatalf("answer %d %q", resp.StatusCode, body)
		}
		if v := resp.Header.Values(HeaderNode); len(v) != 1 || v[0] != "node-1" {
			t.Errorf("%s %q, want exactly node-1", HeaderNode, v)
		}
		if resp.Header.Get("X-Hop") != "" || resp.Header.Get("Keep-Alive") != "" {
			t.Errorf("hop-by-hop response headers passed: %v", resp.Header)
		}
		if v := resp.Header.Values("X-Multi"); strings.Join(v, ",") != "a,b" {
			t.Errorf("X-Multi %q", v)
		}
		r := got.Load()
		want := map[string]string{
			"X-Forwarded-For":     "203.0.113.1, 127.0.0.1",
			"X-Forwarded-Host":    "example.com:8080",
			"X-Forwarded-Proto":   "http",
			"Via":                 "1.0 upstream, 1.1 node-1 (loadmesh)",
			"Te":                  "trailers",
			"X-Secret":            "",
			"Proxy-Authorization": "",
			"Forwarded":           "",
			"User-Agent":          "",
			"Accept-Encoding":     "",
		}
		for k, v := range want {
			if g := strings.Join(r.Header.Values(k), "|"); g != v {
				t.Errorf("backend saw %s %q, want %q", k, g, v)
			}
		}
		if strings.Join(r.Header.Values("X-Multi"), ",") != "1,2" {
			t.Errorf("X-Multi %q", r.Header.Values("X-Multi"))
		}
		if r.Host != "example.com:8080" || r.URL.RawQuery != "q=1&r=%20" || r.URL.EscapedPath() != "/p/a%2Fb" {
			t.Errorf("backend saw host %q path %q query %q", r.Host, r.URL.EscapedPath(), r.URL.RawQuery)
		}
	})
}

func TestBackendKeepsForwardedHeadersOfPeerRequests(t *testing.T) {
	bothPaths(t, func(t *testing.T, fast bool) {
		var got atomic.Pointer[http.Header]
		e := btStart(t, fast, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := r.Header.Clone()
			got.Store(&h)
		}), nil)
		// As PeerServer serves it: the peer's name in the context.
		req := httptest.NewRequest("GET", "/x", nil)
		req = req.WithContext(context.WithValue(req.Context(), peerNameCtxKey{}, "node-0"))
		req.Header.Set("X-Forwarded-For", "198.51.100.7")
		req.Header.Set("X-Forwarded-Proto", "https")
		req.Header.Set("X-Forwarded-Host", "shop.example")
		req.Header.Set("Via", "2 node-0 (loadmesh)")
		rec := httptest.NewRecorder()
		e.b.ServeHTTP(rec, req)
		if rec.Code != 200 || rec.Header().Get(HeaderNode) != "node-1" {
			t.Fatalf("answer %d %v", rec.Code, rec.Header())
		}
		h := *got.Load()
		for k, v := range map[string]string{"X-Forwarded-For": "198.51.100.7", "X-Forwarded-Proto": "https",
			"X-Forwarded-Host": "shop.example", "Via": "2 node-0 (loadmesh)"} {
			if g := strings.Join(h.Values(k), "|"); g != v {
				t.Errorf("%s %q, want %q kept as is", k, g, v)
			}
		}
	})
}

func TestBackendReusesConnections(t *testing.T) {
	bothPaths(t, func(t *testing.T, fast bool) {
		e := btStart(t, fast, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			io.WriteString(w, "ok")
		}), nil)
		c := e.client(t)
		for i := range 50 {
			var body io.Reader
			method := "GET"
			if i%2 == 1 {
				method, body = "POST", strings.NewReader("small body")
			}
			req, _ := http.NewRequest(method, e.front.URL+"/", body)
			if resp, b := btDo(t, c, req); resp.StatusCode != 200 || b != "ok" {
				t.Fatalf("request %d: %d %q", i, resp.StatusCode, b)
			}
		}
		if n := e.conns.Load(); n != 1 {
			t.Errorf("backend saw %d connections for 50 sequential requests, want 1", n)
		}
	})
}

func TestBackendConnectionClose(t *testing.T) {
	bothPaths(t, func(t *testing.T, fast bool) {
		e := btStart(t, fast, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close")
			io.WriteString(w, "bye")
		}), nil)
		c := e.client(t)
		for range 3 {
			req, _ := http.NewRequest("GET", e.front.URL+"/", nil)
			if resp, b := btDo(t, c, req); resp.StatusCode != 200 || b != "bye" || resp.Close {
				t.Fatalf("%d %q close=%v", resp.StatusCode, b, resp.Close)
			}
		}
		if n := e.conns.Load(); n != 3 {
			t.Errorf("backend saw %d connections, want 3 (it closes each)", n)
		}
	})
}

func TestBackendRetriesStaleConnection(t *testing.T) {
	bothPaths(t, func(t *testing.T, fast bool) {
		e := btStart(t, fast, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, _ := io.Copy(io.Discard, r.Body)
			fmt.Fprintf(w, "%d", n)
		}), nil)
		c := e.client(t)
		for i := range 3 {
			// The backend drops its idle connections between requests.
			// A GET is sent again on a new connection; a request with a
			// body cannot be, so a connection idle for a while is checked
			// before one is sent on it (a POST right after the backend
			// closed the connection fails on both paths).
			e.be.CloseClientConnections()
			method, body, want := "GET", io.Reader(nil), "0"
			switch i {
			case 1:
				time.Sleep(1100 * time.Millisecond)
			case 2:
				time.Sleep(1100 * time.Millisecond)
				method, body, want = "POST", strings.NewReader("12345"), "5"
			}
			req, _ := http.NewRequest(method, e.front.URL+"/", body)
			if resp, b := btDo(t, c, req); resp.StatusCode != 200 || b != want {
				t.Fatalf("%s after the backend closed the idle connection: %d %q", method, resp.StatusCode, b)
			}
		}
	})
}

func TestBackendBodies(t *testing.T) {
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).EnableFullDuplex()
		w.Header().Set("X-Length", fmt.Sprint(r.ContentLength))
		w.Header().Set("X-TE", strings.Join(r.TransferEncoding, ","))
		io.Copy(w, r.Body)
	})
	bothPaths(t, func(t *testing.T, fast bool) {
		e := btStart(t, fast, echo, nil)
		c := e.client(t)
		for _, tc := range []struct {
			name   string
			size   int
			length bool // send Content-Length
		}{
			{"empty POST", 0, true}, {"small", 100, true}, {"sync limit", h1SyncBodyMax, true},
			{"large", 3 << 20, true}, {"small chunked", 100, false}, {"large chunked", 3 << 20, false},
		} {
			data := bytes.Repeat([]byte("0123456789abcdef"), tc.size/16+1)[:tc.size]
			var body io.Reader = bytes.NewReader(data)
			if !tc.length {
				body = io.MultiReader(body) // hides the length
			}
			req, _ := http.NewRequest("POST", e.front.URL+"/echo", body)
			resp, got := btDo(t, c, req)
			if resp.StatusCode != 200 || got != string(data) {
				t.Fatalf("%s: %d, %d bytes back of %d", tc.name, resp.StatusCode, len(got), len(data))
			}
			wantLen, wantTE := fmt.Sprint(tc.size), ""
			if !tc.length && tc.size > 0 {
				wantLen, wantTE = "-1", "chunked"
			}
			if l, te := resp.Header.Get("X-Length"), resp.Header.Get("X-TE"); l != wantLen || te != wantTE {
				t.Errorf("%s: backend saw length %s transfer-encoding %q, want %s %q", tc.name, l, te, wantLen, wantTE)
			}
		}
	})
}

// TestBackendStreamsBothWays checks that the answer streams back while the
// request body still streams in, with bounded memory.
func TestBackendStreamsBothWays(t *testing.T) {
	bothPaths(t, func(t *testing.T, fast bool) {
		e := btStart(t, fast, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.NewResponseController(w).EnableFullDuplex()
			w.WriteHeader(200)
			buf := make([]byte, 1024)
			for {
				n, err := r.Body.Read(buf)
				if n > 0 {
					w.Write(buf[:n])
					http.NewResponseController(w).Flush()
				}
				if err != nil {
					return
				}
			}
		}), nil)
		pr, pw := io.Pipe()
		req, _ := http.NewRequest("POST", e.front.URL+"/", pr)
		type result struct {
			resp *http.Response
			err  error
		}
		rc := make(chan result, 1)
		go func() {
			resp, err := e.client(t).Do(req)
			rc <- result{resp, err}
		}()
		if _, err := pw.Write([]byte("ping-1")); err != nil {
			t.Fatal(err)
		}
		res := <-rc
		if res.err != nil {
			t.Fatal(res.err)
		}
		defer res.resp.Body.Close()
		br := bufio.NewReader(res.resp.Body)
		for i := 1; i <= 20; i++ {
			msg := fmt.Sprintf("ping-%d", i)
			if i > 1 {
				if _, err := pw.Write([]byte(msg)); err != nil {
					t.Fatal(err)
				}
			}
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(br, got); err != nil || string(got) != msg {
				t.Fatalf("echo %d: %q %v", i, got, err)
			}
		}
		pw.Close()
		if rest, _ := io.ReadAll(br); len(rest) != 0 {
			t.Fatalf("trailing %q", rest)
		}
	})
}

func TestBackendLargeDownloadAndUpload(t *testing.T) {
	const size = 64 << 20
	bothPaths(t, func(t *testing.T, fast bool) {
		e := btStart(t, fast, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == "POST" {
				h := sha256.New()
				n, _ := io.Copy(h, r.Body)
				fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
				return
			}
			w.Header().Set("Content-Length", fmt.Sprint(size))
			io.Copy(w, io.LimitReader(&btPattern{}, size))
		}), nil)
		c := e.client(t)
		resp, err := c.Get(e.front.URL + "/big")
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		want := sha256.New()
		io.Copy(want, io.LimitReader(&btPattern{}, size))
		if err != nil || n != size || !bytes.Equal(h.Sum(nil), want.Sum(nil)) {
			t.Fatalf("download: %d bytes, %v, digest ok %v", n, err, bytes.Equal(h.Sum(nil), want.Sum(nil)))
		}
		req, _ := http.NewRequest("POST", e.front.URL+"/up", io.MultiReader(io.LimitReader(&btPattern{}, size)))
		_, body := btDo(t, c, req)
		if wantBody := fmt.Sprintf("%d %x", size, want.Sum(nil)); body != wantBody {
			t.Fatalf("upload: backend got %q, want %q", body, wantBody)
		}
	})
}

type btPattern struct{ i byte }

func (p *btPattern) Read(b []byte) (int, error) {
	for j := range b {
		b[j] = p.i
		p.i = p.i*31 + 7
	}
	return len(b), nil
}

func TestBackendBodylessAnswers(t *testing.T) {
	bothPaths(t, func(t *testing.T, fast bool) {
		e := btStart(t, fast, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/204":
				w.WriteHeader(http.StatusNoContent)
			case "/304":
				w.WriteHeader(http.StatusNotModified)
			default:
				w.Header().Set("Content-Length", "11")
				io.WriteString(w, "hello world")
			}
		}), nil)
		c := e.client(t)
		for _, tc := range []struct{ method, path, body, length string }{
			{"HEAD", "/", "", "11"}, {"GET", "/204", "", ""}, {"GET", "/304", "", ""}, {"GET", "/", "hello world", "11"},
		} {
			req, _ := http.NewRequest(tc.method, e.front.URL+tc.path, nil)
			resp, body := btDo(t, c, req)
			if body != tc.body || resp.Header.Get("Content-Length") != tc.length {
				t.Errorf("%s %s: %d %q length %q", tc.method, tc.path, resp.StatusCode, body, resp.Header.Get("Content-Length"))
			}
		}
		if n := e.conns.Load(); n != 1 {
			t.Errorf("%d backend connections, want 1", n)
		}
	})
}

func TestBackendStreamingAnswerAndTrailers(t *testing.T) {
	bothPaths(t, func(t *testing.T, fast bool) {
		step := make(chan struct{})
		e := btStart(t, fast, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "X-Sum")
			w.WriteHeader(200)
			io.WriteString(w, "first;")
			http.NewResponseController(w).Flush()
			<-step
			io.WriteString(w, "second")
			w.Header().Set("X-Sum", "42")
			w.Header().Set(http.TrailerPrefix+"X-Late", "late")
		}), nil)
		resp, err := e.client(t).Get(e.front.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		first := make([]byte, len("first;"))
		if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "first;" {
			t.Fatalf("first piece %q %v: not streamed", first, err)
		}
		close(step)
		rest, err := io.ReadAll(resp.Body)
		if err != nil || string(rest) != "second" {
			t.Fatalf("rest %q %v", rest, err)
		}
		if resp.Trailer.Get("X-Sum") != "42" || resp.Trailer.Get("X-Late") != "late" {
			t.Errorf("trailers %v", resp.Trailer)
		}
	})
}

func TestBackendInformationalAnswers(t *testing.T) {
	bothPaths(t, func(t *testing.T, fast bool) {
		var sawBody atomic.Bool
		e := btStart(t, fast, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/refuse" {
				w.WriteHeader(http.StatusExpectationFailed)
				return
			}
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			b, _ := io.ReadAll(r.Body) // sends 100 Continue
			sawBody.Store(len(b) > 0)
			io.WriteString(w, "got "+string(b))
		}), nil)
		c := e.client(t)
		c.Transport.(*http.Transport).ExpectContinueTimeout = 5 * time.Second
		var hints atomic.Int32
		trace := &httptraceHints{n: &hints}
		req, _ := http.NewRequestWithContext(trace.ctx(), "POST", e.front.URL+"/", strings.NewReader("payload"))
		req.Header.Set("Expect", "100-continue")
		resp, body := btDo(t, c, req)
		if resp.StatusCode != 200 || body != "got payload" {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
		if hints.Load() == 0 {
			t.Errorf("103 Early Hints not passed on")
		}
		req, _ = http.NewRequest("POST", e.front.URL+"/refuse", strings.NewReader("unwanted"))
		req.Header.Set("Expect", "100-continue")
		if resp, _ := btDo(t, c, req); resp.StatusCode != http.StatusExpectationFailed {
			t.Fatalf("refused: %d", resp.StatusCode)
		}
	})
}

func TestBackendFailures(t *testing.T) {
	bothPaths(t, func(t *testing.T, fast bool) {
		release := make(chan struct{})
		defer close(release)
		e := btStart(t, fast, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/slow":
				select {
				case <-release:
				case <-r.Context().Done():
				}
			case "/cut":
				w.Header().Set("Content-Length", "1000")
				io.WriteString(w, "only this")
				http.NewResponseController(w).Flush()
				panic(http.ErrAbortHandler)
			}
		}), func(c *BackendConfig) { c.ResponseHeaderTimeout = 200 * time.Millisecond })
		c := e.client(t)
		resp, body := btDo(t, c, mustReq("GET", e.front.URL+"/slow"))
		if resp.StatusCode != http.StatusGatewayTimeout || resp.Header.Get(HeaderNode) != "node-1" {
			t.Errorf("header timeout: %d %q", resp.StatusCode, body)
		}
		resp, err := c.Get(e.front.URL + "/cut")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if err == nil {
			t.Errorf("a body cut by the backend reached the client as complete")
		}
		// Invalid header values never reach the backend.
		req := httptest.NewRequest("GET", "/", nil)
		req.Header["X-Bad"] = []string{"a\r\nInjected: yes"}
		rec := httptest.NewRecorder()
		e.b.ServeHTTP(rec, req)
		if rec.Code != http.StatusBadGateway {
			t.Errorf("invalid header value: %d", rec.Code)
		}
	})
	t.Run("dial", func(t *testing.T) {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := ln.Addr().String()
		ln.Close()
		b, err := NewBackend(BackendConfig{NodeName: "node-1", URL: "http://" + addr}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		b.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		if rec.Code != http.StatusBadGateway || !strings.Contains(rec.Body.String(), "connection refused") {
			t.Errorf("dial failure: %d %q", rec.Code, rec.Body.String())
		}
	})
}

func mustReq(method, url string) *http.Request {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		panic(err)
	}
	return req
}

func TestBackendClientCancelReachesBackend(t *testing.T) {
	bothPaths(t, func(t *testing.T, fast bool) {
		started, canceled := make(chan struct{}, 1), make(chan struct{}, 1)
		e := btStart(t, fast, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			started <- struct{}{}
			select {
			case <-r.Context().Done():
				canceled <- struct{}{}
			case <-time.After(time.Minute):
			}
		}), nil)
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", e.front.URL+"/", nil)
		errc := make(chan error, 1)
		go func() {
			_, err := e.client(t).Do(req)
			errc <- err
		}()
		<-started
		cancel()
		select {
		case <-canceled:
		case <-time.After(10 * time.Second):
			t.Fatal("the backend never saw the cancellation")
		}
		<-errc
		// The Backend counts the request as canceled.
		deadline := time.Now().Add(5 * time.Second)
		for testutil.ToFloat64(e.b.metrics.requests.WithLabelValues("local", "canceled")) != 1 {
			if time.Now().After(deadline) {
				t.Fatal("canceled request not counted")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if e.b.Inflight() != 0 {
			t.Errorf("%d in flight after the request ended", e.b.Inflight())
		}
	})
}

// TestBackendProbesUnknownLengthBody: a request without Content-Length
// on a method that usually has no body (as HTTP/3 requests from peers
// arrive) is sent without a body when it has none, and chunked otherwise.
func TestBackendProbesUnknownLengthBody(t *testing.T) {
	bothPaths(t, func(t *testing.T, fast bool) {
		e := btStart(t, fast, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s %d %q %q", r.Method, r.ContentLength, r.TransferEncoding, b)
		}), nil)
		for _, tc := range []struct {
			body io.Reader
			want string
		}{
			{strings.NewReader(""), `GET 0 [] ""`},
			{strings.NewReader("abc"), `GET -1 ["chunked"] "abc"`},
		} {
			req := httptest.NewRequest("GET", "/", nil)
			req.Body, req.ContentLength = io.NopCloser(tc.body), -1
			rec := httptest.NewRecorder()
			e.b.ServeHTTP(rec, req)
			if rec.Body.String() != tc.want {
				t.Errorf("got %q, want %q", rec.Body.String(), tc.want)
			}
		}
	})
}

func TestBackendUpgradeUsesReverseProxy(t *testing.T) {
	e := btStart(t, true, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "no upgrade", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		brw.Flush()
		io.Copy(conn, brw)
	}), nil)
	conn, err := net.Dial("tcp", e.front.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	conn.Write([]byte("hello"))
	got := make([]byte, 5)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "hello" {
		t.Fatalf("tunnel: %q %v", got, err)
	}
}

func TestBackendConcurrent(t *testing.T) {
	e := btStart(t, true, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
		w.Write([]byte(r.URL.Path))
	}), nil)
	c := e.client(t)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for g := range 16 {
		wg.Go(func() {
			for i := range 100 {
				path := fmt.Sprintf("/%d/%d", g, i)
				var body io.Reader
				want := path
				if i%3 == 0 {
					body = strings.NewReader(path)
					want = path + path
				}
				req, _ := http.NewRequest("POST", e.front.URL+path, body)
				resp, err := c.Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != want {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of 1600 requests failed", n)
	}
	if n := e.conns.Load(); n > 16+int64(e.b.cfg.Capacity) {
		t.Errorf("%d backend connections for 16 concurrent clients", n)
	}
}

// httptraceHints counts the 103 Early Hints a client receives.
type httptraceHints struct{ n *atomic.Int32 }

func (h *httptraceHints) ctx() context.Context {
	return httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, _ textproto.MIMEHeader) error {
			if code == http.StatusEarlyHints {
				h.n.Add(1)
			}
			return nil
		},
	})
}
