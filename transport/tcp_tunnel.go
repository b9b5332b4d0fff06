package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// Relay streams: a TCP connection accepted for a service on one node is
// carried to another node on one request stream of the peer mesh's
// HTTP/3 connection, as an HTTP/3 CONNECT (RFC 9114, section 4.4) whose
// :authority is the service name. The peer answers 200 once it has
// connected to its local backend, and from then on the stream carries the
// connection's bytes in DATA frames both ways; a FIN on the stream is the
// TCP half-close, and a stream reset (H3_CONNECT_ERROR) is a failed
// connection.
const (
	// tunnelClientHeader carries the client's address (IP:port) as the
	// accepting node saw it, for PROXY protocol headers and logs.
	tunnelClientHeader = "Loadmesh-Client-Addr"
	// tunnelLocalHeader carries the address the client connected to.
	tunnelLocalHeader = "Loadmesh-Local-Addr"
	// tunnelReasonHeader explains a refusal.
	tunnelReasonHeader = "Loadmesh-Refused"
)

// TunnelRefusedError is a peer's refusal of a relay stream: it does not
// offer the service, it is unhealthy or draining for it, or its backend
// did not accept the connection. Nothing of the client's connection was
// sent, so another node may be tried.
type TunnelRefusedError struct {
	Peer   string
	Status int
	Reason string
}

func (e *TunnelRefusedError) Error() string {
	return fmt.Sprintf("peer %s refused the connection (%d): %s", e.Peer, e.Status, e.Reason)
}

// openTunnel opens a relay stream for service to peer t. client and local
// are the relayed connection's addresses. It returns once the peer has
// connected to its backend, or ctx ended (which bounds the whole set-up).
// Errors matching ErrDial or *TunnelRefusedError mean nothing was relayed.
func (c *PeerClient) openTunnel(ctx context.Context, t PeerTarget, service, client, local string) (duplex, error) {
	pc, err := c.peer(t)
	if err != nil {
		return nil, err
	}
	req := &http.Request{
		Method: http.MethodConnect,
		Host:   service,
		URL:    &url.URL{Host: service},
		Header: http.Header{tunnelClientHeader: {client}, tunnelLocalHeader: {local}},
		Proto:  "HTTP/1.1", // plain CONNECT, not extended CONNECT
	}
	for attempt := 0; ; attempt++ {
		h, err := pc.get(ctx)
		if err != nil {
			return nil, c.classify(t, err)
		}
		str, err := h.cc.OpenRequestStream(ctx)
		if err != nil {
			if ctx.Err() == nil && attempt == 0 {
				h.unusable.Store(true) // GOAWAY or closed: one new connection
				continue
			}
			return nil, c.classify(t, err)
		}
		stop := context.AfterFunc(ctx, func() {
			str.CancelWrite(quic.StreamErrorCode(http3.ErrCodeRequestCanceled))
			str.CancelRead(quic.StreamErrorCode(http3.ErrCodeRequestCanceled))
		})
		abort := func() {
			stop()
			str.CancelWrite(quic.StreamErrorCode(http3.ErrCodeRequestCanceled))
			str.CancelRead(quic.StreamErrorCode(http3.ErrCodeRequestCanceled))
		}
		if err := str.SendRequestHeader(req); err != nil {
			abort()
			return nil, c.classify(t, err)
		}
		resp, err := str.ReadResponse()
		if err != nil {
			abort()
			var he *http3.Error
			if errors.As(err, &he) && he.ErrorCode == http3.ErrCodeRequestRejected && attempt == 0 && ctx.Err() == nil {
				h.unusable.Store(true)
				continue
			}
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return nil, c.classify(t, err)
		}
		if resp.StatusCode != http.StatusOK {
			reason := resp.Header.Get(tunnelReasonHeader)
			if reason == "" {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
				reason = strings.TrimSpace(string(b))
			}
			abort()
			return nil, &TunnelRefusedError{Peer: t.Name, Status: resp.StatusCode, Reason: reason}
		}
		if !stop() {
			// ctx ended just as the answer came: the stream is cancelled.
			return nil, context.Cause(ctx)
		}
		return clientTunnel{RequestStream: str}, nil
	}
}
