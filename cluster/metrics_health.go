package cluster

import (
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// healthCollector reports gossip and Raft health, read at scrape time from
// memberlist and raft (each read is a lock-free or short-locked accessor;
// none goes through raft's main loop).
type healthCollector struct{ c *Cluster }

var (
	gossipHealthDesc = prometheus.NewDesc("loadmesh_cluster_gossip_health_score",
		"memberlist's awareness score: 0 is healthy; it rises when this node misses probes (a sign that it, not its peers, is slow or cut off).", nil, nil)
	raftLeaderDesc = prometheus.NewDesc("loadmesh_cluster_raft_has_leader",
		"1 if this node knows a Raft leader, else 0.", nil, nil)
	raftContactDesc = prometheus.NewDesc("loadmesh_cluster_raft_last_contact_seconds",
		"Seconds since a follower last heard from the leader (0 on the leader; -1 if never).", nil, nil)
	raftCommitDesc = prometheus.NewDesc("loadmesh_cluster_raft_commit_index",
		"Raft commit index on this node.", nil, nil)
	raftAppliedDesc = prometheus.NewDesc("loadmesh_cluster_raft_applied_index",
		"Last Raft index handed to this node's FSM.", nil, nil)
	raftLastDesc = prometheus.NewDesc("loadmesh_cluster_raft_last_log_index",
		"Last index in this node's Raft log or snapshot.", nil, nil)
	raftServersDesc = prometheus.NewDesc("loadmesh_cluster_raft_servers",
		"Servers in this node's latest Raft configuration, by suffrage (voter, nonvoter).", []string{"suffrage"}, nil)
)

func (h *healthCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{gossipHealthDesc, raftLeaderDesc, raftContactDesc, raftCommitDesc,
		raftAppliedDesc, raftLastDesc, raftServersDesc} {
		ch <- d
	}
}

func (h *healthCollector) Collect(ch chan<- prometheus.Metric) {
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if h.c.ml != nil {
		g(gossipHealthDesc, float64(h.c.ml.GetHealthScore()))
	}
	r := h.c.raft
	if r == nil {
		return
	}
	addr, _ := r.LeaderWithID()
	g(raftLeaderDesc, b2f(addr != ""))
	switch last := r.LastContact(); {
	case r.State() == raft.Leader:
		g(raftContactDesc, 0)
	case last.IsZero():
		g(raftContactDesc, -1)
	default:
		g(raftContactDesc, time.Since(last).Seconds())
	}
	g(raftCommitDesc, float64(r.CommitIndex()))
	g(raftAppliedDesc, float64(r.AppliedIndex()))
	g(raftLastDesc, float64(r.LastIndex()))
	var voters, nonvoters int
	if f := r.GetConfiguration(); f.Error() == nil { // answered at once, not by the main loop
		for _, s := range f.Configuration().Servers {
			if s.Suffrage == raft.Voter {
				voters++
			} else {
				nonvoters++
			}
		}
	}
	g(raftServersDesc, float64(voters), "voter")
	g(raftServersDesc, float64(nonvoters), "nonvoter")
}

// newStatusChanges counts member status transitions seen by this node
// (joined, suspect, dead, left, alive again): the basis of flapping
// alerts. Every label value exists from the start.
func newStatusChanges() *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "loadmesh_cluster_member_status_changes_total",
		Help: "Member status changes seen by this node, by the new status (alive, suspect, dead, left).",
	}, []string{"status"})
	for _, s := range []MemberStatus{StatusAlive, StatusSuspect, StatusDead, StatusLeft} {
		v.WithLabelValues(string(s))
	}
	return v
}
