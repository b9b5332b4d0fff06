package scheduler

import (
	"testing"
	"time"
)

func TestRetryBudget(t *testing.T) {
	tests := []struct {
		name        string
		ratio, min  float64
		requests    int
		wantAllowed int
	}{
		{"floor only", 0.2, 3, 0, 30},                  // 3/s over 10s
		{"ratio on top of the floor", 0.2, 3, 100, 50}, // 20 + 30
		{"ratio only", 0.2, 0, 1000, 200},
		{"no retries at all", 0, 0, 1000, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			b, err := NewRetryBudget(RetryConfig{BudgetRatio: tt.ratio, MinPerSecond: tt.min, Window: 10 * time.Second}, clk.Now)
			if err != nil {
				t.Fatal(err)
			}
			for range tt.requests {
				b.Record()
			}
			allowed := 0
			for range 10000 {
				if !b.TryRetry() {
					break
				}
				allowed++
			}
			if allowed != tt.wantAllowed {
				t.Fatalf("%d retries allowed, want %d", allowed, tt.wantAllowed)
			}
			st := b.Stats()
			if st.Granted != uint64(allowed) || st.Rejected != 1 || st.Available != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestRetryBudgetRefillsAsTheWindowSlides(t *testing.T) {
	clk := newFakeClock()
	b, _ := NewRetryBudget(RetryConfig{BudgetRatio: 0.5, MinPerSecond: 0, Window: 10 * time.Second}, clk.Now)
	for range 10 {
		b.Record()
	}
	for range 5 {
		if !b.TryRetry() {
			t.Fatal("retry within budget refused")
		}
	}
	if b.TryRetry() {
		t.Fatal("sixth retry allowed with 10 requests at 50%")
	}
	clk.Advance(10 * time.Second)
	if b.TryRetry() {
		t.Fatal("retry allowed with no requests in the window")
	}
	for range 2 {
		b.Record()
	}
	if !b.TryRetry() || b.TryRetry() {
		t.Fatal("want exactly one retry for two new requests")
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in     string
		want   time.Duration
		wantOK bool
	}{
		{"120", 2 * time.Minute, true},
		{" 0 ", 0, true},
		{"Sat, 01 Mar 2025 12:00:30 GMT", 30 * time.Second, true},
		{"Saturday, 01-Mar-25 12:01:00 GMT", time.Minute, true},
		{"Sat Mar  1 12:00:05 2025", 5 * time.Second, true},
		{"Sat, 01 Mar 2025 11:00:00 GMT", 0, true}, // in the past
		{"99999999999999999999999", time.Duration(1<<63 - 1), true},
		{"", 0, false},
		{"-5", 0, false},
		{"1.5", 0, false},
		{"soon", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := ParseRetryAfter(tt.in, now)
			if got != tt.want || ok != tt.wantOK {
				t.Fatalf("ParseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}
