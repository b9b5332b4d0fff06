package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/hashicorp/raft"
)

// Peer is one server of the Raft configuration that Recover installs.
type Peer struct {
	// ID is the node's name; Address its Raft address (host:port, as the
	// node advertises it: loadmesh status shows the voters' addresses).
	ID      string `json:"id"`
	Address string `json:"address"`
	// NonVoter makes it a non-voter; by default it votes.
	NonVoter bool `json:"non_voter,omitempty"`
}

// ReadPeersFile reads a peers file: a JSON list of {"id", "address",
// "non_voter"} objects, the format of hashicorp/raft's peers.json.
func ReadPeersFile(path string) ([]Peer, error) {
	conf, err := raft.ReadConfigJSON(path)
	if err != nil {
		return nil, fmt.Errorf("peers file %s: %w", path, err)
	}
	var peers []Peer
	for _, s := range conf.Servers {
		peers = append(peers, Peer{ID: string(s.ID), Address: string(s.Address), NonVoter: s.Suffrage == raft.Nonvoter})
	}
	return peers, nil
}

// Recover replaces the Raft configuration in a stopped node's stores
// with peers, for the recovery of a cluster that has lost its quorum for
// good (hashicorp/raft RecoverCluster): with a majority of voters gone,
// no leader can be elected and no configuration change committed, so the
// survivors are told, offline, who the cluster now is. Run it with the
// same peers on every node listed, then start them; they elect a leader
// among themselves and the leader adds new nodes as usual.
//
// The node's log is replayed into deps.Store and the result becomes its
// newest Raft snapshot: entries it holds that were never committed are
// kept, as RecoverCluster does. deps.Store must be a fresh FSM and is
// not usable afterwards; deps needs Store, LogStore, StableStore and
// Snapshots (Logger is optional). nodeName must be among peers.
func Recover(nodeName string, peers []Peer, deps Deps) error {
	if deps.Store == nil || deps.LogStore == nil || deps.StableStore == nil || deps.Snapshots == nil {
		return errors.New("recover: Store, LogStore, StableStore and Snapshots are required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	var conf raft.Configuration
	var self *Peer
	var names []string
	for i, p := range peers {
		s := raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Address), Suffrage: raft.Voter}
		if p.NonVoter {
			s.Suffrage = raft.Nonvoter
		}
		if _, _, err := splitHostPort(p.Address); err != nil && p.Address != "" {
			return fmt.Errorf("recover: peer %q: address %q: want IP:PORT", p.ID, p.Address)
		}
		conf.Servers = append(conf.Servers, s)
		names = append(names, p.ID)
		if p.ID == nodeName {
			self = &peers[i]
		}
	}
	if self == nil {
		return fmt.Errorf("recover: the peers (%s) do not include this node %q: list every node that is to form the cluster, this one among them",
			strings.Join(names, ", "), nodeName)
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(nodeName)
	rc.Logger = newHclog(deps.Logger.With("component", "raft"), "raft")
	// The transport only encodes peer addresses into the snapshot.
	_, trans := raft.NewInmemTransport(raft.ServerAddress(self.Address))
	defer trans.Close()
	if err := raft.RecoverCluster(rc, deps.Store.Raft(), deps.LogStore, deps.StableStore, deps.Snapshots, trans, conf); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	return nil
}
