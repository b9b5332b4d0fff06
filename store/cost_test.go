package store

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/scheduler/cost"
)

func costRec(start time.Time, d time.Duration, c float64) *cost.Record {
	return &cost.Record{Start: start, End: start.Add(d), RPS: 5, Nodes: []cost.Usage{{
		Node: "a", Zone: "z1",
		Totals: cost.Totals{NodeHours: map[string]float64{"active": d.Hours()}, Cost: c, EnergyKWh: c / 10, CarbonGrams: c * 3},
	}}}
}

func TestFSMCostAppend(t *testing.T) {
	f := NewFSM(nil, nil)
	end := time.Date(2026, 11, 30, 23, 57, 0, 0, time.UTC)
	apply(t, f, Command{Op: OpCostAppend, Cost: costRec(end, time.Minute, 1), Time: end, Who: "cost"})
	apply(t, f, Command{Op: OpCostAppend, Cost: costRec(end.Add(time.Minute), time.Minute, 2), Time: end, Who: "cost"})
	// Overlaps the previous record (a stale leader's): dropped.
	apply(t, f, Command{Op: OpCostAppend, Cost: costRec(end.Add(90*time.Second), time.Minute, 100), Time: end, Who: "cost"})
	tot, month, last := f.CostTotals()
	if tot.Cost != 3 || month.Month != "2026-11" || month.Totals.Cost != 3 || !last.Equal(end.Add(2*time.Minute)) {
		t.Fatalf("totals %+v month %+v last %s", tot, month, last)
	}
	// The next record starts in December: the month total starts over.
	apply(t, f, Command{Op: OpCostAppend, Cost: costRec(end.Add(3*time.Minute), time.Minute, 4), Time: end, Who: "cost"})
	tot, month, _ = f.CostTotals()
	if tot.Cost != 7 || month.Month != "2026-12" || month.Totals.Cost != 4 {
		t.Fatalf("after month change: totals %+v month %+v", tot, month)
	}
	if got := f.CostRecords(end.Add(90 * time.Second)); len(got) != 2 || got[0].Totals().Cost != 2 {
		t.Fatalf("records since: %+v", got)
	}
	if len(f.Events(0)) != 0 || f.Plan().Version != 0 {
		t.Fatal("cost records must not change the plan or the audit log")
	}

	snap, err := f.Raft().Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	g := NewFSM(nil, nil)
	if err := g.Raft().Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if tot, month, _ := g.CostTotals(); tot.Cost != 7 || tot.NodeHours["active"] == 0 || month.Totals.Cost != 4 || len(g.CostRecords(time.Time{})) != 3 {
		t.Fatalf("restored totals %+v month %+v", tot, month)
	}
}

func TestFSMCostRetention(t *testing.T) {
	f := NewFSM(nil, nil)
	for i := range DefaultCostRecords + 5 {
		start := t0.Add(time.Duration(i) * time.Minute)
		apply(t, f, Command{Op: OpCostAppend, Cost: costRec(start, time.Minute, 1), Time: start, Who: "cost"})
	}
	if n := len(f.CostRecords(time.Time{})); n != DefaultCostRecords {
		t.Fatalf("kept %d records, want %d", n, DefaultCostRecords)
	}
	if tot, _, _ := f.CostTotals(); tot.Cost != DefaultCostRecords+5 {
		t.Fatalf("cumulative cost %v: every record counts, kept or not", tot.Cost)
	}
}

func TestCostCommandValidation(t *testing.T) {
	for _, c := range []Command{
		{Op: OpCostAppend, Time: t0},
		{Op: OpCostAppend, Time: t0, Cost: &cost.Record{Start: t0, End: t0.Add(-time.Second)}},
	} {
		if _, err := EncodeCommand(c); err == nil {
			t.Errorf("accepted %+v", c.Cost)
		}
	}
}

func TestFSMCostRetentionByEntries(t *testing.T) {
	f := NewFSM(nil, nil)
	wide := func(start time.Time, n int) *cost.Record {
		r := costRec(start, time.Minute, 1)
		for i := 1; i < n; i++ {
			r.Nodes = append(r.Nodes, r.Nodes[0])
		}
		return r
	}
	// 100 nodes a record: DefaultCostEntries / 100 records are kept.
	for i := range 600 {
		start := t0.Add(time.Duration(i) * time.Minute)
		apply(t, f, Command{Op: OpCostAppend, Cost: wide(start, 100), Time: start, Who: "cost"})
	}
	recs := f.CostRecords(time.Time{})
	if want := DefaultCostEntries / 100; len(recs) != want || !recs[len(recs)-1].Start.Equal(t0.Add(599*time.Minute)) {
		t.Fatalf("kept %d records of 100 nodes, want the newest %d", len(recs), want)
	}
	// A record of the most nodes allowed makes room for itself.
	start := t0.Add(600 * time.Minute)
	apply(t, f, Command{Op: OpCostAppend, Cost: wide(start, maxCostNodes), Time: start, Who: "cost"})
	if recs, want := f.CostRecords(time.Time{}), 1+(DefaultCostEntries-maxCostNodes)/100; len(recs) != want {
		t.Fatalf("kept %d records after one of %d nodes, want %d", len(recs), maxCostNodes, want)
	}
	if tot, _, _ := f.CostTotals(); tot.Cost != 600*100+maxCostNodes {
		t.Fatalf("cumulative cost %v, want every record's", tot.Cost)
	}
}
