// Package e2e tests the loadmesh binary as an operator runs it: real
// `loadmesh agent` and `loadmesh backend` processes on loopback ports, talked
// to only through their command lines, their exit codes, their output and
// the HTTP status API. It owns no product code; the in-process harness in
// test/harness is the place for tests that need to reach inside an agent.
//
// The binary is built once per `go test` run, on first use, with
// `go build ./cmd/loadmesh` from the module root. Set LOADMESH_E2E_BINARY to
// test a binary built elsewhere (a release artefact, or a -race build).
//
// Agents use mutual TLS, as in production: the tests make one cluster CA
// and a certificate per node name with `loadmesh tls ca create` and
// `loadmesh tls cert create`, once per run.
//
// Every process is started with its output going to a log file of its own,
// which is printed when the test fails, and is stopped by PID when its test
// ends: SIGTERM, then SIGKILL after 10s. On Linux the children also get
// SIGKILL if the test binary itself dies. TestMain kills and reports any
// process a test left behind.
//
// Ports come from binding 127.0.0.1:0 and closing the socket, so another
// program can take a port before the child binds it; a start that fails with
// "address already in use" is retried once with fresh ports.
//
// All tests are skipped with -short. TestMeasureElection in timing_test.go
// is a measurement, not an assertion, and runs only with LOADMESH_MEASURE=1:
//
//	LOADMESH_MEASURE=1 go test -run TestMeasureElection -v -count=1 ./test/e2e/
//
// Timeouts are multiplied by LOADMESH_TIMESCALE (see test/retry.Scale).
package e2e
