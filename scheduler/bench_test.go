package scheduler

import (
	"fmt"
	"testing"
	"time"
)

var benchSizes = []int{10, 100, 1000, 10000}

// benchPeers returns n eligible peers with varied load, in three zones,
// sorted by zone as a Scheduler snapshot is.
func benchPeers(n int) []Peer {
	ps := make([]Peer, n)
	for i := range ps {
		ps[i] = active(fmt.Sprintf("node-%05d", i))
		ps[i].Zone = fmt.Sprintf("z%d", i*3/n)
		ps[i].Capacity = 16 + i%16
		ps[i].Load = Load{Version: 1, Healthy: true, Inflight: i % 7, LatencyEWMA: time.Duration(1+i%13) * time.Millisecond}
	}
	return ps
}

func benchKeys() []string {
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprintf("session-%d", i)
	}
	return keys
}

func BenchmarkPolicy(b *testing.B) {
	cfg := DefaultPolicyConfig()
	zoned := cfg
	zoned.Zone = "z1"
	policies := []struct {
		name string
		cfg  PolicyConfig
		key  bool
	}{
		{PolicyP2CEWMA, cfg, false},
		{PolicyLeastInflight, cfg, false},
		{PolicyWeightedRoundRobin, cfg, false},
		{PolicyRandom, cfg, false},
		{PolicyConsistentHash, cfg, true},
		{PolicyP2CEWMA + "+zone", zoned, false},
	}
	keys := benchKeys()
	for _, pol := range policies {
		for _, n := range benchSizes {
			b.Run(fmt.Sprintf("%s/n=%d", pol.name, n), func(b *testing.B) {
				name := pol.name
				if pol.cfg.Zone != "" {
					name = PolicyP2CEWMA
				}
				p, err := NewPolicy(name, pol.cfg, nil)
				if err != nil {
					b.Fatal(err)
				}
				cands := benchPeers(n)
				r := Request{Now: t0, Tried: []string{"node-00001"}, Key: keys[0]}
				p.Choose(cands, r) // build caches (ring, zone view, local index)
				r.Key = ""
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if pol.key {
						r.Key = keys[i&1023]
					}
					if p.Choose(cands, r) < 0 {
						b.Fatal("no choice")
					}
				}
			})
		}
	}
}

// BenchmarkSchedulerPick is the whole request-path cost: Pick (policy,
// eligibility, ejection, hold and cap checks, retry budget, in-flight slot)
// and Done (tracker, EWMA, outlier window), with live per-peer state.
func BenchmarkSchedulerPick(b *testing.B) {
	for _, policy := range []string{PolicyP2CEWMA, PolicyConsistentHash} {
		for _, n := range benchSizes {
			b.Run(fmt.Sprintf("%s/n=%d", policy, n), func(b *testing.B) {
				cfg := DefaultConfig()
				cfg.Policy = policy
				s, err := New(cfg, Deps{})
				if err != nil {
					b.Fatal(err)
				}
				s.SetPeers(benchPeers(n))
				keys := benchKeys()
				if tk, err := s.Pick(keys[0], nil); err == nil { // build caches
					tk.Done(Result{})
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					tk, err := s.Pick(keys[i&1023], nil)
					if err != nil {
						b.Fatal(err)
					}
					tk.Done(Result{Status: 200, Latency: time.Millisecond})
				}
			})
		}
	}
}

func BenchmarkSchedulerPickParallel(b *testing.B) {
	s, err := New(DefaultConfig(), Deps{})
	if err != nil {
		b.Fatal(err)
	}
	s.SetPeers(benchPeers(1000))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tk, err := s.Pick("", nil)
			if err != nil {
				b.Fatal(err)
			}
			tk.Done(Result{Status: 200, Latency: time.Millisecond})
		}
	})
}

func BenchmarkLoadCodec(b *testing.B) {
	l := sampleLoads[2]
	b.Run("EncodeLoad", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			_ = EncodeLoad(l)
		}
	})
	b.Run("AppendLoad", func(b *testing.B) {
		buf := make([]byte, 0, MaxLoadSize)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			buf = AppendLoad(buf[:0], l)
		}
	})
	b.Run("DecodeLoad", func(b *testing.B) {
		enc := EncodeLoad(l)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := DecodeLoad(enc); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkMeasurement(b *testing.B) {
	now := time.Now()
	b.Run("PeakEWMA.Observe", func(b *testing.B) {
		e := NewPeakEWMA(0)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			e.Observe(now.Add(time.Duration(i)), time.Millisecond)
		}
	})
	b.Run("PeakEWMA.Value", func(b *testing.B) {
		e := NewPeakEWMA(0)
		e.Observe(now, time.Millisecond)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			_, _ = e.Value(now)
		}
	})
	b.Run("PeakEWMA.Observe/parallel", func(b *testing.B) {
		e := NewPeakEWMA(0)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				e.Observe(time.Now(), time.Millisecond)
			}
		})
	})
	b.Run("Window.Record", func(b *testing.B) {
		w, _ := NewWindow(DefaultWindowConfig(), nil)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			w.Record(time.Duration(i&0xffff)*time.Microsecond, i&63 == 0)
		}
	})
	b.Run("Window.Record/parallel", func(b *testing.B) {
		w, _ := NewWindow(DefaultWindowConfig(), nil)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				w.Record(time.Duration(i&0xffff)*time.Microsecond, false)
				i++
			}
		})
	})
	b.Run("Window.Stats", func(b *testing.B) {
		w, _ := NewWindow(DefaultWindowConfig(), nil)
		for i := 0; i < 10000; i++ {
			w.Record(time.Duration(i)*time.Microsecond, false)
		}
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			_ = w.Stats()
		}
	})
	b.Run("Tracker.BeginEnd", func(b *testing.B) {
		tr, _ := NewTracker(DefaultTrackerConfig(), nil)
		ps := tr.Peer("a")
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			ps.Begin()
			ps.End(time.Millisecond, nil)
		}
	})
	b.Run("Tracker.BeginEnd/by-name", func(b *testing.B) {
		tr, _ := NewTracker(DefaultTrackerConfig(), nil)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			tr.Begin("a")
			tr.End("a", time.Millisecond, nil)
		}
	})
	b.Run("Breaker.AcquireRelease/parallel", func(b *testing.B) {
		br := NewBreaker(1 << 20)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if br.Acquire() {
					br.Release()
				}
			}
		})
	})
	b.Run("Outliers.Record", func(b *testing.B) {
		o, _ := NewOutliers(DefaultOutlierConfig(), nil)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			o.Record("a", false)
		}
	})
	b.Run("RetryBudget.Record", func(b *testing.B) {
		rb, _ := NewRetryBudget(DefaultRetryConfig(), nil)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			rb.Record()
		}
	})
	b.Run("RetryBudget.TryRetry", func(b *testing.B) {
		rb, _ := NewRetryBudget(RetryConfig{BudgetRatio: 10, MinPerSecond: 1000, Window: 10 * time.Second}, nil)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			rb.Record()
			rb.TryRetry()
		}
	})
}
