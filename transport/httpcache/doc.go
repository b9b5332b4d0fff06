// Package httpcache is loadmesh's shared HTTP response cache at the
// ingress, with the semantics of RFC 9111 for a shared cache, and the
// mesh-wide side of it: each cache key has an owner node, and a miss at
// any ingress asks the owner over the peer channel before any backend.
//
// What it owns:
//
//   - policy.go: the RFC 9111 decisions as pure functions (storable,
//     freshness lifetime s-maxage > max-age > Expires − Date with no
//     heuristic freshness, age, Vary secondary keys, 304 merging,
//     conditional request evaluation). Cache-Control is parsed with
//     github.com/pquerna/cachecontrol/cacheobject.
//   - store.go: the size-bounded store (otter v2, W-TinyLFU admission and
//     eviction, cost in bytes).
//   - cache.go, serve.go: Cache, an http.Handler middleware (Handler) in
//     front of the ingress, and the owner side (ServePeer, ServeOwner).
//     Concurrent misses of one key and variant are collapsed into one
//     upstream request (golang.org/x/sync/singleflight); requests with
//     Authorization are never collapsed.
//
// What it does not own: choosing the owner (Deps.Owner; the agent uses the
// scheduler's consistent-hash ring over the active nodes), carrying
// purges to every node (the agent does it through Raft), the peer channel
// itself (Deps.Peers, a transport.PeerClient), and placement of the
// backend request (the next handler, the node's ingress).
//
// Goroutines: one per background revalidation (stale-while-revalidate),
// at most one per key, owned by the Cache and stopped by Close, which
// waits for them. Everything else runs on the request's goroutine. All
// methods are safe for concurrent use.
//
// Usage:
//
//	c, err := httpcache.New(cfg, httpcache.Deps{Owner: owner, Peers: peerClient})
//	srv.Handler = c.Handler(ingress)
//	// on the peer channel, for requests with httpcache.IsLookup(r):
//	c.ServePeer(w, r, ingress)
//	defer c.Close()
package httpcache
