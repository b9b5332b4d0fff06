package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// opTimeout bounds every single network operation of the clients: a
// stalled connection counts as a timeout, never as a hang.
const opTimeout = 3 * time.Second

// rateResult is one connection set-up run.
type rateResult struct {
	Conns    int64 // dial, 1 byte written, 1 byte read back, closed
	Errors   int64 // refused, reset, wrong byte, early EOF
	Timeouts int64 // an operation that took longer than opTimeout
	Seconds  float64
	P50, P99 time.Duration // of one whole dial-write-read-close
	FirstErr string
}

func (r rateResult) PerSec() float64 {
	if r.Seconds == 0 {
		return 0
	}
	return float64(r.Conns) / r.Seconds
}

// connRate runs workers concurrent loops of dial, write 1 byte, read it
// back, close, against an echo address, for d or until maxConns
// connections have been made, whichever comes first.
func connRate(ctx context.Context, addr string, workers int, d time.Duration, maxConns int64) rateResult {
	var res rateResult
	var done, errs, tos atomic.Int64
	var firstErr atomic.Value
	lats := make([][]time.Duration, workers)
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	dialer := net.Dialer{Timeout: opTimeout}
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			b := []byte{byte('a' + w%26)}
			var rb [1]byte
			for ctx.Err() == nil {
				if done.Add(1) > maxConns {
					done.Add(-1)
					cancel()
					return
				}
				t0 := time.Now()
				err := func() error {
					c, err := dialer.Dial("tcp", addr)
					if err != nil {
						return err
					}
					defer c.Close()
					_ = c.SetDeadline(t0.Add(opTimeout))
					if _, err := c.Write(b); err != nil {
						return err
					}
					if _, err := io.ReadFull(c, rb[:]); err != nil {
						return err
					}
					if rb[0] != b[0] {
						return fmt.Errorf("echoed %q, sent %q", rb[0], b[0])
					}
					return nil
				}()
				if err != nil {
					done.Add(-1)
					if isTimeout(err) {
						tos.Add(1)
					} else {
						errs.Add(1)
					}
					firstErr.CompareAndSwap(nil, err.Error())
					// A path that refuses at once must not spin.
					time.Sleep(time.Millisecond)
					continue
				}
				lats[w] = append(lats[w], time.Since(t0))
			}
		})
	}
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	res.Conns, res.Errors, res.Timeouts = done.Load(), errs.Load(), tos.Load()
	if s, ok := firstErr.Load().(string); ok {
		res.FirstErr = s
	}
	all := slices.Concat(lats...)
	slices.Sort(all)
	res.P50, res.P99 = percentile(all, 50), percentile(all, 99)
	return res
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}

// bulkResult is one long stream.
type bulkResult struct {
	Bytes   int64
	Seconds float64
	Err     string
}

func (r bulkResult) MBps() float64 {
	if r.Seconds == 0 || r.Err != "" {
		return 0
	}
	return float64(r.Bytes) / 1e6 / r.Seconds
}

// upload sends size bytes over one connection to a sink address and
// stops the clock when the sink has confirmed the count.
func upload(ctx context.Context, addr string, size int64, timeout time.Duration) bulkResult {
	c, err := dialCtx(ctx, addr)
	if err != nil {
		return bulkResult{Err: err.Error()}
	}
	defer c.Close()
	stop := closeOnDone(ctx, c)
	defer stop()
	start := time.Now()
	_ = c.SetDeadline(start.Add(timeout))
	var hdr [8]byte
	binary.BigEndian.PutUint64(hdr[:], uint64(size))
	if _, err := c.Write(hdr[:]); err != nil {
		return bulkResult{Err: err.Error()}
	}
	buf := make([]byte, bulkBuf)
	var sent int64
	for sent < size {
		n, err := c.Write(buf[:min(int64(len(buf)), size-sent)])
		sent += int64(n)
		if err != nil {
			return bulkResult{Bytes: sent, Seconds: time.Since(start).Seconds(), Err: fmt.Sprintf("after %d bytes sent: %v", sent, err)}
		}
	}
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return bulkResult{Bytes: sent, Seconds: time.Since(start).Seconds(), Err: fmt.Sprintf("no count from the sink: %v", err)}
	}
	secs := time.Since(start).Seconds()
	if got := int64(binary.BigEndian.Uint64(hdr[:])); got != size {
		return bulkResult{Bytes: got, Seconds: secs, Err: fmt.Sprintf("sink got %d of %d bytes", got, size)}
	}
	return bulkResult{Bytes: size, Seconds: secs}
}

