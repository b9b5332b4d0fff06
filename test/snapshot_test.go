package test

// Backup and restore of the replicated state: a snapshot saved from one
// cluster, restored into a fresh one (every data dir new), refused when
// damaged; scheduled snapshot files written and pruned.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/store"
	"github.com/loadmesh/loadmesh/test/harness"
	"github.com/loadmesh/loadmesh/test/retry"
)

// snapSpec is a manual-mode spec with the longest interval: the
// autoscaler measures but changes nothing.
const snapSpec = `mode: manual
interval: 10m
limits:
  min_active: 1
  max_active: 3
targets:
  inflight_utilisation: 0.6
`

// snapRequest sends a request with the given token ("" for none) and
// returns the status and body.
func snapRequest(t *testing.T, hc *http.Client, method, url, token string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func snapFollowers(c *harness.Cluster, leader *harness.Node) []*harness.Node {
	var out []*harness.Node
	for _, n := range c.Live() {
		if n != leader {
			out = append(out, n)
		}
	}
	return out
}

// snapCheckState fails r unless n's replica holds want (a snapshot's
// state) with exactly the one restore event ev added.
func snapCheckState(r *retry.R, n *harness.Node, want store.State, ev scheduler.Event) {
	f := n.Plan()
	p := f.Plan()
	if p.Version != ev.Version || !reflect.DeepEqual(p.Nodes, want.Plan.Nodes) {
		r.Fatalf("%s: plan version %d %+v, want version %d %+v", n.Name(), p.Version, p.Nodes, ev.Version, want.Plan.Nodes)
	}
	if !reflect.DeepEqual(f.Spec(), want.Spec) || !reflect.DeepEqual(f.SpecHistory(), want.SpecHistory) {
		r.Fatalf("%s: spec %+v (history %d), want %+v (history %d)", n.Name(), f.Spec(), len(f.SpecHistory()), want.Spec, len(want.SpecHistory))
	}
	if got := f.Tokens(); len(got) != len(want.Tokens) {
		r.Fatalf("%s: %d tokens, want %d", n.Name(), len(got), len(want.Tokens))
	}
	for name, tok := range want.Tokens {
		if got, ok := f.TokenByID(tok.ID); !ok || !reflect.DeepEqual(got, tok) {
			r.Fatalf("%s: token %s is %+v, want %+v", n.Name(), name, got, tok)
		}
	}
	evs := f.Events(0)
	if len(evs) != len(want.Events)+1 || !reflect.DeepEqual(evs[:len(want.Events)], want.Events) {
		r.Fatalf("%s: %d audit events, want the snapshot's %d and the restore", n.Name(), len(evs), len(want.Events))
	}
	if last := evs[len(evs)-1]; !reflect.DeepEqual(last, ev) {
		r.Fatalf("%s: last audit event %+v, want the restore %+v", n.Name(), last, ev)
	}
	// The autoscaler may add a minute of demand after the restore.
	if h := f.History(time.Time{}); len(h) < len(want.History) || !reflect.DeepEqual(h[:len(want.History)], want.History) {
		r.Fatalf("%s: demand history of %d points does not start with the snapshot's %d", n.Name(), len(h), len(want.History))
	}
}

// TestSnapshotRestoreIntoAFreshCluster saves a snapshot from a cluster,
// crashes that cluster, starts a new one on new data dirs, and restores
// the snapshot into it: every node gets the same plan, spec, tokens and
// audit log (with one restore event more), also after a full restart.
// Damaged files are refused and change nothing.
func TestSnapshotRestoreIntoAFreshCluster(t *testing.T) {
	skipShort(t)
	hc := durClient(t)
	opts := harness.Options{DeadServerGrace: time.Hour}
	a := harness.Start(t, 3, opts)
	leader := a.WaitForLeader(t)
	a.WaitForMembers(t)
	retry.Run(t, func(r *retry.R) {
		if p := leader.Plan().Plan(); len(p.Nodes) != 3 {
			r.Fatalf("plan lists %d nodes, want 3", len(p.Nodes))
		}
	})
	fol := snapFollowers(a, leader)
	cordoned := fol[0].Name()

	// A state with something of everything: a spec, a cordoned node,
	// tokens, an audit record and demand history.
	durMustWrite(t, hc, durAPI(fol[0])+"/v1/plan?reason=backup+test", "application/yaml", snapSpec)
	durMustWrite(t, hc, durAPI(fol[1])+"/v1/nodes/"+cordoned+"/cordon", "application/json", `{"reason":"backup test"}`)
	var ci agent.TokenCreated
	if err := json.Unmarshal(durMustWrite(t, hc, durAPI(leader)+"/v1/tokens", "application/json", `{"name":"ci","role":"read"}`), &ci); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Minute)
	for _, c := range []store.Command{
		{Op: store.OpHistoryAppend, Time: now, Who: "test", Points: []store.DemandPoint{{Minute: now.Add(-2 * time.Minute), RPS: 5, Active: 3}, {Minute: now.Add(-time.Minute), RPS: 7, Active: 3}}},
		{Op: store.OpRecord, Kind: "test.record", Time: now, Who: "test", Why: "backup test"},
	} {
		b, err := store.EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := leader.Cluster().Apply(b, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}

	// Reading a snapshot takes an operator token (the follower knows the
	// read token once it has replicated it: 401 until then).
	retry.Run(t, func(r *retry.R) {
		if code, body := snapRequest(t, hc, http.MethodGet, durAPI(fol[0])+"/v1/snapshot", ci.Token, nil); code != http.StatusForbidden {
			r.Fatalf("snapshot with a read token: %d %s", code, body)
		}
	})
	// Saved through a follower, which carries the request to the leader.
	var file []byte
	retry.Run(t, func(r *retry.R) {
		code, body := snapRequest(t, hc, http.MethodGet, durAPI(fol[1])+"/v1/snapshot", harness.Token, nil)
		if code != http.StatusOK {
			r.Fatalf("GET /v1/snapshot: %d %s", code, body)
		}
		file = body
	})
	bk, err := store.DecodeBackup(file)
	if err != nil {
		t.Fatal(err)
	}
	want, err := store.DecodeSnapshot(bytes.NewReader(bk.Body))
	if err != nil {
		t.Fatal(err)
	}
	if bk.Header.Node != leader.Name() || bk.Header.ClusterID != leader.Cluster().ClusterID() || bk.Header.Index == 0 || bk.Header.Term == 0 {
		t.Fatalf("snapshot header %+v; leader %s of cluster %s", bk.Header, leader.Name(), leader.Cluster().ClusterID())
	}
	// It holds every write acknowledged before it was taken.
	if want.Plan.Nodes[cordoned].State != scheduler.StateCordoned || want.Spec.PlanVersion == 0 || want.Tokens["ci"].ID == "" ||
		len(want.History) != 2 || want.Events[len(want.Events)-1].Kind != "test.record" {
		t.Fatalf("snapshot lacks a write: %s", describeState(want))
	}
	t.Logf("saved: index %d term %d, %s", bk.Header.Index, bk.Header.Term, describeState(want))

	// Every data dir is lost: crash the cluster, start a new one.
	for _, n := range a.Live() {
		a.Kill(t, n)
	}
	b := harness.Start(t, 3, opts)
	bLeader := b.WaitForLeader(t)
	b.WaitForMembers(t)
	retry.Run(t, func(r *retry.R) {
		if p := bLeader.Plan().Plan(); len(p.Nodes) != 3 {
			r.Fatalf("plan lists %d nodes, want 3", len(p.Nodes))
		}
	})
	if bLeader.Cluster().ClusterID() == bk.Header.ClusterID {
		t.Fatal("the new cluster has the old one's ID")
	}
	bFol := snapFollowers(b, bLeader)
	before := bLeader.Plan().Summary()

	// Damaged files, and one of another format version, are refused
	// with 422 and a clear message; nothing changes.
	flipped := bytes.Clone(file)
	flipped[len(flipped)/2] ^= 0x20
	bad := want
	bad.Tokens = map[string]store.Token{"ci": want.Tokens["ci"], "ci2": want.Tokens["ci"]}
	badBody, _ := json.Marshal(bad)
	badFile, _ := store.EncodeBackup(bk.Header, append([]byte{1}, badBody...))
	for _, tt := range []struct {
		name string
		file []byte
		msg  string
	}{
		{"flipped bit", flipped, "checksum mismatch"},
		{"truncated", file[:len(file)-100], "truncated"},
		{"other format version", bytes.Replace(file, []byte("LOADMESH-SNAPSHOT 1 "), []byte("LOADMESH-SNAPSHOT 2 "), 1), "snapshot format version 2"},
		{"not a snapshot", []byte(`{"plan":{}}`), "not a loadmesh snapshot"},
		{"invalid state", badFile, "the snapshot's state is invalid"},
	} {
		code, body := snapRequest(t, hc, http.MethodPost, durAPI(bFol[0])+"/v1/snapshot/restore", harness.Token, tt.file)
		if code != http.StatusUnprocessableEntity || !strings.Contains(string(body), tt.msg) || !strings.Contains(string(body), "nothing changed") {
			t.Errorf("%s: %d %s, want 422 with %q", tt.name, code, body, tt.msg)
		}
	}
	if after := bLeader.Plan().Summary(); !reflect.DeepEqual(after, before) {
		t.Fatalf("a refused restore changed the state: %+v, was %+v", after, before)
	}
	if code, body := snapRequest(t, hc, http.MethodPost, durAPI(bLeader)+"/v1/snapshot/restore", ci.Token, file); code != http.StatusUnauthorized {
		t.Fatalf("restore with a token the new cluster does not know: %d %s", code, body)
	}

	// The restore, sent to a follower.
	var res agent.RestoreResult
	code, body := snapRequest(t, hc, http.MethodPost, durAPI(bFol[1])+"/v1/snapshot/restore?file=a.snap&reason=disaster+drill", harness.Token, file)
	if code != http.StatusOK || json.Unmarshal(body, &res) != nil {
		t.Fatalf("restore: %d %s", code, body)
	}
	ev := res.Event
	if ev.Kind != store.KindRestore || ev.Who != "bootstrap" || ev.Why != "disaster drill" || ev.Version != max(want.Plan.Version, before.PlanVersion)+1 ||
		ev.Seq != max(want.AuditSeq, before.AuditSeq)+1 || !strings.Contains(ev.After, `file "a.snap"`) ||
		!strings.Contains(ev.After, fmt.Sprintf("index %d term %d", bk.Header.Index, bk.Header.Term)) || !strings.Contains(ev.After, bk.Header.ClusterID) {
		t.Fatalf("restore event %+v", ev)
	}
	for _, n := range b.Live() {
		retry.Run(t, func(r *retry.R) { snapCheckState(r, n, want, ev) })
	}
	// The audit log's API shows it to every reader.
	var evs []durEvent
	if _, err := durGet(hc, durAPI(bFol[0])+"/v1/events?limit=1", &evs); err != nil || len(evs) != 1 || evs[0].Kind != store.KindRestore {
		t.Fatalf("last event through the API: %+v, %v", evs, err)
	}

	// The restored state survives a crash of every node.
	old := b.Live()
	for _, n := range old {
		b.Kill(t, n)
	}
	for _, n := range old {
		b.Restart(t, n)
	}
	b.WaitForLeader(t)
	for _, n := range b.Live() {
		retry.Run(t, func(r *retry.R) { snapCheckState(r, n, want, ev) })
	}
}

func describeState(st store.State) string {
	s := store.Summarize(st)
	return fmt.Sprintf("plan version %d, nodes %v, spec %v, tokens %v, %d events, %d history points", s.PlanVersion, s.Nodes, s.Spec, s.Tokens, s.Events, s.History)
}

// TestScheduledSnapshotsAreWrittenAndPruned runs every node with a
// snapshot every second, keeping two: each node's directory soon holds
// exactly its two newest files, which verify, and older ones are gone.
func TestScheduledSnapshotsAreWrittenAndPruned(t *testing.T) {
	skipShort(t)
	const keep = 2
	shared := t.TempDir()
	c := harness.Start(t, 3, harness.Options{Tune: func(i int, cfg *agent.Config) {
		cfg.SnapshotInterval = time.Second
		cfg.SnapshotRetain = keep
		if i == 2 {
			// Nodes may share a directory: each prunes only its own files.
			cfg.SnapshotDir = shared
		}
	}})
	c.WaitForLeader(t)
	dirs := map[string]string{}
	for _, n := range c.Live() {
		dirs[n.Name()] = filepath.Join(n.Cfg.DataDir, "backups")
		if n.Cfg.SnapshotDir != "" {
			dirs[n.Name()] = n.Cfg.SnapshotDir
		}
	}
	// A file outside the pattern in the shared dir is left alone.
	foreign := filepath.Join(shared, "loadmesh-node-2-keep-me.snap")
	if err := os.WriteFile(foreign, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	files := func(r *retry.R, name string) []string {
		entries, err := os.ReadDir(dirs[name])
		r.Check(err)
		var out []string
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), "loadmesh-"+name+"-") && strings.HasSuffix(e.Name(), ".snap") && e.Name() != filepath.Base(foreign) {
				out = append(out, e.Name())
			}
		}
		return out
	}
	first := map[string]string{}
	retry.Run(t, func(r *retry.R) {
		for name := range dirs {
			fs := files(r, name)
			if len(fs) == 0 {
				r.Fatalf("%s has written no snapshot file yet", name)
			}
			if first[name] == "" {
				first[name] = fs[0]
			}
		}
	})
	retry.Run(t, func(r *retry.R) {
		for name, dir := range dirs {
			fs := files(r, name)
			if len(fs) != keep || fs[0] <= first[name] {
				r.Fatalf("%s: files %v, want the %d newest, none of them %s", name, fs, keep, first[name])
			}
			var prev uint64
			for _, f := range fs {
				b, err := os.ReadFile(filepath.Join(dir, f))
				r.Check(err)
				bk, err := store.DecodeBackup(b)
				r.Check(err)
				if bk.Header.Node != name || bk.Header.Index < prev {
					r.Fatalf("%s: %s has header %+v", name, f, bk.Header)
				}
				prev = bk.Header.Index
				if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Mode().Perm() != 0o600 {
					r.Fatalf("%s: %s mode %v, %v", name, f, fi.Mode(), err)
				}
			}
		}
	})
	if _, err := os.Stat(foreign); err != nil {
		t.Fatalf("a file not written by the agent was pruned: %v", err)
	}
}
