package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/scheduler/cost"
)

// snapshotVersion1 is the first byte of every snapshot this version writes.
const snapshotVersion1 byte = 1

// DefaultAuditLimit is how many audit events the plan keeps.
const DefaultAuditLimit = 10000

// ErrUnknownNode is returned (as an Apply response) for a change to a node
// the plan does not hold.
var ErrUnknownNode = errors.New("node is not in the plan")

// State is what the FSM replicates and snapshots.
type State struct {
	Plan   scheduler.Plan    `json:"plan"`
	Events []scheduler.Event `json:"events"`
	// Spec is the current scaling spec; SpecHistory the earlier ones,
	// oldest first, for rollback.
	Spec        SpecRecord   `json:"spec"`
	SpecHistory []SpecRecord `json:"spec_history,omitempty"`
	// Autoscaler is the leader's autoscaler state.
	Autoscaler json.RawMessage `json:"autoscaler,omitempty"`
	// History is per-minute cluster demand, oldest first, bounded.
	History []DemandPoint `json:"history,omitempty"`
	// AuditSeq is the Seq of the newest audit event.
	AuditSeq uint64 `json:"audit_seq,omitempty"`
	// Tokens are the API tokens by name (hashes, never secrets).
	Tokens map[string]Token `json:"tokens,omitempty"`
	// TokensBootstrapped is set once the first operator token exists.
	TokensBootstrapped bool `json:"tokens_bootstrapped,omitempty"`
	// Cost holds the newest cost records, oldest first, bounded
	// (store/cost.go); CostTotals and CostMonth add up every record ever
	// applied, and those of the newest record's calendar month.
	Cost       []cost.Record `json:"cost,omitempty"`
	CostTotals cost.Totals   `json:"cost_totals,omitzero"`
	CostMonth  CostMonth     `json:"cost_month,omitzero"`
	// Keyring is the gossip keyring (keyring.go); Revoked the revoked
	// nodes by name (revoke.go).
	Keyring Keyring                `json:"keyring,omitzero"`
	Revoked map[string]RevokedNode `json:"revoked,omitempty"`
}

// SpecRecord is one version of the scaling spec.
type SpecRecord struct {
	// PlanVersion is the plan version that introduced this spec (0: none yet).
	PlanVersion uint64          `json:"plan_version"`
	Time        time.Time       `json:"time"`
	Who         string          `json:"who"`
	Why         string          `json:"why"`
	Doc         json.RawMessage `json:"doc,omitempty"`
}

// Limits bound what the state keeps.
const (
	// DefaultSpecHistory is how many earlier specs are kept for rollback.
	DefaultSpecHistory = 50
	// DefaultHistoryMinutes is 14 days of per-minute demand.
	DefaultHistoryMinutes = 14 * 24 * 60
)

// FSM is the capacity plan as a raft.FSM. Create it with NewFSM and hand
// FSM.Raft() to raft.NewRaft. Plan and Events are safe to call at any time.
type FSM struct {
	log        *slog.Logger
	auditLimit int
	metrics    *metrics

	mu sync.RWMutex
	st State
	// tokenIDs indexes st.Tokens by ID.
	tokenIDs map[string]string

	// secCh is closed at the next keyring or revocation change (keyring.go).
	secMu sync.Mutex
	secCh chan struct{}
}

// NewFSM returns an empty plan. reg may be nil.
func NewFSM(log *slog.Logger, reg prometheus.Registerer) *FSM {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &FSM{
		log:        log.With("component", "store"),
		auditLimit: DefaultAuditLimit,
		metrics:    newMetrics(reg),
		st:         State{Plan: scheduler.Plan{Nodes: map[string]scheduler.PlanNode{}}},
		tokenIDs:   map[string]string{},
	}
	if reg != nil {
		reg.MustRegister(planNodesCollector{f}) // metrics_plan.go
	}
	return f
}

// Plan returns a copy of the current plan.
func (f *FSM) Plan() scheduler.Plan {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.Plan.Clone()
}

// Events returns a copy of the newest n audit events (all when n <= 0),
// oldest first.
func (f *FSM) Events(n int) []scheduler.Event {
	f.mu.RLock()
	defer f.mu.RUnlock()
	ev := f.st.Events
	if n > 0 && len(ev) > n {
		ev = ev[len(ev)-n:]
	}
	return append([]scheduler.Event(nil), ev...)
}

// Spec returns the current scaling spec record.
func (f *FSM) Spec() SpecRecord {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.Spec
}

