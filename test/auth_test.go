package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/test/harness"
	"github.com/loadmesh/loadmesh/test/retry"
)

// authCall sends one API request with token (none when empty) and retries
// while the cluster has no leader to carry it to (503, 502).
func authCall(t *testing.T, method, url, token, body string) (int, []byte) {
	t.Helper()
	var code int
	var out []byte
	retry.RunFor(t, 40*time.Second, func(r *retry.R) {
		req, err := http.NewRequest(method, url, strings.NewReader(body))
		r.Check(err)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		r.Check(err)
		defer resp.Body.Close()
		out, _ = io.ReadAll(resp.Body)
		code = resp.StatusCode
		if code == http.StatusServiceUnavailable || code == http.StatusBadGateway {
			r.Fatalf("%s %s: %d %s", method, url, code, out)
		}
	})
	return code, out
}

func mustCall(t *testing.T, method, url, token, body string, want int) []byte {
	t.Helper()
	code, out := authCall(t, method, url, token, body)
	if code != want {
		t.Fatalf("%s %s: %d %s, want %d", method, url, code, out, want)
	}
	return out
}

func followerOf(c *harness.Cluster, leader *harness.Node) *harness.Node {
	for _, n := range c.Live() {
		if n != leader {
			return n
		}
	}
	return nil
}

func createToken(t *testing.T, api, token, name, role string) string {
	t.Helper()
	var tc agent.TokenCreated
	out := mustCall(t, "POST", api+"/v1/tokens", token, fmt.Sprintf(`{"name": %q, "role": %q}`, name, role), http.StatusOK)
	if err := json.Unmarshal(out, &tc); err != nil || tc.Token == "" {
		t.Fatalf("create token %s: %s (%v)", name, out, err)
	}
	return tc.Token
}

func TestTokensAcrossTheCluster(t *testing.T) {
	skipShort(t)
	c := harness.Start(t, 3, harness.Options{StrictAuth: true})
	leader := c.WaitForLeader(t)
	follower := followerOf(c, leader)
	fAPI, lAPI := "http://"+follower.APIAddr(), "http://"+leader.APIAddr()

	// No token, on loopback too: refused by the follower, and by the
	// leader even when the request claims to come from a follower.
	mustCall(t, "POST", fAPI+"/v1/nodes/node-0/cordon", "", "", http.StatusUnauthorized)
	req, _ := http.NewRequest("POST", lAPI+"/v1/nodes/node-0/cordon", nil)
	req.Header.Set("X-Loadmesh-Forwarded-By", follower.Name())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("forged forwarded write without token: %s", resp.Status)
	}
	// Reads stay open on loopback.
	mustCall(t, "GET", fAPI+"/v1/status", "", "", http.StatusOK)

	// Tokens made through a follower (carried to the leader).
	alice := createToken(t, fAPI, harness.Token, "alice", "operator")
	reader := createToken(t, fAPI, harness.Token, "reader", "read")
	for _, n := range c.Live() {
		api := "http://" + n.APIAddr()
		// Wait until the node has the tokens, then check the roles.
		retry.Run(t, func(r *retry.R) {
			if code, out := authCall(t, "GET", api+"/v1/events", reader, ""); code != http.StatusOK {
				r.Fatalf("%s: read with the read token: %d %s", n.Name(), code, out)
			}
		})
		mustCall(t, "POST", api+"/v1/nodes/node-0/cordon", reader, "", http.StatusForbidden)
		mustCall(t, "GET", api+"/v1/tokens", reader, "", http.StatusForbidden)
	}

	// A write through a follower is audited under the token's name.
	var ev scheduler.Event
	out := mustCall(t, "POST", fAPI+"/v1/nodes/node-0/cordon", alice, `{"reason": "auth test"}`, http.StatusOK)
	if err := json.Unmarshal(out, &ev); err != nil || ev.Who != "alice" || ev.Kind != "node.state" {
		t.Fatalf("cordon event %s (%v)", out, err)
	}
	var created []scheduler.Event
	for _, e := range leader.Plan().Events(0) {
		if e.Kind == "token.create" {
			created = append(created, e)
		}
	}
	if len(created) != 3 || !strings.HasPrefix(created[0].Who, "node-") || created[1].Who != "bootstrap" || !strings.Contains(created[1].After, "token alice role=operator") {
		t.Fatalf("token.create events %+v", created)
	}

	// Revoked through a follower: refused on every node once replicated.
	mustCall(t, "DELETE", fAPI+"/v1/tokens/alice", harness.Token, "", http.StatusOK)
	aliceID, _, _ := agent.ParseToken(alice)
	for _, n := range c.Live() {
		api := "http://" + n.APIAddr()
		retry.Run(t, func(r *retry.R) {
			if _, ok := n.Plan().TokenByID(aliceID); ok {
				r.Fatalf("%s still has the revoked token", n.Name())
			}
		})
		mustCall(t, "POST", api+"/v1/nodes/node-0/activate", alice, "", http.StatusUnauthorized)
	}
	var list []agent.TokenView
	if err := json.Unmarshal(mustCall(t, "GET", fAPI+"/v1/tokens", harness.Token, "", http.StatusOK), &list); err != nil || len(list) != 2 {
		t.Fatalf("tokens after revoke: %+v (%v)", list, err)
	}

	// No secret is in the audit log.
	events := string(mustCall(t, "GET", fAPI+"/v1/events?limit=10000", "", "", http.StatusOK))
	for _, tok := range []string{harness.Token, alice, reader} {
		if strings.Contains(events, tok[20:]) {
			t.Errorf("a token secret is in the audit log")
		}
	}
}

var tokenPattern = regexp.MustCompile(`lm_[0-9a-f]{16}_[0-9a-f]{64}`)

func TestBootstrapTokenIsMadeOnce(t *testing.T) {
	skipShort(t)
	c := harness.Start(t, 3, harness.Options{StrictAuth: true, Tune: func(i int, cfg *agent.Config) { cfg.BootstrapToken = "" }})
	leader := c.WaitForLeader(t)

	// Exactly one node prints a token: the leader that created it.
	var boot string
	retry.Run(t, func(r *retry.R) {
		var printed []string
		for _, n := range c.Nodes {
			if tok := tokenPattern.FindAllString(n.BootstrapOut.String(), -1); len(tok) > 0 {
				printed = append(printed, n.Name())
				if len(tok) != 1 {
					r.Fatalf("%s printed %d tokens", n.Name(), len(tok))
				}
				boot = tok[0]
			}
		}
		if len(printed) != 1 {
			r.Fatalf("nodes that printed a bootstrap token: %v", printed)
		}
	})
	lAPI := "http://" + leader.APIAddr()
	createToken(t, lAPI, boot, "ops", "operator")

	// A second leader makes no new one; the printed token still works.
	c.Kill(t, leader)
	leader = c.WaitForLeader(t)
	mustCall(t, "POST", "http://"+leader.APIAddr()+"/v1/nodes/node-1/cordon", boot, "", http.StatusOK)
	var list []agent.TokenView
	if err := json.Unmarshal(mustCall(t, "GET", "http://"+leader.APIAddr()+"/v1/tokens", boot, "", http.StatusOK), &list); err != nil ||
		len(list) != 2 || list[0].Name != "bootstrap" || !list[0].Bootstrap || list[1].Name != "ops" {
		t.Fatalf("tokens after failover: %+v (%v)", list, err)
	}
	n := 0
	for _, node := range c.Nodes {
		n += len(tokenPattern.FindAllString(node.BootstrapOut.String(), -1))
	}
	if n != 1 {
		t.Fatalf("%d bootstrap tokens printed in all", n)
	}
}
