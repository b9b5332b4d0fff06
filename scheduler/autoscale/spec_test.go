package autoscale

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestParseSpecDefaults(t *testing.T) {
	got, err := ParseSpec([]byte("mode: auto\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, DefaultSpec()) {
		t.Fatalf("ParseSpec of a near-empty file = %+v, want DefaultSpec", got)
	}
	h, err := ParseSpec([]byte("hooks:\n  replace: {command: [x]}\n  scale_in: {url: 'https://h/', retries: 0, timeout: 5s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*h.Hooks.Replace, Hook{Command: []string{"x"}, Timeout: Duration(30 * time.Second), Retries: 2, Backoff: Duration(2 * time.Second)}) {
		t.Fatalf("hook defaults: %+v", *h.Hooks.Replace)
	}
	if h.Hooks.ScaleIn.Retries != 0 || h.Hooks.ScaleIn.Timeout != Duration(5*time.Second) {
		t.Fatalf("explicit hook values lost: %+v", *h.Hooks.ScaleIn)
	}
	if err := DefaultSpec().Validate(); err != nil {
		t.Fatalf("DefaultSpec invalid: %v", err)
	}
}

func TestParseSpecExample(t *testing.T) {
	data, err := os.ReadFile("../../deploy/plan.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s, err := ParseSpec(data)
	if err != nil {
		t.Fatalf("deploy/plan.example.yaml: %v", err)
	}
	if s.Limits.MaxActive != 40 || s.Limits.Zones["north"].Min != 1 || !s.Predictive.Enabled ||
		len(s.Schedules) != 2 || s.Schedules[1].Duration != Duration(65*time.Minute) ||
		s.Hooks.ScaleIn == nil || s.Hooks.ScaleIn.URL == "" || s.Hooks.ScaleOut.Timeout != Duration(2*time.Minute) ||
		s.Targets.P95Latency != Duration(250*time.Millisecond) || s.Selection.CarbonIntensity["west"] != 320 {
		t.Fatalf("example parsed wrong: %+v", s)
	}
}

func TestParseSpecErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "empty"},
		{"unknown field", "mode: auto\nmax_nodes: 3\n", "field max_nodes not found"},
		{"unknown nested field", "limits:\n  maximum: 3\n", "field maximum not found"},
		{"unknown hook field", "hooks:\n  scale_out: {url: 'https://x/', method: PUT}\n", "field method not found"},
		{"hook not a mapping", "hooks:\n  scale_out: /bin/true\n", "want a mapping"},
		{"two documents", "mode: auto\n---\nmode: manual\n", "one YAML document"},
		{"bad duration", "interval: fast\n", `duration "fast"`},
		{"duration list", "interval: [1]\n", "want a duration"},
		{"wrong type", "limits:\n  min_active: many\n", "cannot unmarshal"},
		{"invalid value", "mode: sometimes\n", `mode "sometimes"`},
		{"too big", strings.Repeat("#", MaxSpecSize+1), "over the"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseSpec([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseSpec error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Spec)
		want []string // substrings, all required; nil means valid
	}{
		{"default", func(*Spec) {}, nil},
		{"negative min", func(s *Spec) { s.Limits.MinActive = -1 }, []string{"limits.min_active -1"}},
		{"min above max", func(s *Spec) { s.Limits.MinActive, s.Limits.MaxActive = 5, 3 }, []string{"min_active 5 is above limits.max_active 3"}},
		{"zone min above max", func(s *Spec) { s.Limits.Zones = map[string]ZoneLimits{"a": {Min: 3, Max: 2}} }, []string{"limits.zones.a.min 3 is above its max 2"}},
		{"zone mins above max", func(s *Spec) {
			s.Limits.MaxActive = 3
			s.Limits.Zones = map[string]ZoneLimits{"a": {Min: 2}, "b": {Min: 2}}
		}, []string{"add up to 4, above limits.max_active 3"}},
		{"negative zone max", func(s *Spec) { s.Limits.Zones = map[string]ZoneLimits{"a": {Max: -1}} }, []string{"limits.zones.a.max -1"}},
		{"no targets", func(s *Spec) { s.Targets = Targets{}; s.Rollback.Enabled = false }, []string{"targets: all off"}},
		{"ratio above 1", func(s *Spec) { s.Targets.CPU = 1.5 }, []string{"targets.cpu 1.5"}},
		{"negative rps", func(s *Spec) { s.Targets.RPSPerNode = -3 }, []string{"targets.rps_per_node -3"}},
		{"latency too low", func(s *Spec) { s.Targets.P95Latency = Duration(time.Microsecond) }, []string{"targets.p95_latency 1µs"}},
		{"tolerance", func(s *Spec) { s.Tolerance = 0.9 }, []string{"tolerance 0.9"}},
		{"interval", func(s *Spec) { s.Interval = Duration(time.Millisecond) }, []string{"interval 1ms"}},
		{"stabilisation", func(s *Spec) { s.ScaleIn.Stabilisation = Duration(2 * time.Hour) }, []string{"scale_in.stabilisation 2h0m0s"}},
		{"step", func(s *Spec) { s.ScaleOut.MaxStepNodes = -1 }, []string{"scale_out.max_step_nodes -1"}},
		{"new node state", func(s *Spec) { s.NewNodeState = "draining" }, []string{`new_node_state "draining"`}},
		{"predictive needs rps", func(s *Spec) { s.Predictive.Enabled = true }, []string{"predictive.enabled needs targets.rps_per_node"}},
		{"predictive params", func(s *Spec) {
			s.Predictive.Alpha, s.Predictive.Bucket, s.Predictive.Method = 1.5, Duration(7*time.Minute), "arima"
		}, []string{"predictive.alpha 1.5", "predictive.bucket 7m0s", `predictive.method "arima"`}},
		{"min history beyond ring", func(s *Spec) {
			s.Predictive.MinHistory = Duration(10 * 24 * time.Hour)
			s.Predictive.HistoryLength = Duration(7 * 24 * time.Hour)
		}, []string{"longer than predictive.history_length"}},
		{"bad cron", func(s *Spec) {
			s.Schedules = []Schedule{{Name: "x", Start: "61 * * * *", Duration: Duration(time.Hour), MinActive: intp(3)}}
		}, []string{"schedules[0] (x): start"}},
		{"never fires", func(s *Spec) {
			s.Schedules = []Schedule{{Name: "feb30", Start: "0 0 30 2 *", Duration: Duration(time.Hour), MinActive: intp(3)}}
		}, []string{"never fires"}},
		{"tz prefix refused", func(s *Spec) {
			s.Schedules = []Schedule{{Name: "tz", Start: "TZ=UTC", Duration: Duration(time.Hour), MinActive: intp(3)}}
		}, []string{"put the zone in time_zone"}},
		{"@every refused", func(s *Spec) {
			s.Schedules = []Schedule{{Name: "ev", Start: "@every 1h", Duration: Duration(time.Hour), MinActive: intp(3)}}
		}, []string{"@every"}},
		{"unknown zone", func(s *Spec) {
			s.Schedules = []Schedule{{Name: "x", Start: "@daily", Duration: Duration(time.Hour), TimeZone: "Mars/Olympus", MinActive: intp(3)}}
		}, []string{`time_zone "Mars/Olympus"`}},
		{"duration and end", func(s *Spec) {
			s.Schedules = []Schedule{{Name: "x", Start: "@daily", End: "@weekly", Duration: Duration(time.Hour), MinActive: intp(3)}}
		}, []string{"not both"}},
		{"neither duration nor end", func(s *Spec) {
			s.Schedules = []Schedule{{Name: "x", Start: "@daily", MinActive: intp(3)}}
		}, []string{"set duration or end"}},
		{"too long", func(s *Spec) {
			s.Schedules = []Schedule{{Name: "x", Start: "@daily", Duration: Duration(400 * 24 * time.Hour), MinActive: intp(3)}}
		}, []string{"want 1m to 366d"}},
		{"schedule limits", func(s *Spec) {
			s.Schedules = []Schedule{{Name: "x", Start: "@daily", Duration: Duration(time.Hour), MinActive: intp(5), MaxActive: intp(4)}, {Name: "x", Start: "@daily", Duration: Duration(time.Hour)}}
		}, []string{"min_active 5 is above its max_active 4", "duplicate", "sets neither"}},
		{"too many schedules", func(s *Spec) {
			for i := 0; i < MaxSchedules+1; i++ {
				s.Schedules = append(s.Schedules, Schedule{Name: string(rune('a'+i%26)) + strings.Repeat("x", i), Start: "@daily", Duration: Duration(time.Hour), MinActive: intp(1)})
			}
		}, []string{"65 entries, at most 64"}},
		{"hook both", func(s *Spec) {
			s.Hooks.ScaleOut = &Hook{Command: []string{"x"}, URL: "http://h/", Timeout: Duration(time.Second)}
		}, []string{"hooks.scale_out: set command or url, not both"}},
		{"hook bad url", func(s *Spec) { s.Hooks.Replace = &Hook{URL: "ftp://h/", Timeout: Duration(time.Second), Retries: 11} }, []string{"hooks.replace.url", "hooks.replace.retries 11"}},
		{"hook timeout", func(s *Spec) { s.Hooks.ScaleIn = &Hook{Command: []string{"x"}} }, []string{"hooks.scale_in.timeout 0s"}},
		{"hook backoff", func(s *Spec) {
			s.Hooks.ScaleIn = &Hook{Command: []string{"x"}, Timeout: Duration(time.Second), Backoff: Duration(2 * time.Minute)}
		}, []string{"hooks.scale_in.backoff 2m0s"}},
		{"rollback needs slo", func(s *Spec) { s.Targets = Targets{CPU: 0.5} }, []string{"rollback.enabled needs"}},
		{"selection", func(s *Spec) {
			s.Selection.CarbonIntensity = map[string]float64{"r": -1}
			s.Selection.CarbonPrice = 1000
		}, []string{"selection.carbon_intensity.r -1", "selection.carbon_price 1000"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := DefaultSpec()
			tt.edit(&s)
			err := s.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate = nil, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	s := DefaultSpec()
	s.Mode = "on"
	s.Limits.MinActive = -2
	s.Targets.Memory = 2
	s.Predictive.Horizon = 0
	s.Rollback.Watch = 0
	err := s.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{`mode "on"`, "limits.min_active -2", "targets.memory 2", "predictive.horizon 0s", "rollback.watch 0s"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != 5 {
		t.Errorf("%d problems reported, want 5:\n%v", n, err)
	}
}

func TestDurationSyntax(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		err  bool
	}{
		{"15s", 15 * time.Second, false},
		{"7d", 7 * 24 * time.Hour, false},
		{"2w", 14 * 24 * time.Hour, false},
		{"1d12h", 36 * time.Hour, false},
		{"1.5h", 90 * time.Minute, false},
		{"d", 0, true},
		{"99999d", 0, true},
		{"", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if (err != nil) != tt.err || got.D() != tt.want {
			t.Errorf("ParseDuration(%q) = %v, %v", tt.in, got, err)
		}
	}
	if s := Duration(48 * time.Hour).String(); s != "2d" {
		t.Errorf("String = %q", s)
	}
}

func TestDiff(t *testing.T) {
	a := DefaultSpec()
	a.Schedules = []Schedule{{Name: "week", Start: "@weekly", Duration: Duration(time.Hour), MinActive: intp(3), TimeZone: "UTC"}}
	b := a
	b.Limits.MaxActive = 60
	b.Limits.Zones = map[string]ZoneLimits{"north": {Min: 1}}
	b.Schedules = []Schedule{
		{Name: "week", Start: "@weekly", Duration: Duration(2 * time.Hour), MinActive: intp(4), TimeZone: "UTC"},
		{Name: "new", Start: "@daily", Duration: Duration(time.Hour), MaxActive: intp(9), TimeZone: "UTC"},
	}
	b.Hooks.ScaleOut = &Hook{URL: "https://h/x", Timeout: Duration(time.Second)}
	b.Mode = ModeDryRun
	got := Diff(a, b)
	want := []string{
		"mode: auto → dry-run",
		"limits.max_active: 100 → 60",
		"limits.zones.north: added {min: 1}",
		"schedules[week].duration: 1h0m0s → 2h0m0s",
		"schedules[week].min_active: 3 → 4",
		`schedules: added "new"`,
		`hooks.scale_out: added {url: "https://h/x", timeout: 1s}`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Diff =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if d := Diff(a, a); len(d) != 0 {
		t.Fatalf("Diff(a, a) = %v", d)
	}
	if d := Diff(b, a); len(d) != len(want) || !strings.Contains(strings.Join(d, "\n"), `schedules: removed "new"`) {
		t.Fatalf("Diff(b, a) = %v", d)
	}
}

func FuzzParseSpec(f *testing.F) {
	if data, err := os.ReadFile("../../deploy/plan.example.yaml"); err == nil {
		f.Add(data)
	}
	f.Add([]byte("mode: manual\nlimits: {min_active: 2, max_active: 3}\n"))
	f.Add([]byte("schedules:\n- {name: a, start: '0 9 * * 1-5', duration: 8h, time_zone: Europe/Paris, min_active: 4}\n"))
	f.Add([]byte("schedules:\n- {name: a, start: 'TZ=', end: '@daily', min_active: 4}\n"))
	f.Add([]byte("hooks: {scale_out: {url: 'http://x/'}}\n"))
	f.Add([]byte("interval: 1d12h\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSpec(data)
		if err != nil {
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("ParseSpec accepted an invalid spec: %v", err)
		}
		if _, err := New(s); err != nil {
			t.Fatalf("New refused a parsed spec: %v", err)
		}
		// A parsed spec survives encoding and parsing again unchanged.
		out, err := yaml.Marshal(s)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		s2, err := ParseSpec(out)
		if err != nil {
			t.Fatalf("re-parse: %v\n%s", err, out)
		}
		if d := Diff(s, s2); len(d) > 0 {
			t.Fatalf("round trip changed: %v", d)
		}
	})
}

func TestParseNodeTags(t *testing.T) {
	got, err := ParseNodeTags(map[string]string{"cost_per_hour": "0.12", "spot": "true", "carbon_region": "north", "power_watts": "250", "rack": "r1"})
	want := NodeTags{CostPerHour: 0.12, Spot: true, CarbonRegion: "north", PowerWatts: 250}
	if err != nil || got != want {
		t.Fatalf("ParseNodeTags = %+v, %v", got, err)
	}
	got, err = ParseNodeTags(map[string]string{"cost_per_hour": "cheap", "spot": "maybe", "carbon_region": "south"})
	if err == nil || !strings.Contains(err.Error(), "cost_per_hour") || !strings.Contains(err.Error(), "spot") || got.CarbonRegion != "south" {
		t.Fatalf("ParseNodeTags bad = %+v, %v", got, err)
	}
}
