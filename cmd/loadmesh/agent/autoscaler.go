package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/cmd/loadmesh/provision"
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
//
// Provisioner hooks run on goroutines of their own, owned by the hook:
// Revoke (leadership lost, or shutdown) cancels them and waits.
type autoscalerHook struct {
	a      *Agent
	runner hookRunner
	m      *autoscalerMetrics

	mu     sync.Mutex
	stop   chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup
	last   *autoscale.Decision
	leader bool
}

// hookRunner runs one provisioner hook with its retries.
type hookRunner interface {
	Run(ctx context.Context, h autoscale.Hook, req provision.Request, onAttempt func(provision.Attempt)) provision.Result
}

var _ cluster.LeaderHook = (*autoscalerHook)(nil)

func (h *autoscalerHook) Establish() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stop = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.leader = true
	// Failed hooks report back to the loop, which owns the Autoscaler.
	failed := make(chan autoscale.HookRequest, 64)
	h.wg.Add(1)
	go h.loop(ctx, h.stop, failed)
	return nil
}

func (h *autoscalerHook) Revoke() {
	h.mu.Lock()
	stop, cancel := h.stop, h.cancel
	h.stop, h.cancel, h.leader, h.last = nil, nil, false, nil
	h.mu.Unlock()
	if stop != nil {
		close(stop)
		cancel()
	}
	h.wg.Wait()
}

func (h *autoscalerHook) lastDecision() *autoscale.Decision {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last
}

