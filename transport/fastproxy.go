package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"
)

// h1Proxy is Backend's fast path to a plain-HTTP backend: a small
// HTTP/1.1 client that writes the request and reads the response on the
// handler's own goroutine, over a pool of keep-alive connections.
//
// httputil.ReverseProxy over http.Transport hands every request to two
// goroutines per backend connection (writeLoop and readLoop) and back,
// and clones the request and its headers on the way; on a loopback
// benchmark that machinery cost more CPU than everything else loadmesh
// does per request. h1Proxy keeps ReverseProxy's observable behaviour
// (see Backend) and is used for every request it can serve that way;
// accepts reports which. The rest (protocol upgrades, CONNECT, requests
// with trailers, unusual URLs and Host values) and https backends go
// through the ReverseProxy.
//
// A request body is sent from a second goroutine, so that a response can
// stream back while the body still streams in (the backend may answer
// before it has read the whole body, or echo it), except for short bodies
// of known length, which are written on the handler's goroutine.
type h1Proxy struct {
	addr        string // host:port to dial
	dialer      net.Dialer
	respTimeout time.Duration // response header timeout; 0: none
	idleTimeout time.Duration
	maxIdle     int
	fail        func(http.ResponseWriter, *http.Request, error) // Backend's error answer
	logf        func(msg string, args ...any)

	viaSuffix  string   // " <node> (loadmesh)"
	nodeHeader []string // shared, read-only value of HeaderNode

	mu      sync.Mutex
	idle    []*h1Conn // most recently used last
	reaping bool      // a reap is scheduled
}

// Limits and timings, as http.Transport's defaults or Backend's settings.
const (
	h1MaxHeaderBytes = 10 << 20 // response header size limit (http.Transport's default)
	h1Max1xx         = 5        // informational responses tolerated before the final one
	h1SyncBodyMax    = 16 << 10 // bodies up to this size are written without a goroutine
	h1ExpectTimeout  = time.Second
	h1WriterGrace    = 50 * time.Millisecond // wait for the body writer once the response is done
	h1ProbeAfterIdle = time.Second           // check a reused connection idle this long before sending a body on it
	h1ConnBufferSize = 4 << 10
	h1DeadlineSlack  = time.Second // see armDeadline
)

var errH1HeaderTimeout = &timeoutError{"timeout awaiting response headers"}

// timeoutError is a timeout that matches context.DeadlineExceeded, like
// http.Transport's, so that Backend answers 504.
type timeoutError struct{ msg string }

func (e *timeoutError) Error() string        { return e.msg }
func (e *timeoutError) Timeout() bool        { return true }
func (e *timeoutError) Is(target error) bool { return target == context.DeadlineExceeded }

// h1Conn is one keep-alive connection to the backend.
type h1Conn struct {
	nc        net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	readLimit int64     // bytes the next reads may return (response header limit)
	deadline  time.Time // read deadline set on nc, zero if none
	idleSince time.Time
	reused    bool
	closeFn   func() // closes nc; made once, for context.AfterFunc
}

// Read feeds br, enforcing the response header size limit.
func (c *h1Conn) Read(p []byte) (n int, err error) {
	if c.readLimit <= 0 {
		return 0, fmt.Errorf("response header larger than %d bytes", h1MaxHeaderBytes)
	}
	if int64(len(p)) > c.readLimit {
		p = p[:c.readLimit]
	}
	n, err = c.nc.Read(p)
	c.readLimit -= int64(n)
	return n, err
}

// armDeadline bounds the wait for the response header to d from now. An
// armed deadline at most h1DeadlineSlack earlier is kept as it is: moving
// it on every request costs more than the answer takes.
func (c *h1Conn) armDeadline(d time.Duration) {
	if d <= 0 {
		return
	}
	want := time.Now().Add(d)
	if c.deadline.IsZero() || want.Sub(c.deadline) > h1DeadlineSlack {
		c.nc.SetReadDeadline(want)
		c.deadline = want
	}
}

// disarmDeadline removes the read deadline.
func (c *h1Conn) disarmDeadline() {
	if !c.deadline.IsZero() {
		c.nc.SetReadDeadline(time.Time{})
		c.deadline = time.Time{}
	}
}

