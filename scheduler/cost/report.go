package cost

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/scheduler/autoscale"
)

// Right-sizing thresholds, on a node's in-flight requests against its
// --capacity over the minutes it was active.
const (
	// UndersizedPeak: a peak above this share of capacity means requests
	// queued (or were refused): the node is undersized.
	UndersizedPeak = 1.0
	// OversizedP95: a p95 below this share of capacity (and a peak below
	// OversizedPeak) means most of the server idles: oversized.
	OversizedP95  = 0.25
	OversizedPeak = 0.6
	// MinSizingMinutes is the fewest active minutes with load readings a
	// recommendation needs.
	MinSizingMinutes = 3
	// DefaultNodeRPS is the counterfactual's node throughput when neither
	// the spec nor the window tells it.
	DefaultNodeRPS = 100
)

// Query says what Summarise reports on.
type Query struct {
	// Since and Until bound the window; records overlapping it count.
	Since, Until time.Time
	// By groups the breakdown: "zone", "tag:KEY", or "" for none.
	By string
	// Spec is the current scaling spec (DefaultSpec when none is applied):
	// carbon intensities, budget, and the policy the counterfactual runs.
	Spec autoscale.Spec
	// Plan is the current capacity plan: the cost per hour now and the
	// counterfactual's nodes.
	Plan scheduler.Plan
	// Now is the instant the monthly projection is made at.
	Now time.Time
	// Month and MonthToDate are the replicated totals of Now's calendar
	// month (UTC) so far.
	Month       string
	MonthToDate Totals
	// NodeRPS overrides the counterfactual's requests/s per node at full
	// in-flight capacity (0: from the spec or the window).
	NodeRPS float64
}

// Report is the body of GET /v1/cost.
type Report struct {
	Since time.Time `json:"since"`
	Until time.Time `json:"until"`
	// From and To are the span the window's records cover; Records how
	// many there are.
	From     time.Time `json:"from,omitzero"`
	To       time.Time `json:"to,omitzero"`
	Records  int       `json:"records"`
	Currency string    `json:"currency,omitempty"`
	Totals   Totals    `json:"totals"`
	// By and Groups are the breakdown.
	By     string  `json:"by,omitempty"`
	Groups []Group `json:"groups,omitempty"`
	// CostPerHour is what the running nodes cost per hour now.
	CostPerHour    float64         `json:"cost_per_hour"`
	Budget         Budget          `json:"budget"`
	Counterfactual *Counterfactual `json:"counterfactual,omitempty"`
	Nodes          []Sizing        `json:"nodes"`
}

// Group is one row of the breakdown.
type Group struct {
	Key string `json:"key"`
	// Nodes is how many nodes the group had in the window.
	Nodes int `json:"nodes"`
	Totals
}

// Budget is the monthly projection against the spec's budget.
type Budget struct {
	Month string `json:"month"`
	// Monthly is the budget (0: none set).
	Monthly float64 `json:"monthly"`
	// MonthToDate is the spend of the month so far; Projected adds the
	// cost per hour now over the hours left in the month.
	MonthToDate float64 `json:"month_to_date"`
	Projected   float64 `json:"projected"`
	// Ratio is Projected ÷ Monthly (0 without a budget).
	Ratio float64 `json:"ratio,omitempty"`
}

// Counterfactual is what reactive-only scaling would have done over the
// window: the recorded demand replayed through the simulator with the
// current spec (predictive scaling and schedules off, mode auto) and the
// plan's current nodes. Like the simulator it counts serving nodes only
// (active, starting and draining); Actual* are the same figures of the
// real run.
type Counterfactual struct {
	Mode string `json:"mode"`
	// NodeRPS is the requests/s one node serves at full in-flight
	// capacity in the model, and NodeRPSFrom where it came from.
	NodeRPS         float64 `json:"node_rps"`
	NodeRPSFrom     string  `json:"node_rps_from"`
	NodeHours       float64 `json:"node_hours"`
	Cost            float64 `json:"cost"`
	SLOMinutes      float64 `json:"slo_violating_minutes"`
	ActualNodeHours float64 `json:"actual_node_hours"`
	ActualCost      float64 `json:"actual_cost"`
	// Error says why there is no counterfactual (the other fields are 0).
	Error string `json:"error,omitempty"`
}

// Sizing is one node's right-sizing line.
type Sizing struct {
	Node     string `json:"node"`
	Zone     string `json:"zone,omitempty"`
	Capacity int    `json:"capacity"`
	// Minutes is how many records had load readings while active; Peak
	// and P95 are in-flight requests: the highest per-record maximum and
	// the 95th percentile (nearest rank) of the per-record maxima.
	Minutes        int     `json:"minutes"`
	Peak           float64 `json:"peak_inflight"`
	P95            float64 `json:"p95_inflight"`
	Verdict        string  `json:"verdict"`
	Recommendation string  `json:"recommendation"`
}

// ValidBy checks a breakdown key.
func ValidBy(by string) error {
	if by == "" || by == "zone" {
		return nil
	}
	if len(by) > 4 && by[:4] == "tag:" && len(by) <= 4+64 {
		return nil
	}
	return fmt.Errorf("by %q: want zone or tag:KEY", by)
}

