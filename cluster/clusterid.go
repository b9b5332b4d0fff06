package cluster

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// A cluster ID names one Raft cluster, so that a node never joins another
// cluster with the Raft state of its own (a data dir reused, a node moved
// between clusters): Raft would mix two logs and two term counters. The
// ID is kept in the node's stable store (the data dir) and gossiped in
// Meta.ClusterID.
//
//   - Nodes that bootstrap the cluster derive it from the bootstrap
//     configuration, so that every node of a --bootstrap-expect set gets
//     the same one without talking; a node bootstrapping alone picks a
//     random one.
//   - A node without one (a new node, or a data dir from before cluster
//     IDs) adopts its Raft leader's once it knows a leader; a leader
//     without one adopts one gossiped by a member of its Raft
//     configuration, else picks a random one.
//   - A node that starts with an ID and joins seeds checks, once, the IDs
//     of the members it reached: if none shares its ID and some have
//     another, it is in the wrong cluster and fails (Failed) without
//     touching the others. The leader never adds a member with another ID
//     to Raft.

// clusterIDKey is the stable-store key of the cluster ID. Raft keeps its
// own keys in the same bucket; it never reads others.
var clusterIDKey = []byte("loadmesh_cluster_id")

// ErrForeignCluster is wrapped by the error Failed reports when this
// node's data dir belongs to another cluster than the members it joined.
var ErrForeignCluster = errors.New("data dir belongs to another cluster")

// ForeignClusterError details ErrForeignCluster.
type ForeignClusterError struct {
	// Ours is the cluster ID in this node's data dir; Theirs the one the
	// joined members gossip; Seeds the --join addresses.
	Ours, Theirs string
	Seeds        []string
}

func (e *ForeignClusterError) Error() string {
	return fmt.Sprintf("%v: it holds the Raft state of cluster %s, but the members reached through --join %s are cluster %s; "+
		"start this node with an empty --data-dir to join them, or --join its own cluster", ErrForeignCluster, e.Ours, strings.Join(e.Seeds, ","), e.Theirs)
}

func (e *ForeignClusterError) Is(target error) bool { return target == ErrForeignCluster }

// ErrGossipKey is wrapped by the error Failed reports when the first join
// fails because this node and the seeds disagree on gossip encryption.
var ErrGossipKey = errors.New("gossip encryption does not match the cluster's")

// Failed receives at most one error: the node found, after Start, that it
// cannot be part of the cluster it was pointed at (ErrGossipKey,
// ErrForeignCluster). The owner should then stop the node. Buffered; the
// cluster never blocks on it.
func (c *Cluster) Failed() <-chan error { return c.failCh }

func (c *Cluster) fail(err error) {
	select {
	case c.failCh <- err:
		c.log.Error("cannot join the cluster", "error", err)
	default:
	}
}

// ClusterID is the ID of the cluster this node belongs to, "" while it
// does not know it.
func (c *Cluster) ClusterID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.meta.ClusterID
}

// loadClusterID reads the ID from the stable store into c.meta (before
// the meta is first published).
func (c *Cluster) loadClusterID() {
	b, err := c.deps.StableStore.Get(clusterIDKey)
	if err == nil && len(b) > 0 {
		c.meta.ClusterID = string(b)
	}
}

// setClusterID records and gossips id, unless the node has one already.
func (c *Cluster) setClusterID(id, why string) {
	c.mu.Lock()
	if c.meta.ClusterID != "" || id == "" {
		c.mu.Unlock()
		return
	}
	c.meta.ClusterID = id
	err := c.publishMeta()
	c.mu.Unlock()
	if err != nil {
		c.log.Warn("publish cluster id", "error", err)
	}
	if err := c.deps.StableStore.Set(clusterIDKey, []byte(id)); err != nil {
		c.log.Warn("store cluster id", "error", err)
	}
	c.log.Info("cluster id set", "cluster_id", id, "reason", why)
	if c.ml != nil {
		c.goFunc(func() { c.updateNode(time.Second) })
	}
}

