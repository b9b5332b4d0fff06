package loadtest

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestRampPacer(t *testing.T) {
	tests := []struct {
		name   string
		stages []Stage
		rate   float64
		at     time.Duration
		hits   float64 // due by at
		rateAt float64 // instantaneous rate at at
	}{
		{"constant", nil, 200, time.Second, 200, 200},
		{"constant fraction", nil, 0.5, 10 * time.Second, 5, 0.5},
		{"linear ramp midway", []Stage{{100, 10 * time.Second}}, 100, 5 * time.Second, 125, 50},
		{"linear ramp end", []Stage{{100, 10 * time.Second}}, 100, 10 * time.Second, 500, 100},
		{"after the ramp", []Stage{{100, 10 * time.Second}}, 100, 12 * time.Second, 700, 100},
		{"stages", []Stage{{100, 30 * time.Second}, {500, time.Minute}}, 500, 90 * time.Second, 1500 + 18000, 500},
		{"plateau", []Stage{{50, 0}, {50, 10 * time.Second}}, 50, 5 * time.Second, 250, 50},
		{"step", []Stage{{10, 10 * time.Second}, {100, 0}}, 100, 11 * time.Second, 50 + 100, 100},
		{"ramp down", []Stage{{100, 0}, {0, 10 * time.Second}}, 0, 20 * time.Second, 500, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newRampPacer(tt.stages, tt.rate, 0)
			if got := p.hits(tt.at); math.Abs(got-tt.hits) > 1e-6 {
				t.Errorf("hits(%s) = %v, want %v", tt.at, got, tt.hits)
			}
			if got := p.Rate(tt.at); math.Abs(got-tt.rateAt) > 1e-6 {
				t.Errorf("Rate(%s) = %v, want %v", tt.at, got, tt.rateAt)
			}
			// dueAt inverts hits wherever the rate is positive.
			for n := 1.0; n <= math.Min(tt.hits, 1000); n *= 3 {
				at := p.dueAt(n)
				if got := p.hits(time.Duration(at * 1e9)); math.Abs(got-n) > 1e-3 {
					t.Errorf("hits(dueAt(%v) = %.6fs) = %v", n, at, got)
				}
			}
		})
	}
}

func TestRampPacerPace(t *testing.T) {
	p := newRampPacer(nil, 100, 3)
	if wait, stop := p.Pace(0, 0); stop || wait != 10*time.Millisecond {
		t.Errorf("first hit: wait %s stop %v, want 10ms at 100/s", wait, stop)
	}
	if wait, stop := p.Pace(50*time.Millisecond, 1); stop || wait != 0 {
		t.Errorf("behind: wait %s stop %v, want now", wait, stop)
	}
	if _, stop := p.Pace(time.Second, 3); !stop {
		t.Error("max 3 hits: not stopped at the 4th")
	}
	down := newRampPacer([]Stage{{100, 0}, {0, time.Second}}, 0, 0)
	if _, stop := down.Pace(2*time.Second, 50); !stop {
		t.Error("rate 0 for ever after a ramp down: not stopped")
	}
	// A ramp from 0 sends its first hit when one is due: 0→100 over 10s
	// has H(t) = 5t², so H = 1 at √0.2 s.
	up := newRampPacer([]Stage{{100, 10 * time.Second}}, 100, 0)
	if wait, _ := up.Pace(0, 0); math.Abs(wait.Seconds()-math.Sqrt(0.2)) > 1e-6 {
		t.Errorf("first hit of a ramp after %s, want %.4fs", wait, math.Sqrt(0.2))
	}
}

func TestParseRamp(t *testing.T) {
	tests := []struct {
		in     string
		want   []Stage
		staged bool
		err    string
	}{
		{"", nil, false, ""},
		{"30s", []Stage{{200, 30 * time.Second}}, false, ""},
		{"100:30s,500:1m", []Stage{{100, 30 * time.Second}, {500, time.Minute}}, true, ""},
		{" 100:30s , 0.5:0s ", []Stage{{100, 30 * time.Second}, {0.5, 0}}, true, ""},
		{"fast", nil, false, `bad --ramp "fast"`},
		{"-5s", nil, false, `bad --ramp "-5s"`},
		{"100:30s,500", nil, true, `stage 2 "500"`},
		{"x:30s", nil, true, `stage 1 "x:30s"`},
		{"-1:30s", nil, true, `stage 1`},
		{"NaN:30s", nil, true, `stage 1`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, staged, err := ParseRamp(tt.in, 200)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one mentioning %q", err, tt.err)
				}
				return
			}
			if err != nil || staged != tt.staged || len(got) != len(tt.want) {
				t.Fatalf("got %v staged %v err %v, want %v staged %v", got, staged, err, tt.want, tt.staged)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("stage %d = %v, want %v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.URL = "http://127.0.0.1:8080/"
	if err := ok.Validate(); err != nil {
		t.Fatalf("defaults with a URL: %v", err)
	}
	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no URL", func(c *Config) { c.URL = "" }, `bad URL ""`},
		{"no scheme", func(c *Config) { c.URL = "127.0.0.1:8080" }, "bad URL"},
		{"ftp", func(c *Config) { c.URL = "ftp://x/" }, "want http:// or https://"},
		{"no host", func(c *Config) { c.URL = "http:///x" }, "no host"},
		{"negative rate", func(c *Config) { c.Rate = -1 }, "--rate -1"},
		{"absurd rate", func(c *Config) { c.Rate = 1e7 }, "run several"},
		{"zero duration", func(c *Config) { c.Duration = 0 }, "--duration 0s"},
		{"long duration", func(c *Config) { c.Duration = 48 * time.Hour }, "--duration 48h0m0s"},
		{"ramp too long", func(c *Config) { c.Ramp = []Stage{{50, time.Minute}} }, "longer than --duration"},
		{"ramp at full speed", func(c *Config) { c.Rate = 0; c.Ramp = []Stage{{50, time.Second}} }, "nothing to ramp to"},
		{"connections", func(c *Config) { c.Connections = 0 }, "--connections 0"},
		{"workers over max", func(c *Config) { c.Workers = 20; c.MaxWorkers = 5 }, "--workers 20 is more than --max-workers 5"},
		{"timeout", func(c *Config) { c.Timeout = time.Hour }, "--timeout 1h0m0s"},
		{"max requests", func(c *Config) { c.MaxRequests = 0 }, "--max-requests 0"},
		{"method", func(c *Config) { c.Method = "GET X" }, "bad --method"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.mod(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
	// Every problem at once.
	c := ok
	c.Rate, c.Connections = -1, 0
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--rate") || !strings.Contains(err.Error(), "--connections") {
		t.Errorf("two problems, error %v", err)
	}
}
