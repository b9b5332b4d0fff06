package agent

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"path"
	"strconv"
	"time"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/store"
)

// RestoreResult is the answer to POST /v1/snapshot/restore.
type RestoreResult struct {
	// Event is the audit event the restore recorded.
	Event scheduler.Event `json:"event"`
	// Snapshot is the header of the file restored, SHA256 its checksum.
	Snapshot store.BackupHeader `json:"snapshot"`
	SHA256   string             `json:"sha256"`
	// Restored counts what the restored state holds.
	Restored store.Summary `json:"restored"`
}

// restoreTimeout bounds a restore: the leader loads the state and waits
// until a majority has installed it.
const restoreTimeout = time.Minute

func (a *Agent) registerSnapshotAPI(mux *http.ServeMux) {
	// Both are leader-only: the snapshot holds every committed write, and
	// a restore is a Raft operation only the leader can start.
	mux.HandleFunc("GET /v1/snapshot", a.leaderOnly(a.getSnapshot))
	mux.HandleFunc("POST /v1/snapshot/restore", a.leaderOnly(a.restoreSnapshot))
}

// getSnapshot answers with a backup file of the replicated state (see
// store.EncodeBackup).
func (a *Agent) getSnapshot(w http.ResponseWriter, r *http.Request) {
	file, h, err := a.snapshotFile()
	if err != nil {
		switch {
		case errors.Is(err, cluster.ErrNotLeader):
			writeError(w, http.StatusServiceUnavailable, "leadership changed during the snapshot; try again")
		case errors.Is(err, cluster.ErrNoState):
			writeError(w, http.StatusServiceUnavailable, err.Error())
		default:
			writeError(w, http.StatusInternalServerError, "snapshot failed: "+err.Error())
		}
		return
	}
	// Reading is not a change, so it is not in the audit log; but the
	// file holds token hashes and the audit log, so it is logged.
	a.log.Info("snapshot taken through the API", "who", actor(r), "index", h.Index, "term", h.Term, "bytes", len(file))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(file)))
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s%s%s"`,
		backupPrefix(a.cfg.Name), h.Created.Format(backupTimeFormat), backupExt))
	w.WriteHeader(http.StatusOK)
	w.Write(file)
}

// restoreSnapshot replaces the replicated state with a backup file's
// (the request body). A file that is not a snapshot, of another format
// version, damaged, or holding a state that does not validate is refused
// with 422 and changes nothing. Query: reason= for the audit log, file=
// the file's name, recorded with it.
func (a *Agent) restoreSnapshot(w http.ResponseWriter, r *http.Request) {
	bk, err := store.ReadBackup(r.Body)
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, "restore refused, nothing changed: "+oneLine(err))
		return
	}
	st, err := store.DecodeSnapshot(bytes.NewReader(bk.Body))
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, fmt.Sprintf("restore refused, nothing changed: %v: the body does not decode: %s", store.ErrBackupDamaged, oneLine(err)))
		return
	}
	name := path.Base(r.URL.Query().Get("file"))
	if name == "." || name == "/" {
		name = ""
	}
	if len(name) > 128 {
		name = name[:128]
	}
	why := r.URL.Query().Get("reason")
	if why == "" {
		why = "snapshot restore"
	}
	sum := store.Summarize(st)
	ev := scheduler.Event{Time: time.Now().UTC(), Who: actor(r), Why: why,
		Before: "replaced state: " + describeSummary(a.fsm.Summary()),
		After:  describeBackup(name, bk.Header, bk.SHA256, sum)}
	body, ev, err := a.fsm.PrepareRestore(st, ev)
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, "restore refused, nothing changed: the snapshot's state is invalid: "+oneLine(err))
		return
	}
	if err := a.cluster.Restore(body, restoreTimeout); err != nil {
		if errors.Is(err, cluster.ErrNotLeader) {
			writeError(w, http.StatusServiceUnavailable, "leadership changed during the restore; check loadmesh events and try again")
			return
		}
		writeError(w, http.StatusInternalServerError, "restore failed; it may or may not have taken effect (check loadmesh events, then run it again): "+err.Error())
		return
	}
	a.log.Info("snapshot restored", "who", ev.Who, "file", name, "snapshot_index", bk.Header.Index, "snapshot_term", bk.Header.Term,
		"cluster_id", bk.Header.ClusterID, "plan_version", ev.Version)
	writeJSON(w, http.StatusOK, RestoreResult{Event: ev, Snapshot: bk.Header, SHA256: bk.SHA256, Restored: a.fsm.Summary()})
}
