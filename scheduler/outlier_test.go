package scheduler

import (
	"fmt"
	"testing"
	"time"
)

func newTestOutliers(t *testing.T, mod func(*OutlierConfig)) (*Outliers, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	cfg := DefaultOutlierConfig()
	if mod != nil {
		mod(&cfg)
	}
	o, err := NewOutliers(cfg, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	o.SetMembers(10)
	return o, clk
}

func TestOutlierConsecutiveFailures(t *testing.T) {
	o, clk := newTestOutliers(t, nil)
	for i := 1; i <= 4; i++ {
		if o.Record("a", true) {
			t.Fatalf("ejected after %d failures", i)
		}
	}
	// A success resets the run.
	o.Record("a", false)
	for i := 1; i <= 4; i++ {
		o.Record("a", true)
	}
	if o.Ejected("a") {
		t.Fatal("ejected after a broken run")
	}
	if !o.Record("a", true) || !o.Ejected("a") {
		t.Fatal("not ejected after 5 consecutive failures")
	}
	until, _ := o.EjectedUntil("a")
	if want := clk.Now().Add(30 * time.Second); !until.Equal(want) {
		t.Fatalf("ejected until %v, want %v", until, want)
	}
	// Outcomes of requests sent before the ejection are ignored.
	if o.Record("a", true) {
		t.Fatal("re-ejected while ejected")
	}
	clk.Advance(30 * time.Second)
	if o.Ejected("a") {
		t.Fatal("ejection did not end by itself")
	}
	if st := o.Stats(); st.Ejections != 1 || st.Ejected != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestOutlierErrorRate(t *testing.T) {
	tests := []struct {
		name        string
		ok, failed  int
		wantEjected bool
	}{
		{"below min requests", 9, 10, false},
		{"at 50% exactly", 10, 10, false},
		{"above 50% with 20 requests", 9, 11, true},
		{"mostly fine", 30, 10, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, clk := newTestOutliers(t, func(c *OutlierConfig) { c.ConsecutiveFailures = 0 })
			// Interleave so no long failure run exists.
			ok, failed := tt.ok, tt.failed
			for ok+failed > 0 {
				if failed > 0 {
					o.Record("a", true)
					failed--
				}
				if ok > 0 {
					o.Record("a", false)
					ok--
				}
				clk.Advance(100 * time.Millisecond)
			}
			if got := o.Ejected("a"); got != tt.wantEjected {
				t.Fatalf("ejected %v, want %v", got, tt.wantEjected)
			}
		})
	}
}

func TestOutlierErrorRateWindowSlides(t *testing.T) {
	for _, slide := range []bool{false, true} {
		t.Run(fmt.Sprintf("slide=%v", slide), func(t *testing.T) {
			o, clk := newTestOutliers(t, func(c *OutlierConfig) { c.ConsecutiveFailures = 0 })
			for range 10 {
				o.Record("a", false)
				o.Record("a", true) // 50% at most: not above the threshold
			}
			if slide {
				clk.Advance(11 * time.Second) // all of that leaves the window
			}
			// One more failure: 11 of 21 with the history, 1 of 1 without.
			if got := o.Record("a", true); got == slide {
				t.Fatalf("ejected %v, want %v", got, !slide)
			}
		})
	}
}

func TestOutlierBackoffGrowsAndDecays(t *testing.T) {
	o, clk := newTestOutliers(t, func(c *OutlierConfig) {
		c.BaseEjection = 10 * time.Second
		c.MaxEjection = 50 * time.Second
	})
	eject := func() time.Duration {
		t.Helper()
		for range 5 {
			o.Record("a", true)
		}
		until, ok := o.EjectedUntil("a")
		if !ok {
			t.Fatal("not ejected")
		}
		d := until.Sub(clk.Now())
		clk.Advance(d) // serve the ejection
		return d
	}
	// Failing again right after each return: 10, 20, 40, then capped at 50.
	for i, want := range []time.Duration{10, 20, 40, 50, 50} {
		if d := eject(); d != want*time.Second {
			t.Fatalf("ejection %d lasted %v, want %vs", i+1, d, want)
		}
	}
	// 40s healthy (4 × base) lowers the multiplier from 5 to 1; this
	// ejection makes it 2: 20s.
	clk.Advance(40 * time.Second)
	if d := eject(); d != 20*time.Second {
		t.Fatalf("after a healthy spell ejection lasted %v, want 20s", d)
	}
	// A long healthy spell forgets everything.
	clk.Advance(time.Hour)
	if d := eject(); d != 10*time.Second {
		t.Fatalf("after an hour ejection lasted %v, want 10s", d)
	}
}

func TestOutlierMaxEjectedShare(t *testing.T) {
	tests := []struct {
		name    string
		members int
		share   float64
		want    int
	}{
		{"half of ten", 10, 0.5, 5},
		{"half of three rounds down", 3, 0.5, 1},
		{"one of two may always go", 2, 0.1, 1},
		{"a single peer is never ejected", 1, 0.5, 0},
		{"share zero disables", 10, 0, 0},
		{"all may go", 4, 1, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, _ := newTestOutliers(t, func(c *OutlierConfig) { c.MaxEjectedShare = tt.share })
			o.SetMembers(tt.members)
			for i := range tt.members {
				for range 5 {
					o.Record(fmt.Sprint(i), true)
				}
			}
			st := o.Stats()
			if st.Ejected != tt.want || st.Ejections != uint64(tt.want) {
				t.Fatalf("stats %+v, want %d ejected", st, tt.want)
			}
			if wantSkipped := tt.members - tt.want; st.Skipped < uint64(wantSkipped) {
				t.Fatalf("skipped %d, want at least %d", st.Skipped, wantSkipped)
			}
		})
	}
}

func TestOutlierShareFreesUpWhenEjectionsEnd(t *testing.T) {
	o, clk := newTestOutliers(t, nil)
	o.SetMembers(2)
	for range 5 {
		o.Record("a", true)
		o.Record("b", true)
	}
	if !o.Ejected("a") || o.Ejected("b") {
		t.Fatal("want only a ejected (one of two)")
	}
	clk.Advance(30 * time.Second)
	// b is still failing: now it may go.
	if !o.Record("b", true) {
		t.Fatal("b not ejected once a returned")
	}
	o.Forget("b")
	if o.Ejected("b") {
		t.Fatal("Forget kept b")
	}
}
