package scheduler

import (
	"fmt"
	"maps"
	"time"
)

// NodeState is a node's role in the capacity plan.
type NodeState string

const (
	// StateActive nodes take traffic: their ingress serves and peers forward to them.
	StateActive NodeState = "active"
	// StateStandby nodes are running and joined but take no forwarded traffic;
	// their ingress still forwards to active nodes.
	StateStandby NodeState = "standby"
	// StateDraining nodes finish in-flight requests and take no new ones.
	StateDraining NodeState = "draining"
	// StateCordoned nodes are held out of rotation by an operator.
	StateCordoned NodeState = "cordoned"
)

// Valid reports whether s is one of the known node states.
func (s NodeState) Valid() bool {
	switch s {
	case StateActive, StateStandby, StateDraining, StateCordoned:
		return true
	}
	return false
}

// TakesTraffic reports whether peers may forward new requests to a node in
// state s.
func (s NodeState) TakesTraffic() bool { return s == StateActive }

// ParseNodeState converts a user-supplied string into a NodeState.
func ParseNodeState(s string) (NodeState, error) {
	st := NodeState(s)
	if !st.Valid() {
		return "", fmt.Errorf("unknown node state %q (want active, standby, draining or cordoned)", s)
	}
	return st, nil
}

// PlanNode is one node's entry in the capacity plan.
type PlanNode struct {
	State NodeState         `json:"state"`
	Zone  string            `json:"zone"`
	Tags  map[string]string `json:"tags,omitempty"`
	// Since is when the node entered State (set by the leader).
	Since time.Time `json:"since"`
	// Left is when the node left the cluster (gracefully or declared
	// dead); zero while it is a member. A node that comes back within the
	// retention window (--left-node-retention) returns to its State and
	// tags; after it, the leader removes the entry.
	Left time.Time `json:"left,omitzero"`
}

// Event is one entry of the plan's append-only audit log.
type Event struct {
	// Seq numbers every audit event from 1, plan changes and other
	// records (hook outcomes, dry-run decisions, rollbacks) alike.
	Seq uint64 `json:"seq"`
	// Version is the plan version this event produced, or for a record
	// that changes nothing the plan version it was made at.
	Version uint64    `json:"version"`
	Time    time.Time `json:"time"`
	// Who made the change: an operator token name, "autoscaler" or "membership".
	Who    string `json:"who"`
	Kind   string `json:"kind"`
	Node   string `json:"node,omitempty"`
	Why    string `json:"why"`
	Before string `json:"before,omitempty"`
	After  string `json:"after,omitempty"`
	// Metrics are the figures that triggered the change, e.g. the
	// autoscaler's metric readings.
	Metrics map[string]float64 `json:"metrics,omitempty"`
}

// Plan is the replicated capacity plan. The leader changes it through Raft;
// every node reads its local replica.
type Plan struct {
	// Version increases by one with every applied change.
	Version uint64              `json:"version"`
	Nodes   map[string]PlanNode `json:"nodes"`
}

// Clone returns a deep copy of p, safe to hand to another goroutine.
func (p Plan) Clone() Plan {
	out := Plan{Version: p.Version, Nodes: make(map[string]PlanNode, len(p.Nodes))}
	for name, n := range p.Nodes {
		n.Tags = maps.Clone(n.Tags)
		out.Nodes[name] = n
	}
	return out
}

// StateOf returns the plan state of node name, and false when the plan does
// not know the node yet.
func (p Plan) StateOf(name string) (NodeState, bool) {
	n, ok := p.Nodes[name]
	return n.State, ok
}
