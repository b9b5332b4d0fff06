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

func apply(t *testing.T, f *FSM, c Command) any {
	t.Helper()
	b, err := EncodeCommand(c)
	if err != nil {
		t.Fatal(err)
	}
	return f.Raft().Apply(&raft.Log{Index: 1, Data: b})
}

var t0 = time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)

func TestFSMApplySnapshotRestore(t *testing.T) {
	f := NewFSM(nil, nil)
	apply(t, f, Command{Op: OpNodeUpsert, Node: "a", Zone: "z1", State: scheduler.StateActive, Time: t0, Who: "membership", Why: "joined"})
	apply(t, f, Command{Op: OpNodeUpsert, Node: "b", Zone: "z2", State: scheduler.StateActive, Time: t0, Who: "membership", Why: "joined"})
	if ev, ok := apply(t, f, Command{Op: OpNodeState, Node: "b", State: scheduler.StateDraining, Time: t0.Add(time.Second), Who: "op", Why: "maintenance"}).(scheduler.Event); !ok || ev.Before == "" || ev.After == "" || ev.Version != 3 {
		t.Fatalf("state change event %+v", ev)
	}
	if err, ok := apply(t, f, Command{Op: OpNodeState, Node: "zz", State: scheduler.StateActive, Time: t0, Who: "op"}).(error); !ok || !errors.Is(err, ErrUnknownNode) {
		t.Fatalf("change to unknown node: %v", err)
	}
	p := f.Plan()
	if p.Version != 3 || p.Nodes["b"].State != scheduler.StateDraining || p.Nodes["a"].Zone != "z1" {
		t.Fatalf("plan %+v", p)
	}

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
	if q := g.Plan(); q.Version != 3 || len(q.Nodes) != 2 || q.Nodes["b"].State != scheduler.StateDraining {
		t.Fatalf("restored plan %+v", q)
	}
	if len(g.Events(0)) != 3 {
		t.Fatalf("restored %d events, want 3", len(g.Events(0)))
	}
}

func TestFSMRejectsGarbageWithoutChange(t *testing.T) {
	f := NewFSM(nil, nil)
	apply(t, f, Command{Op: OpNodeUpsert, Node: "a", State: scheduler.StateActive, Time: t0})
	for _, b := range [][]byte{nil, {9}, {1, '{'}, {1, '{', '}'}} {
		if _, ok := f.Raft().Apply(&raft.Log{Data: b}).(error); !ok {
			t.Fatalf("Apply(%q) did not return an error", b)
		}
	}
	if p := f.Plan(); p.Version != 1 || len(p.Nodes) != 1 {
		t.Fatalf("garbage changed the plan: %+v", p)
	}
}

func TestAuditLogIsBounded(t *testing.T) {
	f := NewFSM(nil, nil)
	f.auditLimit = 5
	for i := range 12 {
		apply(t, f, Command{Op: OpNodeUpsert, Node: "a", State: scheduler.StateActive, Zone: string(rune('a' + i)), Time: t0})
	}
	ev := f.Events(0)
	if len(ev) != 5 || ev[len(ev)-1].Version != 12 || ev[0].Version != 8 {
		t.Fatalf("events %+v", ev)
	}
}

func TestDataDirIdentity(t *testing.T) {
	dir := t.TempDir()
	d, err := OpenDataDir(dir, "a", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if _, err := OpenDataDir(dir, "b", io.Discard); !errors.Is(err, ErrForeignDataDir) {
		t.Fatalf("opening a's data dir as b: %v", err)
	}
	d, err = OpenDataDir(dir, "a", io.Discard)
	if err != nil {
		t.Fatalf("reopen as a: %v", err)
	}
	d.Close()
}

func FuzzDecodeCommand(f *testing.F) {
	good, _ := EncodeCommand(Command{Op: OpNodeUpsert, Node: "a", State: scheduler.StateActive, Time: t0})
	f.Add(good)
	f.Add([]byte{1, '{', '}'})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			return
		}
		enc, err := EncodeCommand(c)
		if err != nil {
			t.Fatalf("decoded command does not encode: %v", err)
		}
		if _, err := DecodeCommand(enc); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
	})
}

