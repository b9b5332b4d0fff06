package scheduler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"
)

func pickName(t *testing.T, s *Scheduler, key string, tried ...string) (Ticket, string) {
	t.Helper()
	tk, err := s.Pick(key, tried)
	if err != nil {
		t.Fatalf("Pick: %v", err)
	}
	return tk, tk.Peer.Name
}

func TestSchedulerPicksOnlyUsablePeers(t *testing.T) {
	s, _ := testScheduler(t, nil)
	if _, err := s.Pick("", nil); !errors.Is(err, ErrNoPeers) {
		t.Fatalf("empty scheduler: %v", err)
	}
	unhealthy := active("unhealthy")
	unhealthy.Load = Load{Version: 2}
	standby := active("standby")
	standby.State = StateStandby
	s.SetPeers([]Peer{active("a"), unhealthy, standby, {Name: ""}, active("b"), active("a")})
	seen := map[string]int{}
	for range 100 {
		tk, name := pickName(t, s, "")
		seen[name]++
		tk.Done(Result{Status: 200})
	}
	if len(seen) != 2 || seen["a"] == 0 || seen["b"] == 0 {
		t.Fatalf("picked %v, want a and b", seen)
	}
	if _, name := pickName(t, s, "", "a"); name != "b" {
		t.Fatalf("picked %s with a tried", name)
	}
	if _, err := s.Pick("", []string{"a", "b"}); !errors.Is(err, ErrNoPeers) || errors.Is(err, ErrSaturated) {
		t.Fatalf("everything tried: %v", err)
	}
	if st := s.Status(); len(st) != 4 || st[1].Eligible || !st[0].Eligible {
		t.Fatalf("status %+v", st)
	}
}

func TestSchedulerLocalFirstAndBreaker(t *testing.T) {
	s, _ := testScheduler(t, nil)
	local := active("self")
	local.Local, local.Addr, local.Capacity = true, "", 2
	remote := active("remote")
	remote.Capacity = 1
	s.SetPeers([]Peer{remote, local})

	// The local node takes requests up to its capacity…
	t1, n1 := pickName(t, s, "")
	t2, n2 := pickName(t, s, "")
	if n1 != "self" || n2 != "self" || !t1.Peer.Local {
		t.Fatalf("picked %s, %s; want self twice", n1, n2)
	}
	// …then the remote one, up to its cap…
	t3, n3 := pickName(t, s, "")
	if n3 != "remote" {
		t.Fatalf("picked %s with self full", n3)
	}
	// …then nobody: both at their caps.
	if _, err := s.Pick("", nil); !errors.Is(err, ErrSaturated) || !errors.Is(err, ErrNoPeers) {
		t.Fatalf("all full: %v", err)
	}
	t1.Done(Result{Status: 200})
	if _, n := pickName(t, s, ""); n != "self" {
		t.Fatalf("picked %s after self freed a slot", n)
	}
	t2.Done(Result{})
	t3.Done(Result{})
	st := s.Stats()
	if st.PickedLocal != 3 || st.PickedPeer != 1 || st.Saturated != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSchedulerBreakerCaps(t *testing.T) {
	tests := []struct {
		name     string
		cfg      BreakerConfig
		capacity int
		want     int // 0: unlimited
	}{
		{"from capacity", BreakerConfig{CapacityFactor: 1}, 8, 8},
		{"scaled capacity rounds up", BreakerConfig{CapacityFactor: 1.5}, 5, 8},
		{"fixed cap wins", BreakerConfig{MaxInflight: 3, CapacityFactor: 1}, 8, 3},
		{"unknown capacity: no cap", BreakerConfig{CapacityFactor: 1}, 0, 0},
		{"derived caps off", BreakerConfig{}, 8, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := testScheduler(t, func(c *Config) { c.Breaker = tt.cfg })
			p := active("a")
			p.Capacity = tt.capacity
			s.SetPeers([]Peer{p})
			if got := s.Status()[0].MaxInflight; got != tt.want {
				t.Fatalf("cap %d, want %d", got, tt.want)
			}
		})
	}
}

