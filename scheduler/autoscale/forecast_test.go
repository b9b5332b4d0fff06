package autoscale

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// seasonal is a synthetic demand: a daily cycle, weekends at 60 %, a slow
// upward trend, and 3 % noise.
func seasonal(r *rand.Rand, t time.Time) float64 {
	h := float64(t.Hour()) + float64(t.Minute())/60
	v := 500 + 400*math.Sin(2*math.Pi*(h-6)/24)
	if wd := t.Weekday(); wd == time.Saturday || wd == time.Sunday {
		v *= 0.6
	}
	v *= 1 + float64(t.Sub(t0))/float64(30*24*time.Hour)*0.2
	if r != nil {
		v *= 1 + 0.03*r.NormFloat64()
	}
	return v
}

func TestForecasterSeasonal(t *testing.T) {
	p := DefaultSpec().Predictive
	f := NewForecaster(p)
	r := rand.New(rand.NewPCG(7, 7))
	start := t0.Truncate(24 * time.Hour)
	var at time.Time
	for m := 0; m < 20*1440; m++ {
		at = start.Add(time.Duration(m) * time.Minute)
		f.Add(MinutePoint{Minute: at, MeanRPS: seasonal(r, at), MaxRPS: seasonal(nil, at)})
		switch m {
		case 600:
			if f.Forecast(at) != nil || f.Ready() {
				t.Fatal("forecast before a whole day")
			}
		case 1440 + 10:
			fc := f.Forecast(at)
			if fc == nil || !fc.Ready || fc.Weekly || fc.Method != MethodHoltWinters {
				t.Fatalf("after a day: %+v", fc)
			}
		}
	}
	fc := f.Forecast(at)
	if !fc.Weekly || fc.History.D() != 20*24*time.Hour {
		t.Fatalf("after 20 days: weekly %v history %s", fc.Weekly, fc.History)
	}
	// The tracked error is small against a 3 % noise series (the series is
	// the busiest minute per bucket, so a little above the noise).
	if fc.MAPE > 0.06 {
		t.Fatalf("MAPE %.3f", fc.MAPE)
	}
	// Forecasts for the next hour track the truth within 8 %, including
	// across the weekday/weekend boundary.
	for _, day := range []int{20, 24} { // a Sunday and a Thursday (20 days after Mon 2 March)
		g := NewForecaster(p)
		dayStart := start.Add(time.Duration(day) * 24 * time.Hour)
		for m := 0; m < day*1440; m++ {
			tt := start.Add(time.Duration(m) * time.Minute)
			g.Add(MinutePoint{Minute: tt, MeanRPS: seasonal(r, tt)})
		}
		for _, hour := range []int{3, 9, 15} {
			now := dayStart.Add(time.Duration(hour) * time.Hour)
			for m := day * 1440; !now.Before(start.Add(time.Duration(m) * time.Minute)); m++ {
				tt := start.Add(time.Duration(m) * time.Minute)
				g.Add(MinutePoint{Minute: tt, MeanRPS: seasonal(r, tt)})
			}
			got := g.Forecast(now).NextRPS
			want := seasonal(nil, now.Add(5*time.Minute))
			if math.Abs(got-want)/want > 0.08 {
				t.Errorf("%s: forecast %.1f, truth %.1f", now.Format("Mon 15:04"), got, want)
			}
		}
	}
}

func TestForecasterStableOnLongRamps(t *testing.T) {
	// A weekly-resolution trace interpolated to minutes is smooth and
	// trends for months; with too large a trend gain the level and the
	// seasonal components used to oscillate with growing amplitude.
	f := NewForecaster(DefaultSpec().Predictive)
	start := t0
	for m := 0; m < 200*1440; m++ {
		tt := start.Add(time.Duration(m) * time.Minute)
		x := float64(m) / 1440
		v := 100 + 50*math.Sin(x/20) // period ~126 days
		if x > 100 && x < 107 {
			v *= 1 + 10*(x-100)/7 // a 11× ramp over a week
		} else if x >= 107 {
			v *= 1 + 10*math.Exp(-(x-107)/30)
		}
		f.Add(MinutePoint{Minute: tt, MeanRPS: v})
		if m%1440 == 0 && f.started {
			fc := f.Forecast(tt)
			if fc.MAPE > 0.05 {
				t.Fatalf("day %d: MAPE %.3f (forecast %.1f, actual %.1f): unstable", m/1440, fc.MAPE, fc.NextRPS, v)
			}
		}
	}
}

