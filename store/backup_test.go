package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/loadmesh/loadmesh/scheduler"
)

// testState builds a state through commands: nodes in several states, a
// spec, tokens, audit records and demand history.
func testState(t *testing.T) *FSM {
	t.Helper()
	f := NewFSM(nil, nil)
	apply(t, f, Command{Op: OpNodeUpsert, Node: "a", Zone: "z1", State: scheduler.StateActive, Time: t0, Who: "membership"})
	apply(t, f, Command{Op: OpNodeUpsert, Node: "b", Zone: "z2", Tags: map[string]string{"spot": "true"}, State: scheduler.StateActive, Time: t0, Who: "membership"})
	apply(t, f, Command{Op: OpNodeUpsert, Node: "c", State: scheduler.StateActive, Time: t0, Who: "membership"})
	apply(t, f, Command{Op: OpNodeState, Node: "b", State: scheduler.StateCordoned, Time: t0.Add(time.Minute), Who: "alice"})
	apply(t, f, Command{Op: OpNodeLeft, Node: "c", Time: t0.Add(2 * time.Minute), Who: "membership"})
	apply(t, f, Command{Op: OpSpecApply, Doc: []byte(`{"mode":"manual"}`), Time: t0.Add(3 * time.Minute), Who: "alice", Why: "first"})
	apply(t, f, tokenCmd("bootstrap", RoleOperator, "a1b2c3d4e5f60718", true))
	apply(t, f, tokenCmd("ci", RoleRead, otherID, false))
	apply(t, f, Command{Op: OpRecord, Kind: "hook.scale_out", Time: t0.Add(4 * time.Minute), Who: "autoscaler"})
	apply(t, f, Command{Op: OpAutoscalerState, Doc: []byte(`{"version":1}`), Time: t0, Who: "autoscaler"})
	apply(t, f, Command{Op: OpHistoryAppend, Points: []DemandPoint{{Minute: t0, RPS: 10, Active: 2}, {Minute: t0.Add(time.Minute), RPS: 12, Active: 2}}, Time: t0})
	return f
}

func snapshotBody(t *testing.T, f *FSM) []byte {
	t.Helper()
	snap, err := f.Raft().Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	return sink.Bytes()
}

var testHeader = BackupHeader{Index: 42, Term: 3, Created: t0.Add(time.Hour), ClusterID: "0123456789abcdef", Node: "a", Version: "test"}