// download asks a source address for size bytes over one connection and
// stops the clock at the last byte.
func download(ctx context.Context, addr string, size int64, timeout time.Duration) bulkResult {
	c, err := dialCtx(ctx, addr)
	if err != nil {
		return bulkResult{Err: err.Error()}
	}
	defer c.Close()
	stop := closeOnDone(ctx, c)
	defer stop()
	start := time.Now()
	_ = c.SetDeadline(start.Add(timeout))
	var hdr [8]byte
	binary.BigEndian.PutUint64(hdr[:], uint64(size))
	if _, err := c.Write(hdr[:]); err != nil {
		return bulkResult{Err: err.Error()}
	}
	buf := make([]byte, bulkBuf)
	var got int64
	for got < size {
		n, err := c.Read(buf[:min(int64(len(buf)), size-got)])
		got += int64(n)
		if err != nil {
			return bulkResult{Bytes: got, Seconds: time.Since(start).Seconds(), Err: fmt.Sprintf("after %d bytes received: %v", got, err)}
		}
	}
	return bulkResult{Bytes: size, Seconds: time.Since(start).Seconds()}
}

func dialCtx(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: opTimeout}
	return d.DialContext(ctx, "tcp", addr)
}

// closeOnDone closes c when ctx ends (an interrupt), until stop is called.
func closeOnDone(ctx context.Context, c net.Conn) (stop func() bool) {
	return context.AfterFunc(ctx, func() { c.Close() })
}

// rttResult is one series of small request/response exchanges over one
// kept-alive TLS connection.
type rttResult struct {
	N                   int
	Handshake           time.Duration
	P50, P99, P999, Max time.Duration
	Seconds             float64
	Err                 string
}

// tlsRTT opens one TLS connection to a TLS echo address (the handshake
// goes end to end), exchanges warm round trips of size bytes unmeasured,
// then n measured ones; the whole run is bounded by timeout.
func tlsRTT(ctx context.Context, addr string, cfg *tls.Config, size, warm, n int, timeout time.Duration) rttResult {
	var res rttResult
	raw, err := dialCtx(ctx, addr)
	if err != nil {
		res.Err = err.Error()
		return res
	}
	defer raw.Close()
	stop := closeOnDone(ctx, raw)
	defer stop()
	start := time.Now()
	_ = raw.SetDeadline(start.Add(timeout))
	c := tls.Client(raw, cfg)
	if err := c.HandshakeContext(ctx); err != nil {
		res.Err = "handshake: " + err.Error()
		return res
	}
	res.Handshake = time.Since(start)
	req := make([]byte, size)
	resp := make([]byte, size)
	lats := make([]time.Duration, 0, n)
	for i := range warm + n {
		binary.BigEndian.PutUint64(req, uint64(i))
		t0 := time.Now()
		if _, err := c.Write(req); err != nil {
			res.Err = fmt.Sprintf("round trip %d: %v", i, err)
			return res
		}
		if _, err := io.ReadFull(c, resp); err != nil {
			res.Err = fmt.Sprintf("round trip %d: %v", i, err)
			return res
		}
		d := time.Since(t0)
		if !bytes.Equal(req, resp) {
			res.Err = fmt.Sprintf("round trip %d: wrong echo", i)
			return res
		}
		if i >= warm {
			lats = append(lats, d)
		}
	}
	res.Seconds = time.Since(start).Seconds()
	slices.Sort(lats)
	res.N = len(lats)
	res.P50, res.P99, res.P999 = percentile(lats, 50), percentile(lats, 99), percentile(lats, 99.9)
	res.Max = lats[len(lats)-1]
	return res
}