func newH1Proxy(addr string, cfg BackendConfig, fail func(http.ResponseWriter, *http.Request, error), logf func(string, ...any)) *h1Proxy {
	return &h1Proxy{
		addr:        addr,
		dialer:      net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second},
		respTimeout: cfg.ResponseHeaderTimeout,
		idleTimeout: cfg.IdleConnTimeout,
		maxIdle:     2 * cfg.Capacity,
		fail:        fail,
		logf:        logf,
		viaSuffix:   " " + cfg.NodeName + " (loadmesh)",
		nodeHeader:  []string{cfg.NodeName},
	}
}

// accepts reports whether r can take the fast path; the others go through
// the ReverseProxy, which handles them the same way as before.
func (p *h1Proxy) accepts(r *http.Request) bool {
	if r.Method == http.MethodConnect || r.Trailer != nil || r.URL.Opaque != "" ||
		!strings.HasPrefix(r.URL.Path, "/") || !validH1Host(r.Host) || !cleanQuery(r.URL.RawQuery) {
		return false
	}
	if _, ok := r.Header["Upgrade"]; ok {
		return false
	}
	return true
}

// exchange is the state of one request shared with its body writer.
type exchange struct {
	c      *h1Conn
	body   io.Reader
	length int64      // body length, -1: chunked
	cont   chan bool  // with Expect: 100-continue, whether to send the body
	done   chan error // the body writer's result (buffered, refilled by readers)

	mu          sync.Mutex
	headersRead bool // the final response header arrived
}

// serve proxies r and sets *status to the status the client was sent.
func (p *h1Proxy) serve(w http.ResponseWriter, r *http.Request, status *int) {
	ctx := r.Context()
	body, length, err := requestBody(r)
	if err == nil {
		replayable := body == nil && isIdempotent(r)
		for attempt := 0; ; attempt++ {
			var c *h1Conn
			if c, err = p.get(ctx, body != nil, attempt > 0); err != nil {
				break
			}
			var retry bool
			if retry, err = p.roundTrip(w, r, c, body, length, status); err == nil {
				return
			}
			if !retry || !replayable || attempt > 0 || ctx.Err() != nil {
				break
			}
			// A reused connection that the backend had closed: the request
			// never reached it, so send it again on a new connection.
		}
	}
	*status = errorStatus(r, err)
	p.fail(w, r, err)
}

