// Package chaos is the chaos suite of issue 6: faults injected into
// clusters of real `loadmesh agent` processes (each with its own
// `loadmesh backend`, mutual TLS and gossip encryption) under a steady,
// bounded load of GETs against every ingress port. It owns no product code.
//
// TestChaos runs on one 5-node cluster, one scenario after another:
//
//   - bad-input: malformed and hostile input on every port of one node
//     (ingress, API, QUIC peer, Raft, gossip); every process must stay the
//     same process, answer /healthz and serve, and the plan, audit log and
//     tokens must not change. The list is in README.md and in the test log.
//   - kill: SIGKILL a random follower, then the leader; restart both.
//   - sigstop: SIGSTOP the leader for 10 s (a hung server), then SIGCONT.
//   - rolling-restart: SIGTERM every node in turn and restart it with the
//     same data dir.
//   - disk-full: fill the small tmpfs that holds one follower's data dir
//     while the cluster takes writes and changes leader; then free it
//     (root only; skipped otherwise).
//   - expired-token: an operator token made with a 1 m TTL at the start is
//     refused once expired.
//
// TestChaosPartition cuts the leader of a 3-node cluster off from the two
// others for 12 s, each node in a network namespace of its own (root and
// iproute2 only; skipped otherwise), and heals the partition.
//
// Each scenario asserts correctness, never timing: zero failed requests, a
// leader named by all, every node alive and a voter, and the same plan,
// audit log and tokens on every node, with every earlier audit event still
// there. It prints the figures: requests sent, failed, forwarded and
// redirected; p50, p99 and max latency during the fault; and the time to
// recover. `go test -v` shows them; so does LOADMESH_CHAOS_REPORT=FILE.
//
// The processes are started as test/e2e starts them (see proc_test.go,
// adapted from test/e2e/process_test.go). All tests are skipped with
// -short. Timeouts are multiplied by LOADMESH_TIMESCALE.
package chaos