func TestForecasterGapsAndOrder(t *testing.T) {
	f := NewForecaster(DefaultSpec().Predictive)
	for m := 0; m < 3*1440; m++ {
		if m > 2000 && m < 2600 {
			continue // a ten-hour gap (no leader)
		}
		tt := t0.Add(time.Duration(m) * time.Minute)
		f.Add(MinutePoint{Minute: tt, MeanRPS: seasonal(nil, tt)})
	}
	last := f.last
	f.Add(MinutePoint{Minute: last.Add(-time.Hour), MeanRPS: 1e9}) // ignored
	f.Add(MinutePoint{Minute: last.Add(time.Minute), MeanRPS: math.NaN()})
	if f.last != last {
		t.Fatal("out-of-order or NaN point accepted")
	}
	now := last.Add(time.Minute)
	fc := f.Forecast(now)
	want := seasonal(nil, now)
	if math.Abs(fc.NextRPS-want)/want > 0.1 {
		t.Fatalf("after a gap: forecast %.1f, truth %.1f", fc.NextRPS, want)
	}
}

func TestPredictiveScalesAhead(t *testing.T) {
	// Every day at 10:00 demand jumps from 200 to 1500 req/s. Reactive
	// scaling meets it a start-up late; with two days of history the
	// forecaster has the jump in its daily component and scales before it.
	s := testSpec()
	s.Predictive.Enabled = true
	s.Limits.MaxActive = 40
	demand := func(tt time.Time) float64 {
		if h := tt.Hour(); h >= 10 && h < 12 {
			return 1500
		}
		return 200
	}
	a := mustNew(t, s)
	c := newFake(map[string]int{"a": 40}, nil)
	c.activate("a", 2)
	start := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	var before Decision
	for i := 0; i < 3*5760; i++ {
		now := start.Add(time.Duration(i) * 15 * time.Second)
		d := a.Step(now, c.obs(demand(now)))
		c.apply(now, d)
		if now.Equal(time.Date(2026, 3, 4, 9, 56, 0, 0, time.UTC)) {
			before = d
		}
	}
	if before.Forecast == nil || !before.Forecast.Used || before.Desired < 12 {
		t.Fatalf("at 09:56 on day 3: desired %d, forecast %+v, reason %s", before.Desired, before.Forecast, before.Reason)
	}
	if !strings.Contains(before.Reason, "forecast") {
		t.Fatalf("reason %q does not name the forecast", before.Reason)
	}
}

func TestHistoryRing(t *testing.T) {
	h := NewHistory(3 * time.Minute)
	for i := 0; i < 5; i++ {
		if err := h.Add(MinutePoint{Minute: t0.Add(time.Duration(i) * time.Minute), MeanRPS: float64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	pts := h.Points()
	if len(pts) != 3 || pts[0].MeanRPS != 2 || pts[2].MeanRPS != 4 {
		t.Fatalf("ring %+v", pts)
	}
	if err := h.Add(MinutePoint{Minute: t0}); err == nil {
		t.Fatal("older point accepted")
	}
	if last, ok := h.Last(); !ok || last.MeanRPS != 4 {
		t.Fatalf("Last %+v", last)
	}
}

func TestMinuteAggregation(t *testing.T) {
	a := mustNew(t, testSpec())
	c := threeZones()
	c.activate("a", 2)
	var pts []MinutePoint
	for i, v := range []float64{100, 300, 200, 400, 50} { // 15 s apart
		d := a.Step(t0.Add(time.Duration(i)*15*time.Second), c.obs(v))
		pts = append(pts, d.History...)
	}
	if len(pts) != 1 || pts[0].MeanRPS != 250 || pts[0].MaxRPS != 400 || !pts[0].Minute.Equal(t0) {
		t.Fatalf("minute points %+v", pts)
	}
	if h := a.History(); len(h) != 1 {
		t.Fatalf("history %+v", h)
	}
}
