// Package transport moves HTTP requests between loadmesh agents.
//
// An agent serves a request that reaches its ingress with its own backend
// or forwards it to a peer agent. This package owns everything on that
// path below the choice of peer:
//
//   - The cluster PKI (pki.go): an ECDSA P-256 cluster CA (CA, NewCA,
//     LoadCA) that issues node certificates naming a node by the URI SAN
//     loadmesh://node/<name>, and MutualTLS, one node's identity plus the
//     CA, which builds TLS 1.3 configs that authenticate peers by node
//     name in both directions and can reload the node certificate at run
//     time.
//   - The QUIC peer channel (peer.go, peerclient.go): PeerServer binds one
//     UDP socket, accepts mutually authenticated HTTP/3 connections from
//     peers and serves forwarded requests with a handler supplied by the
//     caller; its PeerClient, an http.RoundTripper, dials peers from the
//     same socket and keeps one long-lived multiplexed connection per peer.
//   - The front door (Ingress) and the local backend (Backend): the
//     Ingress serves a client's request locally or forwards it with an
//     httputil.ReverseProxy whose Rewrite takes the peer chosen by a
//     Picker and whose Transport is the PeerClient; on the receiving node
//     the PeerServer's handler serves forwarded requests with the Backend.
//   - Abuse protection: RateLimiter (ratelimit.go), a token bucket per
//     ClientKey whose allowance nodes can share through the reports that
//     Tick returns and Merge takes in (the caller carries them); Guard
//     (guard.go), the ingress's first handler (429, 413, 408);
//     ConnLimiter (connlimit.go), connections in total and per client; and
//     Admission (shed.go), a CoDel-style queue in front of the backend
//     that sheds with 503. Only Guard knows HTTP requests, so the others
//     serve TCP services too. None starts a goroutine.
//
// It deliberately does not know about membership, the capacity plan or
// peer selection policy: callers tell PeerClient where to send a request
// (PeerTarget) and close connections to peers that left (ClosePeer). No
// quic-go type appears in the exported API.
//
// # Identity
//
// A node is identified by the name in its certificate, not by address:
// the dialling side checks that the peer's certificate chains to the
// cluster CA and names exactly the expected node, and the accepting side
// checks that the client certificate chains to the CA, then asks the
// optional PeerDeps.Authorize hook. Handlers learn the authenticated
// sender with PeerNameFromContext. Refused handshakes are counted in
// loadmesh_transport_peer_refused_total and logged at Warn (rate limited).
//
// # Errors
//
// PeerClient reports a request that could not be delivered (no connection
// could be established, the peer refused the handshake, or the peer,
// shutting down, rejected the request unprocessed) with an error
// matching ErrDial, a *DialError. Such a request never reached the peer's
// backend and may be retried on another peer whatever its method; the
// RoundTripper contract still closes its body, so a retry with a body
// needs Request.GetBody or a body the caller kept. Any other error may
// come after the peer began serving the request.
//
// # Goroutines
//
// PeerServer.Start launches one accept loop and, per accepted connection,
// one goroutine serving HTTP/3 on it; http3 runs each request's handler on
// a goroutine of its own. The PeerClient's connections run quic-go and
// http3 goroutines that end when the connection closes, plus, per
// request, goroutines that end with the request or its response body.
// PeerServer.Shutdown refuses new connections, sends GOAWAY, lets requests
// in flight finish until its context expires, then closes all connections
// in both directions and the socket, and returns only after every
// goroutine it started has returned. PeerServer.Drain does the first half
// alone (inbound connections only), so that a node shutting down keeps
// forwarding through its client what its ingress already accepted.
//
// The abuse protections (RateLimiter, Guard, ConnLimiter, Admission) and
// the HealthChecker take new settings while they run (SetRate, SetLimits,
// SetConfig, Reconfigure: an agent's SIGHUP); what is under way keeps the
// settings it started with.
//
// # Concurrency
//
// All exported methods are safe for concurrent use. The Handler must
// return once its request's context is cancelled: a peer cancelling its
// request, a lost connection and an expired Shutdown deadline all cancel
// it. Authorize runs inside the TLS handshake on a quic-go goroutine and
// must not block.
//
// # Usage
//
//	ca, _ := transport.LoadCA("ca.pem", "ca-key.pem") // operator machine only
//	certPEM, keyPEM, _ := ca.IssueNodeCert("node-1", transport.DefaultNodeCertLifetime, nil, nil)
//
//	id, _ := transport.LoadMutualTLS("ca.pem", "node-1.pem", "node-1-key.pem", "node-1")
//	srv, _ := transport.NewPeerServer(transport.DefaultPeerConfig(), transport.PeerDeps{
//		TLS: id, Handler: localBackend, Logger: logger, Registerer: reg,
//	})
//	_ = srv.Start(ctx)
//	defer srv.Shutdown(shutdownCtx)
//
//	proxy := &httputil.ReverseProxy{
//		Rewrite: func(pr *httputil.ProxyRequest) {
//			peer := pick(pr.In) // transport.PeerTarget{Name: "node-2", Addr: "10.0.0.2:7443"}
//			pr.Out = pr.Out.WithContext(transport.WithPeerTarget(pr.Out.Context(), peer))
//			pr.Out.Host = pr.In.Host
//		},
//		Transport: srv.Client(),
//	}
package transport