// roundTrip sends r over c and streams the answer to w. It returns an
// error only while nothing was written to w; retry then tells whether the
// request cannot have reached the backend (a reused connection that
// failed before any answer). It releases c in every case. Once the answer
// has begun, a failure aborts it (panic with http.ErrAbortHandler), as
// ReverseProxy does.
func (p *h1Proxy) roundTrip(w http.ResponseWriter, r *http.Request, c *h1Conn, body io.Reader, length int64, status *int) (retry bool, err error) {
	ctx := r.Context()
	stop := context.AfterFunc(ctx, c.closeFn)
	released, reusable := false, false
	release := func() {
		released = true
		// stop is false when the context ended and closed the connection.
		if stop() && reusable {
			p.put(c)
		} else {
			c.nc.Close()
		}
	}
	defer func() {
		if !released {
			release()
		}
	}()

	if err := p.writeHeader(c.bw, r, length, body); err != nil {
		return false, err
	}
	expect := body != nil && expectsContinue(r)
	var x *exchange
	if body == nil || (length >= 0 && length <= h1SyncBodyMax && !expect) {
		// Header and body in one go, on this goroutine.
		var err error
		if body != nil {
			err = writeBody(c.bw, body, length)
		} else {
			err = c.bw.Flush()
		}
		if err != nil {
			return c.reused && body == nil && ctx.Err() == nil, p.cause(ctx, err)
		}
		c.armDeadline(p.respTimeout)
	} else {
		// The writer arms the deadline once the body is sent.
		c.disarmDeadline()
		x = &exchange{c: c, body: body, length: length, done: make(chan error, 1)}
		if expect {
			x.cont = make(chan bool, 1)
		}
		go p.writeAsync(x)
	}
	var cont chan bool
	if x != nil {
		cont = x.cont
	}

	// Nothing at all on a reused connection: the backend closed it while
	// it was idle.
	c.readLimit = h1MaxHeaderBytes
	if _, err := c.br.Peek(1); err != nil {
		return c.reused && x == nil && !isTimeout(err), p.exchangeErr(ctx, x, err)
	}
	var resp *http.Response
	for n1xx := 0; ; {
		if resp, err = http.ReadResponse(c.br, r); err != nil {
			return false, p.exchangeErr(ctx, x, err)
		}
		code := resp.StatusCode
		if code < 100 {
			return false, fmt.Errorf("malformed HTTP status code %d", code)
		}
		if code == http.StatusContinue && cont != nil {
			cont <- true
			cont = nil
		}
		if code > 199 {
			break
		}
		if code == http.StatusSwitchingProtocols {
			return false, errors.New("backend switched protocols on a request that did not ask for an upgrade")
		}
		if n1xx++; n1xx > h1Max1xx {
			return false, errors.New("too many 1xx informational responses")
		}
		// Pass it on, as ReverseProxy does.
		h := w.Header()
		for k, vv := range resp.Header {
			h[k] = append(h[k], vv...)
		}
		w.WriteHeader(code)
		clear(h)
		c.readLimit = h1MaxHeaderBytes
	}
	c.readLimit = math.MaxInt64
	if x != nil {
		x.mu.Lock()
		x.headersRead = true
		if p.respTimeout > 0 {
			c.nc.SetReadDeadline(time.Time{})
		}
		x.mu.Unlock()
		if cont != nil {
			// A final answer without 100 Continue: send the body anyway,
			// unless the connection closes (as http.Transport does).
			cont <- !resp.Close
		}
	} else if resp.ContentLength < 0 || int64(c.br.Buffered()) < resp.ContentLength {
		// More reads to come: the header timeout must not cut the body.
		// (A body already buffered needs none, and the deadline stays
		// armed for the next request on this connection.)
		c.disarmDeadline()
	}

	// The answer's header, as ReverseProxy builds it.
	h := w.Header()
	connHdr := resp.Header["Connection"]
	for k, vv := range resp.Header {
		if isHopHeader(k) || (len(connHdr) > 0 && listedIn(connHdr, k)) {
			continue
		}
		if prior := h[k]; len(prior) > 0 {
			h[k] = append(prior, vv...)
		} else {
			h[k] = vv
		}
	}
	h[HeaderNode] = p.nodeHeader
	announced := len(resp.Trailer)
	if announced > 0 {
		keys := make([]string, 0, announced)
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		h.Add("Trailer", strings.Join(keys, ", "))
	}
	*status = resp.StatusCode
	w.WriteHeader(resp.StatusCode)

	// The body.
	var rc *http.ResponseController
	if resp.ContentLength == -1 || isEventStream(h) {
		// Streamed: flush every piece at once.
		rc = http.NewResponseController(w)
		rc.Flush()
	}
	bufp := h1Buffers.Get().(*[]byte)
	buf := *bufp
	var copyErr error
	for {
		n, rerr := resp.Body.Read(buf)
		if rerr == io.EOF {
			// All of it is in buf: hand the connection back before the
			// last write to the client.
			reusable = !resp.Close && p.writerDone(x) && c.br.Buffered() == 0
			release()
		}
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				copyErr = werr
				break
			}
			if rc != nil {
				rc.Flush()
			}
		}
		if rerr != nil {
			if rerr != io.EOF {
				copyErr = p.exchangeErr(ctx, x, rerr)
			}
			break
		}
	}
	h1Buffers.Put(bufp)
	if copyErr != nil {
		// The answer is cut short: abort it so that the client sees the
		// failure (ReverseProxy does the same).
		p.logf("backend response body copy failed", "error", copyErr, "path", r.URL.Path)
		if abortable(r) {
			panic(http.ErrAbortHandler)
		}
		return false, nil
	}
	if len(resp.Trailer) > 0 {
		// Force chunking, so that the trailers can follow.
		if rc == nil {
			rc = http.NewResponseController(w)
		}
		rc.Flush()
		prefix := ""
		if len(resp.Trailer) != announced {
			prefix = http.TrailerPrefix
		}
		for k, vv := range resp.Trailer {
			h[prefix+k] = append(h[prefix+k], vv...)
		}
	}
	return false, nil
}

