//go:build unix

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/loadmesh/loadmesh/test/retry"
)

// TestProvisionLocalWithJoinToken: given a hook request that carries a
// join token, `loadmesh provision local` starts an agent that gets its
// certificate from the cluster: the provisioner needs no CA key.
func TestProvisionLocalWithJoinToken(t *testing.T) {
	skipShort(t)
	caKey := filepath.Join(binDir, "pki", "loadmesh-ca-key.pem")
	c := startClusterWith(t, 1, false, "--tls-ca-key", caKey)
	seed := c.agents[0]
	retry.Run(t, func(r *retry.R) {
		_, _, err := agreedLeader(apis(c.agents))
		r.Check(err)
	})
	res := mustRun(t, "token", "create", "--role", "join", "--ttl", "10m", "--json", "--api", seed.api)
	var created struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &created); err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(seed.tls.ca)
	if err != nil {
		t.Fatal(err)
	}

	state := filepath.Join(t.TempDir(), "state")
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := filepath.Glob(filepath.Join(state, "*", "agent.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				t.Logf("==== %s ====\n%s", l, b)
			}
		}
		runProvision(t, "", "provision", "local", "--dir", state, "--stop-all", "--stop-timeout", "10s")
	})
	caJSON, _ := json.Marshal(string(caPEM))
	req := fmt.Sprintf(`{"version":1,"id":"e2e-join-1","kind":"scale_out","time":"2025-01-01T00:00:00Z","why":"e2e",`+
		`"zone":"z1","count":1,"cluster":{"leader":%q,"seeds":[%q]},"join_token":%q,"join_servers":[%q],"ca_cert":%s}`,
		seed.name, seed.gossip, created.Token, seed.peer, caJSON)
	// No --tls-ca or --tls-ca-key: the request carries what the node needs.
	out := runProvision(t, req, "provision", "local", "--dir", state, "--name-prefix", "e2e", "--demo-backend", "--stop-timeout", "10s")
	if out.code != 0 {
		t.Fatalf("provision local: exit %d: %s", out.code, out.stderr)
	}
	var pr provisionResult
	if err := json.Unmarshal([]byte(out.stdout), &pr); err != nil || len(pr.Started) != 1 {
		t.Fatalf("provision local: %v %q", err, out.stdout)
	}
	node := pr.Started[0]
	retry.Run(t, func(r *retry.R) {
		st, err := getStatus(seed.api)
		r.Check(err)
		if m, ok := st.member(node.Name); !ok || m.Status != "alive" {
			r.Fatalf("%s is not an alive member: %+v", node.Name, m)
		}
	})
	// The node made its own key; the provisioner wrote only the CA
	// certificate and the token (owner-only), not a key or certificate.
	dir := filepath.Join(state, node.Name)
	if _, err := os.Stat(filepath.Join(dir, "data", "tls", "node-key.pem")); err != nil {
		t.Fatalf("node key: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "tls", "node-key.pem")); err == nil {
		t.Fatal("the provisioner made a key")
	}
	if st, err := os.Stat(filepath.Join(dir, "tls", "join-token")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("join token file: %v %v", st, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "agent.log")); strings.Contains(string(b), created.Token) {
		t.Fatal("the token is in the agent's log")
	}
	if resp, body, err := get(node.Ingress + "/e2e"); err != nil || resp.StatusCode != 200 {
		t.Errorf("GET %s/e2e: %v %v: %s", node.Ingress, err, resp, body)
	}
}
