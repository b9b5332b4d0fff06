// Package store owns loadmesh's replicated state: the capacity plan and its
// audit log as a Raft finite-state machine, the encoding of the commands and
// snapshots that carry it, and the on-disk layout of a node's data dir
// (raft-boltdb/v2 log and stable store, file snapshots, the node identity
// file).
//
// The FSM's Apply, Snapshot and Restore are called by hashicorp/raft on its
// own goroutines; reads (Plan, Events) may run concurrently with them and
// always see a consistent copy. store starts no goroutines of its own.
//
// Every command and snapshot starts with a one-byte format version so that
// later versions can read what earlier ones wrote. A command that cannot be
// decoded is not a panic: Apply returns an error value, counts and logs it,
// and every replica does the same.
package store
