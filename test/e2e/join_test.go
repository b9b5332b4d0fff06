package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/loadmesh/loadmesh/test/retry"
)

// TestProcessJoinWithToken runs the "Adding a server" steps with real
// processes: a server holding the CA key, a join token made with the CLI,
// and a new agent started with only the token and the CA certificate. It
// joins and serves; the single-use token does not let a second node in.
func TestProcessJoinWithToken(t *testing.T) {
	skipShort(t)
	caKey := filepath.Join(binDir, "pki", "loadmesh-ca-key.pem")
	c := startClusterWith(t, 1, true, "--tls-ca-key", caKey)
	server := c.agents[0]
	retry.Run(t, func(r *retry.R) {
		st, err := getStatus(server.api)
		r.Check(err)
		if st.Leader == "" {
			r.Fatalf("no leader yet")
		}
	})
	res := mustRun(t, "token", "create", "--role", "join", "--ttl", "1h", "--json", "--api", server.api)
	var created struct {
		Name  string `json:"name"`
		Token string `json:"token"`
		Uses  int    `json:"uses"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &created); err != nil || created.Uses != 1 {
		t.Fatalf("token create: %v %s", err, res.stdout)
	}

	// The new agent: no certificate, the token in the environment (not on
	// the command line).
	var joiner *agentNode
	launch(t, "joining agent", func() []*process {
		joiner = newAgentNode(t, "joined1")
		joiner.tls = tlsFiles{}
		joiner.join = []string{server.gossip}
		joiner.env = []string{"LOADMESH_JOIN_TOKEN=" + created.Token}
		b := joiner.startBackend(t, "jb1")
		joiner.argv = append(joiner.args(), "--tls-ca", server.tls.ca, "--join-server", server.peer)
		return []*process{b, joiner.start(t)}
	})
	if strings.Contains(strings.Join(joiner.argv, " "), created.Token) {
		t.Fatal("the token is on the command line")
	}
	key, err := os.Stat(filepath.Join(joiner.dataDir, "tls", "node-key.pem"))
	if err != nil || key.Mode().Perm() != 0o600 {
		t.Fatalf("node key: %v %v", key, err)
	}
	retry.Run(t, func(r *retry.R) {
		st, err := getStatus(server.api)
		r.Check(err)
		if m, ok := st.member("joined1"); !ok || m.Status != "alive" {
			r.Fatalf("joined1 is not an alive member: %+v", st.Members)
		}
	})
	served := sendRequests(t, []*agentNode{server, joiner}, 20)
	if served["joined1"] == 0 {
		t.Fatalf("the joined node served none of the requests: %v", served)
	}
	if res := mustRun(t, "events", "--api", server.api, "--json"); !strings.Contains(res.stdout, `"kind": "token.use"`) && !strings.Contains(res.stdout, `"kind":"token.use"`) {
		t.Fatalf("no token.use in the audit log: %s", res.stdout)
	}

	// The token was single-use: a second agent is refused and exits.
	second := newAgentNode(t, "joined2")
	second.tls = tlsFiles{}
	second.join = []string{server.gossip}
	second.env = []string{"LOADMESH_JOIN_TOKEN=" + created.Token}
	second.argv = append(second.args(), "--tls-ca", server.tls.ca, "--join-server", server.peer)
	p := second.start(t)
	retry.Run(t, func(r *retry.R) {
		if !p.exited() {
			r.Fatalf("still running")
		}
	})
	if log := p.log(); !strings.Contains(log, "is used up (1 of 1 uses)") {
		t.Fatalf("second agent's output does not say the token is used up:\n%s", p.logTail(20))
	}
	if _, err := os.Stat(filepath.Join(second.dataDir, "tls", "node.pem")); err == nil {
		t.Fatal("a certificate was written for the refused node")
	}
}