// idleSet is a set of open connections to an echo address.
type idleSet struct {
	conns []net.Conn
}

// openIdle opens n connections with workers in parallel, each proven
// end to end by one echoed byte, and leaves them open.
func openIdle(ctx context.Context, addr string, n, workers int) (*idleSet, error) {
	s := &idleSet{conns: make([]net.Conn, n)}
	err := s.each(ctx, workers, func(i int, _ net.Conn) error {
		c, err := dialCtx(ctx, addr)
		if err != nil {
			return err
		}
		s.conns[i] = c
		_ = c.SetDeadline(time.Now().Add(opTimeout))
		if _, err := c.Write([]byte{'x'}); err != nil {
			return err
		}
		var b [1]byte
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return err
		}
		return c.SetDeadline(time.Time{})
	})
	return s, err
}

// echoEach sends size bytes of a pattern through every connection and
// checks that they come back unchanged.
func (s *idleSet) echoEach(ctx context.Context, size, workers int) error {
	return s.each(ctx, workers, func(i int, c net.Conn) error {
		out := make([]byte, size)
		for j := range out {
			out[j] = byte(i + j*7)
		}
		in := make([]byte, size)
		_ = c.SetDeadline(time.Now().Add(opTimeout))
		errc := make(chan error, 1)
		go func() {
			_, err := c.Write(out)
			errc <- err
		}()
		_, rerr := io.ReadFull(c, in)
		if werr := <-errc; werr != nil {
			return werr
		}
		if rerr != nil {
			return rerr
		}
		if !bytes.Equal(in, out) {
			return errors.New("echoed bytes differ from those sent")
		}
		return c.SetDeadline(time.Time{})
	})
}

// each runs f on every connection index with workers in parallel and
// returns the first error, with how many failed.
func (s *idleSet) each(ctx context.Context, workers int, f func(i int, c net.Conn) error) error {
	var next atomic.Int64
	var failed atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(s.conns) {
					return
				}
				if err := f(i, s.conns[i]); err != nil {
					failed.Add(1)
					first.CompareAndSwap(nil, fmt.Sprintf("connection %d: %v", i, err))
				}
			}
		})
	}
	wg.Wait()
	if e, ok := first.Load().(string); ok {
		return fmt.Errorf("%d of %d failed, first: %s", failed.Load(), len(s.conns), e)
	}
	return ctx.Err()
}

func (s *idleSet) Close() {
	for _, c := range s.conns {
		if c != nil {
			c.Close()
		}
	}
}

// halfClose checks that a half-close travels the path: it sends a few
// bytes to an echo address, shuts its sending side, and expects the bytes
// back followed by EOF (the echo backend half-closes in turn).
func halfClose(ctx context.Context, addr string) error {
	c, err := dialCtx(ctx, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(opTimeout))
	msg := []byte("half-close")
	if _, err := c.Write(msg); err != nil {
		return err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	got, err := io.ReadAll(c)
	if err != nil {
		if isTimeout(err) {
			return fmt.Errorf("no EOF within %s after half-closing (got %q)", opTimeout, got)
		}
		return fmt.Errorf("after %q: %w", got, err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("got %q back, want %q", got, msg)
	}
	return nil
}

// probe checks one service address end to end with the smallest
// exchange its backend knows.
func probe(ctx context.Context, svc, addr string, tcfg *tls.Config) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	switch svc {
	case svcEcho:
		r := connRate(ctx, addr, 1, opTimeout, 1)
		if r.Conns != 1 {
			return errors.New(r.FirstErr)
		}
		return nil
	case svcSink:
		if r := upload(ctx, addr, 1, opTimeout); r.Err != "" {
			return errors.New(r.Err)
		}
		return nil
	case svcSource:
		if r := download(ctx, addr, 1, opTimeout); r.Err != "" {
			return errors.New(r.Err)
		}
		return nil
	case svcTLSEcho:
		if r := tlsRTT(ctx, addr, tcfg, 64, 0, 1, opTimeout); r.Err != "" {
			return errors.New(r.Err)
		}
		return nil
	}
	return fmt.Errorf("unknown service %q", svc)
}
