// Package cluster owns loadmesh's membership and consensus: a memberlist
// gossip pool that every agent joins by seed address, and the hashicorp/raft
// instance whose leader holds the capacity plan. It keeps the two in step
// without an operator: the leader adds members that join to the Raft
// configuration (voters up to Config.MaxVoters, non-voters beyond),
// removes members that leave at once and dead ones after
// Config.DeadServerGrace, and promotes non-voters when a voter seat frees up.
//
// Goroutines (all started by Start and stopped and awaited by Shutdown):
//   - the member-event loop, which turns memberlist callbacks (delivered
//     through a buffered channel; callbacks never block) into the member
//     table and wakes the leader;
//   - the join loop, which retries Config.Join with backoff until it
//     succeeds and rejoins when the node finds itself alone;
//   - the bootstrap watcher while Config.BootstrapExpect is waiting;
//   - the leadership monitor, which reads raft's NotifyCh and runs one
//     leader loop (reconcile on a timer and on member events) while this
//     node leads;
//   - the raft observer that counts leader changes.
//
// Each cluster has an ID, kept in the node's stable store and gossiped
// (clusterid.go), so that a node never joins another cluster with its Raft
// state; that, and a gossip key that does not match the seeds', are
// reported on Failed. Leaving is two steps: AnnounceLeaving (peers stop
// sending new requests; the node drains), then Leave.
//
// The cluster is the only package that sees memberlist, raft and go-hclog;
// it hands plain values (Member, Status) to everyone else.
package cluster