func TestBackupRoundTrip(t *testing.T) {
	f := testState(t)
	body := snapshotBody(t, f)
	file, err := EncodeBackup(testHeader, body)
	if err != nil {
		t.Fatal(err)
	}
	bk, err := ReadBackup(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	want := testHeader
	want.BodySize = int64(len(body))
	if !reflect.DeepEqual(bk.Header, want) || !bytes.Equal(bk.Body, body) || bk.Size != int64(len(file)) {
		t.Fatalf("read back %+v (%d body bytes), want %+v (%d)", bk.Header, len(bk.Body), want, len(body))
	}
	// The checksum on the first line is that of the rest of the file.
	first, rest, _ := bytes.Cut(file, []byte{'\n'})
	sum := sha256.Sum256(rest)
	if string(first) != "LOADMESH-SNAPSHOT 1 "+hex.EncodeToString(sum[:]) || bk.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("first line %q", first)
	}
	st, err := DecodeSnapshot(bytes.NewReader(bk.Body))
	if err != nil {
		t.Fatal(err)
	}
	g := NewFSM(nil, nil)
	if err := g.Raft().Restore(nopCloser{bytes.NewReader(bk.Body)}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g.Plan(), f.Plan()) || !reflect.DeepEqual(g.Events(0), f.Events(0)) || !reflect.DeepEqual(st.Tokens, f.st.Tokens) {
		t.Fatal("restored state differs")
	}

	s := Summarize(st)
	if s.PlanVersion != 6 || s.Nodes[scheduler.StateActive] != 2 || s.Nodes[scheduler.StateCordoned] != 1 || s.Left != 1 ||
		!s.Spec || s.SpecPlanVersion != 6 || s.Tokens[RoleOperator] != 1 || s.Tokens[RoleRead] != 1 || s.Events != 9 ||
		!s.FirstEvent.Equal(t0) || !s.LastEvent.Equal(t0.Add(4*time.Minute)) || s.History != 2 || !s.HistoryTo.Equal(t0.Add(time.Minute)) || !s.Autoscaler {
		t.Fatalf("summary %+v", s)
	}
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

func TestBackupDetectsCorruption(t *testing.T) {
	file, err := EncodeBackup(testHeader, snapshotBody(t, testState(t)))
	if err != nil {
		t.Fatal(err)
	}
	// Every single flipped bit, anywhere in the file, is caught.
	for i := range file {
		for bit := range 8 {
			bad := bytes.Clone(file)
			bad[i] ^= 1 << bit
			if _, err := DecodeBackup(bad); err == nil {
				t.Fatalf("bit %d of byte %d flipped (%q → %q): accepted", bit, i, file[i], bad[i])
			}
		}
	}
	// So is every truncation, and anything appended.
	for n := range len(file) {
		_, err := DecodeBackup(file[:n])
		if err == nil {
			t.Fatalf("file cut to %d of %d bytes: accepted", n, len(file))
		}
		if strings.Contains(err.Error(), "\n") {
			t.Fatalf("error is not one line: %q", err)
		}
	}
	if _, err := DecodeBackup(append(bytes.Clone(file), 'x')); err == nil {
		t.Fatal("a byte appended: accepted")
	}

	for _, tt := range []struct {
		name string
		file []byte
		is   error
		msg  string
	}{
		{"empty", nil, ErrNotBackup, "the file is empty"},
		{"other file", []byte("{\"plan\":{}}\n"), ErrNotBackup, `does not start with "LOADMESH-SNAPSHOT"`},
		{"other version", bytes.Replace(file, []byte("LOADMESH-SNAPSHOT 1 "), []byte("LOADMESH-SNAPSHOT 2 "), 1), ErrBackupFormat,
			"snapshot format version 2; this loadmesh reads version 1"},
		{"truncated", file[:len(file)-10], ErrBackupDamaged, "truncated: the body has"},
		{"altered", bytes.Replace(file, []byte(`"node":"a"`), []byte(`"node":"b"`), 1), ErrBackupDamaged, "checksum mismatch"},
		{"checksum in capitals", bytes.Replace(file, file[20:84], bytes.ToUpper(file[20:84]), 1), ErrBackupDamaged, "does not end in a SHA-256"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeBackup(tt.file)
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("error %v, want %v containing %q", err, tt.is, tt.msg)
			}
		})
	}
}