func FuzzRestoreSnapshot(f *testing.F) {
	f.Add([]byte{1, '{', '}'})
	f.Add([]byte(`{"plan":{}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		g := NewFSM(nil, nil)
		_ = g.Raft().Restore(io.NopCloser(bytes.NewReader(b)))
		_ = g.Plan()
	})
}

type memSink struct{ bytes.Buffer }

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Cancel() error { return nil }
func (m *memSink) Close() error  { return nil }

func TestSpecHistoryAndRollbackLookup(t *testing.T) {
	f := NewFSM(nil, nil)
	apply(t, f, Command{Op: OpSpecApply, Doc: []byte(`{"min":1}`), Time: t0, Who: "ops", Why: "first"})
	apply(t, f, Command{Op: OpNodeUpsert, Node: "a", State: scheduler.StateActive, Time: t0})
	apply(t, f, Command{Op: OpSpecApply, Doc: []byte(`{"min":2}`), Time: t0, Who: "ops", Why: "second"})
	if cur := f.Spec(); cur.PlanVersion != 3 || string(cur.Doc) != `{"min":2}` {
		t.Fatalf("current spec %+v", cur)
	}
	old, ok := f.SpecAt(1)
	if !ok || string(old.Doc) != `{"min":1}` || old.Why != "first" {
		t.Fatalf("spec at 1: %+v %v", old, ok)
	}
	if _, ok := f.SpecAt(2); ok {
		t.Fatal("plan version 2 introduced no spec")
	}
	if err, ok := f.Raft().Apply(&raft.Log{Data: append([]byte{1}, []byte(`{"op":"spec.apply","time":"2026-01-01T00:00:00Z"}`)...)}).(error); !ok {
		t.Fatalf("spec without a doc accepted: %v", err)
	}
}

func TestHistoryIsOrderedAndBounded(t *testing.T) {
	f := NewFSM(nil, nil)
	var pts []DemandPoint
	for i := range DefaultHistoryMinutes + 10 {
		pts = append(pts, DemandPoint{Minute: t0.Add(time.Duration(i) * time.Minute), RPS: float64(i)})
	}
	apply(t, f, Command{Op: OpHistoryAppend, Points: pts, Time: t0})
	// A duplicate minute is ignored.
	apply(t, f, Command{Op: OpHistoryAppend, Points: pts[len(pts)-1:], Time: t0})
	h := f.History(time.Time{})
	if len(h) != DefaultHistoryMinutes || h[0].RPS != 10 {
		t.Fatalf("history has %d points starting at %v", len(h), h[0].RPS)
	}
	if got := f.History(t0.Add(time.Duration(DefaultHistoryMinutes+5) * time.Minute)); len(got) != 5 {
		t.Fatalf("since filter gave %d points", len(got))
	}
	if f.Plan().Version != 0 {
		t.Fatal("history must not bump the plan version")
	}
}

func TestRecordsAreAuditedWithoutChangingThePlan(t *testing.T) {
	f := NewFSM(nil, nil)
	apply(t, f, Command{Op: OpNodeUpsert, Node: "a", State: scheduler.StateActive, Time: t0, Who: "membership", Why: "joined"})
	ev, ok := apply(t, f, Command{Op: OpRecord, Kind: "hook.scale_out", Time: t0.Add(time.Second), Who: "autoscaler",
		Why: "scale out", Before: "zone a count 2", After: "ok after 1 attempt", Metrics: map[string]float64{"inflight_utilisation": 1.4}}).(scheduler.Event)
	if !ok || ev.Seq != 2 || ev.Version != 1 || ev.Kind != "hook.scale_out" || ev.Metrics["inflight_utilisation"] != 1.4 {
		t.Fatalf("record event %+v", ev)
	}
	if f.Plan().Version != 1 {
		t.Fatalf("a record changed the plan version to %d", f.Plan().Version)
	}
	if _, err := EncodeCommand(Command{Op: OpRecord, Time: t0, Who: "x"}); err == nil {
		t.Fatal("a record without a kind was accepted")
	}
	ev, _ = apply(t, f, Command{Op: OpNodeState, Node: "a", State: scheduler.StateDraining, Time: t0, Who: "op"}).(scheduler.Event)
	if ev.Seq != 3 || ev.Version != 2 {
		t.Fatalf("plan change after a record: seq %d version %d, want 3 and 2", ev.Seq, ev.Version)
	}
	// Snapshot and restore keep the sequence going.
	snap, _ := f.Raft().Snapshot()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	g := NewFSM(nil, nil)
	if err := g.Raft().Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	ev, _ = apply(t, g, Command{Op: OpRecord, Kind: "autoscaler.dry_run", Time: t0, Who: "autoscaler"}).(scheduler.Event)
	if ev.Seq != 4 {
		t.Fatalf("seq after restore %d, want 4", ev.Seq)
	}
}

func TestOldSnapshotsGetSequenceNumbers(t *testing.T) {
	old := []byte("\x01" + `{"plan":{"version":2,"nodes":{}},"events":[{"version":1,"kind":"node.upsert"},{"version":2,"kind":"node.state"}]}`)
	st, err := DecodeSnapshot(bytes.NewReader(old))
	if err != nil {
		t.Fatal(err)
	}
	if st.AuditSeq != 2 || st.Events[0].Seq != 1 || st.Events[1].Seq != 2 {
		t.Fatalf("seq %d, events %+v", st.AuditSeq, st.Events)
	}
}

func TestLeftNodesKeepTheirEntryUntilRemoved(t *testing.T) {
	f := NewFSM(nil, nil)
	apply(t, f, Command{Op: OpNodeUpsert, Node: "a", Zone: "z", Tags: map[string]string{"spot": "true"}, State: scheduler.StateActive, Time: t0, Who: "membership"})
	apply(t, f, Command{Op: OpNodeState, Node: "a", State: scheduler.StateCordoned, Time: t0, Who: "op"})
	ev, _ := apply(t, f, Command{Op: OpNodeLeft, Node: "a", Time: t0.Add(time.Minute), Who: "membership", Why: "member left"}).(scheduler.Event)
	if pn := f.Plan().Nodes["a"]; !pn.Left.Equal(t0.Add(time.Minute)) || pn.State != scheduler.StateCordoned || pn.Tags["spot"] != "true" {
		t.Fatalf("left entry %+v", pn)
	}
	if !strings.Contains(ev.After, "left") || ev.Version != 3 {
		t.Fatalf("left event %+v", ev)
	}
	// It comes back: same state, mark cleared.
	apply(t, f, Command{Op: OpNodeUpsert, Node: "a", Zone: "z", State: scheduler.StateCordoned, Time: t0.Add(2 * time.Minute), Who: "membership"})
	if pn := f.Plan().Nodes["a"]; !pn.Left.IsZero() || pn.State != scheduler.StateCordoned || pn.Tags != nil {
		t.Fatalf("returned entry %+v", pn)
	}
	if err, ok := apply(t, f, Command{Op: OpNodeLeft, Node: "zz", Time: t0, Who: "membership"}).(error); !ok || !errors.Is(err, ErrUnknownNode) {
		t.Fatalf("left of an unknown node: %v", err)
	}
}
