package autoscale

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestReadTrace(t *testing.T) {
	tests := []struct {
		name, in string
		step     time.Duration
		rps      []float64
		err      string
	}{
		{"shared format", "timestamp,rps\n2016-01-01T00:00:00Z,1183.18\n2016-01-01T01:00:00Z,1519.96\n", time.Hour, []float64{1183.18, 1519.96}, ""},
		{"long header, comments, CRLF", "# demand\r\ntimestamp,requests_per_second\r\n\r\n2026-01-01T00:00:00+01:00,5\r\n2026-01-01T00:00:10+01:00,6\r\n", 10 * time.Second, []float64{5, 6}, ""},
		{"counts to rate", "period,count\n2019-01-06,600\n2019-01-13,1200\n2019-01-20,0\n", 7 * 24 * time.Hour, []float64{600.0 / 604800, 1200.0 / 604800, 0}, ""},
		{"unix seconds", "ts,rate\n1700000000,1\n1700000060,2\n", time.Minute, []float64{1, 2}, ""},
		{"no header", "2026-01-01T00:00:00Z,5\n", 0, nil, "header"},
		{"decreasing", "timestamp,rps\n2026-01-01T00:01:00Z,1\n2026-01-01T00:00:00Z,1\n", 0, nil, "not after"},
		{"negative", "timestamp,rps\n2026-01-01T00:00:00Z,-1\n2026-01-01T00:01:00Z,1\n", 0, nil, "non-negative"},
		{"bad time", "timestamp,rps\nyesterday,1\n2026-01-01T00:01:00Z,1\n", 0, nil, `timestamp "yesterday"`},
		{"one row", "timestamp,rps\n2026-01-01T00:00:00Z,1\n", 0, nil, "at least 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := ReadTrace(strings.NewReader(tt.in), "x.csv")
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tr.Step != tt.step || len(tr.Samples) != len(tt.rps) {
				t.Fatalf("step %s, %d samples", tr.Step, len(tr.Samples))
			}
			for i, s := range tr.Samples {
				if s.RPS != tt.rps[i] || s.Time.Location() != time.UTC {
					t.Fatalf("sample %d = %+v", i, s)
				}
			}
		})
	}
}

func TestShippedTracesRead(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(tracesDir, "*.csv"))
	if len(files) != 3 {
		t.Fatalf("%d shipped traces, want 3", len(files))
	}
	for _, f := range files {
		tr, err := ReadTraceFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if p := tr.Peak(); p < 1999 || p > 2001 {
			t.Errorf("%s: peak %.1f, want 2000", f, p)
		}
	}
}

func TestDemandFunc(t *testing.T) {
	tr := Trace{Step: time.Hour, Samples: []Sample{{t0, 100}, {t0.Add(time.Hour), 200}, {t0.Add(2 * time.Hour), 100}}}
	hold := tr.demandFunc(2, false)
	for _, c := range []struct {
		at   time.Duration
		want float64
	}{{0, 200}, {59 * time.Minute, 200}, {time.Hour, 400}, {150 * time.Minute, 200}} {
		if got := hold(t0.Add(c.at)); got != c.want {
			t.Errorf("hold at %s = %v, want %v", c.at, got, c.want)
		}
	}
	lin := tr.demandFunc(1, true)
	for _, c := range []struct {
		at   time.Duration
		want float64
	}{{0, 100}, {30 * time.Minute, 100}, {60 * time.Minute, 150}, {90 * time.Minute, 200}, {120 * time.Minute, 150}, {170 * time.Minute, 100}} {
		if got := lin(t0.Add(c.at)); got != c.want {
			t.Errorf("interpolated at %s = %v, want %v", c.at, got, c.want)
		}
	}
}