// writerDone reports whether the body writer finished cleanly, waiting a
// little for it if needed; without one, true.
func (p *h1Proxy) writerDone(x *exchange) bool {
	if x == nil {
		return true
	}
	select {
	case err := <-x.done:
		x.done <- err
		return err == nil
	default:
	}
	t := time.NewTimer(h1WriterGrace)
	defer t.Stop()
	select {
	case err := <-x.done:
		x.done <- err
		return err == nil
	case <-t.C:
		return false
	}
}

// exchangeErr picks the error to report for a failed exchange: the
// context's if it ended, the body writer's if it failed first, else err.
func (p *h1Proxy) exchangeErr(ctx context.Context, x *exchange, err error) error {
	if x != nil {
		select {
		case werr := <-x.done:
			x.done <- werr
			if werr != nil && ctx.Err() == nil {
				return werr
			}
		default:
		}
	}
	if errors.Is(err, errH1HeaderTimeout) {
		return err
	}
	return p.cause(ctx, err)
}

// cause replaces an I/O error that the context's end provoked (the
// connection was closed under it) by the context's error.
func (p *h1Proxy) cause(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return errH1HeaderTimeout
	}
	return err
}

// writeAsync sends the request header and body from its own goroutine.
func (p *h1Proxy) writeAsync(x *exchange) {
	c := x.c
	err := c.bw.Flush()
	if err == nil && x.cont != nil {
		t := time.NewTimer(h1ExpectTimeout)
		select {
		case ok := <-x.cont:
			if !ok {
				err = errors.New("backend answered without reading the body")
			}
		case <-t.C:
		}
		t.Stop()
	}
	if err == nil {
		err = writeBody(c.bw, x.body, x.length)
	}
	if err == nil && p.respTimeout > 0 {
		x.mu.Lock()
		if !x.headersRead {
			c.nc.SetReadDeadline(time.Now().Add(p.respTimeout))
		}
		x.mu.Unlock()
	}
	if err != nil {
		// The connection will not be reused. Close it at once when the
		// backend waits for a body that will not come, or while the reader
		// still waits for an answer; once the answer has begun and the
		// backend merely stopped reading, let the reader finish it.
		var bodyErr *requestBodyError
		x.mu.Lock()
		if !x.headersRead || errors.As(err, &bodyErr) {
			c.nc.Close()
		}
		x.mu.Unlock()
	}
	x.done <- err
}