func TestSchedulerEjectsFailingPeers(t *testing.T) {
	s, clk := testScheduler(t, nil)
	s.SetPeers([]Peer{active("a"), active("b"), active("c")})
	for range 5 {
		tk, _ := pickName(t, s, "", "a", "c") // a retry: spend budget floor
		tk.Done(Result{Status: 502})
	}
	for range 50 {
		tk, name := pickName(t, s, "")
		if name == "b" {
			t.Fatal("picked ejected b")
		}
		tk.Done(Result{Status: 200})
	}
	st := s.Status()
	if st[1].EjectedUntil.IsZero() || st[1].Ejections != 1 || st[1].Failures != 5 {
		t.Fatalf("b status %+v", st[1])
	}
	// Flapping out of the peer list does not end the ejection.
	s.SetPeers([]Peer{active("a"), active("c")})
	s.SetPeers([]Peer{active("a"), active("b"), active("c")})
	if s.Status()[1].EjectedUntil.IsZero() {
		t.Fatal("ejection lost when b flapped")
	}
	clk.Advance(30 * time.Second)
	seen := map[string]bool{}
	for range 50 {
		tk, name := pickName(t, s, "")
		seen[name] = true
		tk.Done(Result{Status: 200})
	}
	if !seen["b"] {
		t.Fatal("b not back after its ejection")
	}
	if st := s.Stats(); st.Outliers.Ejections != 1 || st.Outliers.Ejected != 0 {
		t.Fatalf("outlier stats %+v", st.Outliers)
	}
}

func TestSchedulerOutcomeClassification(t *testing.T) {
	tests := []struct {
		name       string
		res        Result
		wantFailed bool
		wantHold   time.Duration
	}{
		{"ok", Result{Status: 200}, false, 0},
		{"client error", Result{Status: 404}, false, 0},
		{"server error", Result{Status: 500}, true, 0},
		{"bad gateway", Result{Status: 502}, true, 0},
		{"transport error", Result{Err: io.ErrUnexpectedEOF}, true, 0},
		{"deadline", Result{Err: context.DeadlineExceeded}, true, 0},
		{"client went away", Result{Err: fmt.Errorf("copy: %w", context.Canceled)}, false, 0},
		{"503 without Retry-After", Result{Status: 503}, true, 0},
		{"503 shedding with Retry-After", Result{Status: 503, RetryAfter: "7"}, false, 7 * time.Second},
		{"429 with Retry-After", Result{Status: 429, RetryAfter: "3"}, false, 3 * time.Second},
		{"429 without Retry-After", Result{Status: 429}, false, 0},
		{"Retry-After capped", Result{Status: 429, RetryAfter: "86400"}, false, time.Minute},
		{"Retry-After on a 200 ignored", Result{Status: 200, RetryAfter: "5"}, false, 0},
		{"unparsable Retry-After", Result{Status: 429, RetryAfter: "later"}, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.res.Failed(); got != tt.wantFailed {
				t.Fatalf("Failed() = %v, want %v", got, tt.wantFailed)
			}
			s, clk := testScheduler(t, nil)
			s.SetPeers([]Peer{active("a"), active("b")})
			tk, _ := pickName(t, s, "", "b")
			tk.Done(tt.res)
			st := s.Status()[0]
			if st.LocalInflight != 0 {
				t.Fatalf("%d left in flight", st.LocalInflight)
			}
			wantFailures := uint64(0)
			if tt.wantFailed {
				wantFailures = 1
			}
			if st.Failures != wantFailures {
				t.Fatalf("failures %d, want %d", st.Failures, wantFailures)
			}
			var wantHold time.Time
			if tt.wantHold > 0 {
				wantHold = clk.Now().Add(tt.wantHold)
			}
			if !st.HoldUntil.Equal(wantHold) {
				t.Fatalf("hold until %v, want %v", st.HoldUntil, wantHold)
			}
		})
	}
}

func TestSchedulerHonoursRetryAfter(t *testing.T) {
	s, clk := testScheduler(t, nil)
	s.SetPeers([]Peer{active("a"), active("b")})
	tk, _ := pickName(t, s, "", "b")
	tk.Done(Result{Status: 503, RetryAfter: "2"})
	for range 20 {
		tk, name := pickName(t, s, "")
		if name == "a" {
			t.Fatal("picked a during its Retry-After")
		}
		tk.Done(Result{Status: 200})
	}
	clk.Advance(2 * time.Second)
	if _, err := s.Pick("", []string{"b"}); err != nil {
		t.Fatalf("a not back after Retry-After: %v", err)
	}
	if s.Stats().RetryAfterHolds != 1 {
		t.Fatal("hold not counted")
	}
}

