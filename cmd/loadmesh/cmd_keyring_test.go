package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
)

// fakeKeyringNode serves /v1/keyring (view) and /v1/members (members).
func fakeKeyringNode(t *testing.T, view *agent.KeyringView, members *[]agent.MemberView) *httptest.Server {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/keyring":
			json.NewEncoder(w).Encode(view)
		case "/v1/members":
			json.NewEncoder(w).Encode(members)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(ts.Close)
	return ts
}

// TestCheckRotationStep: `keyring use` waits until every live node holds
// the key, `keyring remove` until no node encrypts with it; revoked nodes
// do not count, and what the leader refuses anyway is left to it.
func TestCheckRotationStep(t *testing.T) {
	const oldFP, newFP = "1111111111111111", "2222222222222222"
	keys := []agent.KeyView{{Fingerprint: oldFP, Primary: true}, {Fingerprint: newFP}}
	a := &agent.KeyringView{Node: "a", Encrypted: true, Primary: oldFP, Keys: keys, LocalPrimary: oldFP, LocalKeys: []string{oldFP, newFP}}
	b := &agent.KeyringView{Node: "b", Encrypted: true, Primary: oldFP, Keys: keys, LocalPrimary: oldFP, LocalKeys: []string{oldFP}, AppliedIndex: 7}
	var members []agent.MemberView
	sa, sb := fakeKeyringNode(t, a, &members), fakeKeyringNode(t, b, &members)
	member := func(name, api string) agent.MemberView {
		mv := agent.MemberView{}
		mv.Name, mv.Status, mv.Addresses = name, cluster.StatusAlive, cluster.Addresses{API: strings.TrimPrefix(api, "http://")}
		return mv
	}
	members = []agent.MemberView{member("a", sa.URL), member("b", sb.URL)}
	ctx := context.Background()

	err := checkRotationStep(ctx, sa.URL, "use", newFP)
	if err == nil || !strings.Contains(err.Error(), "node b does not hold key "+newFP) {
		t.Fatalf("use before b holds the key: %v", err)
	}
	b.LocalKeys = []string{oldFP, newFP}
	if err := checkRotationStep(ctx, sa.URL, "use", newFP); err != nil {
		t.Fatalf("use once every node holds the key: %v", err)
	}
	// Now a encrypts with the new key, b not yet.
	a.Primary, a.LocalPrimary = newFP, newFP
	if err := checkRotationStep(ctx, sa.URL, "remove", oldFP); err == nil || !strings.Contains(err.Error(), "node b still encrypts") {
		t.Fatalf("remove while b encrypts with it: %v", err)
	}
	// A revoked node no longer follows the keyring: it does not count.
	a.Revoked = []string{"b"}
	if err := checkRotationStep(ctx, sa.URL, "remove", oldFP); err != nil {
		t.Fatalf("remove with b revoked: %v", err)
	}
	a.Revoked = nil
	// Keys the keyring does not hold, and the primary's removal, are the
	// leader's to refuse.
	if err := checkRotationStep(ctx, sa.URL, "use", "3333333333333333"); err != nil {
		t.Fatalf("unknown key: %v", err)
	}
	if err := checkRotationStep(ctx, sa.URL, "remove", newFP); err != nil {
		t.Fatalf("primary: %v", err)
	}
	// A node whose API does not answer cannot be checked.
	sb.Close()
	b.LocalPrimary = newFP
	if err := checkRotationStep(ctx, sa.URL, "remove", oldFP); err == nil || !strings.Contains(err.Error(), "cannot check nodes b") {
		t.Fatalf("unreachable node: %v", err)
	}
}
