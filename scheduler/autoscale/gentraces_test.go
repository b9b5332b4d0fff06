package autoscale

import (
	"bytes"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The example traces in deploy/traces are synthetic and generated here, so
// that they can be reproduced and reviewed:
//
//	go test ./scheduler/autoscale -run TestGenerateTraces -gentraces
//
// Without the flag the test regenerates them in memory and checks the
// committed files are unchanged.
var genTraces = flag.Bool("gentraces", false, "rewrite deploy/traces/*.csv")

const tracesDir = "../../deploy/traces"

// officeDay is a government service's weekday shape in [0, 1] by local
// hour: a night trough, a steep morning rise to a late-morning peak, a
// lunch dip, an afternoon plateau and an evening tail.
func officeDay(h float64) float64 {
	// Sum of Gaussian bumps over a floor, normalised to peak ≈ 1.
	g := func(mu, sigma, a float64) float64 { return a * math.Exp(-0.5*math.Pow((h-mu)/sigma, 2)) }
	v := 0.12 + g(10.5, 1.6, 0.88) + g(14.5, 1.9, 0.78) + g(20.5, 1.8, 0.35) - g(12.8, 0.5, 0.12)
	return v
}

// noise is multiplicative, ~N(1, sd), deterministic per generator.
func noise(r *rand.Rand, sd float64) float64 { return math.Max(0.5, 1+sd*r.NormFloat64()) }

type genRow struct {
	t   time.Time
	rps float64
}

func writeTrace(t *testing.T, name string, rows []genRow) {
	t.Helper()
	var b bytes.Buffer
	b.WriteString("timestamp,rps\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "%s,%.2f\n", r.t.UTC().Format(time.RFC3339), r.rps)
	}
	path := filepath.Join(tracesDir, name)
	if *genTraces {
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -gentraces to create it)", err)
	}
	if !bytes.Equal(old, b.Bytes()) {
		t.Errorf("%s differs from its generator; run with -gentraces", path)
	}
}

// normalise scales rows so the peak is peak.
func normalise(rows []genRow, peak float64) {
	m := 0.0
	for _, r := range rows {
		m = math.Max(m, r.rps)
	}
	for i := range rows {
		rows[i].rps = rows[i].rps / m * peak
	}
}

func TestGenerateTraces(t *testing.T) {
	london, err := time.LoadLocation("Europe/London")
	if err != nil {
		t.Skip("no tzdata:", err)
	}
	local := func(tt time.Time) float64 {
		l := tt.In(london)
		return float64(l.Hour()) + float64(l.Minute())/60
	}
	weekend := func(tt time.Time) bool {
		wd := tt.In(london).Weekday()
		return wd == time.Saturday || wd == time.Sunday
	}

	// daily_cycle.csv: one week at one-minute steps (Mon 2 Mar 2026 to
	// Sun 8 Mar), office-hours shape, weekends at 55 %, 6 % noise per
	// minute plus short bursts (a few a day, +30–60 % for 2–6 minutes).
	{
		r := rand.New(rand.NewPCG(1, 1))
		var rows []genRow
		start := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
		burst, burstLeft := 0.0, 0
		for i := 0; i < 7*1440; i++ {
			tt := start.Add(time.Duration(i) * time.Minute)
			v := officeDay(local(tt))
			if weekend(tt) {
				v *= 0.55
			}
			if burstLeft == 0 && r.Float64() < 3.0/1440 {
				burst, burstLeft = 0.3+0.3*r.Float64(), 2+r.IntN(5)
			}
			if burstLeft > 0 {
				v *= 1 + burst
				burstLeft--
			}
			rows = append(rows, genRow{tt, v * noise(r, 0.06)})
		}
		normalise(rows, 2000)
		writeTrace(t, "daily_cycle.csv", rows)
	}

	// tax_deadline_ramp.csv: 10 Jan to 1 Feb 2026 (self-assessment
	// deadline 31 Jan, 23:59 London) at five-minute steps. Daily office
	// shape; from 17 Jan demand grows to 3.5× by the deadline; from 24 Jan
	// a reminder campaign sends e-mails at 10:00 each day, which lands as a
	// +70 % surge within 5 minutes decaying over about an hour; on 31 Jan
	// the evening does not fall away but climbs to a last-minute peak just
	// before midnight; 1 Feb drops back to the base.
	{
		r := rand.New(rand.NewPCG(2, 2))
		var rows []genRow
		start := time.Date(2026, 1, 10, 0, 0, 0, 0, time.UTC)
		deadline := time.Date(2026, 2, 1, 0, 0, 0, 0, london)
		for tt := start; tt.Before(time.Date(2026, 2, 2, 0, 0, 0, 0, time.UTC)); tt = tt.Add(5 * time.Minute) {
			h := local(tt)
			v := officeDay(h)
			if weekend(tt) {
				v *= 0.7
			}
			days := deadline.Sub(tt).Hours() / 24
			growth := 1.0
			if days < 15 && days > 0 {
				growth = 1 + 2.5*math.Pow((15-days)/15, 2)
			}
			v *= growth
			if days <= 8 && days > 0 && h >= 10 {
				v *= 1 + 0.7*math.Exp(-(h-10)/1.0)
			}
			if days > 0 && days < 1 && h >= 17 {
				v += growth * 0.9 * (h - 17) / 7
			}
			rows = append(rows, genRow{tt, v * noise(r, 0.04)})
		}
		normalise(rows, 2000)
		writeTrace(t, "tax_deadline_ramp.csv", rows)
	}

	// emergency_spike.csv: three days at one-minute steps (Tue 13 to Thu 15
	// Oct 2026); on the third day at 14:07 London an emergency announcement
	// sends demand to 8× its normal afternoon level within 10 minutes; it
	// stays high for about an hour and decays over the next four.
	{
		r := rand.New(rand.NewPCG(3, 3))
		var rows []genRow
		start := time.Date(2026, 10, 13, 0, 0, 0, 0, time.UTC)
		spike := time.Date(2026, 10, 15, 14, 7, 0, 0, london)
		for i := 0; i < 3*1440; i++ {
			tt := start.Add(time.Duration(i) * time.Minute)
			v := officeDay(local(tt))
			if d := tt.Sub(spike).Minutes(); d >= 0 {
				rise := math.Min(1, d/10)
				decay := 1.0
				if d > 60 {
					decay = math.Exp(-(d - 60) / 90)
				}
				v *= 1 + 7*rise*decay
			}
			rows = append(rows, genRow{tt, v * noise(r, 0.05)})
		}
		normalise(rows, 2000)
		writeTrace(t, "emergency_spike.csv", rows)
	}
}
