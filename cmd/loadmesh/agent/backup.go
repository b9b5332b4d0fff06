package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/store"
)

// Scheduled snapshots (--snapshot-interval): every node, not only the
// leader, writes a snapshot file of its replica to its --snapshot-dir and
// keeps the newest --snapshot-retain. A backup is needed most when
// machines are lost, so a copy on every machine means any survivor has a
// recent one, with no hand-over when leadership moves; the state is a few
// MiB at most, so N copies cost little. A follower's snapshot is the
// committed prefix it has applied, at most a replication delay behind
// the leader's; every file's header gives the Raft index, so the newest
// can be picked.

// snapshotTimeout bounds taking one snapshot.
const snapshotTimeout = 30 * time.Second

// backupExt ends the name of every snapshot file the agent writes.
const backupExt = ".snap"

// backupTimeFormat is the fixed-width UTC time in snapshot file names, so
// that their order by name is their order in time.
const backupTimeFormat = "20060102T150405.000Z"

// snapshotFile takes a snapshot of this node's replica (on the leader,
// with every committed entry: cluster.Snapshot) as a backup file.
func (a *Agent) snapshotFile() ([]byte, store.BackupHeader, error) {
	meta, body, err := a.cluster.Snapshot(snapshotTimeout)
	if err != nil {
		return nil, store.BackupHeader{}, err
	}
	version := a.deps.Version
	if version == "" {
		version = "dev"
	}
	h := store.BackupHeader{Index: meta.Index, Term: meta.Term, Created: time.Now().UTC(),
		ClusterID: a.cluster.ClusterID(), Node: a.cfg.Name, Version: version}
	file, err := store.EncodeBackup(h, body)
	if err != nil {
		return nil, h, err
	}
	h.BodySize = int64(len(body))
	return file, h, nil
}

// snapshotDir is --snapshot-dir, by default DATA_DIR/backups.
func (a *Agent) snapshotDir() string {
	if a.cfg.SnapshotDir != "" {
		return a.cfg.SnapshotDir
	}
	return filepath.Join(a.dataDir.Path, "backups")
}

// backupPrefix starts the names of this node's snapshot files: the node's
// name is in it, so that nodes sharing a --snapshot-dir prune only their
// own files.
func backupPrefix(node string) string {
	safe := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' {
			return r
		}
		return '_'
	}, node)
	return "loadmesh-" + safe + "-"
}

// backupFiles lists this node's snapshot files in dir, oldest first.
func backupFiles(dir, node string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	prefix := backupPrefix(node)
	var out []string
	for _, e := range entries {
		stamp, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok || !e.Type().IsRegular() {
			continue
		}
		stamp, ok = strings.CutSuffix(stamp, backupExt)
		if _, err := time.Parse(backupTimeFormat, stamp); !ok || err != nil {
			continue // another node's file whose name starts like ours, or not ours at all
		}
		out = append(out, e.Name())
	}
	slices.Sort(out)
	return out, nil
}

// writeBackupFile writes file into dir under a name made of the node and
// created, atomically (a temporary file synced, then renamed), readable
// by the agent's user only: it holds token hashes and the audit log.
func writeBackupFile(dir, node string, created time.Time, file []byte) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	path := filepath.Join(dir, backupPrefix(node)+created.UTC().Format(backupTimeFormat)+backupExt)
	tmp, err := os.CreateTemp(dir, ".snapshot-*.tmp")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	_, err = tmp.Write(file)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return "", err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return path, nil
}

// pruneBackups removes this node's oldest snapshot files in dir beyond
// the newest keep.
func pruneBackups(dir, node string, keep int) ([]string, error) {
	files, err := backupFiles(dir, node)
	if err != nil || len(files) <= keep {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, name := range files[:len(files)-keep] {
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, name)
	}
	return removed, errors.Join(errs...)
}

// backupScheduler runs the scheduled snapshots: one goroutine, started
// by Start and stopped (and waited for) by close.
type backupScheduler struct {
	stop chan struct{}
	wg   sync.WaitGroup
	runs *prometheus.CounterVec
	last prometheus.Gauge
}

func (a *Agent) startBackups() {
	if a.cfg.SnapshotInterval <= 0 {
		return
	}
	b := &backupScheduler{
		stop: make(chan struct{}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "loadmesh_snapshot_scheduled_total",
			Help: "Scheduled snapshots by result: ok, error, or skipped (no replicated state yet).",
		}, []string{"result"}),
		last: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "loadmesh_snapshot_last_success_timestamp_seconds",
			Help: "When this node last wrote a scheduled snapshot file (Unix time).",
		}),
	}
	a.reg.MustRegister(b.runs, b.last)
	dir := a.snapshotDir()
	a.log.Info("scheduled snapshots on", "dir", dir, "interval", a.cfg.SnapshotInterval, "retain", a.cfg.SnapshotRetain)
	a.backups = b
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		t := time.NewTicker(a.cfg.SnapshotInterval)
		defer t.Stop()
		for {
			select {
			case <-b.stop:
				return
			case <-t.C:
			}
			b.runs.WithLabelValues(a.scheduledBackup(dir)).Inc()
		}
	}()
}

// scheduledBackup writes one snapshot file and prunes the old ones; it
// returns the result label.
func (a *Agent) scheduledBackup(dir string) string {
	start := time.Now()
	file, h, err := a.snapshotFile()
	if errors.Is(err, cluster.ErrNoState) {
		a.log.Debug("scheduled snapshot skipped: no replicated state yet")
		return "skipped"
	}
	var path string
	if err == nil {
		path, err = writeBackupFile(dir, a.cfg.Name, h.Created, file)
	}
	if err != nil {
		a.log.Error("scheduled snapshot failed", "dir", dir, "error", err)
		return "error"
	}
	a.backups.last.Set(float64(h.Created.UnixMilli()) / 1000)
	removed, err := pruneBackups(dir, a.cfg.Name, a.cfg.SnapshotRetain)
	if err != nil {
		a.log.Warn("prune old snapshot files", "dir", dir, "error", err)
	}
	a.log.Info("scheduled snapshot written", "file", path, "index", h.Index, "term", h.Term, "bytes", len(file),
		"pruned", len(removed), "duration", time.Since(start).Round(time.Millisecond))
	return "ok"
}

func (a *Agent) stopBackups() {
	if b := a.backups; b != nil {
		close(b.stop)
		b.wg.Wait()
		a.backups = nil
	}
}

// describeBackup is a one-line description of a backup file, for the
// audit log.
func describeBackup(name string, h store.BackupHeader, sha string, sum store.Summary) string {
	cid := h.ClusterID
	if cid == "" {
		cid = "(unknown)"
	}
	s := fmt.Sprintf("snapshot of cluster %s at index %d term %d, taken %s on %s, sha256 %.12s: %s",
		cid, h.Index, h.Term, h.Created.UTC().Format(time.RFC3339), h.Node, sha, describeSummary(sum))
	if name != "" {
		s = fmt.Sprintf("file %q, ", name) + s
	}
	return s
}

// describeSummary names a state by its main figures.
func describeSummary(s store.Summary) string {
	nodes := 0
	for _, n := range s.Nodes {
		nodes += n
	}
	tokens := 0
	for _, n := range s.Tokens {
		tokens += n
	}
	return fmt.Sprintf("plan version %d, %d nodes, %d tokens, %d audit events", s.PlanVersion, nodes, tokens, s.Events)
}
