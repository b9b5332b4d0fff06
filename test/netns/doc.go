// Package netns is the multi-host test bed: a loadmesh cluster of real
// `loadmesh agent` processes, each on a "host" of its own — a Linux network
// namespace with its own address — joined by a Linux bridge, as servers on
// one LAN. It owns no product code.
//
//	make test-hosts                       # this package, verbose, about 1.5 minutes
//	LOADMESH_TEST_HOSTS=1 go test -count=1 -v ./test/netns/
//
// # When it runs
//
// Only when LOADMESH_TEST_HOSTS=1 is set (make test-hosts sets it), as root,
// with `ip` from iproute2 able to make namespaces. Otherwise every test
// skips at once with one message saying which of these is missing. The
// variable, not a build tag, keeps the package out of `make test` (go test
// ./...): its tests skip in microseconds there, while the package is still
// compiled, vetted and gofmt-checked with the rest, so it cannot rot. Run
// for real it takes a minute or two of a machine that is not also running
// the rest of the suite under -race, as `make test` does; .ci/run runs
// `make test-hosts` after `make test`.
//
// # The bed
//
// Host i (1..5) is namespace lmhost<pid>-<i> with address 10.147.0.<i>/24
// on its eth0, one end of a veth pair whose other end, lmh<pid>v<i>, is a
// port of the bridge lmh<pid>b0 in the test's own namespace. The bridge
// has 10.147.0.254/24, so the test reaches every host directly, as a
// client on the LAN would. Each host runs `loadmesh backend` on its own
// loopback (127.0.0.1:9000) and `ip netns exec NS loadmesh agent` bound to
// the host's address for gossip (:7946), QUIC peer (:7947), Raft (:7948),
// ingress (:8080) and API (:7950), with mutual TLS from `loadmesh tls ca
// create` / `tls cert create`, a gossip key from `loadmesh keygen`, and an
// operator token given with --bootstrap-token (the API wants a token from
// any address but loopback, which the test is not). To talk to an agent
// from inside its namespace (its host may be cut off from the test), the
// test binary runs itself there as a one-shot HTTP client with `ip netns
// exec` (client_test.go).
//
// Faults are made on the host side: `ip link set lmh<pid>v<i> down` cuts a
// host off (from the test too), moving host ports to a second bridge
// lmh<pid>b1 splits the LAN in two.
//
// # Scenarios (TestHosts, one cluster, in order)
//
//   - form: 5 agents, each with --bootstrap-expect 5, hosts 2..5 with
//     --join of host 1 only; time until every agent answers, until one
//     names a leader, and until all see 5 alive members, agree on the
//     leader, list 5 voters and have the same plan version.
//   - minority-partition: the leader's host is cut off and restored under
//     steady GETs into the 4 other hosts' ingresses; the majority elects a
//     leader and serves, the cut host steps down and refuses writes (its
//     /v1/status and a write read from inside its namespace), no answer
//     names it while it is cut, and it rejoins.
//   - split-2-3: two followers' hosts are moved to the second bridge; the
//     3-side keeps its leader and serves, the 2-side has none and answers
//     writes with 503; after healing one leader and byte-identical plans,
//     and the 2-side's refused writes never appear.
//   - clock-skew: one follower restarted with the hidden developer flag
//     --dev-clock-offset 90s, then -90s (see agent.Deps.Now for what it
//     shifts); it rejoins, serves and forwards, its peers use its load
//     summaries (fresh, versions from its skewed clock), and plan writes
//     through its API work. Reported, not asserted: how the leader ends a
//     drain of the skewed host, against a control drain with true clocks
//     (the leader compares the host's load summary version, its clock,
//     with the drain's start, the leader's clock).
//
// Each scenario logs requests sent and failed, time to detect and time to
// heal; a summary table ends the run (also written to LOADMESH_HOSTS_REPORT
// when set; make test-hosts uses bin/hosts-report.txt). Timers are the
// agents' defaults except the flags the log states; every wait is a retry
// loop with a deadline (multiplied by LOADMESH_TIMESCALE), every load is
// bounded in count and time.
//
// # Clean-up
//
// Everything is named with the test process's PID. Processes are stopped
// by PID (SIGTERM, then SIGKILL) and get SIGKILL from the kernel if the
// test binary dies (Pdeathsig survives `ip netns exec`, which execs in
// place); namespaces, veth pairs and bridges are deleted by t.Cleanup, and
// by a SIGINT/SIGTERM/SIGHUP handler that kills the processes first (a
// namespace whose name is gone can linger while the kernel holds sockets
// of it, so the veth pairs are deleted by name too). A run that was
// killed outright (SIGKILL, go test -timeout) is swept by the next one:
// namespaces and links whose PID is no longer a netns.test process are
// deleted at start, and the test says what it removed.
package netns