// CostPerHourNow is what the plan's nodes cost per hour now, overall and
// by zone.
func CostPerHourNow(p scheduler.Plan, sel autoscale.Selection) (float64, map[string]float64) {
	var total float64
	zones := map[string]float64{}
	for _, n := range p.Nodes {
		st := string(n.State)
		if !n.Left.IsZero() {
			st = StateLeft
		}
		c := RatesFor(n.Tags, sel).PerHour(st)
		total += c
		zones[n.Zone] += c
	}
	return total, zones
}

// Project returns the month's projection at now: month-to-date spend plus
// perHour over the rest of the calendar month (UTC).
func Project(now time.Time, monthToDate, perHour, budget float64) Budget {
	now = now.UTC()
	next := time.Date(now.Year(), now.Month()+1, 1, 0, 0, 0, 0, time.UTC)
	b := Budget{Month: MonthOf(now), Monthly: budget, MonthToDate: monthToDate}
	b.Projected = monthToDate + perHour*next.Sub(now).Hours()
	if budget > 0 {
		b.Ratio = b.Projected / budget
	}
	return b
}

// MonthOf names t's calendar month (UTC), e.g. "2026-11".
func MonthOf(t time.Time) string { return t.UTC().Format("2006-01") }

// Summarise builds the report over recs (oldest first).
func Summarise(recs []Record, q Query) Report {
	rep := Report{Since: q.Since.UTC(), Until: q.Until.UTC(), By: q.By, Currency: q.Spec.Budget.Currency, Nodes: []Sizing{}}
	var in []Record
	for _, r := range recs {
		if r.End.After(q.Since) && r.Start.Before(q.Until) {
			in = append(in, r)
		}
	}
	rep.Records = len(in)
	if len(in) > 0 {
		rep.From, rep.To = in[0].Start, in[len(in)-1].End
	}
	groups := map[string]*Group{}
	members := map[string]map[string]bool{}
	for _, r := range in {
		for _, u := range r.Nodes {
			rep.Totals.Add(u.Totals)
			if q.By == "" {
				continue
			}
			key := groupKey(u, q.By)
			g := groups[key]
			if g == nil {
				g = &Group{Key: key}
				groups[key] = g
				members[key] = map[string]bool{}
			}
			g.Add(u.Totals)
			members[key][u.Node] = true
		}
	}
	for k, g := range groups {
		g.Nodes = len(members[k])
		rep.Groups = append(rep.Groups, *g)
	}
	slices.SortFunc(rep.Groups, func(a, b Group) int {
		return cmp.Or(cmp.Compare(b.Cost, a.Cost), cmp.Compare(a.Key, b.Key))
	})
	rep.CostPerHour, _ = CostPerHourNow(q.Plan, q.Spec.Selection)
	rep.Budget = Project(q.Now, q.MonthToDate.Cost, rep.CostPerHour, q.Spec.Budget.Monthly)
	rep.Nodes = Sizings(in)
	rep.Counterfactual = counterfactual(in, q)
	return rep
}

func groupKey(u Usage, by string) string {
	if by == "zone" {
		if u.Zone == "" {
			return "(no zone)"
		}
		return u.Zone
	}
	v, ok := u.Tags[by[len("tag:"):]]
	if !ok || v == "" {
		return "(untagged)"
	}
	return v
}

// Sizings returns the right-sizing line of every node in recs, by name.
func Sizings(recs []Record) []Sizing {
	maxima := map[string][]float64{}
	out := map[string]*Sizing{}
	for _, r := range recs {
		for _, u := range r.Nodes {
			s := out[u.Node]
			if s == nil {
				s = &Sizing{Node: u.Node}
				out[u.Node] = s
			}
			s.Zone = u.Zone
			if u.Capacity > 0 {
				s.Capacity = u.Capacity
			}
			if u.Active && u.Samples > 0 {
				maxima[u.Node] = append(maxima[u.Node], u.InflightMax)
			}
		}
	}
	list := make([]Sizing, 0, len(out))
	for _, name := range sortedKeys(out) {
		s := out[name]
		m := maxima[name]
		s.Minutes = len(m)
		if len(m) > 0 {
			sort.Float64s(m)
			s.Peak = m[len(m)-1]
			s.P95 = m[int(math.Ceil(0.95*float64(len(m))))-1]
		}
		s.Verdict, s.Recommendation = recommend(*s)
		list = append(list, *s)
	}
	return list
}

func recommend(s Sizing) (verdict, why string) {
	if s.Capacity <= 0 || s.Minutes < MinSizingMinutes {
		return "no data", fmt.Sprintf("%d active minutes with load readings; need %d", s.Minutes, MinSizingMinutes)
	}
	c := float64(s.Capacity)
	peak, p95 := s.Peak/c, s.P95/c
	switch {
	case peak > UndersizedPeak:
		return "undersized", fmt.Sprintf("peak %.0f %% of capacity; move to a larger server or add nodes", 100*peak)
	case p95 < OversizedP95 && peak < OversizedPeak:
		return "oversized", fmt.Sprintf("p95 uses %.0f %% of capacity; lower --capacity or move to a smaller server", 100*p95)
	}
	return "fits", fmt.Sprintf("p95 %.0f %%, peak %.0f %% of capacity", 100*p95, 100*peak)
}

