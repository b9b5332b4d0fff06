package cluster

import (
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	isLeader      prometheus.Gauge
	leaderChanges prometheus.Counter
	eventsDropped prometheus.Counter
	memberEvents  prometheus.Counter
	badMeta       prometheus.Counter
	joins         *prometheus.CounterVec
	raftChanges   *prometheus.CounterVec
	statusChanges *prometheus.CounterVec // metrics_health.go
}

func newMetrics(reg prometheus.Registerer, c *Cluster) *metrics {
	m := &metrics{
		isLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "loadmesh_cluster_is_leader", Help: "1 if this node is the Raft leader, else 0.",
		}),
		leaderChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "loadmesh_cluster_leader_changes_total", Help: "Changes of Raft leader observed by this node.",
		}),
		eventsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "loadmesh_cluster_events_dropped_total", Help: "Membership events dropped because the event loop was behind.",
		}),
		memberEvents: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "loadmesh_cluster_member_events_total", Help: "Membership events processed.",
		}),
		badMeta: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "loadmesh_cluster_bad_meta_total", Help: "Members ignored because their gossip metadata could not be decoded.",
		}),
		joins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "loadmesh_cluster_join_attempts_total", Help: "Attempts to join the seed addresses, by result.",
		}, []string{"result"}),
		raftChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "loadmesh_cluster_raft_configuration_changes_total", Help: "Raft configuration changes made by this node as leader, by kind.",
		}, []string{"kind"}),
		statusChanges: newStatusChanges(),
	}
	if reg == nil {
		return m
	}
	reg.MustRegister(m.isLeader, m.leaderChanges, m.eventsDropped, m.memberEvents, m.badMeta, m.joins, m.raftChanges,
		&stateCollector{c: c}, m.statusChanges, &healthCollector{c: c})
	return m
}

// stateCollector reports gauges read at scrape time: members by status and
// the raft state.
type stateCollector struct{ c *Cluster }

var (
	membersDesc = prometheus.NewDesc("loadmesh_cluster_members", "Known members by gossip status.", []string{"status"}, nil)
	raftDesc    = prometheus.NewDesc("loadmesh_cluster_raft_state", "1 for this node's current Raft state.", []string{"state"}, nil)
	termDesc    = prometheus.NewDesc("loadmesh_cluster_raft_term", "Current Raft term.", nil, nil)
)

func (s *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- membersDesc
	ch <- raftDesc
	ch <- termDesc
}

func (s *stateCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[MemberStatus]int{StatusAlive: 0, StatusSuspect: 0, StatusDead: 0, StatusLeft: 0}
	for _, m := range s.c.Members() {
		counts[m.Status]++
	}
	for st, n := range counts {
		ch <- prometheus.MustNewConstMetric(membersDesc, prometheus.GaugeValue, float64(n), string(st))
	}
	if s.c.raft == nil {
		return
	}
	cur := s.c.raft.State()
	for _, st := range []raft.RaftState{raft.Follower, raft.Candidate, raft.Leader, raft.Shutdown} {
		ch <- prometheus.MustNewConstMetric(raftDesc, prometheus.GaugeValue, b2f(st == cur), st.String())
	}
	ch <- prometheus.MustNewConstMetric(termDesc, prometheus.GaugeValue, float64(s.c.raft.CurrentTerm()))
}
