package agent

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/scheduler/autoscale"
	"github.com/loadmesh/loadmesh/scheduler/cost"
	"github.com/loadmesh/loadmesh/store"
)

// Cost accounting defaults: the leader samples the plan and the gossiped
// load every costInterval and writes one record through Raft every
// costRecordEvery.
const (
	defaultCostInterval    = 10 * time.Second
	defaultCostRecordEvery = time.Minute
	// costMaxGap is the longest gap a new leader fills from the previous
	// leader's last record (in the nodes' current states); after a longer
	// one the cluster was probably down, and the gap counts nothing.
	costMaxGap = 10 * time.Minute
)

// costHook integrates node-hours, cost, energy and carbon on the leader
// (scheduler/cost) and writes a cost.append record per period. A new
// leader starts its first period where the previous leader's last record
// ended, so the replicated totals go on without a gap. It runs whether or
// not a scaling spec is applied. Revoke stops the loop and waits; the open
// period is not written (the next leader fills it).
type costHook struct {
	a    *Agent
	task leaderTask
}

var _ cluster.LeaderHook = (*costHook)(nil)

func (h *costHook) Establish() error {
	h.task.start(h.loop)
	return nil
}

func (h *costHook) Revoke() { h.task.stop() }

func (h *costHook) intervals() (sample, record time.Duration) {
	sample, record = h.a.cfg.CostInterval, h.a.cfg.CostRecordEvery
	if sample <= 0 {
		sample = defaultCostInterval
	}
	if record <= 0 {
		record = defaultCostRecordEvery
	}
	return sample, max(record, sample)
}

func (h *costHook) loop(stop chan struct{}) {
	sample, every := h.intervals()
	now := h.a.now()
	start := now
	if _, _, last := h.a.fsm.CostTotals(); !last.IsZero() && now.Sub(last) < costMaxGap && !last.After(now) {
		start = last
	}
	acc := cost.NewAccumulator(start)
	t := time.NewTicker(sample)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		now := h.a.now()
		samples, rps := h.a.costSamples()
		acc.Observe(now, samples, rps, h.a.costSpec().Selection)
		if now.Sub(acc.Start()) < every {
			continue
		}
		h.flush(acc)
	}
}

// flush writes the open period; on failure the accumulator keeps it (the
// next record covers both periods). It reports whether it was written.
func (h *costHook) flush(acc *cost.Accumulator) bool {
	rec := acc.Record()
	_, err := h.a.apply(store.Command{Op: store.OpCostAppend, Cost: &rec, Time: rec.End, Who: "cost"})
	if err != nil {
		h.a.log.Warn("could not write a cost record; the next one will cover its period too", "error", err)
		return false
	}
	acc.Reset()
	return true
}

// costSamples reads every plan node with its gossiped in-flight requests,
// and the cluster's requests/s.
func (a *Agent) costSamples() ([]cost.Sample, float64) {
	plan := a.fsm.Plan()
	var rps float64
	out := make([]cost.Sample, 0, len(plan.Nodes))
	for name, pn := range plan.Nodes {
		s := cost.Sample{Node: name, State: pn.State, Since: pn.Since, Left: pn.Left, Zone: pn.Zone, Tags: pn.Tags}
		if !pn.Left.IsZero() {
			out = append(out, s)
			continue
		}
		if name == a.cfg.Name && a.backend != nil {
			// The meter's own figures (Meter.Load would take a new
			// summary version).
			s.HasLoad, s.Inflight, s.Capacity = true, float64(a.peers.meter.Inflight()), a.cfg.Capacity
			rps += a.peers.meter.Stats().RPS
		} else if l, _, ok := a.peers.loads.Get(name); ok {
			s.HasLoad, s.Inflight, s.Capacity = true, float64(l.Inflight), l.Capacity
			rps += l.RPS
		}
		out = append(out, s)
	}
	return out, rps
}

// costSpec is the applied scaling spec, or the defaults when none is (or
// it is unreadable): carbon intensities and the budget.
func (a *Agent) costSpec() autoscale.Spec {
	spec := autoscale.DefaultSpec()
	rec := a.fsm.Spec()
	if rec.PlanVersion == 0 {
		return spec
	}
	if err := json.Unmarshal(rec.Doc, &spec); err != nil {
		return autoscale.DefaultSpec()
	}
	return spec
}

// maxCostWindow bounds ?since: the records kept (store.DefaultCostRecords
// at the default period).
const maxCostWindow = 31 * 24 * time.Hour