// counterfactual replays the window's recorded demand in reactive mode.
func counterfactual(recs []Record, q Query) *Counterfactual {
	cf := &Counterfactual{Mode: "reactive"}
	for _, r := range recs {
		for _, u := range r.Nodes {
			serving := u.NodeHours[string(scheduler.StateActive)] + u.NodeHours[string(scheduler.StateDraining)]
			cf.ActualNodeHours += serving
			cf.ActualCost += serving * RatesFor(u.Tags, q.Spec.Selection).CostPerHour
		}
	}
	trace := demandTrace(recs)
	if len(trace.Samples) < 2 {
		cf.Error = "the window holds under 2 minutes of records"
		return cf
	}
	model := autoscale.DefaultNodeModel(q.Spec)
	model.Pools = nil
	pools := map[string]*autoscale.Pool{}
	var keys []string
	for _, name := range sortedKeys(q.Plan.Nodes) {
		n := q.Plan.Nodes[name]
		if !n.Left.IsZero() {
			continue
		}
		nt, _ := autoscale.ParseNodeTags(n.Tags)
		k := fmt.Sprintf("%s|%+v", n.Zone, nt)
		if pools[k] == nil {
			pools[k] = &autoscale.Pool{Zone: n.Zone, Tags: nt}
			keys = append(keys, k)
		}
		pools[k].Count++
	}
	for _, k := range keys {
		model.Pools = append(model.Pools, *pools[k])
	}
	if len(model.Pools) == 0 {
		cf.Error = "the plan has no nodes to model"
		return cf
	}
	cf.NodeRPS, cf.NodeRPSFrom = nodeRPS(recs, q)
	model.Capacity = cf.NodeRPS
	if c := meanCapacity(recs); c > 0 {
		model.InflightCapacity = c
	}
	spec := q.Spec.Reactive()
	spec.Mode = autoscale.ModeAuto
	rep, err := autoscale.Simulate(spec, trace, model, autoscale.SimOptions{Scale: 1, ReportEvery: trace.Step * time.Duration(len(trace.Samples)+1)})
	if err != nil {
		cf.Error = err.Error()
		return cf
	}
	cf.NodeHours, cf.Cost, cf.SLOMinutes = rep.Total.NodeHours, rep.Total.Cost, rep.Total.SLOMinutes
	return cf
}

// demandTrace resamples the records' demand to one sample a minute.
func demandTrace(recs []Record) autoscale.Trace {
	tr := autoscale.Trace{Name: "recorded", Step: time.Minute}
	if len(recs) == 0 {
		return tr
	}
	start := recs[0].Start.Truncate(time.Minute)
	end := recs[len(recs)-1].End
	i := 0
	for m := start; m.Before(end); m = m.Add(time.Minute) {
		mid := m.Add(30 * time.Second)
		for i < len(recs)-1 && !recs[i].End.After(mid) {
			i++
		}
		rps := 0.0
		if !recs[i].Start.After(mid) && recs[i].End.After(mid) {
			rps = recs[i].RPS
		} else if i == 0 || i == len(recs)-1 {
			rps = recs[i].RPS // the window's ragged edges
		}
		tr.Samples = append(tr.Samples, autoscale.Sample{Time: m, RPS: rps})
	}
	return tr
}

// nodeRPS is the requests/s one node serves at full in-flight capacity:
// the query's override; else the spec's targets.rps_per_node ÷ its
// inflight_utilisation target (the node is meant to serve rps_per_node at
// that utilisation); else Little's law over the window (requests/s per
// request in flight × mean capacity); else DefaultNodeRPS.
func nodeRPS(recs []Record, q Query) (float64, string) {
	if q.NodeRPS > 0 {
		return q.NodeRPS, "query"
	}
	t := q.Spec.Targets
	if t.RPSPerNode > 0 {
		u := t.InflightUtilisation
		if u <= 0 {
			u = 1
		}
		return t.RPSPerNode / u, "spec targets.rps_per_node"
	}
	var rps, inflight float64
	for _, r := range recs {
		var in float64
		for _, u := range r.Nodes {
			if u.Active && u.Samples > 0 {
				in += u.InflightMean
			}
		}
		if in > 0 && r.RPS > 0 {
			rps += r.RPS
			inflight += in
		}
	}
	if c := meanCapacity(recs); inflight > 0 && c > 0 && rps/inflight*c > 0 {
		return rps / inflight * c, "observed (Little's law)"
	}
	return DefaultNodeRPS, "default"
}

func meanCapacity(recs []Record) float64 {
	var sum float64
	var n int
	for _, r := range recs {
		for _, u := range r.Nodes {
			if u.Active && u.Capacity > 0 {
				sum += float64(u.Capacity)
				n++
			}
		}
	}
	if n == 0 {
		return 0
	}
	return sum / float64(n)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