func (h *autoscalerHook) loop(ctx context.Context, stop chan struct{}, failed chan autoscale.HookRequest) {
	defer h.wg.Done()
	var (
		as      *autoscale.Autoscaler
		specVer uint64
		dry     dryRunRecorder
	)
	// Do not repeat the last dry-run record a previous leader made.
	for _, e := range slices.Backward(h.a.fsm.Events(200)) {
		if e.Kind == dryRunKind {
			dry.last = strings.TrimPrefix(e.After, "would ")
			break
		}
	}
	interval := 15 * time.Second
	t := time.NewTimer(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case req := <-failed:
			if as != nil {
				as.HookFailed(req, h.a.now())
			}
			continue
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
		h.step(ctx, as, &dry, failed)
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
	for _, p := range h.a.fsm.History(h.a.now().Add(-15 * 24 * time.Hour)) {
		hist = append(hist, autoscale.MinutePoint{Minute: p.Minute, MeanRPS: p.RPS, MaxRPS: max(p.MaxRPS, p.RPS)})
	}
	if err := as.Restore(st, hist); err != nil {
		h.a.log.Warn("restore autoscaler state", "error", err)
	}
}

func (h *autoscalerHook) step(ctx context.Context, as *autoscale.Autoscaler, dry *dryRunRecorder, failed chan<- autoscale.HookRequest) {
	now := h.a.now()
	obs := h.observe()
	d := as.Step(now, obs)
	h.mu.Lock()
	h.last = &d
	h.mu.Unlock()
	figures := decisionFigures(d)
	if d.DryRun {
		if d.Changes() && dry.changed(d) {
			h.record(store.Command{Kind: dryRunKind, Why: d.Reason, Before: fmt.Sprintf("active=%d", d.Active),
				After: "would " + describeDecision(d), Metrics: figures}, now)
			h.a.log.Info("autoscaler dry run", "desired", d.Desired, "active", d.Active, "would", describeDecision(d), "reason", d.Reason)
		}
	} else {
		dry.reset()
		if d.Rollback != nil {
			h.record(store.Command{Kind: "autoscaler.rollback", Why: d.Rollback.Why,
				Before: fmt.Sprintf("active=%d after scale-in %d→%d at %s", d.Active, d.Rollback.From, d.Rollback.To, d.Rollback.ScaleInAt.UTC().Format(time.RFC3339)),
				After:  fmt.Sprintf("restore active=%d; scale-in held until %s", d.Rollback.Restore, d.Rollback.HoldUntil.UTC().Format(time.RFC3339)), Metrics: figures}, now)
			h.m.rollbacks.Inc()
		}
		for _, act := range d.Activate {
			h.setState(act, scheduler.StateActive, now, figures)
		}
		for _, act := range d.Drain {
			h.setState(act, scheduler.StateDraining, now, figures)
		}
		h.m.scaled(d)
		for _, hk := range d.Hooks {
			h.startHook(ctx, as.Spec(), hk, obs, now, failed)
		}
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

// record appends an audit record (OpRecord) made by the autoscaler.
func (h *autoscalerHook) record(c store.Command, now time.Time) {
	c.Op, c.Time, c.Who = store.OpRecord, now.UTC(), "autoscaler"
	if _, err := h.a.apply(c); err != nil {
		h.a.log.Warn("could not write an audit record", "kind", c.Kind, "error", err)
	}
}

func (h *autoscalerHook) setState(act autoscale.NodeAction, st scheduler.NodeState, now time.Time, figures map[string]float64) {
	_, err := h.a.apply(store.Command{Op: store.OpNodeState, Node: act.Node, State: st, Time: now.UTC(), Who: "autoscaler", Why: act.Why, Metrics: figures})
	if err != nil {
		h.a.log.Warn("autoscaler could not change a node", "peer", act.Node, "to", string(st), "error", err)
		return
	}
	h.a.log.Info("autoscaler changed a node", "peer", act.Node, "to", string(st), "why", act.Why)
}

// startHook runs one provisioner hook on its own goroutine: every attempt
// and the final outcome go into the audit log, and a hook that fails for
// good is reported back so the autoscaler may ask again sooner.
func (h *autoscalerHook) startHook(ctx context.Context, spec autoscale.Spec, hk autoscale.HookRequest, obs autoscale.Observation, now time.Time, failed chan<- autoscale.HookRequest) {
	req := h.hookRequest(spec, hk, obs, now)
	h.addJoinToken(&req, hk, spec.Hooks.ProvisionTimeout.D(), now)
	subject := describeHook(req)
	h.record(store.Command{Kind: "hook." + req.Kind, Why: hk.Why, Before: subject, After: "requested " + req.ID}, now)
	h.a.log.Info("running provisioner hook", "kind", req.Kind, "id", req.ID, "request", subject, "why", hk.Why)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		attempts := 1 + hk.Hook.Retries
		res := h.runner.Run(ctx, hk.Hook, req, func(at provision.Attempt) {
			h.m.hookAttempt(req.Kind, at)
			if at.Err != nil && at.N < attempts && ctx.Err() == nil {
				h.record(store.Command{Kind: "hook." + req.Kind, Why: hk.Why, Before: subject,
					After: fmt.Sprintf("attempt %d of %d failed after %s: %v; retrying", at.N, attempts, at.Took.Round(time.Millisecond), at.Err)}, h.a.now())
			}
		})
		n := len(res.Attempts)
		if err := res.Err(); err != nil {
			if ctx.Err() != nil {
				h.a.log.Warn("provisioner hook cancelled: leadership lost or shutting down", "kind", req.Kind, "id", req.ID)
				return
			}
			h.m.hookRun(req.Kind, false)
			h.record(store.Command{Kind: "hook." + req.Kind, Why: hk.Why, Before: subject,
				After: fmt.Sprintf("failed after %d attempts: %v", n, err)}, h.a.now())
			h.a.log.Error("provisioner hook failed", "kind", req.Kind, "id", req.ID, "attempts", n, "error", err)
			select {
			case failed <- hk:
			case <-ctx.Done():
			}
			return
		}
		h.m.hookRun(req.Kind, true)
		out := res.Attempts[n-1].Output
		h.record(store.Command{Kind: "hook." + req.Kind, Why: hk.Why, Before: subject,
			After: fmt.Sprintf("succeeded on attempt %d in %s: %s", n, res.Attempts[n-1].Took.Round(time.Millisecond), firstLine(out, 300))}, h.a.now())
		h.a.log.Info("provisioner hook succeeded", "kind", req.Kind, "id", req.ID, "attempts", n, "output", firstLine(out, 300))
	}()
}

// hookRequest builds the document a hook receives.
func (h *autoscalerHook) hookRequest(spec autoscale.Spec, hk autoscale.HookRequest, obs autoscale.Observation, now time.Time) provision.Request {
	var id [6]byte
	_, _ = rand.Read(id[:])
	req := provision.Request{
		Version: provision.RequestVersion,
		ID:      fmt.Sprintf("%s-%s-%s", hk.Kind, now.UTC().Format("20060102T150405"), hex.EncodeToString(id[:])),
		Kind:    string(hk.Kind), Time: now.UTC(), Zone: hk.Zone, Count: hk.Count,
		Nodes: slices.Clone(hk.Nodes), NewNodeState: string(spec.NewNodeState), Why: hk.Why,
		Cluster: provision.Cluster{Leader: h.a.cfg.Name, API: "http://" + h.a.APIAddr()},
	}
	zones := map[string]bool{}
	for _, n := range obs.Nodes {
		zones[n.Zone] = true
		if hk.Kind == autoscale.HookReplace && slices.Contains(hk.Nodes, n.Name) {
			req.Zone = n.Zone
		}
	}
	if hk.Kind == autoscale.HookReplace {
		req.Count = len(hk.Nodes)
	}
	for z := range zones {
		req.Cluster.Zones = append(req.Cluster.Zones, z)
	}
	slices.Sort(req.Cluster.Zones)
	for _, m := range h.a.cluster.Members() {
		if m.Status == cluster.StatusAlive && m.Addresses.Gossip != "" {
			req.Cluster.Seeds = append(req.Cluster.Seeds, m.Addresses.Gossip)
		}
	}
	slices.Sort(req.Cluster.Seeds)
	return req
}

func describeHook(r provision.Request) string {
	switch r.Kind {
	case provision.KindScaleOut:
		return fmt.Sprintf("start %d in zone %q", r.Count, r.Zone)
	default:
		return fmt.Sprintf("nodes %s", strings.Join(r.Nodes, ","))
	}
}

func describeDecision(d autoscale.Decision) string {
	var parts []string
	names := func(acts []autoscale.NodeAction) string {
		s := make([]string, len(acts))
		for i, a := range acts {
			s[i] = a.Node
		}
		return strings.Join(s, ",")
	}
	if len(d.Activate) > 0 {
		parts = append(parts, "activate "+names(d.Activate))
	}
	if len(d.Drain) > 0 {
		parts = append(parts, "drain "+names(d.Drain))
	}
	for _, hk := range d.Hooks {
		parts = append(parts, fmt.Sprintf("run %s hook (%s)", hk.Kind, describeHook(provision.Request{Kind: string(hk.Kind), Zone: hk.Zone, Count: hk.Count, Nodes: hk.Nodes})))
	}
	return fmt.Sprintf("%s; desired %d", strings.Join(parts, "; "), d.Desired)
}

// decisionFigures are the numbers behind a decision, for its audit events.
func decisionFigures(d autoscale.Decision) map[string]float64 {
	f := map[string]float64{"active": float64(d.Active), "desired": float64(d.Desired), "min": float64(d.Min), "max": float64(d.Max)}
	for _, m := range d.Metrics {
		f[m.Name] = m.Value
		f[m.Name+"_target"] = m.Target
	}
	if d.Forecast != nil {
		f["forecast_peak_rps"] = d.Forecast.PeakRPS
		f["forecast_mae_rps"] = d.Forecast.MAE
	}
	return f
}

// dryRunKind is the audit event kind of dry-run decisions.
const dryRunKind = "autoscaler.dry_run"

// dryRunRecorder keeps dry-run audit records to one per distinct decision,
// not one per interval.
type dryRunRecorder struct{ last string }

func (r *dryRunRecorder) changed(d autoscale.Decision) bool {
	sig := describeDecision(d)
	if sig == r.last {
		return false
	}
	r.last = sig
	return true
}

func (r *dryRunRecorder) reset() { r.last = "" }

func firstLine(s string, n int) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " …"
	}
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
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
		if !pn.Left.IsZero() {
			// Gone from the cluster: counts for nothing until it returns.
			no.Ready, ok = false, false
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

// newNodeState is the state the scaling spec gives joining nodes ("" when
// no spec is applied: the cluster default, active).
func (a *Agent) newNodeState() scheduler.NodeState {
	rec := a.fsm.Spec()
	if rec.PlanVersion == 0 {
		return ""
	}
	var spec struct {
		NewNodeState scheduler.NodeState `json:"new_node_state"`
	}
	if err := json.Unmarshal(rec.Doc, &spec); err != nil {
		return ""
	}
	return spec.NewNodeState
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

// AutoscalerDecision returns the autoscaler's last decision while this
// agent leads, or nil.
func (a *Agent) AutoscalerDecision() *autoscale.Decision { return a.autoscaler.lastDecision() }