// bootstrapClusterID derives the ID of a cluster bootstrapped with servers:
// the same on every node bootstrapping with the same configuration.
func bootstrapClusterID(servers []raft.Server) string {
	lines := make([]string, 0, len(servers))
	for _, s := range servers {
		lines = append(lines, string(s.ID)+"="+string(s.Address))
	}
	slices.Sort(lines)
	sum := sha256.Sum256([]byte(strings.Join(lines, "\n")))
	return hex.EncodeToString(sum[:8])
}

func randomClusterID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// adoptClusterID gives a node without an ID its leader's (run by the event
// loop on its timer).
func (c *Cluster) adoptClusterID() {
	c.mu.Lock()
	if c.meta.ClusterID != "" {
		c.mu.Unlock()
		return
	}
	leader := c.leader
	theirs := ""
	if e := c.members[leader]; e != nil && leader != c.cfg.NodeName {
		theirs = e.meta.ClusterID
	}
	c.mu.Unlock()
	switch {
	case theirs != "":
		c.setClusterID(theirs, "adopted from leader "+leader)
	case leader == c.cfg.NodeName && c.IsLeader():
		if id := c.configurationClusterID(); id != "" {
			c.setClusterID(id, "adopted from a member of the raft configuration")
		} else {
			c.setClusterID(randomClusterID(), "leader of a cluster without an id")
		}
	}
}

// configurationClusterID is an ID gossiped by a member of the Raft
// configuration, or "".
func (c *Cluster) configurationClusterID() string {
	f := c.raft.GetConfiguration()
	if f.Error() != nil {
		return ""
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range f.Configuration().Servers {
		if e := c.members[string(s.ID)]; e != nil && e.meta.ClusterID != "" {
			return e.meta.ClusterID
		}
	}
	return ""
}

// verifyClusterID runs once after the first successful join: it waits
// briefly for the members the join brought and fails the node when they
// all belong to another cluster.
func (c *Cluster) verifyClusterID() {
	ours := c.ClusterID()
	if ours == "" {
		return
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		agree, theirs := false, ""
		c.mu.Lock()
		for name, e := range c.members {
			if name == c.cfg.NodeName || e.meta.ClusterID == "" || (e.status != StatusAlive && e.status != StatusSuspect) {
				continue
			}
			if e.meta.ClusterID == ours {
				agree = true
			} else {
				theirs = e.meta.ClusterID
			}
		}
		c.mu.Unlock()
		switch {
		case agree:
			return
		case theirs != "":
			c.fail(&ForeignClusterError{Ours: ours, Theirs: theirs, Seeds: c.cfg.Join})
			return
		}
		select {
		case <-c.stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return
		}
	}
}

// foreign reports whether a member belongs to another cluster than this
// node. c.mu need not be held; m is a copy.
func (c *Cluster) foreign(m memberEntry) bool {
	ours := c.ClusterID()
	return ours != "" && m.meta.ClusterID != "" && m.meta.ClusterID != ours
}

// gossipKeyError explains a failed join caused by mismatched gossip
// encryption, or returns nil. The texts are memberlist v0.6's.
func gossipKeyError(err error, seeds []string) error {
	if err == nil {
		return nil
	}
	at := strings.Join(seeds, ",")
	switch msg := err.Error(); {
	case strings.Contains(msg, "remote state is encrypted and encryption is not configured"):
		return fmt.Errorf("%w: the members at --join %s encrypt gossip, but this node has no key: pass the cluster's key with --encrypt", ErrGossipKey, at)
	case strings.Contains(msg, "encryption is configured but remote state is not encrypted"):
		return fmt.Errorf("%w: --encrypt is set, but the members at --join %s do not encrypt gossip: drop --encrypt, or give every node the same key", ErrGossipKey, at)
	case strings.Contains(msg, "no installed keys could decrypt"):
		return fmt.Errorf("%w: the members at --join %s use another gossip key than --encrypt: pass the cluster's key", ErrGossipKey, at)
	}
	return nil
}