func TestSimulateGolden(t *testing.T) {
	data, err := os.ReadFile("../../deploy/plan.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := ParseSpec(data)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := ReadTraceFile(filepath.Join(tracesDir, "emergency_spike.csv"))
	if err != nil {
		t.Fatal(err)
	}
	model := DefaultNodeModel(spec)
	var out bytes.Buffer
	var reps []Report
	for _, s := range []Spec{spec.Reactive(), spec.WithPredictive()} {
		r, err := Simulate(s, tr, model, SimOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.WriteText(&out); err != nil {
			t.Fatal(err)
		}
		out.WriteString("\n")
		reps = append(reps, r)
	}
	c := Comparison{Trace: tr.Name, Reactive: reps[0], Predictive: reps[1]}
	if err := WriteComparisonTable(&out, []Comparison{c}); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "emergency_spike.golden")
	if *update {
		if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("report differs from %s (run with -update to accept):\n%s", golden, out.String())
	}

	// Invariants the golden file also shows.
	r := reps[0]
	if len(r.Rows) != 3 || r.Total.NodeHours <= 0 || r.Total.Cost <= 0 || r.Total.CarbonKg <= 0 || r.Activations == 0 || r.Drains == 0 {
		t.Fatalf("report %+v", r.Total)
	}
	if len(r.Series) == 0 || len(r.Series) > 1501 {
		t.Fatalf("%d series points", len(r.Series))
	}
	if _, err := json.Marshal(c); err != nil {
		t.Fatal(err)
	}
}

func TestSimulateMeetsDemandOnSteadyTrace(t *testing.T) {
	spec := testSpec()
	var samples []Sample
	for i := 0; i < 240; i++ {
		samples = append(samples, Sample{t0.Add(time.Duration(i) * time.Minute), 500})
	}
	tr := Trace{Name: "flat", Step: time.Minute, Samples: samples}
	model := DefaultNodeModel(spec)
	model.Capacity = 1000.0 / 7 // 100 req/s is 70 %: both targets agree
	r, err := Simulate(spec, tr, model, SimOptions{Scale: 1})
	if err != nil {
		t.Fatal(err)
	}
	// 500 req/s at 100 per node: 5 nodes from the start, no violations,
	// 4 hours × 5 nodes = 20 node-hours.
	if r.Total.SLOMinutes != 0 || r.Total.NodeHours < 19.99 || r.Total.NodeHours > 20.01 || r.Activations != 0 {
		t.Fatalf("steady trace: %+v, %d activations", r.Total, r.Activations)
	}
}

func TestSimulateProvisionsThroughHooks(t *testing.T) {
	spec := testSpec()
	spec.Hooks.ScaleOut = &Hook{Command: []string{"p"}, Timeout: Duration(time.Minute)}
	var samples []Sample
	for i := 0; i < 120; i++ {
		v := 200.0
		if i >= 30 {
			v = 1500
		}
		samples = append(samples, Sample{t0.Add(time.Duration(i) * time.Minute), v})
	}
	model := DefaultNodeModel(spec)
	model.Capacity = 1000.0 / 7
	model.Pools = []Pool{{Zone: "a", Count: 6, Tags: NodeTags{CostPerHour: 0.1}}}
	r, err := Simulate(spec, Trace{Name: "jump", Step: time.Minute, Samples: samples}, model, SimOptions{Scale: 1})
	if err != nil {
		t.Fatal(err)
	}
	if r.Provisioned < 9 || r.ScaleOuts == 0 {
		t.Fatalf("provisioned %d in %d hooks", r.Provisioned, r.ScaleOuts)
	}
	// Violations last about the provisioning delay plus a start-up.
	if r.Total.SLOMinutes < 5 || r.Total.SLOMinutes > 8 {
		t.Fatalf("SLO-violating minutes %.2f", r.Total.SLOMinutes)
	}
}

func TestComparisonGoal(t *testing.T) {
	mk := func(slo, nh float64) Report { return Report{Total: ReportRow{SLOMinutes: slo, NodeHours: nh}} }
	tests := []struct {
		r, p Report
		want string
	}{
		{mk(100, 1000), mk(10, 1090), "yes"},
		{mk(100, 1000), mk(30, 1000), "no (SLO minutes)"},
		{mk(100, 1000), mk(0, 1200), "no (node-hours)"},
		{mk(0, 1000), mk(0, 1050), "n/a (no violations either way)"},
	}
	for _, tt := range tests {
		if got := (Comparison{Reactive: tt.r, Predictive: tt.p}).GoalMet(); got != tt.want {
			t.Errorf("GoalMet = %q, want %q", got, tt.want)
		}
	}
}
