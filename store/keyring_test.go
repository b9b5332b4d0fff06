package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/scheduler"
)

func testKey(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

func TestKeyringCommands(t *testing.T) {
	f := NewFSM(nil, nil)
	a, b := testKey('a', 32), testKey('b', 16)
	fa, fb := KeyFingerprint(a), KeyFingerprint(b)
	ch := f.SecurityChanged()

	ev, ok := apply(t, f, Command{Op: OpKeyringInstall, Key: a, Time: t0, Who: "leader", Why: "seed"}).(scheduler.Event)
	if !ok || ev.Kind != string(OpKeyringInstall) || !strings.Contains(ev.After, fa) || !strings.Contains(ev.After, "primary") {
		t.Fatalf("install event %+v", ev)
	}
	select {
	case <-ch:
	default:
		t.Fatal("install did not wake SecurityChanged")
	}
	if k := f.Keyring(); k.Primary != fa || len(k.Keys) != 1 || !bytes.Equal(k.PrimaryKey(), a) {
		t.Fatalf("keyring %+v", k)
	}
	// Installing the same key again changes nothing and records nothing.
	seq := len(f.Events(0))
	if ev, _ := apply(t, f, Command{Op: OpKeyringInstall, Key: a, Time: t0, Who: "op"}).(scheduler.Event); ev.Kind != "" || len(f.Events(0)) != seq {
		t.Fatalf("idempotent install recorded %+v", ev)
	}
	apply(t, f, Command{Op: OpKeyringInstall, Key: b, Time: t0, Who: "op"})
	if k := f.Keyring(); k.Primary != fa || len(k.Keys) != 2 {
		t.Fatalf("second install made it primary or was lost: %+v", k)
	}
	if err, _ := apply(t, f, Command{Op: OpKeyringRemove, KeyID: fa, Time: t0, Who: "op"}).(error); !errors.Is(err, ErrPrimaryKey) {
		t.Fatalf("remove primary: %v", err)
	}
	if err, _ := apply(t, f, Command{Op: OpKeyringUse, KeyID: KeyFingerprint(testKey('c', 16)), Time: t0, Who: "op"}).(error); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("use unknown: %v", err)
	}
	if err, _ := apply(t, f, Command{Op: OpKeyringRemove, KeyID: KeyFingerprint(testKey('c', 16)), Time: t0, Who: "op"}).(error); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("remove unknown: %v", err)
	}
	apply(t, f, Command{Op: OpKeyringUse, KeyID: fb, Time: t0, Who: "op"})
	apply(t, f, Command{Op: OpKeyringRemove, KeyID: fa, Time: t0, Who: "op"})
	if k := f.Keyring(); k.Primary != fb || len(k.Keys) != 1 || !bytes.Equal(k.Keys[0].Key, b) {
		t.Fatalf("after rotation %+v", k)
	}
	// No audit event carries a key.
	for _, e := range f.Events(0) {
		js, _ := json.Marshal(e)
		for _, k := range [][]byte{a, b} {
			enc, _ := json.Marshal(k)
			if bytes.Contains(js, enc[1:len(enc)-1]) || bytes.Contains(js, k) {
				t.Fatalf("event %s holds a key", js)
			}
		}
	}
	// Bounded.
	for i := range MaxGossipKeys + 2 {
		r := apply(t, f, Command{Op: OpKeyringInstall, Key: testKey(byte('d'+i), 24), Time: t0, Who: "op"})
		if err, isErr := r.(error); isErr {
			if !errors.Is(err, ErrKeyringFull) || len(f.Keyring().Keys) != MaxGossipKeys {
				t.Fatalf("install %d: %v with %d keys", i, err, len(f.Keyring().Keys))
			}
		}
	}
	if n := len(f.Keyring().Keys); n != MaxGossipKeys {
		t.Fatalf("%d keys, want the bound %d", n, MaxGossipKeys)
	}
}

