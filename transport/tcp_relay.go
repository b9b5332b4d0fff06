package transport

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// duplex is one side of a relayed connection: a TCP connection or a QUIC
// stream of the peer mesh. CloseWrite half-closes (FIN), Close ends a
// finished connection cleanly, Abort ends a failed one at once (TCP RST,
// QUIC RESET_STREAM and STOP_SENDING) so that the far end learns of the
// failure instead of taking it for a clean end of data.
type duplex interface {
	io.Reader
	io.Writer
	CloseWrite() error
	Close() error
	Abort()
}

// tcpSide is a TCP connection as a duplex.
type tcpSide struct{ *net.TCPConn }

func (c tcpSide) Abort() {
	_ = c.SetLinger(0) // RST, not FIN
	_ = c.TCPConn.Close()
}

// tunnelErrorCode is the QUIC stream error a relay aborts with: the
// connection on the other side failed (H3_CONNECT_ERROR, RFC 9114 8.1).
const tunnelErrorCode = quic.StreamErrorCode(http3.ErrCodeConnectError)

// clientTunnel is the dialling side of a relay stream.
type clientTunnel struct{ *http3.RequestStream }

func (t clientTunnel) CloseWrite() error { return t.RequestStream.Close() }

func (t clientTunnel) Close() error {
	t.RequestStream.CancelRead(quic.StreamErrorCode(http3.ErrCodeNoError))
	return t.RequestStream.Close()
}

func (t clientTunnel) Abort() {
	t.RequestStream.CancelWrite(tunnelErrorCode)
	t.RequestStream.CancelRead(tunnelErrorCode)
}

// serverTunnel is the accepting side of a relay stream.
type serverTunnel struct{ *http3.Stream }

func (t serverTunnel) CloseWrite() error { return t.Stream.Close() }

func (t serverTunnel) Close() error {
	t.Stream.CancelRead(quic.StreamErrorCode(http3.ErrCodeNoError))
	return t.Stream.Close()
}

func (t serverTunnel) Abort() {
	t.Stream.CancelWrite(tunnelErrorCode)
	t.Stream.CancelRead(tunnelErrorCode)
}

// A direction of a relayed connection copies through a small buffer
// while the connection is interactive and switches to a large one while a
// read fills the buffer it has (a bulk transfer), back again after a short
// read. Idle connections, which block in a read, so hold only the small
// one: with the goroutine stacks a connection takes about 2 × (16 KiB +
// stack) in the relay when idle, and at most 2 × 256 KiB while streaming.
// The large buffer matters on the QUIC side: fewer, larger stream writes
// keep quic-go's packer busy (about +45 % on one long upload).
const (
	relaySmallBuf = 16 << 10
	relayLargeBuf = 256 << 10
)

var (
	relaySmall = sync.Pool{New: func() any { b := make([]byte, relaySmallBuf); return &b }}
	relayLarge = sync.Pool{New: func() any { b := make([]byte, relayLargeBuf); return &b }}
)

// relayResult is how a relayed connection ended.
type relayResult struct {
	// Up and Down are the bytes copied from the client's side to the
	// backend's side and back.
	Up, Down int64
	// Err is the first failure (nil when both directions ended cleanly).
	Err error
	// Idle is true when the idle timeout ended the connection.
	Idle bool
}

// errRelayIdle is the relay's error when the idle timeout ended it.
var errRelayIdle = errors.New("idle timeout")

// relay copies between client and backend in both directions until both
// have ended, passing each direction's end of data on as a half-close.
// A failure in either direction aborts both sides. When neither direction
// moves a byte for idle (if > 0), both sides are aborted. onBytes, if
// set, is called after every chunk with its direction (true: up, client
// to backend) and size. kill, when closed, aborts the connection (drain
// deadline, shutdown).
func relay(client, backend duplex, idle time.Duration, kill <-chan struct{}, onBytes func(up bool, n int)) relayResult {
	var (
		res     relayResult
		mu      sync.Mutex
		once    sync.Once
		last    atomic.Int64
		idled   atomic.Bool
		aborted = make(chan struct{})
	)
	abort := func(err error) {
		mu.Lock()
		if res.Err == nil {
			res.Err = err
		}
		mu.Unlock()
		once.Do(func() {
			close(aborted)
			client.Abort()
			backend.Abort()
		})
	}
	last.Store(time.Now().UnixNano())
	var watchdog *time.Timer
	if idle > 0 {
		var check func()
		check = func() {
			quiet := time.Duration(time.Now().UnixNano() - last.Load())
			if quiet >= idle {
				idled.Store(true)
				abort(errRelayIdle)
				return
			}
			watchdog.Reset(idle - quiet)
		}
		watchdog = time.AfterFunc(idle, check)
	}
	done := make(chan struct{})
	if kill != nil {
		go func() {
			select {
			case <-kill:
				abort(errors.New("closed by the relay (drain deadline or shutdown)"))
			case <-done:
			}
		}()
	}
	copyDir := func(dst, src duplex, up bool, n *int64) {
		small := relaySmall.Get().(*[]byte)
		defer relaySmall.Put(small)
		var large *[]byte // held while reads fill the buffer
		defer func() {
			if large != nil {
				relayLarge.Put(large)
			}
		}()
		buf := *small
		for {
			nr, rerr := src.Read(buf)
			if nr > 0 {
				last.Store(time.Now().UnixNano())
				nw, werr := dst.Write(buf[:nr])
				*n += int64(nw)
				if onBytes != nil && nw > 0 {
					onBytes(up, nw)
				}
				if werr != nil {
					abort(werr)
					return
				}
			}
			// Only now that buf[:nr] is written may the buffer change.
			switch {
			case nr == len(buf) && large == nil:
				large = relayLarge.Get().(*[]byte)
				buf = *large
			case nr < len(buf)/2 && large != nil:
				relayLarge.Put(large)
				large = nil
				buf = *small
			}
			if rerr == io.EOF {
				// Pass the end of data on. If that fails, the other side
				// has already gone (a TLS peer that closed first resets
				// on the client's close_notify): nothing is lost, and the
				// other direction ends by itself, so it is no failure.
				_ = dst.CloseWrite()
				return
			}
			if rerr != nil {
				abort(rerr)
				return
			}
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { copyDir(backend, client, true, &res.Up) })
	copyDir(client, backend, false, &res.Down)
	wg.Wait()
	close(done)
	if watchdog != nil {
		watchdog.Stop()
	}
	select {
	case <-aborted:
	default:
		_ = client.Close()
		_ = backend.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	res.Idle = idled.Load()
	return res
}