// writeBody copies body to bw: length bytes, or chunked if length is -1.
// It flushes after each piece so that a streamed body streams on; a
// chunk is framed in place around the data, so that each piece is one
// write.
func writeBody(bw *bufio.Writer, body io.Reader, length int64) error {
	bufp := h1Buffers.Get().(*[]byte)
	defer h1Buffers.Put(bufp)
	buf := *bufp
	const head = 18 // room for a chunk's size line: up to 16 hex digits, CRLF
	data := buf
	if length < 0 {
		data = buf[head : len(buf)-2]
	}
	var sent int64
	for {
		want := data
		if length >= 0 && length-sent < int64(len(want)) {
			want = want[:length-sent+1] // one more, to see an overlong body
		}
		n, rerr := body.Read(want)
		if n > 0 {
			if length >= 0 && sent+int64(n) > length {
				return &requestBodyError{fmt.Errorf("request body longer than its Content-Length %d", length)}
			}
			piece := data[:n]
			if length < 0 {
				var size [head]byte
				line := append(strconv.AppendInt(size[:0], int64(n), 16), '\r', '\n')
				start := head - len(line)
				copy(buf[start:], line)
				copy(buf[head+n:], "\r\n")
				piece = buf[start : head+n+2]
			}
			_, err := bw.Write(piece)
			if err == nil {
				err = bw.Flush()
			}
			if err != nil {
				return err
			}
			sent += int64(n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return &requestBodyError{fmt.Errorf("read request body: %w", rerr)}
		}
		if length >= 0 && sent == length && n == 0 {
			break
		}
	}
	if length >= 0 && sent != length {
		return &requestBodyError{fmt.Errorf("request body of %d bytes, shorter than its Content-Length %d", sent, length)}
	}
	if length < 0 {
		bw.WriteString("0\r\n\r\n")
	}
	return bw.Flush()
}

// requestBodyError is a failure of the request body itself (reading it,
// or a length that does not match), as opposed to sending it.
type requestBodyError struct{ err error }

func (e *requestBodyError) Error() string { return e.err.Error() }
func (e *requestBodyError) Unwrap() error { return e.err }

// requestBody returns the body to send and its length (-1: unknown, sent
// chunked), or a nil body. Like http.Transport, it probes a body of
// unknown length on a method that usually has none (HTTP/3 requests
// forwarded by a peer have no Content-Length), so that an empty one is not
// sent as a chunked body.
func requestBody(r *http.Request) (io.Reader, int64, error) {
	body := r.Body
	if body == nil || body == http.NoBody || r.ContentLength == 0 {
		return nil, 0, nil
	}
	if r.ContentLength > 0 || !methodUsuallyLacksBody(r.Method) {
		return body, r.ContentLength, nil
	}
	var first [1]byte
	n, err := io.ReadFull(body, first[:])
	switch {
	case n == 0 && err == io.EOF:
		return nil, 0, nil
	case n == 0:
		return nil, 0, fmt.Errorf("read request body: %w", err)
	}
	return io.MultiReader(strings.NewReader(string(first[:n])), body), -1, nil
}

// writeHeader writes the request line and header for r, as ReverseProxy
// (with Backend's Rewrite) and http.Transport would.
func (p *h1Proxy) writeHeader(bw *bufio.Writer, r *http.Request, length int64, body io.Reader) error {
	method := r.Method
	if method == "" {
		method = http.MethodGet
	}
	if !validToken(method) {
		return fmt.Errorf("invalid method %q", method)
	}
	bw.WriteString(method)
	bw.WriteByte(' ')
	bw.WriteString(r.URL.EscapedPath())
	if r.URL.ForceQuery || r.URL.RawQuery != "" {
		bw.WriteByte('?')
		bw.WriteString(r.URL.RawQuery)
	}
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	host := r.Host
	if host == "" {
		host = p.addr
	}
	bw.WriteString(host)
	bw.WriteString("\r\n")

	var listed []string // header names listed in Connection
	for _, v := range r.Header["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = textproto.TrimString(f); f != "" {
				listed = append(listed, textproto.CanonicalMIMEHeaderKey(f))
			}
		}
	}
	for k, vv := range r.Header {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Trailer",
			"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Upgrade",
			"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Via":
			continue
		case "User-Agent":
			vv = vv[:min(len(vv), 1)] // at most one, as http.Transport
		}
		if len(listed) > 0 && containsString(listed, k) {
			continue
		}
		if !validToken(k) {
			return fmt.Errorf("invalid header field name %q", k)
		}
		for _, v := range vv {
			if !validHeaderValue(v) {
				return fmt.Errorf("invalid header field value for %q", k)
			}
			if v = textproto.TrimString(v); v == "" && k == "User-Agent" {
				continue
			}
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	if _, ok := r.Header["Te"]; ok && tokenListContains(r.Header["Te"], "trailers") {
		bw.WriteString("Te: trailers\r\n")
	}
	if err := p.writeForwarded(bw, r); err != nil {
		return err
	}
	switch {
	case body == nil:
		if method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch {
			bw.WriteString("Content-Length: 0\r\n")
		}
	case length >= 0:
		var num [20]byte
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(num[:0], length, 10))
		bw.WriteString("\r\n")
	default:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	_, err := bw.WriteString("\r\n")
	return err
}

