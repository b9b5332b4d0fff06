package store

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/scheduler"
)

func joinTokenCmd(name, id string, uses int, ttl time.Duration) Command {
	c := tokenCmd(name, RoleJoin, id, false)
	c.Token.Uses = uses
	c.Token.Expires = t0.Add(ttl)
	return c
}

func useCmd(name, node string, at time.Time) Command {
	return Command{Op: OpTokenUse, Token: &Token{Name: name}, Node: node, Time: at, Who: "join via n1",
		Why: "node certificate issued", After: "certificate serial=ab expires=2026-12-28T00:00:00Z"}
}

func TestTokenUse(t *testing.T) {
	f := NewFSM(nil, nil)
	apply(t, f, joinTokenCmd("once", "1000000000000001", 1, time.Hour))
	apply(t, f, joinTokenCmd("twice", "1000000000000002", 2, time.Hour))
	apply(t, f, joinTokenCmd("short", "1000000000000003", 1, time.Minute))
	apply(t, f, joinTokenCmd("any", "1000000000000004", 0, time.Hour))
	apply(t, f, tokenCmd("ops", RoleOperator, "1000000000000005", false))

	if !RoleJoin.Allows(RoleJoin) || RoleJoin.Allows(RoleRead) || RoleJoin.Allows(RoleOperator) || RoleOperator.Allows(RoleJoin) {
		t.Fatal("join role grants more or less than the join permission")
	}
	ev, ok := apply(t, f, useCmd("once", "n9", t0.Add(time.Second))).(scheduler.Event)
	if !ok || ev.Kind != "token.use" || ev.Node != "n9" || !strings.Contains(ev.After, "serial=ab") || !strings.Contains(ev.Before, "token once role=join") {
		t.Fatalf("use event %+v", ev)
	}
	for _, tt := range []struct {
		name, token string
		at          time.Time
		want        error
	}{
		{"reused single-use", "once", t0.Add(2 * time.Second), ErrTokenUsedUp},
		{"expired", "short", t0.Add(time.Minute), ErrTokenExpired},
		{"wrong role", "ops", t0, ErrTokenWrongRole},
		{"unknown", "nope", t0, ErrUnknownToken},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := len(f.Events(0))
			err, ok := apply(t, f, useCmd(tt.token, "n9", tt.at)).(error)
			if !ok || !errors.Is(err, tt.want) {
				t.Fatalf("use %s: %v, want %v", tt.token, err, tt.want)
			}
			if len(f.Events(0)) != n {
				t.Fatal("a refused use was audited")
			}
		})
	}
	apply(t, f, useCmd("twice", "n1", t0))
	apply(t, f, useCmd("any", "n1", t0))
	apply(t, f, useCmd("any", "n2", t0))

	// The uses survive a snapshot and restore: a used-up token stays used
	// up on a replica that restored from a snapshot.
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
	left := map[string]int{}
	for _, tok := range g.Tokens() {
		left[tok.Name] = tok.UsesLeft()
	}
	if left["once"] != 0 || left["twice"] != 1 || left["any"] != -1 {
		t.Fatalf("uses left after restore: %v", left)
	}
	if err, ok := apply(t, g, useCmd("once", "n9", t0)).(error); !ok || !errors.Is(err, ErrTokenUsedUp) {
		t.Fatalf("restored replica let a used-up token be used again: %v", err)
	}
	apply(t, g, useCmd("twice", "n3", t0))
	if err, ok := apply(t, g, useCmd("twice", "n4", t0)).(error); !ok || !errors.Is(err, ErrTokenUsedUp) {
		t.Fatalf("third use of a two-use token: %v", err)
	}
	once, _ := g.TokenByID("1000000000000001")
	if !once.Spent(t0) {
		t.Fatalf("used-up token not spent: %+v", once)
	}
}

func TestJoinTokenMustExpire(t *testing.T) {
	c := tokenCmd("j", RoleJoin, "1000000000000009", false)
	if _, err := EncodeCommand(c); err == nil || !strings.Contains(err.Error(), "join token must expire") {
		t.Fatalf("join token without expiry: %v", err)
	}
	c.Token.Expires = t0.Add(time.Hour)
	c.Token.Uses, c.Token.Used = 1, 2
	if _, err := EncodeCommand(c); err == nil || !strings.Contains(err.Error(), "inconsistent") {
		t.Fatalf("used more than uses: %v", err)
	}
}