func TestKeyringValidation(t *testing.T) {
	for _, c := range []Command{
		{Op: OpKeyringInstall, Key: testKey('a', 15), Time: t0},
		{Op: OpKeyringInstall, Time: t0},
		{Op: OpKeyringUse, KeyID: "zz", Time: t0},
		{Op: OpKeyringRemove, KeyID: "0123456789abcdeX", Time: t0},
		{Op: OpNodeRevoke, Time: t0},
	} {
		if _, err := EncodeCommand(c); err == nil {
			t.Errorf("%s %+v accepted", c.Op, c)
		}
	}
	if _, err := EncodeCommand(Command{Op: OpKeyringUse, KeyID: KeyFingerprint(testKey('a', 16)), Time: t0}); err != nil {
		t.Fatal(err)
	}
}

func TestKeyringAndRevocationSnapshot(t *testing.T) {
	f := NewFSM(nil, nil)
	a := testKey('a', 32)
	apply(t, f, Command{Op: OpKeyringInstall, Key: a, Time: t0, Who: "leader"})
	apply(t, f, Command{Op: OpNodeUpsert, Node: "n1", State: scheduler.StateActive, Time: t0, Who: "membership"})
	apply(t, f, Command{Op: OpNodeRevoke, Node: "n1", Time: t0.Add(time.Minute), Who: "op", Why: "stolen"})
	snap, err := f.Raft().Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	g := NewFSM(nil, nil)
	ch := g.SecurityChanged()
	if err := g.Raft().Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	default:
		t.Fatal("restore did not wake SecurityChanged")
	}
	if k := g.Keyring(); !bytes.Equal(k.PrimaryKey(), a) {
		t.Fatalf("restored keyring %+v", k)
	}
	if at, ok := g.NodeRevoked("n1"); !ok || !at.Equal(t0.Add(time.Minute)) {
		t.Fatalf("restored revocation %v %v", at, ok)
	}
	// The summary (snapshot inspect) names keys by fingerprint only.
	s := g.Summary()
	if len(s.GossipKeys) != 1 || s.GossipKeys[0] != KeyFingerprint(a) || s.GossipPrimary != KeyFingerprint(a) || s.Revoked != 1 {
		t.Fatalf("summary %+v", s)
	}
	js, _ := json.Marshal(s)
	enc, _ := json.Marshal(a)
	if bytes.Contains(js, enc[1:len(enc)-1]) {
		t.Fatalf("summary holds the key: %s", js)
	}
}

func TestNodeRevoke(t *testing.T) {
	f := NewFSM(nil, nil)
	if _, ok := f.NodeRevoked("n1"); ok {
		t.Fatal("revoked before any revocation")
	}
	apply(t, f, Command{Op: OpNodeUpsert, Node: "n1", State: scheduler.StateActive, Time: t0, Who: "membership"})
	ev, ok := apply(t, f, Command{Op: OpNodeRevoke, Node: "n1", Time: t0.Add(time.Second), Who: "op", Why: "lost laptop"}).(scheduler.Event)
	if !ok || ev.Kind != string(OpNodeRevoke) || ev.Node != "n1" || ev.Why != "lost laptop" {
		t.Fatalf("revoke event %+v", ev)
	}
	if at, ok := f.NodeRevoked("n1"); !ok || !at.Equal(t0.Add(time.Second)) {
		t.Fatalf("NodeRevoked = %v, %v", at, ok)
	}
	if st := f.Plan().Nodes["n1"].State; st != scheduler.StateCordoned {
		t.Fatalf("revoked node is %s in the plan, want cordoned", st)
	}
	// A name not in the plan can be revoked too (a node that never got in).
	if _, ok := apply(t, f, Command{Op: OpNodeRevoke, Node: "ghost", Time: t0, Who: "op"}).(scheduler.Event); !ok {
		t.Fatal("revoking a name outside the plan failed")
	}
	if len(f.RevokedNodes()) != 2 {
		t.Fatalf("revoked %v", f.RevokedNodes())
	}
}
