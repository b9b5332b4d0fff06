// Package scheduler is loadmesh's domain vocabulary and decision logic:
// node states, the capacity plan, peers as the scheduler sees them, and the
// policies that choose where a request goes.
//
// It is pure logic. It opens no sockets, touches no disk, starts no
// goroutines and never imports memberlist, raft or quic-go: the packages
// that own those libraries (cluster, store, transport) translate their data
// into the plain values declared here, and cmd/loadmesh wires them together.
// `make deps-check` keeps this arrow pointing one way.
//
// Everything exported here is safe for concurrent use unless its comment
// says otherwise.
package scheduler
