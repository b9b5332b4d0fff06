package cluster

import (
	"slices"
	"strconv"

	"github.com/hashicorp/raft"
)

// RaftStatus is this node's view of Raft.
type RaftStatus struct {
	State        string   `json:"state"`
	Term         uint64   `json:"term"`
	CommitIndex  uint64   `json:"commit_index"`
	AppliedIndex uint64   `json:"applied_index"`
	Voters       []string `json:"voters"`
	Nonvoters    []string `json:"nonvoters"`
}

// RaftStatus reports the Raft state, term, indexes and configuration.
func (c *Cluster) RaftStatus() RaftStatus {
	st := RaftStatus{
		State:        c.raft.State().String(),
		Term:         c.raft.CurrentTerm(),
		AppliedIndex: c.raft.AppliedIndex(),
		Voters:       []string{},
		Nonvoters:    []string{},
	}
	st.CommitIndex, _ = strconv.ParseUint(c.raft.Stats()["commit_index"], 10, 64)
	if f := c.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			if s.Suffrage == raft.Voter {
				st.Voters = append(st.Voters, string(s.ID))
			} else {
				st.Nonvoters = append(st.Nonvoters, string(s.ID))
			}
		}
	}
	slices.Sort(st.Voters)
	slices.Sort(st.Nonvoters)
	return st
}

// Joined reports whether this node is part of a cluster: it has joined a
// seed, or it is in a Raft configuration.
func (c *Cluster) Joined() bool {
	c.mu.Lock()
	joined := c.joined
	c.mu.Unlock()
	if joined {
		return true
	}
	f := c.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == c.cfg.NodeName {
			return true
		}
	}
	return false
}