// SpecHistory returns the earlier specs, oldest first.
func (f *FSM) SpecHistory() []SpecRecord {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return append([]SpecRecord(nil), f.st.SpecHistory...)
}

// SpecAt returns the spec introduced at plan version v, current or earlier.
func (f *FSM) SpecAt(v uint64) (SpecRecord, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.st.Spec.PlanVersion == v && v != 0 {
		return f.st.Spec, true
	}
	for _, r := range f.st.SpecHistory {
		if r.PlanVersion == v {
			return r, true
		}
	}
	return SpecRecord{}, false
}

// AutoscalerState returns the last recorded autoscaler state.
func (f *FSM) AutoscalerState() json.RawMessage {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return append(json.RawMessage(nil), f.st.Autoscaler...)
}

// History returns the per-minute demand since t.
func (f *FSM) History(since time.Time) []DemandPoint {
	f.mu.RLock()
	defer f.mu.RUnlock()
	i, _ := slices.BinarySearchFunc(f.st.History, since, func(p DemandPoint, t time.Time) int { return p.Minute.Compare(t) })
	return append([]DemandPoint(nil), f.st.History[i:]...)
}

// Raft returns the adapter to pass to raft.NewRaft. It keeps the raft
// callback methods off FSM's exported API.
func (f *FSM) Raft() raft.FSM { return (*fsmAdapter)(f) }

// apply changes the State for one decoded command and returns the event it
// produced. The caller holds f.mu.
func (f *FSM) apply(c Command) (scheduler.Event, error) {
	p := &f.st.Plan
	before, known := p.Nodes[c.Node]
	ev := scheduler.Event{Time: c.Time, Who: c.Who, Why: c.Why, Node: c.Node, Kind: string(c.Op), Metrics: c.Metrics}
	switch c.Op {
	case OpNodeUpsert:
		n := before
		if !known {
			n = scheduler.PlanNode{State: c.State, Since: c.Time}
		} else {
			ev.Before = describe(before)
		}
		n.Zone = c.Zone
		n.Tags = c.Tags
		n.Left = time.Time{}
		p.Nodes[c.Node] = n
		ev.After = describe(n)
	case OpNodeState:
		if !known {
			return ev, fmt.Errorf("%w: %q", ErrUnknownNode, c.Node)
		}
		n := before
		ev.Before = describe(before)
		if n.State != c.State {
			n.State, n.Since = c.State, c.Time
		}
		p.Nodes[c.Node] = n
		ev.After = describe(n)
	case OpNodeLeft:
		if !known {
			return ev, fmt.Errorf("%w: %q", ErrUnknownNode, c.Node)
		}
		n := before
		ev.Before = describe(before)
		n.Left = c.Time
		p.Nodes[c.Node] = n
		ev.After = describe(n)
	case OpNodeRemove:
		if !known {
			return ev, fmt.Errorf("%w: %q", ErrUnknownNode, c.Node)
		}
		ev.Before = describe(before)
		delete(p.Nodes, c.Node)
	case OpSpecApply:
		prev := f.st.Spec
		if prev.PlanVersion != 0 {
			f.st.SpecHistory = append(f.st.SpecHistory, prev)
			if over := len(f.st.SpecHistory) - DefaultSpecHistory; over > 0 {
				f.st.SpecHistory = append(f.st.SpecHistory[:0:0], f.st.SpecHistory[over:]...)
			}
			ev.Before = fmt.Sprintf("spec of plan version %d", prev.PlanVersion)
		}
		f.st.Spec = SpecRecord{PlanVersion: p.Version + 1, Time: c.Time, Who: c.Who, Why: c.Why, Doc: c.Doc}
		ev.After = fmt.Sprintf("spec of plan version %d", p.Version+1)
	case OpAutoscalerState:
		// Not a plan change: no version bump, no audit entry.
		f.st.Autoscaler = c.Doc
		return scheduler.Event{}, nil
	case OpHistoryAppend:
		for _, pt := range c.Points {
			if n := len(f.st.History); n > 0 && !pt.Minute.After(f.st.History[n-1].Minute) {
				continue // duplicate or out of order: keep the first
			}
			f.st.History = append(f.st.History, pt)
		}
		if over := len(f.st.History) - DefaultHistoryMinutes; over > 0 {
			f.st.History = append(f.st.History[:0:0], f.st.History[over:]...)
		}
		return scheduler.Event{}, nil
	case OpRecord:
		ev.Kind, ev.Before, ev.After = c.Kind, c.Before, c.After
		ev.Version = p.Version
		return f.record(ev), nil
	case OpTokenCreate, OpTokenRevoke, OpTokenUse:
		return f.applyToken(c, ev)
	case OpCostAppend:
		// Not a plan change: no version bump, no audit entry.
		f.applyCost(*c.Cost)
		return scheduler.Event{}, nil
	case OpKeyringInstall, OpKeyringUse, OpKeyringRemove:
		return f.applyKeyring(c, ev)
	case OpNodeRevoke:
		return f.applyRevoke(c, ev)
	}
	p.Version++
	ev.Version = p.Version
	return f.record(ev), nil
}