// writeForwarded writes X-Forwarded-For/Proto/Host and Via: set here for a
// request from a client (setIngressHeaders), kept as they are for a
// request forwarded by a peer, whose ingress node set them.
func (p *h1Proxy) writeForwarded(bw *bufio.Writer, r *http.Request) error {
	if _, forwarded := PeerNameFromContext(r.Context()); forwarded {
		for _, k := range forwardedHeaders {
			for _, v := range r.Header[k] {
				if !validHeaderValue(v) {
					return fmt.Errorf("invalid header field value for %q", k)
				}
				writeField(bw, k, textproto.TrimString(v))
			}
		}
		return nil
	}
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		bw.WriteString("X-Forwarded-For: ")
		for _, v := range r.Header["X-Forwarded-For"] {
			if !validHeaderValue(v) {
				return errors.New(`invalid header field value for "X-Forwarded-For"`)
			}
			bw.WriteString(v)
			bw.WriteString(", ")
		}
		bw.WriteString(ip)
		bw.WriteString("\r\n")
	}
	writeField(bw, "X-Forwarded-Host", r.Host)
	if r.TLS != nil {
		bw.WriteString("X-Forwarded-Proto: https\r\n")
	} else {
		bw.WriteString("X-Forwarded-Proto: http\r\n")
	}
	bw.WriteString("Via: ")
	if vv := r.Header["Via"]; len(vv) > 0 && vv[0] != "" {
		if !validHeaderValue(vv[0]) {
			return errors.New(`invalid header field value for "Via"`)
		}
		bw.WriteString(textproto.TrimString(vv[0]))
		bw.WriteString(", ")
	}
	switch {
	case r.ProtoMajor < 2:
		bw.WriteString("1.1")
	default:
		bw.WriteString(strconv.Itoa(r.ProtoMajor))
	}
	bw.WriteString(p.viaSuffix)
	bw.WriteString("\r\n")
	return nil
}

func writeField(bw *bufio.Writer, k, v string) {
	bw.WriteString(k)
	bw.WriteString(": ")
	bw.WriteString(v)
	bw.WriteString("\r\n")
}

// get returns an idle connection or dials one. forBody asks for a check
// that a connection idle for a while is still open, because a request
// with a body cannot be retried once it failed.
func (p *h1Proxy) get(ctx context.Context, forBody, fresh bool) (*h1Conn, error) {
	for !fresh {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			break
		}
		c := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		idle := time.Since(c.idleSince)
		if forBody && idle > h1ProbeAfterIdle {
			c.disarmDeadline() // an expired one would fail the check
		}
		if idle > p.idleTimeout || (forBody && idle > h1ProbeAfterIdle && !connAlive(c.nc)) {
			c.nc.Close()
			continue
		}
		c.reused = true
		return c, nil
	}
	nc, err := p.dialer.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, err
	}
	c := &h1Conn{nc: nc}
	c.closeFn = func() { nc.Close() }
	c.br = bufio.NewReaderSize(c, h1ConnBufferSize)
	c.bw = bufio.NewWriterSize(nc, h1ConnBufferSize)
	return c, nil
}

// put returns c to the idle pool, or closes it when the pool is full.
func (p *h1Proxy) put(c *h1Conn) {
	c.idleSince = time.Now()
	p.mu.Lock()
	if len(p.idle) >= p.maxIdle {
		p.mu.Unlock()
		c.nc.Close()
		return
	}
	p.idle = append(p.idle, c)
	schedule := !p.reaping
	p.reaping = true
	p.mu.Unlock()
	if schedule {
		time.AfterFunc(p.idleTimeout, p.reap)
	}
}

// reap closes connections idle for longer than idleTimeout.
func (p *h1Proxy) reap() {
	now := time.Now()
	var stale []*h1Conn
	p.mu.Lock()
	i := 0
	for i < len(p.idle) && now.Sub(p.idle[i].idleSince) >= p.idleTimeout {
		i++
	}
	stale = append(stale, p.idle[:i]...)
	p.idle = append(p.idle[:0], p.idle[i:]...)
	clear(p.idle[len(p.idle):cap(p.idle)])
	var next time.Duration
	if len(p.idle) > 0 {
		next = p.idleTimeout - now.Sub(p.idle[0].idleSince)
	}
	p.reaping = len(p.idle) > 0
	p.mu.Unlock()
	for _, c := range stale {
		c.nc.Close()
	}
	if next > 0 {
		time.AfterFunc(next, p.reap)
	}
}

