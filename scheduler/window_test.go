package scheduler

import (
	"sync"
	"testing"
	"time"
)

func TestHistBins(t *testing.T) {
	prev := -1
	for _, d := range []time.Duration{0, 500 * time.Nanosecond, time.Microsecond, 7 * time.Microsecond, 8 * time.Microsecond,
		9 * time.Microsecond, 100 * time.Microsecond, time.Millisecond, 12345 * time.Microsecond, time.Second, 100 * time.Second} {
		b := histBin(d)
		if b < prev {
			t.Fatalf("bins not monotonic at %v", d)
		}
		prev = b
		if v := histValue(b); d >= 8*time.Microsecond && !within(v, d, 0.0625) {
			t.Errorf("%v lands in bin %d worth %v: off by more than 6.25%%", d, b, v)
		}
	}
	if histBin(time.Hour) != histBins-1 || histBin(-time.Second) != 0 {
		t.Fatal("out-of-range samples not clamped")
	}
	for i := 0; i < histBins; i++ {
		if got := histBin(histValue(i)); got != i {
			t.Fatalf("bin %d's value %v maps to bin %d", i, histValue(i), got)
		}
	}
}

func TestWindow(t *testing.T) {
	clk := newFakeClock()
	w, err := NewWindow(WindowConfig{Length: 10 * time.Second, Buckets: 10}, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	if st := w.Stats(); st.Requests != 0 || st.RPS != 0 || st.P95 != 0 {
		t.Fatalf("empty window: %+v", st)
	}
	// 20 s of 100 requests/s: 94 at 10ms, 6 at 200ms (1 failed) each second.
	for s := 0; s < 20; s++ {
		for i := 0; i < 100; i++ {
			lat := 10 * time.Millisecond
			if i%100 >= 94 {
				lat = 200 * time.Millisecond
			}
			w.Record(lat, i == 99)
			clk.Advance(10 * time.Millisecond)
		}
	}
	st := w.Stats()
	// The window spans the 9 full buckets plus the current, empty one.
	if st.Span != 9*time.Second || st.Requests != 900 || st.Errors != 9 {
		t.Fatalf("stats %+v, want 900 requests over 9s", st)
	}
	if st.RPS != 100 || st.ErrorRate != 0.01 {
		t.Fatalf("rps %v error rate %v", st.RPS, st.ErrorRate)
	}
	if !within(st.P50, 10*time.Millisecond, 0.0625) || !within(st.P95, 200*time.Millisecond, 0.0625) || !within(st.P99, 200*time.Millisecond, 0.0625) {
		t.Fatalf("percentiles p50 %v p95 %v p99 %v", st.P50, st.P95, st.P99)
	}
	// Half a second into the next bucket.
	clk.Advance(500 * time.Millisecond)
	if st := w.Stats(); st.Span != 9500*time.Millisecond || st.Requests != 900 {
		t.Fatalf("mid-bucket: %+v", st)
	}
	// Old buckets expire without new traffic.
	clk.Advance(5 * time.Second)
	if st := w.Stats(); st.Requests != 400 {
		t.Fatalf("after 5.5s idle: %d requests, want 400", st.Requests)
	}
	clk.Advance(time.Hour)
	if st := w.Stats(); st.Requests != 0 || st.P95 != 0 {
		t.Fatalf("after an hour idle: %+v", st)
	}
}

func TestWindowYoungSpan(t *testing.T) {
	clk := newFakeClock()
	w, _ := NewWindow(DefaultWindowConfig(), clk.Now)
	clk.Advance(2 * time.Second)
	for range 50 {
		w.Record(time.Millisecond, false)
	}
	if st := w.Stats(); st.Span != 2*time.Second || st.RPS != 25 {
		t.Fatalf("young window: %+v, want 25 rps over 2s", st)
	}
}

func TestWindowConcurrent(t *testing.T) {
	clk := newFakeClock()
	w, _ := NewWindow(WindowConfig{Length: time.Second, Buckets: 4}, clk.Now)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5000 {
				w.Record(time.Millisecond, false)
			}
		}()
	}
	wg.Wait()
	if st := w.Stats(); st.Requests != 20000 {
		t.Fatalf("lost samples: %d of 20000", st.Requests)
	}
	// Rotation under concurrency must not panic or race.
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2000 {
				w.Record(time.Millisecond, true)
				clk.Advance(time.Millisecond)
				_ = w.Stats()
			}
		}()
	}
	wg.Wait()
}

func TestCounterRing(t *testing.T) {
	r := newCounterRing(10*time.Second, 10)
	sec := int64(time.Second)
	for i := int64(0); i < 15; i++ {
		r.add(i*sec, 1, uint64(i%2))
	}
	if a, b := r.sum(14 * sec); a != 10 || b != 5 {
		t.Fatalf("sum %d, %d; want the last 10 seconds: 10, 5", a, b)
	}
	// A late sample for a recycled bucket is dropped.
	r.add(2*sec, 100, 0)
	if a, _ := r.sum(14 * sec); a != 10 {
		t.Fatalf("late sample counted: %d", a)
	}
	r.reset()
	if a, b := r.sum(14 * sec); a != 0 || b != 0 {
		t.Fatal("reset kept counts")
	}
}