func TestSchedulerRetryBudget(t *testing.T) {
	s, _ := testScheduler(t, func(c *Config) { c.Retry.MinPerSecond = 0.5 }) // floor: 5 per 10s
	s.SetPeers([]Peer{active("a"), active("b")})
	for range 10 { // 10 first attempts: 2 more retries at 20%
		tk, _ := pickName(t, s, "")
		tk.Done(Result{})
	}
	for i := range 7 {
		tk, err := s.Pick("", []string{"a"})
		if err != nil {
			t.Fatalf("retry %d refused: %v", i+1, err)
		}
		tk.Done(Result{})
	}
	if _, err := s.Pick("", []string{"a"}); !errors.Is(err, ErrRetryBudgetExhausted) {
		t.Fatalf("retry 8: %v, want ErrRetryBudgetExhausted", err)
	}
	if st := s.Stats(); st.BudgetExhausted != 1 || st.RetryBudget.Granted != 7 || st.RetryBudget.Requests != 10 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSchedulerLearnsLatency(t *testing.T) {
	s, clk := testScheduler(t, func(c *Config) { c.Breaker.CapacityFactor = 0 })
	s.SetPeers([]Peer{active("fast"), active("slow")})
	// Teach it: slow takes 200ms, fast 5ms.
	for _, p := range []struct {
		name string
		lat  time.Duration
	}{{"fast", 5 * time.Millisecond}, {"slow", 200 * time.Millisecond}} {
		other := map[string]string{"fast": "slow", "slow": "fast"}[p.name]
		tk, _ := pickName(t, s, "", other)
		clk.Advance(p.lat)
		tk.Done(Result{Status: 200})
	}
	// With two candidates p2c compares both: fast wins until it has 40
	// requests in flight (5ms × 41 > 200ms × 1).
	var held []Ticket
	for i := range 40 {
		tk, name := pickName(t, s, "")
		if name != "fast" {
			t.Fatalf("request %d went to %s", i, name)
		}
		held = append(held, tk)
	}
	if _, name := pickName(t, s, ""); name != "slow" {
		t.Fatalf("request 41 went to %s", name)
	}
	for _, tk := range held {
		tk.Done(Result{Latency: 5 * time.Millisecond})
	}
	if got := s.Status()[0].LocalInflight; got != 0 {
		t.Fatalf("%d left in flight", got)
	}
}

func TestSchedulerUsesLocalGauge(t *testing.T) {
	clk := newFakeClock()
	busy := 0
	cfg := DefaultConfig()
	s, err := New(cfg, Deps{Now: clk.Now, Rand: seeded(1), LocalInflight: func() int { return busy }})
	if err != nil {
		t.Fatal(err)
	}
	local := active("self")
	local.Local, local.Capacity = true, 4
	s.SetPeers([]Peer{local, active("peer")})
	if tk, _ := pickName(t, s, ""); !tk.Peer.Local {
		t.Fatal("idle local node not chosen")
	} else {
		tk.Done(Result{})
	}
	busy = 4 // the backend is full with requests forwarded by others
	for range 20 {
		tk, name := pickName(t, s, "")
		if name != "peer" {
			t.Fatalf("picked %s with the local backend full", name)
		}
		tk.Done(Result{})
	}
}

func TestSchedulerZoneSpillsAreCounted(t *testing.T) {
	s, _ := testScheduler(t, func(c *Config) { c.Balance.Zone = "z1" })
	a, b := active("a"), active("b")
	a.Zone, b.Zone = "z1", "z2"
	s.SetPeers([]Peer{a, b})
	for range 10 {
		if _, n := pickName(t, s, ""); n != "a" {
			t.Fatalf("picked %s outside the zone", n)
		}
	}
	if _, n := pickName(t, s, "", "a"); n != "b" || s.Stats().ZoneSpills != 1 {
		t.Fatalf("picked %s, spills %d", n, s.Stats().ZoneSpills)
	}
}

func TestSchedulerForgetsDepartedPeers(t *testing.T) {
	s, clk := testScheduler(t, nil)
	s.SetPeers([]Peer{active("a"), active("b")})
	tk, _ := pickName(t, s, "", "b")
	tk.Done(Result{Status: 200})
	s.SetPeers([]Peer{active("b")})
	clk.Advance(4 * time.Minute)
	s.SetPeers([]Peer{active("b")})
	if _, ok := s.records["a"]; !ok {
		t.Fatal("a forgotten before ForgetAfter")
	}
	clk.Advance(time.Minute)
	s.SetPeers([]Peer{active("b")})
	if _, ok := s.records["a"]; ok {
		t.Fatal("a kept after ForgetAfter")
	}
	s.SetPeers([]Peer{active("a"), active("b")})
	if st := s.Status()[0]; st.Requests != 0 {
		t.Fatalf("a came back with old figures: %+v", st)
	}
}

func TestSchedulerConcurrent(t *testing.T) {
	for _, policy := range PolicyNames() {
		t.Run(policy, func(t *testing.T) {
			t.Parallel()
			cfg := DefaultConfig()
			cfg.Policy = policy
			cfg.Balance.Zone = "z1"
			s, err := New(cfg, Deps{})
			if err != nil {
				t.Fatal(err)
			}
			testSchedulerConcurrent(t, s)
		})
	}
}

func testSchedulerConcurrent(t *testing.T, s *Scheduler) {
	peers := peerList(20, 2)
	peers[0].Local = true
	for i := range peers {
		peers[i].Zone = fmt.Sprint("z", i%3)
	}
	s.SetPeers(peers)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() { // membership churn
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			s.SetPeers(peers[:10+i%10])
			_ = s.Stats()
			_ = s.Status()
		}
	}()
	var workers sync.WaitGroup
	for g := range 8 {
		workers.Add(1)
		go func() {
			defer workers.Done()
			var held []Ticket // keep a few in flight so caps and p2c come into play
			for i := range 2000 {
				tk, err := s.Pick(fmt.Sprint(i%50), nil)
				if err == nil {
					held = append(held, tk)
				}
				if len(held) == 3 || err != nil {
					for j, tk := range held {
						res := Result{Status: 200}
						if (i+g+j)%17 == 0 {
							res.Status = 502
						}
						tk.Done(res)
					}
					held = held[:0]
				}
			}
			for _, tk := range held {
				tk.Done(Result{})
			}
		}()
	}
	workers.Wait()
	close(stop)
	wg.Wait()
	s.SetPeers(peers)
	for _, st := range s.Status() {
		if st.LocalInflight != 0 {
			t.Fatalf("%s: %d left in flight", st.Name, st.LocalInflight)
		}
	}
}

