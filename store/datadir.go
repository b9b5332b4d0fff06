package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// identityFile records which node a data dir belongs to.
const identityFile = "node-identity.json"

// ErrForeignDataDir is returned when a data dir belongs to another node.
var ErrForeignDataDir = errors.New("data dir belongs to another node")

type identity struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
}

// DataDir is an opened node data dir: the Raft log and stable store
// (one BoltDB file) and the snapshot store.
type DataDir struct {
	Path      string
	Bolt      *raftboltdb.BoltStore
	Snapshots raft.SnapshotStore
}

// OpenDataDir creates dir if needed, checks that it is writable and that it
// belongs to nodeName (recording nodeName in a fresh dir), and opens the
// stores. logOutput receives raft's snapshot-store messages.
func OpenDataDir(dir, nodeName string, logOutput io.Writer) (*DataDir, error) {
	if dir == "" {
		return nil, errors.New("data dir is not set")
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("data dir %s: %w", dir, err)
	}
	probe, err := os.CreateTemp(dir, ".write-probe-*")
	if err != nil {
		return nil, fmt.Errorf("data dir %s is not writable: %w", dir, errors.Unwrap(err))
	}
	probe.Close()
	os.Remove(probe.Name())

	if err := checkIdentity(dir, nodeName); err != nil {
		return nil, err
	}
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, RaftDBFile)})
	if err != nil {
		return nil, fmt.Errorf("open raft store in %s: %w", dir, err)
	}
	snaps, err := raft.NewFileSnapshotStore(dir, 3, logOutput)
	if err != nil {
		bolt.Close()
		return nil, fmt.Errorf("open snapshot store in %s: %w", dir, err)
	}
	return &DataDir{Path: dir, Bolt: bolt, Snapshots: snaps}, nil
}

// ErrNoDataDir is returned by DataDirOwner for a directory that holds no
// node's data.
var ErrNoDataDir = errors.New("not a loadmesh data dir")

// DataDirOwner returns the name of the node a data dir belongs to, for
// offline tools; it fails with ErrNoDataDir when dir holds no node's data.
func DataDirOwner(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, identityFile))
	if errors.Is(err, os.ErrNotExist) {
		if _, serr := os.Stat(dir); serr != nil {
			return "", fmt.Errorf("%w: %v", ErrNoDataDir, serr)
		}
		return "", fmt.Errorf("%w: %s has no %s", ErrNoDataDir, dir, identityFile)
	}
	if err != nil {
		return "", fmt.Errorf("data dir %s: %w", dir, err)
	}
	var id identity
	if err := json.Unmarshal(b, &id); err != nil || id.Name == "" {
		return "", fmt.Errorf("data dir %s: unreadable %s", dir, identityFile)
	}
	return id.Name, nil
}

// RaftDBFile is the name of the BoltDB file (Raft log and stable store)
// in a data dir. A running agent holds an exclusive lock (flock) on it.
const RaftDBFile = "raft.db"

// Close closes the BoltDB file.
func (d *DataDir) Close() error { return d.Bolt.Close() }

func checkIdentity(dir, nodeName string) error {
	path := filepath.Join(dir, identityFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		b, _ = json.Marshal(identity{Name: nodeName, Created: time.Now().UTC()})
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, b, 0o640); err != nil {
			return fmt.Errorf("data dir %s: %w", dir, err)
		}
		if err := os.Rename(tmp, path); err != nil {
			return fmt.Errorf("data dir %s: %w", dir, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("data dir %s: %w", dir, err)
	}
	var id identity
	if err := json.Unmarshal(b, &id); err != nil {
		return fmt.Errorf("data dir %s: unreadable %s: %w", dir, identityFile, err)
	}
	if id.Name != nodeName {
		return fmt.Errorf("%w: %s was created by node %q, not %q (use that --name or another --data-dir)", ErrForeignDataDir, dir, id.Name, nodeName)
	}
	return nil
}