// costReport answers GET /v1/cost from this node's replica.
func (a *Agent) costReport(since time.Duration, by string, nodeRPS float64) cost.Report {
	now := a.now()
	_, month, _ := a.fsm.CostTotals()
	q := cost.Query{
		Since: now.Add(-since), Until: now, By: by, Spec: a.costSpec(), Plan: a.fsm.Plan(), Now: now, NodeRPS: nodeRPS,
	}
	if month.Month == cost.MonthOf(now) {
		q.Month, q.MonthToDate = month.Month, month.Totals
	}
	return cost.Summarise(a.fsm.CostRecords(q.Since), q)
}

func (a *Agent) registerCostAPI(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/cost", func(w http.ResponseWriter, r *http.Request) {
		qs := r.URL.Query()
		since := 24 * time.Hour
		if v := qs.Get("since"); v != "" {
			d, err := autoscale.ParseDuration(v)
			if err != nil || d.D() <= 0 || d.D() > maxCostWindow {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("since %q: want a duration from 1s to 31d, e.g. 24h", v))
				return
			}
			since = d.D()
		}
		by := qs.Get("by")
		if err := cost.ValidBy(by); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		var nodeRPS float64
		if v := qs.Get("node_rps"); v != "" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f <= 0 || f > 1e9 {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("node_rps %q: want a positive number", v))
				return
			}
			nodeRPS = f
		}
		writeJSON(w, http.StatusOK, a.costReport(since, by, nodeRPS))
	})
}

// costCollector exports the cost figures, on the leader only: every node
// holds the same replicated totals, and one exporter keeps sums across
// the cluster's targets right. Followers export none of these series.
type costCollector struct{ a *Agent }

var (
	costPerHourDesc   = prometheus.NewDesc("loadmesh_cost_per_hour", "What the plan's running nodes cost per hour now (cost_per_hour tags), by zone; exported by the leader.", []string{"zone"}, nil)
	costTotalDesc     = prometheus.NewDesc("loadmesh_cost_total", "Cumulative cost of the nodes since accounting began, from the replicated totals; exported by the leader.", nil, nil)
	energyTotalDesc   = prometheus.NewDesc("loadmesh_energy_kwh_total", "Cumulative energy of the nodes in kWh (power_watts tags); exported by the leader.", nil, nil)
	carbonTotalDesc   = prometheus.NewDesc("loadmesh_carbon_grams_total", "Cumulative emissions in g CO2e (energy × carbon intensity of the node's carbon_region); exported by the leader.", nil, nil)
	nodeHoursDesc     = prometheus.NewDesc("loadmesh_node_hours_total", "Cumulative node-hours by accounting state; exported by the leader.", []string{"state"}, nil)
	budgetMonthlyDesc = prometheus.NewDesc("loadmesh_cost_budget_monthly", "The scaling spec's monthly budget (0: none); exported by the leader.", nil, nil)
	projectedDesc     = prometheus.NewDesc("loadmesh_cost_projected_monthly", "This month's spend so far plus the cost per hour now over the rest of the month; exported by the leader.", nil, nil)
)

func (c costCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{costPerHourDesc, costTotalDesc, energyTotalDesc, carbonTotalDesc, nodeHoursDesc, budgetMonthlyDesc, projectedDesc} {
		ch <- d
	}
}

func (c costCollector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	if a.cluster == nil || a.fsm == nil || !a.cluster.IsLeader() {
		return
	}
	spec := a.costSpec()
	perHour, zones := cost.CostPerHourNow(a.fsm.Plan(), spec.Selection)
	for z, v := range zones {
		ch <- prometheus.MustNewConstMetric(costPerHourDesc, prometheus.GaugeValue, v, z)
	}
	tot, month, _ := a.fsm.CostTotals()
	now := a.now()
	mtd := 0.0
	if month.Month == cost.MonthOf(now) {
		mtd = month.Totals.Cost
	}
	ch <- prometheus.MustNewConstMetric(costTotalDesc, prometheus.CounterValue, tot.Cost)
	ch <- prometheus.MustNewConstMetric(energyTotalDesc, prometheus.CounterValue, tot.EnergyKWh)
	ch <- prometheus.MustNewConstMetric(carbonTotalDesc, prometheus.CounterValue, tot.CarbonGrams)
	for st, h := range tot.NodeHours {
		ch <- prometheus.MustNewConstMetric(nodeHoursDesc, prometheus.CounterValue, h, st)
	}
	ch <- prometheus.MustNewConstMetric(budgetMonthlyDesc, prometheus.GaugeValue, spec.Budget.Monthly)
	ch <- prometheus.MustNewConstMetric(projectedDesc, prometheus.GaugeValue, cost.Project(now, mtd, perHour, spec.Budget.Monthly).Projected)
}
