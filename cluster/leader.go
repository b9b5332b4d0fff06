package cluster

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/store"
)

// LeaderHook is leader-only work that runs while this node leads (the
// autoscaler will be one). Establish runs after the Barrier; Revoke runs
// when leadership is lost, in reverse order of registration.
type LeaderHook interface {
	Establish() error
	Revoke()
}

// monitorLeadership reads raft's NotifyCh (buffered, so raft never blocks
// on us and no transition is lost, unlike LeaderCh) and runs one leader loop
// while this node leads.
func (c *Cluster) monitorLeadership() {
	var (
		loopStop chan struct{}
		loopWG   sync.WaitGroup
	)
	stopLoop := func() {
		if loopStop != nil {
			close(loopStop)
			loopWG.Wait()
			loopStop = nil
		}
	}
	defer stopLoop()
	for {
		select {
		case <-c.stop:
			return
		case isLeader := <-c.notifyCh:
			c.metrics.isLeader.Set(b2f(isLeader))
			switch {
			case isLeader && loopStop == nil:
				loopStop = make(chan struct{})
				loopWG.Add(1)
				go func(stop chan struct{}) {
					defer loopWG.Done()
					c.leaderLoop(stop)
				}(loopStop)
				c.log.Info("gained leadership")
			case !isLeader && loopStop != nil:
				stopLoop()
				c.log.Info("lost leadership")
			}
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// leaderLoop establishes leadership (Barrier first, so the FSM has every
// committed entry) and then reconciles membership with the Raft
// configuration and the plan on a timer and on member events.
func (c *Cluster) leaderLoop(stop chan struct{}) {
	for {
		err := c.raft.Barrier(c.cfg.ReconcileInterval * 5).Error()
		if err == nil {
			break
		}
		c.log.Warn("leader barrier failed; retrying", "error", err)
		select {
		case <-stop:
			return
		case <-time.After(c.cfg.ReconcileInterval):
		}
	}
	// Leader-only work starts after the Barrier and stops, in reverse
	// order, when leadership ends.
	establish := func() {
		for i, h := range c.deps.LeaderHooks {
			if err := h.Establish(); err != nil {
				c.log.Error("leader hook failed to start", "hook", i, "error", err)
			}
		}
	}
	revoke := func() {
		for i := len(c.deps.LeaderHooks) - 1; i >= 0; i-- {
			c.deps.LeaderHooks[i].Revoke()
		}
	}
	establish()
	defer revoke()
	missingSince := map[string]time.Time{}
	drains := map[string]drainMark{} // this term's notes on draining nodes
	t := time.NewTicker(c.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		c.reconcile(missingSince, drains, c.deps.Now())
		select {
		case <-stop:
			return
		case <-t.C:
		case <-c.reconcileCh:
		case <-c.restoredCh:
			// The state was replaced under the leader-only work (the
			// autoscaler's spec and state among it): start it over.
			c.log.Info("restarting leader hooks on the restored state")
			revoke()
			establish()
		}
	}
}

// reconcile brings the Raft configuration in line with gossip membership:
// alive members are added (voters up to MaxVoters), left members removed at
// once, dead or unknown ones after DeadServerGrace, and non-voters promoted
// into free voter seats. It also keeps the plan's node list in step.
func (c *Cluster) reconcile(missingSince map[string]time.Time, drains map[string]drainMark, now time.Time) {
	f := c.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		c.log.Warn("read raft configuration", "error", err)
		return
	}
	servers := f.Configuration().Servers
	inRaft := map[string]raft.Server{}
	voters := 0
	for _, s := range servers {
		inRaft[string(s.ID)] = s
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	c.mu.Lock()
	members := make(map[string]memberEntry, len(c.members))
	for name, e := range c.members {
		members[name] = *e
	}
	c.mu.Unlock()

	// Removals first, so their seats can be given to newcomers.
	for _, s := range servers {
		name := string(s.ID)
		if name == c.cfg.NodeName {
			continue
		}
		m, known := members[name]
		remove, why := false, ""
		switch {
		case c.refused(name):
			remove, why = true, "revoked"
		case known && m.status == StatusLeft:
			remove, why = true, "left the cluster"
		case known && (m.status == StatusAlive || m.status == StatusSuspect):
			delete(missingSince, name)
		default:
			since := m.since
			if !known {
				if _, ok := missingSince[name]; !ok {
					missingSince[name] = now
				}
				since = missingSince[name]
			}
			if now.Sub(since) >= c.cfg.DeadServerGrace {
				remove, why = true, fmt.Sprintf("dead for %s", now.Sub(since).Round(time.Second))
			}
		}
		if !remove {
			continue
		}
		if err := c.raft.RemoveServer(s.ID, 0, 0).Error(); err != nil {
			c.log.Warn("remove raft server", "peer", name, "error", err)
			continue
		}
		c.log.Info("removed server from raft", "peer", name, "reason", why)
		c.metrics.raftChanges.WithLabelValues("remove").Inc()
		delete(inRaft, name)
		delete(missingSince, name)
		if s.Suffrage == raft.Voter {
			voters--
		}
	}

	// Additions and address changes, in name order for determinism.
	names := make([]string, 0, len(members))
	for name := range members {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		m := members[name]
		if m.status != StatusAlive || m.meta.Raft == "" || m.meta.Leaving || c.foreign(m) || c.refused(name) {
			continue
		}
		s, ok := inRaft[name]
		if ok && string(s.Address) == m.meta.Raft {
			continue
		}
		id, addr := raft.ServerID(name), raft.ServerAddress(m.meta.Raft)
		var err error
		kind := "add_voter"
		switch {
		case ok && s.Suffrage == raft.Voter, !ok && voters < c.cfg.MaxVoters && !m.meta.NonVoter:
			err = c.raft.AddVoter(id, addr, 0, 0).Error()
			if err == nil && !ok {
				voters++
			}
		default:
			kind = "add_nonvoter"
			err = c.raft.AddNonvoter(id, addr, 0, 0).Error()
		}
		if err != nil {
			c.log.Warn("add raft server", "peer", name, "error", err)
			continue
		}
		c.log.Info("added server to raft", "peer", name, "addr", m.meta.Raft, "as", kind)
		c.metrics.raftChanges.WithLabelValues(kind).Inc()
		inRaft[name] = raft.Server{ID: id, Address: addr, Suffrage: map[bool]raft.ServerSuffrage{true: raft.Voter, false: raft.Nonvoter}[kind == "add_voter"]}
	}

	// Promote healthy non-voters into free voter seats.
	for _, name := range names {
		if voters >= c.cfg.MaxVoters {
			break
		}
		s, ok := inRaft[name]
		if !ok || s.Suffrage != raft.Nonvoter || members[name].status != StatusAlive || members[name].meta.NonVoter {
			continue
		}
		if err := c.raft.AddVoter(s.ID, s.Address, 0, 0).Error(); err != nil {
			c.log.Warn("promote raft server", "peer", name, "error", err)
			continue
		}
		voters++
		c.log.Info("promoted non-voter to voter", "peer", name)
		c.metrics.raftChanges.WithLabelValues("promote").Inc()
	}

	c.reconcilePlan(members, inRaft, drains, now)
}

// reconcilePlan keeps the plan's node list in step with the Raft
// configuration: servers get a plan entry (active by default), zone changes
// are recorded, and nodes no longer in Raft leave the plan.
func (c *Cluster) reconcilePlan(members map[string]memberEntry, inRaft map[string]raft.Server, drains map[string]drainMark, now time.Time) {
	plan := c.deps.Store.Plan()
	for name := range inRaft {
		m, known := members[name]
		if name == c.cfg.NodeName {
			m, known = memberEntry{meta: Meta{Zone: c.cfg.Zone, Tags: c.cfg.Tags}}, true
		}
		if !known {
			continue
		}
		pn, inPlan := plan.Nodes[name]
		if inPlan && pn.Zone == m.meta.Zone && maps.Equal(pn.Tags, m.meta.Tags) && pn.Left.IsZero() {
			continue
		}
		state, why := scheduler.StateActive, "joined the cluster"
		if c.deps.NewNodeState != nil && name != c.cfg.NodeName {
			if st := c.deps.NewNodeState(); st.Valid() {
				state, why = st, "joined the cluster (policy new_node_state: "+string(st)+")"
			}
		}
		cmd := store.Command{Op: store.OpNodeUpsert, Node: name, Zone: m.meta.Zone, Tags: m.meta.Tags, State: state,
			Time: now.UTC(), Who: "membership", Why: why}
		switch {
		case inPlan && !pn.Left.IsZero():
			cmd.State, cmd.Why = pn.State, fmt.Sprintf("came back after %s away; keeps its state", now.Sub(pn.Left).Round(time.Second))
		case inPlan:
			cmd.State, cmd.Why = pn.State, "zone or tags changed"
		}
		c.applyPlan(cmd)
	}
	c.finishDrains(plan, members, drains, now)
	// Nodes gone from Raft keep their entry, marked left, for
	// LeftNodeRetention: a node restarted (or the whole cluster) comes
	// back to its state, be it standby, cordoned or draining.
	for name, pn := range plan.Nodes {
		if _, ok := inRaft[name]; ok {
			continue
		}
		if pn.Left.IsZero() {
			why := "removed from raft"
			if m, ok := members[name]; ok {
				why = "member " + string(m.status)
			}
			c.applyPlan(store.Command{Op: store.OpNodeLeft, Node: name, Time: now.UTC(), Who: "membership",
				Why: why + fmt.Sprintf("; entry kept for %s", c.cfg.LeftNodeRetention)})
			continue
		}
		if now.Sub(pn.Left) >= c.cfg.LeftNodeRetention {
			c.applyPlan(store.Command{Op: store.OpNodeRemove, Node: name, Time: now.UTC(), Who: "membership",
				Why: fmt.Sprintf("gone for %s, beyond the retention of %s", now.Sub(pn.Left).Round(time.Second), c.cfg.LeftNodeRetention)})
		}
	}
}

// finishDrains moves draining nodes to standby once they report no
// in-flight requests in a load summary made after they had time to see the
// drain, or when DrainTimeout has passed.
//
// "Made after" is judged without comparing clocks: a summary's version
// comes from the draining node's clock, which may differ from this one's.
// The leader notes the version it sees when it first finds the node
// draining and, by its own clock, when; a later summary (a larger
// version) that arrives at least drainSettle after that is believed.
// The notes live for one term: a new leader starts afresh, which at
// worst lengthens a drain by drainSettle.
func (c *Cluster) finishDrains(plan scheduler.Plan, members map[string]memberEntry, drains map[string]drainMark, now time.Time) {
	for name, mark := range drains {
		if pn, ok := plan.Nodes[name]; !ok || pn.State != scheduler.StateDraining || !pn.Since.Equal(mark.since) {
			delete(drains, name)
		}
	}
	for name, pn := range plan.Nodes {
		if pn.State != scheduler.StateDraining {
			continue
		}
		var load *scheduler.Load
		if m, ok := members[name]; ok && len(m.meta.Load) > 0 {
			if l, err := scheduler.DecodeLoad(m.meta.Load); err == nil {
				load = &l
			}
		}
		mark, seen := drains[name]
		if !seen {
			mark = drainMark{since: pn.Since, at: now}
			if load != nil {
				mark.version = load.Version
			}
			drains[name] = mark
		}
		why := ""
		if mark.drained(load, now) {
			why = "drain finished: no requests in flight"
		}
		if why == "" && now.Sub(pn.Since) >= c.cfg.DrainTimeout {
			why = fmt.Sprintf("drain timed out after %s", c.cfg.DrainTimeout)
		}
		if why == "" {
			continue
		}
		c.applyPlan(store.Command{Op: store.OpNodeState, Node: name, State: scheduler.StateStandby,
			Time: now.UTC(), Who: "membership", Why: why})
	}
}

// drainMark is what the leader noted when it first saw a node draining:
// the drain (by its start in the plan), the node's load-summary version
// then, and the leader's time.
type drainMark struct {
	since   time.Time
	version uint64
	at      time.Time
}

// drained reports whether load, seen at now, shows the node done: nothing
// in flight, in a summary newer than the one noted, arriving drainSettle
// or more after the note (all by the leader's clock and the node's own
// version order).
func (m drainMark) drained(load *scheduler.Load, now time.Time) bool {
	return load != nil && load.Inflight == 0 && load.Version > m.version && now.Sub(m.at) >= drainSettle
}

// drainSettle is how long after the leader first sees a drain a node's
// load summary must arrive before its "nothing in flight" is believed:
// by then the plan has reached every node and nobody sends it new
// requests.
const drainSettle = time.Second

func (c *Cluster) applyPlan(cmd store.Command) {
	b, err := store.EncodeCommand(cmd)
	if err == nil {
		_, err = c.Apply(b, 5*time.Second)
	}
	if err != nil {
		c.log.Warn("update plan", "op", cmd.Op, "node", cmd.Node, "error", err)
		return
	}
	c.log.Info("plan updated", "op", cmd.Op, "node", cmd.Node, "why", cmd.Why)
}

func sortServers(s []raft.Server) {
	slices.SortFunc(s, func(a, b raft.Server) int { return cmp.Compare(a.ID, b.ID) })
}

// Apply replicates cmd (already encoded) through Raft and returns the
// FSM's response. It fails with ErrNotLeader on followers.
func (c *Cluster) Apply(cmd []byte, timeout time.Duration) (any, error) {
	if c.raft.State() != raft.Leader {
		return nil, ErrNotLeader
	}
	f := c.raft.Apply(cmd, timeout)
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return nil, fmt.Errorf("%w: %v", ErrNotLeader, err)
		}
		return nil, fmt.Errorf("raft apply: %w", err)
	}
	if err, ok := f.Response().(error); ok {
		return nil, err
	}
	return f.Response(), nil
}