// closeIdle closes the idle connections.
func (p *h1Proxy) closeIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, c := range idle {
		c.nc.Close()
	}
}

// errorStatus is the status of Backend's error answer for err.
func errorStatus(r *http.Request, err error) int {
	switch {
	case bodyFault(r) != 0:
		return bodyFault(r)
	case r.Context().Err() != nil:
		return 499
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

// abortable: a handler under an HTTP server (net/http's or HTTP/3's) may
// abort its answer with http.ErrAbortHandler.
func abortable(r *http.Request) bool {
	if r.Context().Value(http.ServerContextKey) != nil {
		return true
	}
	_, peer := PeerNameFromContext(r.Context())
	return peer
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isIdempotent(r *http.Request) bool {
	switch r.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, k1 := r.Header["Idempotency-Key"]
	_, k2 := r.Header["X-Idempotency-Key"]
	return k1 || k2
}

func methodUsuallyLacksBody(method string) bool {
	switch method {
	case "GET", "HEAD", "DELETE", "OPTIONS", "PROPFIND", "SEARCH":
		return true
	}
	return false
}

func expectsContinue(r *http.Request) bool {
	return tokenListContains(r.Header["Expect"], "100-continue")
}

// isHopHeader reports the hop-by-hop headers ReverseProxy removes.
func isHopHeader(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// listedIn reports whether header k is named in Connection values.
func listedIn(conn []string, k string) bool {
	for _, v := range conn {
		for f := range strings.SplitSeq(v, ",") {
			if f = textproto.TrimString(f); f != "" && textproto.CanonicalMIMEHeaderKey(f) == k {
				return true
			}
		}
	}
	return false
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// tokenListContains reports whether a comma-separated header value list
// contains token, case-insensitively.
func tokenListContains(values []string, token string) bool {
	for _, v := range values {
		for f := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(textproto.TrimString(f), token) {
				return true
			}
		}
	}
	return false
}

func isEventStream(h http.Header) bool {
	const sse = "text/event-stream"
	ct := h["Content-Type"]
	if len(ct) == 0 {
		return false
	}
	v := strings.TrimLeft(ct[0], " \t")
	if len(v) < len(sse) || !strings.EqualFold(v[:len(sse)], sse) {
		return false // most answers; mime.ParseMediaType allocates
	}
	base, _, _ := mime.ParseMediaType(ct[0])
	return base == sse
}

// validToken reports whether s is an RFC 9110 token (a method or a header
// field name).
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenByte[s[i]] {
			return false
		}
	}
	return true
}

// validHeaderValue rejects control characters other than tab.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if b := v[i]; (b < ' ' && b != '\t') || b == 0x7f {
			return false
		}
	}
	return true
}

// validH1Host accepts the Host values http.Transport would send unchanged:
// ASCII (no Punycode conversion needed), valid bytes, no IPv6 zone.
func validH1Host(h string) bool {
	for i := 0; i < len(h); i++ {
		if !hostByte[h[i]] {
			return false
		}
	}
	return !(strings.HasPrefix(h, "[") && strings.Contains(h, "%"))
}

// cleanQuery reports whether ReverseProxy would leave the query as it is
// (it re-encodes queries with ';' or bad escapes).
func cleanQuery(s string) bool {
	for i := 0; i < len(s); {
		switch s[i] {
		case ';':
			return false
		case '%':
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return false
			}
			i += 3
		default:
			i++
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

var tokenByte, hostByte [256]bool

func init() {
	for c := '0'; c <= '9'; c++ {
		tokenByte[c], hostByte[c] = true, true
	}
	for c := 'a'; c <= 'z'; c++ {
		tokenByte[c], hostByte[c] = true, true
		tokenByte[c-'a'+'A'], hostByte[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		tokenByte[c] = true
	}
	for _, c := range "!$%&()*+,-.:;=['~]_" {
		hostByte[c] = true
	}
}

// h1Buffers recycles the 32 KiB body copy buffers.
var h1Buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
