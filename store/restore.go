package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/loadmesh/loadmesh/scheduler"
)

// KindRestore is the audit event kind of a snapshot restore.
const KindRestore = "snapshot.restore"

// Summary is what a state holds, in figures: what `loadmesh snapshot
// inspect` prints. It carries no secrets (no token hashes or names).
type Summary struct {
	PlanVersion uint64 `json:"plan_version"`
	// Nodes counts plan nodes by state; Left how many of them are marked
	// as gone from the cluster.
	Nodes map[scheduler.NodeState]int `json:"nodes"`
	Left  int                         `json:"left,omitempty"`
	// Spec is set when a scaling spec is applied; SpecPlanVersion is the
	// plan version that introduced it, SpecHistory the earlier ones kept.
	Spec            bool   `json:"spec"`
	SpecPlanVersion uint64 `json:"spec_plan_version,omitempty"`
	SpecHistory     int    `json:"spec_history"`
	// Tokens counts API tokens by role.
	Tokens map[Role]int `json:"tokens"`
	// Events is the number of audit events, from FirstEvent to LastEvent;
	// AuditSeq the newest event's sequence number.
	Events     int       `json:"events"`
	FirstEvent time.Time `json:"first_event,omitzero"`
	LastEvent  time.Time `json:"last_event,omitzero"`
	AuditSeq   uint64    `json:"audit_seq"`
	// History is the number of per-minute demand points, from HistoryFrom
	// to HistoryTo.
	History     int       `json:"history"`
	HistoryFrom time.Time `json:"history_from,omitzero"`
	HistoryTo   time.Time `json:"history_to,omitzero"`
	// Autoscaler is set when the state holds the autoscaler's state.
	Autoscaler bool `json:"autoscaler"`
	// GossipKeys are the gossip keyring's fingerprints (never the keys),
	// GossipPrimary the primary's; Revoked counts revoked nodes.
	GossipKeys    []string `json:"gossip_keys,omitempty"`
	GossipPrimary string   `json:"gossip_primary,omitempty"`
	Revoked       int      `json:"revoked_nodes,omitempty"`
}

// Summarize counts what st holds.
func Summarize(st State) Summary {
	s := Summary{
		PlanVersion: st.Plan.Version, Nodes: map[scheduler.NodeState]int{}, Tokens: map[Role]int{},
		Spec: st.Spec.PlanVersion != 0, SpecPlanVersion: st.Spec.PlanVersion, SpecHistory: len(st.SpecHistory),
		Events: len(st.Events), AuditSeq: st.AuditSeq, History: len(st.History), Autoscaler: len(st.Autoscaler) > 0,
	}
	for _, n := range st.Plan.Nodes {
		s.Nodes[n.State]++
		if !n.Left.IsZero() {
			s.Left++
		}
	}
	for _, t := range st.Tokens {
		s.Tokens[t.Role]++
	}
	for i, e := range st.Events {
		if i == 0 || e.Time.Before(s.FirstEvent) {
			s.FirstEvent = e.Time
		}
		if e.Time.After(s.LastEvent) {
			s.LastEvent = e.Time
		}
	}
	if n := len(st.History); n > 0 {
		s.HistoryFrom, s.HistoryTo = st.History[0].Minute, st.History[n-1].Minute
	}
	if len(st.Keyring.Keys) > 0 {
		s.GossipKeys, s.GossipPrimary = st.Keyring.Fingerprints(), st.Keyring.Primary
	}
	s.Revoked = len(st.Revoked)
	return s
}

// Summary counts what f's state holds now.
func (f *FSM) Summary() Summary {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return Summarize(f.st)
}

// ValidateState reports what is wrong with a state that comes from outside
// the cluster (a backup file) before it replaces the cluster's: what the
// commands that build a state would never have let in.
func ValidateState(st State) error {
	var errs []error
	for name, n := range st.Plan.Nodes {
		if name == "" || len(name) > 128 {
			errs = append(errs, fmt.Errorf("plan node name %q is not 1 to 128 bytes", name))
		}
		if !n.State.Valid() {
			errs = append(errs, fmt.Errorf("plan node %q has state %q", name, n.State))
		}
	}
	if len(st.Tokens) > MaxTokens {
		errs = append(errs, fmt.Errorf("%d tokens; at most %d", len(st.Tokens), MaxTokens))
	}
	ids := map[string]string{}
	for name, t := range st.Tokens {
		if t.Name != name {
			errs = append(errs, fmt.Errorf("token %q is filed under %q", t.Name, name))
		}
		if err := validateToken(&t, OpTokenCreate); err != nil {
			errs = append(errs, fmt.Errorf("token %q: %w", name, err))
		}
		if other, dup := ids[t.ID]; dup {
			errs = append(errs, fmt.Errorf("tokens %q and %q share the id %s", other, name, t.ID))
		}
		ids[t.ID] = name
	}
	for i := 1; i < len(st.History); i++ {
		if !st.History[i].Minute.After(st.History[i-1].Minute) {
			errs = append(errs, errors.New("demand history is not in time order"))
			break
		}
	}
	for _, r := range append(slices.Clone(st.SpecHistory), st.Spec) {
		if len(r.Doc) > 0 && !json.Valid(r.Doc) {
			errs = append(errs, fmt.Errorf("spec of plan version %d is not a JSON document", r.PlanVersion))
		}
	}
	return errors.Join(errs...)
}

// PrepareRestore returns the snapshot encoding of the state a restore of
// st installs, and the audit event ev (Who, Why, Before, After and Time
// set by the caller) as it is recorded there. st is validated first
// (ValidateState). The event is appended to st's audit log, so that
// every node gets it with the state; it is a plan change whose version,
// like its sequence number, goes on from the higher of f's and st's, so
// that neither goes back for anyone watching them.
//
// Call it on the leader right before the restore: a change applied in
// between may share the version number of the restore.
func (f *FSM) PrepareRestore(st State, ev scheduler.Event) ([]byte, scheduler.Event, error) {
	if err := ValidateState(st); err != nil {
		return nil, ev, fmt.Errorf("restore: %w", err)
	}
	f.mu.RLock()
	version, seq := f.st.Plan.Version, f.st.AuditSeq
	f.mu.RUnlock()
	st.Plan.Version = max(st.Plan.Version, version) + 1
	st.AuditSeq = max(st.AuditSeq, seq) + 1
	ev.Kind, ev.Version, ev.Seq = KindRestore, st.Plan.Version, st.AuditSeq
	events := append(slices.Clone(st.Events), ev)
	if over := len(events) - f.auditLimit; over > 0 {
		events = events[over:]
	}
	st.Events = events
	body, err := encodeState(st)
	if err != nil {
		return nil, ev, err
	}
	return body, ev, nil
}

// encodeState is the FSM's snapshot encoding of st.
func encodeState(st State) ([]byte, error) {
	body, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("snapshot plan: %w", err)
	}
	return append([]byte{snapshotVersion1}, body...), nil
}