// record appends ev to the bounded audit log with the next Seq. The caller
// holds f.mu.
func (f *FSM) record(ev scheduler.Event) scheduler.Event {
	f.st.AuditSeq++
	ev.Seq = f.st.AuditSeq
	f.st.Events = append(f.st.Events, ev)
	if over := len(f.st.Events) - f.auditLimit; over > 0 {
		f.st.Events = append(f.st.Events[:0:0], f.st.Events[over:]...)
	}
	return ev
}

func describe(n scheduler.PlanNode) string {
	s := fmt.Sprintf("state=%s zone=%s", n.State, n.Zone)
	if !n.Left.IsZero() {
		s += " left"
	}
	for _, k := range slices.Sorted(maps.Keys(n.Tags)) {
		s += fmt.Sprintf(" %s=%s", k, n.Tags[k])
	}
	return s
}

// fsmAdapter implements raft.FSM for FSM.
type fsmAdapter FSM

var (
	_ raft.FSM         = (*fsmAdapter)(nil)
	_ raft.FSMSnapshot = (*fsmSnapshot)(nil)
)

// Apply is called by raft once a log entry is committed, on raft's FSM
// goroutine. It returns either a scheduler.Event or an error.
func (a *fsmAdapter) Apply(l *raft.Log) any {
	f := (*FSM)(a)
	c, err := DecodeCommand(l.Data)
	if err != nil {
		f.metrics.applyErrors.Inc()
		f.log.Error("cannot decode plan command", "index", l.Index, "error", err)
		return err
	}
	f.mu.Lock()
	ev, err := f.apply(c)
	version := f.st.Plan.Version
	f.mu.Unlock()
	if err != nil {
		f.metrics.applyErrors.Inc()
		f.log.Warn("plan command rejected", "index", l.Index, "op", c.Op, "node", c.Node, "error", err)
		return err
	}
	f.metrics.planVersion.Set(float64(version))
	f.log.Debug("plan changed", "index", l.Index, "plan_version", version, "op", c.Op, "node", c.Node)
	return ev
}

// Snapshot copies the State; Persist runs later, concurrently with Apply.
func (a *fsmAdapter) Snapshot() (raft.FSMSnapshot, error) {
	f := (*FSM)(a)
	f.mu.RLock()
	defer f.mu.RUnlock()
	data, err := encodeState(f.st)
	if err != nil {
		return nil, err
	}
	return &fsmSnapshot{data: data}, nil
}

// Restore replaces the State with a snapshot's.
func (a *fsmAdapter) Restore(rc io.ReadCloser) error {
	f := (*FSM)(a)
	defer rc.Close()
	st, err := DecodeSnapshot(rc)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.st = st
	f.tokenIDs = indexTokens(st.Tokens)
	f.mu.Unlock()
	f.notifySecurity()
	f.metrics.planVersion.Set(float64(st.Plan.Version))
	return nil
}

// DecodeSnapshot reads a snapshot written by the FSM.
func DecodeSnapshot(r io.Reader) (State, error) {
	var st State
	b, err := io.ReadAll(io.LimitReader(r, 1<<30))
	if err != nil {
		return st, fmt.Errorf("read snapshot: %w", err)
	}
	if len(b) == 0 || b[0] != snapshotVersion1 {
		return st, errors.New("restore snapshot: unknown or missing format version")
	}
	if err := json.Unmarshal(b[1:], &st); err != nil {
		return st, fmt.Errorf("restore snapshot: %w", err)
	}
	if st.Plan.Nodes == nil {
		st.Plan.Nodes = map[string]scheduler.PlanNode{}
	}
	// Snapshots from before audit sequence numbers: every event then was a
	// plan change with its own version, which keeps the order.
	for i := range st.Events {
		if st.Events[i].Seq == 0 {
			st.Events[i].Seq = st.Events[i].Version
		}
		st.AuditSeq = max(st.AuditSeq, st.Events[i].Seq)
	}
	return st, nil
}

type fsmSnapshot struct{ data []byte }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s.data); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
