package scheduler

import (
	"math"
	"sync"
	"testing"
	"time"
)

func within(got, want time.Duration, tol float64) bool {
	return math.Abs(float64(got-want)) <= tol*float64(want)+1
}

func TestPeakEWMA(t *testing.T) {
	const tau = 10 * time.Second
	type step struct {
		advance time.Duration
		sample  time.Duration // 0: no sample, just read
		want    time.Duration
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"first sample is the value", []step{
			{0, 20 * time.Millisecond, 20 * time.Millisecond},
		}},
		{"a peak is taken at once", []step{
			{0, 10 * time.Millisecond, 10 * time.Millisecond},
			{time.Millisecond, 100 * time.Millisecond, 100 * time.Millisecond},
		}},
		{"a lower sample soon after moves the value a little", []step{
			{0, 100 * time.Millisecond, 100 * time.Millisecond},
			// w = exp(-0.1): prior 90.48ms, value 90.48·w + 10·(1-w) = 82.82ms
			{time.Second, 10 * time.Millisecond, 82823 * time.Microsecond},
		}},
		{"the value decays towards zero while idle", []step{
			{0, 100 * time.Millisecond, 100 * time.Millisecond},
			{tau, 0, 36788 * time.Microsecond},    // 1/e
			{2 * tau, 0, 4979 * time.Microsecond}, // 1/e³
		}},
		{"after a long idle period a low sample is a peak", []step{
			{0, 100 * time.Millisecond, 100 * time.Millisecond},
			{10 * tau, 5 * time.Millisecond, 5 * time.Millisecond},
		}},
		{"steady samples hold the value", []step{
			{0, 30 * time.Millisecond, 30 * time.Millisecond},
			{time.Millisecond, 30 * time.Millisecond, 30 * time.Millisecond},
			{time.Millisecond, 30 * time.Millisecond, 30 * time.Millisecond},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			e := NewPeakEWMA(tau)
			if _, ok := e.Value(clk.Now()); ok {
				t.Fatal("value before any sample")
			}
			for i, st := range tt.steps {
				clk.Advance(st.advance)
				if st.sample > 0 {
					e.Observe(clk.Now(), st.sample)
				}
				got, ok := e.Value(clk.Now())
				if !ok || !within(got, st.want, 0.001) {
					t.Fatalf("step %d: value %v (%v), want %v", i, got, ok, st.want)
				}
			}
		})
	}
}

func TestPeakEWMAConvergesDownward(t *testing.T) {
	clk := newFakeClock()
	e := NewPeakEWMA(time.Second)
	e.Observe(clk.Now(), 100*time.Millisecond)
	// 100 requests/s at 10ms for 5 tau: the estimate must come down to
	// the new latency, not stay at the old peak.
	for range 500 {
		clk.Advance(10 * time.Millisecond)
		e.Observe(clk.Now(), 10*time.Millisecond)
	}
	if got, _ := e.Value(clk.Now()); !within(got, 10*time.Millisecond, 0.05) {
		t.Fatalf("value %v after 5 tau of 10ms samples", got)
	}
	if !e.LastSample().Equal(clk.Now()) {
		t.Fatalf("LastSample %v, want %v", e.LastSample(), clk.Now())
	}
}

func TestPeakEWMAConcurrent(t *testing.T) {
	e := NewPeakEWMA(time.Second)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				now := time.Unix(0, int64(i)*int64(time.Millisecond))
				e.Observe(now, time.Duration(g+1)*time.Millisecond)
				if v, ok := e.Value(now); !ok || v < 0 || v > 4*time.Millisecond {
					t.Errorf("value %v out of the samples' range", v)
					return
				}
			}
		}()
	}
	wg.Wait()
}
