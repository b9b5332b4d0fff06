package agent

import (
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/scheduler/autoscale"
	"github.com/loadmesh/loadmesh/store"
)

// autoscalerHook runs the autoscaler on the leader: every control interval
// it observes the plan and the gossiped load, asks autoscale.Autoscaler for
// a Decision, and applies it through Raft (who: "autoscaler"). Its state and
// the demand history go into the replicated store, so a new leader goes on
// where the old one stopped. With no spec applied the cluster is in manual
// mode and the hook does nothing.
type autoscalerHook struct {
	a *Agent

	mu   sync.Mutex
	stop chan struct{}
	wg   sync.WaitGroup
	last *autoscale.Decision
}

var _ cluster.LeaderHook = (*autoscalerHook)(nil)

func (h *autoscalerHook) Establish() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stop = make(chan struct{})
	h.wg.Add(1)
	go h.loop(h.stop)
	return nil
}

func (h *autoscalerHook) Revoke() {
	h.mu.Lock()
	stop := h.stop
	h.stop = nil
	h.mu.Unlock()
	if stop != nil {
		close(stop)
	}
	h.wg.Wait()
}

func (h *autoscalerHook) lastDecision() *autoscale.Decision {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last
}

func (h *autoscalerHook) loop(stop chan struct{}) {
	defer h.wg.Done()
	var (
		as      *autoscale.Autoscaler
		specVer uint64
	)
	interval := 15 * time.Second
	t := time.NewTimer(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		rec := h.a.fsm.Spec()
		if rec.PlanVersion == 0 {
			as, specVer = nil, 0
			t.Reset(interval)
			continue
		}
		if rec.PlanVersion != specVer {
			var spec autoscale.Spec
			if err := json.Unmarshal(rec.Doc, &spec); err != nil {
				h.a.log.Error("stored scaling spec is unreadable; autoscaler idle", "plan_version", rec.PlanVersion, "error", err)
				specVer = rec.PlanVersion
				t.Reset(interval)
				continue
			}
			if as == nil {
				var err error
				if as, err = autoscale.New(spec); err != nil {
					h.a.log.Error("autoscaler", "error", err)
					t.Reset(interval)
					continue
				}
				h.restore(as)
			} else if err := as.SetSpec(spec); err != nil {
				h.a.log.Error("autoscaler spec", "error", err)
			}
			specVer = rec.PlanVersion
			interval = spec.Interval.D()
		}
		h.step(as)
		t.Reset(interval)
	}
}

// restore continues from the state the previous leader recorded.
func (h *autoscalerHook) restore(as *autoscale.Autoscaler) {
	raw := h.a.fsm.AutoscalerState()
	if len(raw) == 0 {
		return
	}
	var st autoscale.State
	if err := json.Unmarshal(raw, &st); err != nil {
		h.a.log.Warn("previous autoscaler state is unreadable; starting fresh", "error", err)
		return
	}
	var hist []autoscale.MinutePoint
	for _, p := range h.a.fsm.History(time.Now().Add(-15 * 24 * time.Hour)) {
		hist = append(hist, autoscale.MinutePoint{Minute: p.Minute, MeanRPS: p.RPS, MaxRPS: max(p.MaxRPS, p.RPS)})
	}
	if err := as.Restore(st, hist); err != nil {
		h.a.log.Warn("restore autoscaler state", "error", err)
	}
}

func (h *autoscalerHook) step(as *autoscale.Autoscaler) {
	now := time.Now()
	d := as.Step(now, h.observe())
	h.mu.Lock()
	h.last = &d
	h.mu.Unlock()
	if !d.DryRun {
		for _, act := range d.Activate {
			h.setState(act, scheduler.StateActive, now)
		}
		for _, act := range d.Drain {
			h.setState(act, scheduler.StateDraining, now)
		}
	}
	if d.DryRun && d.Changes() {
		h.a.log.Info("autoscaler dry run", "desired", d.Desired, "active", d.Active, "activate", len(d.Activate), "drain", len(d.Drain), "reason", d.Reason)
	}
	for _, hk := range d.Hooks {
		// Hook execution (commands and webhooks) is not wired yet: say
		// what would be asked for.
		h.a.log.Warn("autoscaler wants a provisioner hook, which is not configured to run yet", "kind", string(hk.Kind), "zone", hk.Zone, "count", hk.Count, "nodes", hk.Nodes, "why", hk.Why)
	}
	if st, err := json.Marshal(as.State()); err == nil {
		h.a.apply(store.Command{Op: store.OpAutoscalerState, Doc: st, Time: now.UTC(), Who: "autoscaler"})
	}
	if len(d.History) > 0 {
		pts := make([]store.DemandPoint, 0, len(d.History))
		for _, p := range d.History {
			pts = append(pts, store.DemandPoint{Minute: p.Minute, RPS: p.MeanRPS, MaxRPS: p.MaxRPS, Active: d.Active})
		}
		h.a.apply(store.Command{Op: store.OpHistoryAppend, Points: pts, Time: now.UTC(), Who: "autoscaler"})
	}
}

func (h *autoscalerHook) setState(act autoscale.NodeAction, st scheduler.NodeState, now time.Time) {
	_, err := h.a.apply(store.Command{Op: store.OpNodeState, Node: act.Node, State: st, Time: now.UTC(), Who: "autoscaler", Why: act.Why})
	if err != nil {
		h.a.log.Warn("autoscaler could not change a node", "peer", act.Node, "to", string(st), "error", err)
		return
	}
	h.a.log.Info("autoscaler changed a node", "peer", act.Node, "to", string(st), "why", act.Why)
}

// observe builds the autoscaler's input from the plan, gossip and load.
func (h *autoscalerHook) observe() autoscale.Observation {
	plan := h.a.fsm.Plan()
	members := map[string]cluster.Member{}
	for _, m := range h.a.cluster.Members() {
		members[m.Name] = m
	}
	var obs autoscale.Observation
	for name, pn := range plan.Nodes {
		m, known := members[name]
		no := autoscale.NodeObservation{
			Name: name, State: pn.State, Zone: pn.Zone, Since: pn.Since,
			Ready: known && (m.Status == cluster.StatusAlive || m.Status == cluster.StatusSuspect) && m.Serving,
		}
		no.Tags, _ = autoscale.ParseNodeTags(pn.Tags)
		var l scheduler.Load
		ok := false
		if name == h.a.cfg.Name && h.a.backend != nil {
			cpu, mem := h.a.sys.sample()
			l, ok = h.a.peers.meter.Load(h.a.cfg.Capacity, h.a.peers.health(), cpu, mem), true
		} else {
			l, _, ok = h.a.peers.loads.Get(name)
		}
		if ok {
			no.Healthy = l.Healthy
			no.Inflight, no.Capacity = float64(l.Inflight), float64(l.Capacity)
			no.P95, no.CPU, no.Mem, no.RPS = l.P95, l.CPU, l.Mem, l.RPS
			obs.DemandRPS += l.RPS
		}
		obs.Nodes = append(obs.Nodes, no)
	}
	return obs
}

func (a *Agent) registerAutoscalerAPI(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/autoscaler", a.leaderOnly(func(w http.ResponseWriter, r *http.Request) {
		d := a.autoscaler.lastDecision()
		if d == nil {
			writeError(w, http.StatusNotFound, "the autoscaler has made no decision yet (no spec applied, or the leader just changed)")
			return
		}
		writeJSON(w, http.StatusOK, d)
	}))
}
