package scheduler

import (
	"strings"
	"testing"
	"time"
)

func TestDefaultConfigIsValid(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"window": DefaultWindowConfig().Validate(),
		"meter":  DefaultMeterConfig().Validate(),
	} {
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

func TestConfigValidateReportsEveryProblem(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Policy = "fastest"
	cfg.Balance.LoadFactor = 1
	cfg.Balance.Replicas = 0
	cfg.Balance.ZoneHeadroom = 1.5
	cfg.Balance.ZoneRecheck = -time.Second
	cfg.Balance.DefaultLatency = 0
	cfg.Tracker.Decay = 0
	cfg.Tracker.FreshFor = 0
	cfg.Tracker.StaleLoadAfter = -1
	cfg.Tracker.ForgetAfter = -1
	cfg.Outliers.ConsecutiveFailures = -1
	cfg.Outliers.ErrorRate = 1.5
	cfg.Outliers.MinRequests = 0
	cfg.Outliers.Window = 0
	cfg.Outliers.BaseEjection = time.Minute
	cfg.Outliers.MaxEjection = time.Second
	cfg.Outliers.MaxEjectedShare = 2
	cfg.Retry.BudgetRatio = -1
	cfg.Retry.MinPerSecond = -1
	cfg.Retry.Window = 0
	cfg.Retry.MaxRetryAfter = -1
	cfg.Breaker.MaxInflight = -1
	cfg.Breaker.CapacityFactor = -1
	err := cfg.Validate()
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{
		`Policy "fastest"`, "Balance.LoadFactor 1", "Balance.Replicas 0", "Balance.ZoneHeadroom 1.5",
		"Balance.ZoneRecheck -1s", "Balance.DefaultLatency 0s",
		"Tracker.Decay 0s", "Tracker.FreshFor 0s", "Tracker.StaleLoadAfter -1ns", "Tracker.ForgetAfter -1ns",
		"Outliers.ConsecutiveFailures -1", "Outliers.ErrorRate 1.5", "Outliers.MinRequests 0", "Outliers.Window 0s",
		"Outliers.MaxEjection 1s: must be at least BaseEjection (1m0s)", "Outliers.MaxEjectedShare 2",
		"Retry.BudgetRatio -1", "Retry.MinPerSecond -1", "Retry.Window 0s", "Retry.MaxRetryAfter -1ns",
		"Breaker.MaxInflight -1", "Breaker.CapacityFactor -1",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
	if _, err := New(cfg, Deps{}); err == nil {
		t.Fatal("New accepted an invalid config")
	}
}

func TestConstructorsValidate(t *testing.T) {
	if _, err := NewWindow(WindowConfig{Length: 0, Buckets: 1}, nil); err == nil || !strings.Contains(err.Error(), "Buckets 1") || !strings.Contains(err.Error(), "Length 0s") {
		t.Fatalf("NewWindow: %v", err)
	}
	if _, err := NewTracker(TrackerConfig{}, nil); err == nil {
		t.Fatal("NewTracker accepted a zero config")
	}
	if _, err := NewOutliers(OutlierConfig{}, nil); err == nil {
		t.Fatal("NewOutliers accepted a zero config")
	}
	if _, err := NewRetryBudget(RetryConfig{}, nil); err == nil {
		t.Fatal("NewRetryBudget accepted a zero config")
	}
	if _, err := NewMeter(MeterConfig{}, nil); err == nil || !strings.Contains(err.Error(), "Window.Length") {
		t.Fatalf("NewMeter: %v", err)
	}
}

func TestMeter(t *testing.T) {
	clk := newFakeClock()
	m, err := NewMeter(DefaultMeterConfig(), clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(10 * time.Second)
	for i := range 100 {
		m.Begin()
		m.End(20*time.Millisecond, i%10 == 0)
	}
	m.Begin()
	l := m.Load(8, true, 0.5, 0.25)
	if l.Version != uint64(clk.Now().UnixMilli()) || l.Inflight != 1 || l.Capacity != 8 || !l.Healthy || l.CPU != 0.5 || l.Mem != 0.25 {
		t.Fatalf("load %+v", l)
	}
	if l.LatencyEWMA != 20*time.Millisecond || !within(l.P95, 20*time.Millisecond, 0.0625) || l.ErrorRate != 0.1 || l.RPS != 100.0/9 { // 100 requests; the window spans the 9 buckets before the just-started current one
		t.Fatalf("load figures %+v", l)
	}
	if next := m.Load(8, true, 0, 0); next.Version <= l.Version {
		t.Fatalf("version did not increase: %d then %d", l.Version, next.Version)
	}
	if m.Inflight() != 1 || m.Stats().Requests != 100 {
		t.Fatal("meter counts")
	}
}