func TestBackupWithAnUnreadableBodyIsNotRestored(t *testing.T) {
	// A well-formed file whose body is not a state: the file verifies,
	// the body does not decode.
	file, err := EncodeBackup(testHeader, []byte("\x01{\"plan\":"))
	if err != nil {
		t.Fatal(err)
	}
	bk, err := DecodeBackup(file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeSnapshot(bytes.NewReader(bk.Body)); err == nil {
		t.Fatal("a broken body decoded")
	}
}

func TestPrepareRestore(t *testing.T) {
	src := testState(t)
	st, err := DecodeSnapshot(bytes.NewReader(snapshotBody(t, src)))
	if err != nil {
		t.Fatal(err)
	}
	// A live cluster further along than the snapshot: version and
	// sequence go on from its figures.
	live := NewFSM(nil, nil)
	for i := range 8 {
		apply(t, live, Command{Op: OpNodeUpsert, Node: "x", Zone: fmt.Sprint(i), State: scheduler.StateActive, Time: t0})
	}
	body, ev, err := live.PrepareRestore(st, scheduler.Event{Time: t0.Add(time.Hour), Who: "alice", Why: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if ev.Kind != KindRestore || ev.Version != 9 || ev.Seq != 10 || ev.Who != "alice" {
		t.Fatalf("event %+v", ev)
	}
	if err := live.Raft().Restore(nopCloser{bytes.NewReader(body)}); err != nil {
		t.Fatal(err)
	}
	if p := live.Plan(); p.Version != 9 || len(p.Nodes) != 3 || p.Nodes["b"].State != scheduler.StateCordoned {
		t.Fatalf("plan after restore %+v", p)
	}
	evs := live.Events(0)
	if !reflect.DeepEqual(evs[:len(evs)-1], src.Events(0)) || !reflect.DeepEqual(evs[len(evs)-1], ev) {
		t.Fatalf("events after restore: %+v", evs)
	}
	if tok, ok := live.TokenByID(otherID); !ok || tok.Name != "ci" || tok.Hash != testHash {
		t.Fatalf("token after restore %+v %v", tok, ok)
	}
	// The next change goes on from there.
	if e, _ := apply(t, live, Command{Op: OpNodeState, Node: "a", State: scheduler.StateCordoned, Time: t0}).(scheduler.Event); e.Version != 10 || e.Seq != 11 {
		t.Fatalf("event after restore %+v", e)
	}

	// A fresh cluster behind the snapshot: the snapshot's figures go on.
	fresh := NewFSM(nil, nil)
	_, ev, err = fresh.PrepareRestore(st, scheduler.Event{Time: t0, Who: "alice"})
	if err != nil || ev.Version != 7 || ev.Seq != 10 {
		t.Fatalf("restore into a fresh FSM: %+v, %v", ev, err)
	}

	// States that commands could never build are refused.
	for name, mutate := range map[string]func(st *State){
		"bad node state": func(st *State) { st.Plan.Nodes["a"] = scheduler.PlanNode{State: "gone"} },
		"misfiled token": func(st *State) { st.Tokens["other"] = st.Tokens["ci"] },
		"shared token id": func(st *State) {
			tok := st.Tokens["ci"]
			tok.Name = "ci2"
			st.Tokens["ci2"] = tok
		},
		"token without hash": func(st *State) {
			tok := st.Tokens["ci"]
			tok.Hash = ""
			st.Tokens["ci"] = tok
		},
		"history out of order": func(st *State) { st.History[0], st.History[1] = st.History[1], st.History[0] },
	} {
		bad, _ := DecodeSnapshot(bytes.NewReader(snapshotBody(t, src)))
		mutate(&bad)
		if _, _, err := fresh.PrepareRestore(bad, scheduler.Event{Time: t0}); err == nil {
			t.Errorf("%s: restore prepared", name)
		}
	}
}

func FuzzDecodeBackup(f *testing.F) {
	fsm := NewFSM(nil, nil)
	b, _ := EncodeCommand(Command{Op: OpNodeUpsert, Node: "a", State: scheduler.StateActive, Time: t0})
	fsm.Raft().Apply(&raft.Log{Index: 1, Data: b})
	snap, _ := fsm.Raft().Snapshot()
	sink := &memSink{}
	snap.Persist(sink)
	good, _ := EncodeBackup(testHeader, sink.Bytes())
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte("LOADMESH-SNAPSHOT 1 \n{}\n"))
	f.Add([]byte("LOADMESH-SNAPSHOT 2 x\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		bk, err := DecodeBackup(b)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
			if !errors.Is(err, ErrNotBackup) && !errors.Is(err, ErrBackupFormat) && !errors.Is(err, ErrBackupDamaged) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		// Whatever verifies encodes back to a file that verifies the same.
		again, err := EncodeBackup(bk.Header, bk.Body)
		if err != nil {
			t.Fatal(err)
		}
		bk2, err := DecodeBackup(again)
		if err != nil || !reflect.DeepEqual(bk2.Header, bk.Header) || !bytes.Equal(bk2.Body, bk.Body) {
			t.Fatalf("re-encoded file: %v", err)
		}
		if st, err := DecodeSnapshot(bytes.NewReader(bk.Body)); err == nil {
			Summarize(st)
		}
	})
}
