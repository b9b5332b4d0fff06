package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// ErrNoState is returned by Snapshot on a node that has applied nothing
// yet.
var ErrNoState = errors.New("this node holds no replicated state yet")

// SnapshotMeta describes a snapshot of the replicated state.
type SnapshotMeta struct {
	// Index and Term are those of the last Raft log entry it includes.
	Index, Term uint64
}

// Snapshot takes a snapshot of the replicated state and returns it in the
// FSM's snapshot encoding (store.DecodeSnapshot reads it).
//
// It goes through Raft's own snapshot mechanism, so the state and the
// index it belongs to are taken together on the FSM goroutine; as a side
// effect the snapshot also becomes this node's latest Raft snapshot and
// the log is compacted behind it, as Raft does on its own every few
// minutes. On the leader it first waits (Barrier) until every entry
// committed so far is applied, so the snapshot holds every write
// acknowledged before the call; on a follower it holds the committed
// prefix the follower has applied. It blocks for at most timeout.
func (c *Cluster) Snapshot(timeout time.Duration) (SnapshotMeta, []byte, error) {
	deadline := time.Now().Add(timeout)
	if c.IsLeader() {
		if err := c.raft.Barrier(timeout).Error(); err != nil {
			return SnapshotMeta{}, nil, c.leaderErr("snapshot barrier", err)
		}
	}
	for {
		meta, body, err := c.snapshotOnce()
		// Raft refuses while a configuration change (a member added or
		// removed) is being applied; that takes milliseconds.
		if err == nil || !strings.Contains(err.Error(), "wait until the configuration entry") || time.Now().After(deadline) {
			return meta, body, err
		}
		select {
		case <-c.stop:
			return meta, body, raft.ErrRaftShutdown
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *Cluster) snapshotOnce() (SnapshotMeta, []byte, error) {
	f := c.raft.Snapshot()
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNothingNewToSnapshot) {
			return SnapshotMeta{}, nil, ErrNoState
		}
		return SnapshotMeta{}, nil, fmt.Errorf("raft snapshot: %w", err)
	}
	meta, rc, err := f.Open()
	if err != nil {
		return SnapshotMeta{}, nil, fmt.Errorf("open raft snapshot: %w", err)
	}
	defer rc.Close()
	var b bytes.Buffer
	if _, err := io.Copy(&b, rc); err != nil {
		return SnapshotMeta{}, nil, fmt.Errorf("read raft snapshot %s: %w", meta.ID, err)
	}
	return SnapshotMeta{Index: meta.Index, Term: meta.Term}, b.Bytes(), nil
}

// Restore replaces the replicated state on every node with body (the
// FSM's snapshot encoding, which the caller has checked decodes: the
// leader cannot survive an FSM that refuses it). Leader only
// (ErrNotLeader).
//
// It uses Raft's user restore (raft.Raft.Restore), as Consul and Nomad do
// for their snapshot restore, rather than a log command: the state may be
// several MiB (a full audit log and demand history), beyond what one log
// entry should carry (raft.SuggestedMaxDataSize is 512 KiB), and chunking
// it would put half-received restores into the FSM and its snapshots. The
// leader writes body as its newest Raft snapshot at an index past its log,
// loads it into its FSM, and the gap in its log makes it send that
// snapshot to every follower (and to later joiners) by InstallSnapshot;
// every node then has it in its snapshot store, so it survives restarts.
// Restore returns once a no-op entry after it is committed, that is once
// a majority has installed it. If the leader fails before that, the
// restore may be lost: check and run it again.
//
// Once restored, the leader hooks are revoked and established again, so
// that leader-only work starts over from the restored state.
func (c *Cluster) Restore(body []byte, timeout time.Duration) error {
	if !c.IsLeader() {
		return ErrNotLeader
	}
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Size: int64(len(body))}
	start := time.Now()
	if err := c.raft.Restore(meta, bytes.NewReader(body), timeout); err != nil {
		return c.leaderErr("raft restore", err)
	}
	c.log.Info("replicated state restored from a snapshot", "bytes", len(body),
		"index", c.raft.LastIndex(), "duration", time.Since(start).Round(time.Millisecond))
	select {
	case c.restoredCh <- struct{}{}:
	default:
	}
	return nil
}

// leaderErr wraps err from a leader-only raft call, as ErrNotLeader when
// leadership was the cause.
func (c *Cluster) leaderErr(what string, err error) error {
	if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
		return fmt.Errorf("%w: %v", ErrNotLeader, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}
