package main

import (
	"sync/atomic"

	gometrics "github.com/hashicorp/go-metrics/compat"
)

// counters receives the go-metrics that memberlist and raft emit and keeps
// the few the benchmark reports. Both libraries emit through the
// process-wide go-metrics instance without a node label (loadmesh sets no
// MetricLabels), so these are totals over every agent in the process:
// divide by the number of agents for a per-node figure.
//
// Gossip bytes are what memberlist hands to the socket: the UDP or TCP
// payload after compression and CRC, without IP/UDP/TCP headers.
type counters struct {
	c [numCounters]atomic.Uint64
}

const (
	udpSent = iota
	udpRecv
	tcpSent
	aliveMsgs   // new alive messages applied (joins and metadata updates)
	suspectMsgs // suspect messages applied
	deadMsgs    // dead messages applied
	raftHeartbeats
	raftAppends
	raftLeaderTerms // a node became leader
	raftCandidacies // a node started an election
	numCounters
)

// snapshot is a copy of the counters at one moment.
type snapshot [numCounters]uint64

func (g *counters) snapshot() snapshot {
	var s snapshot
	for i := range s {
		s[i] = g.c[i].Load()
	}
	return s
}

func (s snapshot) sub(o snapshot) snapshot {
	for i := range s {
		s[i] -= o[i]
	}
	return s
}

// installCounters makes a new counters the process-wide go-metrics sink.
// Runtime metrics stay off: they would stop the world every second.
func installCounters() (*counters, error) {
	g := &counters{}
	cfg := gometrics.DefaultConfig("")
	cfg.EnableHostname = false
	cfg.EnableHostnameLabel = false
	cfg.EnableServiceLabel = false
	cfg.EnableRuntimeMetrics = false
	if _, err := gometrics.NewGlobal(cfg, g); err != nil {
		return nil, err
	}
	return g, nil
}

var _ gometrics.MetricSink = (*counters)(nil)

// count adds val to a memberlist counter or counts a Raft state change.
func (g *counters) count(key []string, val float32) {
	if len(key) != 3 {
		return
	}
	i := -1
	switch key[0] + "." + key[1] + "." + key[2] {
	case "memberlist.udp.sent":
		i = udpSent
	case "memberlist.udp.received":
		i = udpRecv
	case "memberlist.tcp.sent":
		i = tcpSent
	case "memberlist.msg.alive":
		i = aliveMsgs
	case "memberlist.msg.suspect":
		i = suspectMsgs
	case "memberlist.msg.dead":
		i = deadMsgs
	case "raft.state.leader":
		i = raftLeaderTerms
	case "raft.state.candidate":
		i = raftCandidacies
	default:
		return
	}
	g.c[i].Add(uint64(val))
}

// sample counts raft's timed replication RPCs (the labelled form, one per
// RPC; raft also emits a legacy form with the peer in the key, ignored).
func (g *counters) sample(key []string) {
	if len(key) < 3 || key[0] != "raft" || key[1] != "replication" {
		return
	}
	switch {
	case len(key) == 3 && key[2] == "heartbeat":
		g.c[raftHeartbeats].Add(1)
	case len(key) == 4 && key[2] == "appendEntries" && key[3] == "rpc":
		g.c[raftAppends].Add(1)
	}
}

func (g *counters) IncrCounter(key []string, val float32) { g.count(key, val) }
func (g *counters) IncrCounterWithLabels(key []string, val float32, _ []gometrics.Label) {
	g.count(key, val)
}
func (g *counters) AddSample([]string, float32) {}
func (g *counters) AddSampleWithLabels(key []string, _ float32, _ []gometrics.Label) {
	g.sample(key)
}
func (g *counters) SetGauge([]string, float32)                              {}
func (g *counters) SetGaugeWithLabels([]string, float32, []gometrics.Label) {}
func (g *counters) EmitKey([]string, float32)                               {}
