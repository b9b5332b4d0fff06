package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/scheduler/cost"
)

// commandVersion1 is the first byte of every command this version writes.
const commandVersion1 byte = 1

// maxCommandSize bounds what Decode accepts; plan commands are small.
const maxCommandSize = 1 << 20

// Op names a plan change.
type Op string

const (
	// OpNodeUpsert adds a node to the plan or updates its zone and tags. A
	// new node enters the state given in the command.
	OpNodeUpsert Op = "node.upsert"
	// OpNodeState moves an existing node to another state.
	OpNodeState Op = "node.state"
	// OpNodeRemove drops a node from the plan.
	OpNodeRemove Op = "node.remove"
	// OpNodeLeft marks a node as gone from the cluster, keeping its entry
	// (state, tags) for its return; a later node.upsert clears the mark.
	OpNodeLeft Op = "node.left"
	// OpSpecApply replaces the scaling spec (policy, schedules, hooks) with
	// Doc, a JSON document the leader has validated. The previous spec is
	// kept in the spec history for rollback.
	OpSpecApply Op = "spec.apply"
	// OpAutoscalerState records the autoscaler's internal state (Doc), so
	// that a new leader continues where the old one stopped.
	OpAutoscalerState Op = "autoscaler.state"
	// OpHistoryAppend adds per-minute demand aggregates (Points).
	OpHistoryAppend Op = "history.append"
	// OpRecord appends an audit event of kind Kind that changes nothing
	// in the plan: a hook's outcome, a dry-run decision, a rollback.
	OpRecord Op = "audit.record"
	// OpTokenCreate adds the API token Token (its secret's hash, never the
	// secret). With Token.Bootstrap set it is the cluster's first operator
	// token, which is created once.
	OpTokenCreate Op = "token.create"
	// OpTokenRevoke deletes the API token named Token.Name.
	OpTokenRevoke Op = "token.revoke"
	// OpCostAppend adds the leader's cost record (Cost) for one period and
	// adds it to the cumulative cost totals (store/cost.go).
	OpCostAppend Op = "cost.append"
	// OpTokenUse spends one use of the join token named Token.Name for
	// the node Node; After describes what was issued with it (certificate
	// serial and expiry). It fails, changing nothing, for a token that is
	// unknown, not a join token, expired or used up.
	OpTokenUse Op = "token.use"
)

// DemandPoint is one minute of cluster demand.
type DemandPoint struct {
	Minute time.Time `json:"t"`
	// RPS is the mean cluster requests/s over the minute; MaxRPS the
	// highest reading in it.
	RPS    float64 `json:"rps"`
	MaxRPS float64 `json:"max_rps,omitempty"`
	// P95 is the worst node p95 latency in seconds.
	P95 float64 `json:"p95,omitempty"`
	// Active is the number of active nodes at the end of the minute.
	Active int `json:"active"`
}

// Command is one change to the plan, proposed by the leader.
type Command struct {
	Op    Op                  `json:"op"`
	Node  string              `json:"node"`
	Zone  string              `json:"zone,omitempty"`
	Tags  map[string]string   `json:"tags,omitempty"`
	State scheduler.NodeState `json:"state,omitempty"`
	// Doc is the JSON body of spec.apply and autoscaler.state.
	Doc json.RawMessage `json:"doc,omitempty"`
	// Points are the demand aggregates of history.append.
	Points []DemandPoint `json:"points,omitempty"`
	// Time is set by the proposer so every replica records the same instant.
	Time time.Time `json:"time"`
	Who  string    `json:"who"`
	Why  string    `json:"why"`
	// Kind is the event kind of audit.record, e.g. "hook.scale_out".
	Kind string `json:"kind,omitempty"`
	// Before and After describe an audit.record's subject (e.g. a hook's
	// request and outcome); plan changes describe themselves.
	Before string `json:"before,omitempty"`
	After  string `json:"after,omitempty"`
	// Metrics are the figures behind a change, kept in its audit event.
	Metrics map[string]float64 `json:"metrics,omitempty"`
	// Token is the subject of token.create and token.revoke (by name).
	Token *Token `json:"token,omitempty"`
	// Cost is the record of cost.append.
	Cost *cost.Record `json:"cost,omitempty"`
	// Key is the gossip key of keyring.install; KeyID the fingerprint
	// (KeyFingerprint) of keyring.use and keyring.remove.
	Key   []byte `json:"key,omitempty"`
	KeyID string `json:"key_id,omitempty"`
}

// Validate reports what is wrong with c, if anything.
func (c Command) Validate() error {
	var errs []error
	switch c.Op {
	case OpNodeUpsert, OpNodeState:
		if !c.State.Valid() {
			errs = append(errs, fmt.Errorf("state %q is not a node state", c.State))
		}
	case OpNodeRemove, OpNodeLeft:
	case OpSpecApply, OpAutoscalerState:
		if !json.Valid(c.Doc) {
			errs = append(errs, errors.New("doc is not a JSON document"))
		}
	case OpHistoryAppend:
		if len(c.Points) == 0 {
			errs = append(errs, errors.New("no history points"))
		}
	case OpRecord:
		if c.Kind == "" || len(c.Kind) > 64 {
			errs = append(errs, errors.New("audit record kind must be 1 to 64 bytes"))
		}
	case OpTokenCreate, OpTokenRevoke, OpTokenUse:
		if err := validateToken(c.Token, c.Op); err != nil {
			errs = append(errs, err)
		}
	case OpCostAppend:
		if err := validateCostRecord(c.Cost); err != nil {
			errs = append(errs, err)
		}
	case OpKeyringInstall, OpKeyringUse, OpKeyringRemove:
		if err := validateKeyringCommand(c); err != nil {
			errs = append(errs, err)
		}
	case OpNodeRevoke:
	default:
		errs = append(errs, fmt.Errorf("unknown op %q", c.Op))
	}
	if c.Node == "" && (c.Op == OpNodeUpsert || c.Op == OpNodeState || c.Op == OpNodeRemove || c.Op == OpNodeLeft || c.Op == OpNodeRevoke) {
		errs = append(errs, errors.New("node name is empty"))
	}
	if c.Time.IsZero() {
		errs = append(errs, errors.New("time is not set"))
	}
	return errors.Join(errs...)
}

// EncodeCommand serialises c for raft.Apply.
func EncodeCommand(c Command) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("invalid command: %w", err)
	}
	body, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode command: %w", err)
	}
	return append([]byte{commandVersion1}, body...), nil
}

// DecodeCommand parses what EncodeCommand wrote.
func DecodeCommand(b []byte) (Command, error) {
	var c Command
	if len(b) == 0 {
		return c, errors.New("decode command: empty")
	}
	if len(b) > maxCommandSize {
		return c, fmt.Errorf("decode command: %d bytes exceeds limit of %d", len(b), maxCommandSize)
	}
	if b[0] != commandVersion1 {
		return c, fmt.Errorf("decode command: unknown format version %d", b[0])
	}
	if err := json.Unmarshal(b[1:], &c); err != nil {
		return c, fmt.Errorf("decode command: %w", err)
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("decode command: %w", err)
	}
	return c, nil
}
