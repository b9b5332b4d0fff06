package e2e

import (
	"regexp"
	"strings"
	"testing"

	"github.com/loadmesh/loadmesh/test/retry"
)

var tokenRE = regexp.MustCompile(`lm_[0-9a-f]{16}_[0-9a-f]{64}`)

// TestTokenCommands runs an agent that makes its own bootstrap token up
// and prints it once, and manages tokens with the CLI.
func TestTokenCommands(t *testing.T) {
	skipShort(t)
	t.Parallel()
	a := startAgent(t, "solo", func(a *agentNode) {
		a.env = []string{"LOADMESH_BOOTSTRAP_TOKEN="}
	})
	var boot string
	retry.Run(t, func(r *retry.R) {
		if boot = tokenRE.FindString(a.proc.log()); boot == "" {
			r.Fatalf("the agent has not printed a bootstrap token yet")
		}
	})
	if n := strings.Count(a.proc.log(), boot); n != 1 {
		t.Fatalf("the bootstrap token is in the agent's output %d times, want once", n)
	}
	api := "http://" + a.api
	// The commands' environment carries another cluster's token; --token wins.
	cli := func(args ...string) result {
		t.Helper()
		return run(t, nil, append(args, "--api", api)...)
	}
	mustCLI := func(args ...string) result {
		t.Helper()
		res := cli(args...)
		if res.code != 0 {
			t.Fatalf("loadmesh %s: exit %d: %s", strings.Join(args, " "), res.code, res.stderr)
		}
		return res
	}

	if res := cli("cordon", "solo"); res.code == 0 || !strings.Contains(res.stderr, "unknown or revoked API token") {
		t.Fatalf("cordon with a foreign token: exit %d: %s", res.code, res.stderr)
	}
	if res := run(t, []string{"LOADMESH_TOKEN="}, "cordon", "solo", "--api", api); res.code == 0 || !strings.Contains(res.stderr, "needs an API token") {
		t.Fatalf("cordon without a token: exit %d: %s", res.code, res.stderr)
	}
	// Reads on loopback need no token, but a token sent is checked.
	if res := run(t, []string{"LOADMESH_TOKEN="}, "status", "--api", api); res.code != 0 {
		t.Fatalf("status without a token: exit %d: %s", res.code, res.stderr)
	}
	if res := cli("status"); res.code == 0 || !strings.Contains(res.stderr, "unknown or revoked") {
		t.Fatalf("status with a foreign token: exit %d: %s", res.code, res.stderr)
	}

	res := mustCLI("token", "create", "--name", "ci", "--role", "read", "--ttl", "720h", "--token", boot)
	read := tokenRE.FindString(res.stdout)
	if read == "" || !strings.Contains(res.stdout, "shown only this once") {
		t.Fatalf("token create printed:\n%s", res.stdout)
	}
	if res := cli("cordon", "solo", "--token", read); res.code == 0 || !strings.Contains(res.stderr, "role read") {
		t.Fatalf("cordon with a read token: exit %d: %s", res.code, res.stderr)
	}
	mustCLI("cordon", "solo", "--reason", "e2e", "--token", boot)
	if res := mustCLI("events", "--token", read, "--json"); !strings.Contains(res.stdout, `"who":"bootstrap"`) || strings.Contains(res.stdout, read[20:]) || strings.Contains(res.stdout, boot[20:]) {
		t.Fatalf("events:\n%s", res.stdout)
	}
	if res := mustCLI("token", "list", "--token", boot); !strings.Contains(res.stdout, "bootstrap") || !strings.Contains(res.stdout, "ci") || tokenRE.MatchString(res.stdout) {
		t.Fatalf("token list:\n%s", res.stdout)
	}
	mustCLI("token", "revoke", "ci", "--token", boot)
	if res := cli("events", "--token", read); res.code == 0 || !strings.Contains(res.stderr, "unknown or revoked") {
		t.Fatalf("events with a revoked token: exit %d: %s", res.code, res.stderr)
	}
	if res := mustCLI("token", "list", "--token", boot, "--json"); strings.Contains(res.stdout, `"ci"`) {
		t.Fatalf("revoked token still listed:\n%s", res.stdout)
	}
	if res := run(t, nil, "token", "generate"); res.code != 0 || !tokenRE.MatchString(res.stdout) {
		t.Fatalf("token generate: %q %q", res.stdout, res.stderr)
	}
	if res := run(t, nil, "agent", "--dev", "--bootstrap-token", "lm_short"); res.code == 0 || !strings.Contains(res.stderr, "--bootstrap-token") || strings.Contains(res.stderr, "lm_short") {
		t.Fatalf("agent with a malformed --bootstrap-token: exit %d: %s", res.code, res.stderr)
	}
}
