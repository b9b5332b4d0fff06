//go:build unix

package e2e

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/test/retry"
)

// fingerprint is how loadmesh names a gossip key: the first 8 bytes of
// its SHA-256, in hex (computed here independently of the agent's code).
func fingerprint(t *testing.T, b64 string) string {
	t.Helper()
	k, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(k)
	return hex.EncodeToString(sum[:8])
}

// keyringNodes parses the node table of `loadmesh keyring list`: for each
// node, its ENCRYPTS WITH, KEYS and IN SYNC columns.
func keyringNodes(out string) map[string][3]string {
	nodes := map[string][3]string{}
	inNodes := false
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && f[0] == "NODE":
			inNodes = true
		case inNodes && len(f) >= 5:
			nodes[f[0]] = [3]string{f[1], f[2], f[3]}
		}
	}
	return nodes
}

// TestKeyringRotationWithTheCLI rotates the gossip key of three real
// agents with `loadmesh keyring install|use|remove`, checking `keyring
// list` between the steps as the README says, under 50 requests/s: no
// request fails and every node ends with only the new key, kept in its
// data dir. Then `loadmesh node revoke` takes a node out of Raft.
func TestKeyringRotationWithTheCLI(t *testing.T) {
	skipShort(t)
	oldKey := strings.TrimSpace(mustRun(t, "keygen").stdout)
	newKey := strings.TrimSpace(mustRun(t, "keygen").stdout)
	oldFP, newFP := fingerprint(t, oldKey), fingerprint(t, newKey)
	c := startClusterWith(t, 3, true, "--encrypt", oldKey)
	waitHealthy(t, c.agents, 3)
	api := c.agents[1].api
	waitNodes := func(what string, ok func(row [3]string) bool) {
		t.Helper()
		retry.RunFor(t, 30*time.Second, func(r *retry.R) {
			out := mustRun(t, "keyring", "list", "--api", api).stdout
			rows := keyringNodes(out)
			for _, a := range c.agents {
				if row, found := rows[a.name]; !found || !ok(row) {
					r.Fatalf("%s: %s not yet (%v):\n%s", what, a.name, row, out)
				}
			}
		})
	}
	waitNodes("seeded", func(row [3]string) bool { return row[0] == oldFP && row[2] == "true" })
	load := startLoad(t, ingresses(c.agents), 50)

	start := time.Now()
	mustRun(t, "keyring", "install", newKey, "--api", api)
	waitNodes("new key installed", func(row [3]string) bool {
		return row[2] == "true" && slices.Contains(strings.Split(row[1], ","), newFP)
	})
	mustRun(t, "keyring", "use", newKey, "--api", api)
	waitNodes("new key primary", func(row [3]string) bool { return row[0] == newFP && row[2] == "true" })
	mustRun(t, "keyring", "remove", oldKey, "--api", api)
	waitNodes("old key removed", func(row [3]string) bool { return row[0] == newFP && row[1] == newFP && row[2] == "true" })
	t.Logf("rotation with the CLI took %s", time.Since(start).Round(time.Millisecond))
	time.Sleep(time.Second) // load after the rotation
	load.finish(t)

	for _, a := range c.agents {
		fi, err := os.Stat(filepath.Join(a.dataDir, "keyring.json"))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s keyring.json mode %v", a.name, fi.Mode().Perm())
		}
	}
	res := run(t, nil, "keyring", "install", "not-a-key", "--api", api)
	if res.code == 0 || strings.Count(strings.TrimSpace(res.stderr), "\n") != 0 {
		t.Errorf("install of a bad key: exit %d, stderr %q", res.code, res.stderr)
	}
	res = run(t, nil, "keyring", "remove", newFP, "--api", api)
	if res.code == 0 || !strings.Contains(res.stderr, "primary") {
		t.Errorf("removing the primary: exit %d, stderr %q", res.code, res.stderr)
	}

	victim := c.agents[2]
	mustRun(t, "node", "revoke", victim.name, "--reason", "e2e", "--api", c.agents[0].api)
	retry.RunFor(t, 30*time.Second, func(r *retry.R) {
		for _, a := range c.agents[:2] {
			st, err := getStatus(a.api)
			r.Check(err)
			if slices.Contains(st.Raft.Voters, victim.name) || slices.Contains(st.Raft.Nonvoters, victim.name) {
				r.Fatalf("%s still has %s in Raft: %v", a.name, victim.name, st.Raft.Voters)
			}
		}
	})
	res = run(t, nil, "node", "revoke", "no-such-node", "--api", c.agents[0].api)
	if res.code == 0 || !strings.Contains(res.stderr, "not known") {
		t.Errorf("revoking an unknown node: exit %d, stderr %q", res.code, res.stderr)
	}
}
