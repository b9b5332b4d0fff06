package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/loadmesh/loadmesh/scheduler"
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
)

// Command is one change to the plan, proposed by the leader.
type Command struct {
	Op    Op                  `json:"op"`
	Node  string              `json:"node"`
	Zone  string              `json:"zone,omitempty"`
	Tags  map[string]string   `json:"tags,omitempty"`
	State scheduler.NodeState `json:"state,omitempty"`
	// Time is set by the proposer so every replica records the same instant.
	Time time.Time `json:"time"`
	Who  string    `json:"who"`
	Why  string    `json:"why"`
}

// Validate reports what is wrong with c, if anything.
func (c Command) Validate() error {
	var errs []error
	switch c.Op {
	case OpNodeUpsert, OpNodeState:
		if !c.State.Valid() {
			errs = append(errs, fmt.Errorf("state %q is not a node state", c.State))
		}
	case OpNodeRemove:
	default:
		errs = append(errs, fmt.Errorf("unknown op %q", c.Op))
	}
	if c.Node == "" {
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
