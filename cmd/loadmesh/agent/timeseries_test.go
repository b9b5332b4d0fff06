package agent

import (
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/loadmesh/loadmesh/store"
)

func TestSeriesRing(t *testing.T) {
	at := func(i int) SeriesPoint { return SeriesPoint{Time: time.Unix(int64(i), 0), RPS: float64(i)} }
	rps := func(ps []SeriesPoint) string {
		s := ""
		for _, p := range ps {
			s += fmt.Sprintf("%g ", p.RPS)
		}
		return s
	}
	for _, tt := range []struct {
		name string
		size int
		adds int
		want string
	}{
		{"empty", 3, 0, ""},
		{"partly filled", 3, 2, "0 1 "},
		{"exactly full", 3, 3, "0 1 2 "},
		{"wrapped once", 3, 4, "1 2 3 "},
		{"wrapped to the start", 3, 6, "3 4 5 "},
		{"wrapped many times", 3, 11, "8 9 10 "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newSeriesRing(tt.size)
			for i := range tt.adds {
				r.add(at(i))
			}
			got := r.points()
			if s := rps(got); s != tt.want {
				t.Fatalf("points = %q, want %q", s, tt.want)
			}
			if got == nil {
				return
			}
			// The copy is the caller's.
			got[0].RPS = -1
			if rps(r.points()) != tt.want {
				t.Fatal("points shares memory with the ring")
			}
		})
	}
}

func TestSeriesSamplerSize(t *testing.T) {
	for _, tt := range []struct {
		interval time.Duration
		want     int
	}{
		{10 * time.Second, 360},
		{time.Minute, 60},
		{100 * time.Millisecond, maxSeriesPoints},
		{2 * time.Hour, 2},
	} {
		s := newSeriesSampler(tt.interval, nil)
		if n := len(s.ring.buf); n != tt.want {
			t.Errorf("interval %s: ring of %d, want %d", tt.interval, n, tt.want)
		}
	}
}

// TestSeriesSampler runs the sampler on synctest's fake clock: a sample at
// start, then one per interval (unless sample has nothing), and nothing
// after stop.
func TestSeriesSampler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		var mu sync.Mutex
		calls := 0
		s := newSeriesSampler(10*time.Second, func(now time.Time) (SeriesPoint, bool) {
			mu.Lock()
			defer mu.Unlock()
			calls++
			// Nothing to record at the third tick.
			return SeriesPoint{Time: now, RPS: float64(calls)}, calls != 3
		})
		s.start()
		time.Sleep(45 * time.Second)
		synctest.Wait()
		pts := s.points()
		if len(pts) != 4 {
			t.Fatalf("after 45s at 10s intervals, one skipped: %d samples, want 4", len(pts))
		}
		for i, p := range pts {
			at := []time.Duration{0, 10, 30, 40}[i] * time.Second
			if want := start.Add(at); !p.Time.Equal(want) {
				t.Errorf("sample %d at %s, want %s", i, p.Time.Sub(start), want.Sub(start))
			}
		}
		s.stop()
		s.stop() // idempotent
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := len(s.points()); n != 4 {
			t.Fatalf("%d samples after stop, want 4", n)
		}
		var never *seriesSampler
		never.stop()
		if never.points() != nil {
			t.Fatal("a nil sampler has points")
		}
	})
}

func TestMergeSeries(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	from := now.Add(-time.Hour)
	minute := func(m int) time.Time { return now.Add(time.Duration(m) * time.Minute) }
	hist := []store.DemandPoint{
		{Minute: minute(-90), RPS: 1, Active: 1},          // before the window
		{Minute: minute(-60), RPS: 2, Active: 2, P95: .2}, // first minute of the window
		{Minute: minute(-30), RPS: 3, Active: 3},
		{Minute: minute(-7), RPS: 4, Active: 4}, // ends at the first sample
		{Minute: minute(-6), RPS: 5, Active: 4}, // covered by samples
	}
	samples := []SeriesPoint{
		{Time: minute(-6), RPS: 10, Active: 5},
		{Time: minute(-1), RPS: 11, Active: 5},
	}
	got := mergeSeries(hist, samples, from, now)
	want := []struct {
		at     time.Time
		rps    float64
		source string
	}{
		{minute(-60), 2, "history"},
		{minute(-30), 3, "history"},
		{minute(-7), 4, "history"},
		{minute(-6), 10, ""},
		{minute(-1), 11, ""},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d points %+v, want %d", len(got), got, len(want))
	}
	for i, w := range want {
		if g := got[i]; !g.Time.Equal(w.at) || g.RPS != w.rps || g.Source != w.source {
			t.Errorf("point %d = %s rps %g source %q, want %s rps %g source %q", i, g.Time, g.RPS, g.Source, w.at, w.rps, w.source)
		}
	}
	if got[0].P95Max == nil || *got[0].P95Max != .2 || got[1].P95Max != nil {
		t.Errorf("history p95 not carried over as it is: %v, %v", got[0].P95Max, got[1].P95Max)
	}

	t.Run("no samples yet: the history minutes ended by now", func(t *testing.T) {
		got := mergeSeries(hist, nil, from, now.Add(-30*time.Second))
		if len(got) != 4 || got[3].RPS != 5 {
			t.Fatalf("got %+v", got)
		}
	})
	t.Run("nothing: an empty list, not null", func(t *testing.T) {
		if got := mergeSeries(nil, nil, from, now); got == nil || len(got) != 0 {
			t.Fatalf("got %#v", got)
		}
	})
	t.Run("samples older than the window are dropped", func(t *testing.T) {
		old := []SeriesPoint{{Time: minute(-61)}, {Time: minute(-59), RPS: 7}}
		got := mergeSeries(nil, old, from, now)
		if len(got) != 1 || got[0].RPS != 7 {
			t.Fatalf("got %+v", got)
		}
	})
}
