package store

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/loadmesh/loadmesh/scheduler"
)

const (
	testHash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	otherID  = "0011223344556677"
)

func tokenCmd(name string, role Role, id string, bootstrap bool) Command {
	return Command{Op: OpTokenCreate, Time: t0, Who: "alice", Why: "test",
		Token: &Token{Name: name, ID: id, Role: role, Hash: testHash, Created: t0, CreatedBy: "alice", Bootstrap: bootstrap}}
}

func TestRoles(t *testing.T) {
	for _, tt := range []struct {
		r, need Role
		ok      bool
	}{
		{RoleOperator, RoleOperator, true},
		{RoleOperator, RoleRead, true},
		{RoleRead, RoleRead, true},
		{RoleRead, RoleOperator, false},
		{"join", RoleRead, false},
		{"", RoleRead, false},
	} {
		if got := tt.r.Allows(tt.need); got != tt.ok {
			t.Errorf("%q.Allows(%q) = %v, want %v", tt.r, tt.need, got, tt.ok)
		}
	}
	if got := Roles(); len(got) != 3 || got[0] != RoleJoin || got[1] != RoleOperator || got[2] != RoleRead {
		t.Errorf("Roles() = %v", got)
	}
}

func TestTokenCreateRevoke(t *testing.T) {
	f := NewFSM(nil, nil)
	apply(t, f, Command{Op: OpNodeUpsert, Node: "a", State: scheduler.StateActive, Time: t0})
	ev, ok := apply(t, f, tokenCmd("bootstrap", RoleOperator, "a1b2c3d4e5f60718", true)).(scheduler.Event)
	if !ok || ev.Kind != "token.create" || ev.Who != "alice" || ev.Version != 1 || ev.Seq != 2 || !strings.Contains(ev.After, "role=operator") {
		t.Fatalf("create event %+v", ev)
	}
	if strings.Contains(ev.After, testHash) {
		t.Fatalf("event shows the hash: %+v", ev)
	}
	if f.Plan().Version != 1 {
		t.Fatalf("a token changed the plan version to %d", f.Plan().Version)
	}
	if !f.TokensBootstrapped() {
		t.Fatal("bootstrap flag not set")
	}
	// A second bootstrap token is refused, whatever its name.
	if err, ok := apply(t, f, tokenCmd("bootstrap2", RoleOperator, otherID, true)).(error); !ok || !errors.Is(err, ErrTokensBootstrapped) {
		t.Fatalf("second bootstrap: %v", err)
	}
	// Names and IDs are unique.
	if err, ok := apply(t, f, tokenCmd("bootstrap", RoleRead, otherID, false)).(error); !ok || !errors.Is(err, ErrTokenExists) {
		t.Fatalf("duplicate name: %v", err)
	}
	if err, ok := apply(t, f, tokenCmd("other", RoleRead, "a1b2c3d4e5f60718", false)).(error); !ok || !errors.Is(err, ErrTokenExists) {
		t.Fatalf("duplicate id: %v", err)
	}
	apply(t, f, tokenCmd("ci", RoleRead, otherID, false))

	got, ok := f.TokenByID(otherID)
	if !ok || got.Name != "ci" || got.Hash != testHash || got.Role != RoleRead {
		t.Fatalf("TokenByID = %+v, %v", got, ok)
	}
	list := f.Tokens()
	if len(list) != 2 || list[0].Name != "bootstrap" || list[1].Name != "ci" || list[0].Hash != "" || list[1].Hash != "" {
		t.Fatalf("Tokens() = %+v", list)
	}

	// Snapshot and restore keep tokens, the index and the flag.
	snap, err := f.Raft().Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	g := NewFSM(nil, nil)
	if err := g.Raft().Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if tok, ok := g.TokenByID(otherID); !ok || tok.Name != "ci" || !g.TokensBootstrapped() {
		t.Fatalf("restored: %+v %v bootstrapped=%v", tok, ok, g.TokensBootstrapped())
	}

	ev, ok = apply(t, g, Command{Op: OpTokenRevoke, Time: t0, Who: "alice", Token: &Token{Name: "ci"}}).(scheduler.Event)
	if !ok || ev.Kind != "token.revoke" || !strings.Contains(ev.Before, "token ci") {
		t.Fatalf("revoke event %+v", ev)
	}
	if _, ok := g.TokenByID(otherID); ok {
		t.Fatal("revoked token still found by id")
	}
	if err, ok := apply(t, g, Command{Op: OpTokenRevoke, Time: t0, Token: &Token{Name: "ci"}}).(error); !ok || !errors.Is(err, ErrUnknownToken) {
		t.Fatalf("second revoke: %v", err)
	}
	// Revoking the bootstrap token does not allow another.
	apply(t, g, Command{Op: OpTokenRevoke, Time: t0, Token: &Token{Name: "bootstrap"}})
	if err, ok := apply(t, g, tokenCmd("again", RoleOperator, otherID, true)).(error); !ok || !errors.Is(err, ErrTokensBootstrapped) {
		t.Fatalf("bootstrap after revoke: %v", err)
	}
}