func TestTicketZeroDone(t *testing.T) {
	var tk Ticket
	tk.Done(Result{Status: 500}) // must not panic
}

func TestPanicModeWhenNoCandidateIsHealthy(t *testing.T) {
	s, err := New(DefaultConfig(), Deps{})
	if err != nil {
		t.Fatal(err)
	}
	sick := Load{Version: 1, Healthy: false, Capacity: 10}
	s.SetPeers([]Peer{
		{Name: "a", Addr: "a:1", State: StateActive, Serving: true, Load: sick},
		{Name: "b", Addr: "b:1", State: StateStandby, Serving: true, Load: sick},
	})
	tk, err := s.Pick("", nil)
	if err != nil || tk.Peer.Name != "a" || !s.Stats().Panic {
		t.Fatalf("pick %q, %v, panic=%v: want a in panic mode (b is standby)", tk.Peer.Name, err, s.Stats().Panic)
	}
	tk.Done(Result{Status: 200})
	s.SetPeers([]Peer{
		{Name: "a", Addr: "a:1", State: StateActive, Serving: true, Load: sick},
		{Name: "c", Addr: "c:1", State: StateActive, Serving: true, Load: Load{Version: 1, Healthy: true, Capacity: 10}},
	})
	for range 20 {
		tk, err := s.Pick("", nil)
		if err != nil || tk.Peer.Name != "c" || s.Stats().Panic {
			t.Fatalf("pick %q, %v: want only healthy c once one is healthy", tk.Peer.Name, err)
		}
		tk.Done(Result{Status: 200})
	}
}

func TestSilentPeerLooksSlowerEveryMoment(t *testing.T) {
	clk := time.Unix(1000, 0)
	now := func() time.Time { return clk }
	s, err := New(DefaultConfig(), Deps{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	s.SetPeers([]Peer{{Name: "a", Addr: "a:1", State: StateActive, Serving: true, Capacity: 100}})
	// A few quick answers give a 2ms estimate.
	for range 5 {
		tk, _ := s.Pick("", nil)
		clk = clk.Add(2 * time.Millisecond)
		tk.Done(Result{Status: 200})
	}
	tk, _ := s.Pick("", nil) // never answered: the peer died
	p := s.snap.Load().cands[0]
	clk = clk.Add(time.Second)
	if d, _ := p.Latency(clk); d < time.Second {
		t.Fatalf("latency %s after 1s of silence with a request in flight; want ≥ 1s", d)
	}
	tk.Done(Result{Err: context.DeadlineExceeded})
	if st := p.live.stats.stalled(clk.UnixNano()); st != 0 {
		t.Fatalf("stalled %s once nothing is in flight", st)
	}
}
