package store

import (
	"errors"
	"slices"
	"time"

	"github.com/loadmesh/loadmesh/scheduler/cost"
)

// DefaultCostRecords bounds the cost records kept: a day at the leader's
// default of one record a minute. The cumulative totals (CostTotals,
// CostMonth) are kept forever.
const DefaultCostRecords = 24 * 60

// DefaultCostEntries bounds the node entries of all kept records together
// (about 400 bytes each): a day for up to 25 nodes, less for more (6 hours
// at 100 nodes), so that the records add at most about 15 MB to a snapshot
// whatever the cluster's size.
const DefaultCostEntries = 25 * 24 * 60

// maxCostNodes bounds the nodes of one cost record, which must stay under
// the 1 MiB command limit.
const maxCostNodes = 2000

// CostMonth is the running total of one calendar month (UTC).
type CostMonth struct {
	Month  string      `json:"month"`
	Totals cost.Totals `json:"totals"`
}

func validateCostRecord(r *cost.Record) error {
	switch {
	case r == nil:
		return errors.New("no cost record")
	case r.Start.IsZero() || r.End.Before(r.Start):
		return errors.New("cost record period is empty or reversed")
	case len(r.Nodes) > maxCostNodes:
		return errors.New("cost record has too many nodes")
	}
	return nil
}

// applyCost appends a cost record and adds it to the cumulative totals.
// A record that starts before the newest one ends overlaps it (a stale
// leader's): it is dropped so that no time counts twice. The caller
// holds f.mu.
func (f *FSM) applyCost(r cost.Record) {
	if n := len(f.st.Cost); n > 0 && r.Start.Before(f.st.Cost[n-1].End) {
		return
	}
	f.st.Cost = append(f.st.Cost, r)
	entries := 0
	for _, x := range f.st.Cost {
		entries += len(x.Nodes)
	}
	over := max(len(f.st.Cost)-DefaultCostRecords, 0)
	for over < len(f.st.Cost)-1 && entries > DefaultCostEntries {
		entries -= len(f.st.Cost[over].Nodes)
		over++
	}
	if over > 0 {
		f.st.Cost = append(f.st.Cost[:0:0], f.st.Cost[over:]...)
	}
	t := r.Totals()
	f.st.CostTotals.Add(t)
	month := cost.MonthOf(r.Start)
	if f.st.CostMonth.Month != month {
		f.st.CostMonth = CostMonth{Month: month}
	}
	f.st.CostMonth.Totals.Add(t)
}

// CostRecords returns the cost records that end after since, oldest first.
func (f *FSM) CostRecords(since time.Time) []cost.Record {
	f.mu.RLock()
	defer f.mu.RUnlock()
	i, _ := slices.BinarySearchFunc(f.st.Cost, since, func(r cost.Record, t time.Time) int {
		if r.End.After(t) {
			return 1
		}
		return -1
	})
	return slices.Clone(f.st.Cost[i:])
}

// CostTotals returns the cumulative totals since the cluster began, the
// running total of the newest record's month (by its start), and the end of the newest
// record (zero when there is none).
func (f *FSM) CostTotals() (cost.Totals, CostMonth, time.Time) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var last time.Time
	if n := len(f.st.Cost); n > 0 {
		last = f.st.Cost[n-1].End
	}
	tot := f.st.CostTotals
	tot.NodeHours = cloneHours(tot.NodeHours)
	m := f.st.CostMonth
	m.Totals.NodeHours = cloneHours(m.Totals.NodeHours)
	return tot, m, last
}

func cloneHours(m map[string]float64) map[string]float64 {
	if m == nil {
		return nil
	}
	out := make(map[string]float64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