func TestTokenCommandValidation(t *testing.T) {
	good := tokenCmd("ci", RoleRead, otherID, false)
	for name, mutate := range map[string]func(c *Command){
		"no token":         func(c *Command) { c.Token = nil },
		"empty name":       func(c *Command) { c.Token.Name = "" },
		"path in name":     func(c *Command) { c.Token.Name = "../x" },
		"leading dash":     func(c *Command) { c.Token.Name = "-x" },
		"long name":        func(c *Command) { c.Token.Name = strings.Repeat("a", 65) },
		"unknown role":     func(c *Command) { c.Token.Role = "admin" },
		"short id":         func(c *Command) { c.Token.ID = "abc" },
		"upper id":         func(c *Command) { c.Token.ID = "00112233445566AA" },
		"secret as hash":   func(c *Command) { c.Token.Hash = "lm_secret" },
		"no created":       func(c *Command) { c.Token.Created = time.Time{} },
		"expires too soon": func(c *Command) { c.Token.Expires = c.Token.Created },
	} {
		c := good
		tok := *good.Token
		c.Token = &tok
		mutate(&c)
		if _, err := EncodeCommand(c); err == nil {
			t.Errorf("%s: command accepted", name)
		}
	}
	if _, err := EncodeCommand(good); err != nil {
		t.Fatal(err)
	}
	if _, err := EncodeCommand(Command{Op: OpTokenRevoke, Time: t0, Token: &Token{Name: "ci"}}); err != nil {
		t.Fatalf("revoke by name alone: %v", err)
	}
}

func FuzzTokenCommands(f *testing.F) {
	for _, c := range []Command{
		tokenCmd("bootstrap", RoleOperator, "a1b2c3d4e5f60718", true),
		tokenCmd("ci", RoleRead, otherID, false),
		{Op: OpTokenRevoke, Time: t0, Token: &Token{Name: "ci"}},
	} {
		b, _ := EncodeCommand(c)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fsm := NewFSM(nil, nil)
		seed, _ := EncodeCommand(tokenCmd("ci", RoleRead, otherID, false))
		fsm.Raft().Apply(&raft.Log{Data: seed})
		fsm.Raft().Apply(&raft.Log{Data: b})
		// Whatever was applied, the index and the tokens agree.
		for _, tok := range fsm.Tokens() {
			if got, ok := fsm.TokenByID(tok.ID); !ok || got.Name != tok.Name {
				t.Fatalf("token %q not found by its id %q", tok.Name, tok.ID)
			}
		}
		if n := len(fsm.Tokens()); n != len(fsm.tokenIDs) {
			t.Fatalf("%d tokens, %d indexed", n, len(fsm.tokenIDs))
		}
	})
}
