package autoscale

import (
	"math"
	"time"
)

// Forecaster predicts demand with additive double-seasonal Holt-Winters
// exponential smoothing (J. W. Taylor, "Short-term electricity demand
// forecasting using double seasonal exponential smoothing", JORS 54, 2003),
// in error-correction form with a damped trend (Gardner & McKenzie):
//
//	ŷ(t+h) = L + (φ + … + φ^h)·T + D[day slot of t+h] + W[week slot of t+h]
//	e      = y − ŷ(t)                       (one-bucket-ahead error)
//	L      ← L + φ·T + α·e
//	T      ← φ·T + β·e
//	D[i]   ← D[i] + γ·e                     (daily component)
//	W[j]   ← W[j] + ω·e                     (weekly component)
//
// The series is the busiest minute of each bucket (default 5m), so the
// forecast is of peaks, which is what capacity must cover. Seasonal slots
// are indexed by UTC time of day and time of week, so gaps in the history
// (a leader change) cost nothing but the missing updates. The model starts
// after one whole day: the level is that day's mean and the daily slots its
// deviations. The weekly slots start at zero and learn from the second week
// on; Forecast.Weekly reports when every weekly slot has been updated at
// least once.
//
// The error of the forecast made Horizon ahead is tracked as an
// exponentially weighted mean absolute error (about one day of buckets)
// and mean absolute percentage error.
//
// A Forecaster is a pure function of the minute points fed to it, which is
// how a new leader rebuilds it from the replicated history. It is not safe
// for concurrent use.
type Forecaster struct {
	p      Predictive
	bucket time.Duration
	m1, m2 int // slots per day and per week

	first time.Time // first minute seen
	last  time.Time // last minute seen

	// The bucket being filled.
	cur    time.Time
	curMax float64
	curN   int

	// Initialisation buffer: the first day's buckets.
	init []bucketVal

	started      bool
	level, trend float64
	daily        []float64 // raw; the component is daily[i] - dOff
	weekly       []float64 // raw; the component is weekly[j] - wOff[j % m1]
	dOff         float64
	wOff         []float64
	weeklySeen   []bool
	weeklyCount  int
	lastBucket   time.Time // start of the last bucket folded into the model
	bucketsSeen  int
	predictions  []bucketVal // forecasts made Horizon ahead, oldest first
	mae, mape    float64
	errN         int
}

type bucketVal struct {
	t time.Time
	v float64
}

// NewForecaster returns an empty forecaster for p (defaults applied by
// ParseSpec or DefaultSpec).
func NewForecaster(p Predictive) *Forecaster {
	b := p.Bucket.D()
	if b <= 0 {
		b = 5 * time.Minute
	}
	m1 := int(24 * time.Hour / b)
	f := &Forecaster{p: p, bucket: b, m1: m1, m2: 7 * m1}
	f.daily = make([]float64, f.m1)
	f.weekly = make([]float64, f.m2)
	f.weeklySeen = make([]bool, f.m2)
	f.wOff = make([]float64, f.m1)
	return f
}

// epoch aligns weekly slots to Monday 00:00 UTC.
var epoch = time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)

func (f *Forecaster) slots(t time.Time) (day, week int) {
	n := int(t.Sub(epoch) / f.bucket)
	week = ((n % f.m2) + f.m2) % f.m2
	return week % f.m1, week
}

// Add feeds one minute point. Points must come in increasing order; older
// ones are ignored.
func (f *Forecaster) Add(p MinutePoint) {
	if !f.last.IsZero() && !p.Minute.After(f.last) {
		return
	}
	v := p.MeanRPS
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return
	}
	if f.first.IsZero() {
		f.first = p.Minute
	}
	f.last = p.Minute
	b := p.Minute.Truncate(f.bucket)
	if !f.cur.IsZero() && !b.Equal(f.cur) {
		f.closeBucket()
	}
	if f.curN == 0 || !b.Equal(f.cur) {
		f.cur, f.curMax, f.curN = b, v, 0
	}
	if v > f.curMax {
		f.curMax = v
	}
	f.curN++
}

// History is how long a stretch of minutes the forecaster has seen.
func (f *Forecaster) History() time.Duration {
	if f.first.IsZero() {
		return 0
	}
	return f.last.Sub(f.first) + time.Minute
}

func (f *Forecaster) closeBucket() {
	if f.curN == 0 {
		return
	}
	y, t := f.curMax, f.cur
	f.curN = 0
	if !f.started {
		f.init = append(f.init, bucketVal{t, y})
		if t.Sub(f.init[0].t) >= 24*time.Hour-f.bucket {
			f.start()
		}
		return
	}
	f.update(t, y)
}

func (f *Forecaster) start() {
	sum := 0.0
	for _, bv := range f.init {
		sum += bv.v
	}
	f.level = sum / float64(len(f.init))
	f.trend = 0
	n := 0.0
	for _, bv := range f.init {
		d, _ := f.slots(bv.t)
		f.daily[d] = bv.v - f.level
		n++
	}
	// Slots missing from the first day stay 0; the rest sum to zero since
	// the level is their mean.
	_ = n
	f.started = true
	f.lastBucket = f.init[len(f.init)-1].t
	f.bucketsSeen = len(f.init)
	f.init = nil
}

// seasonal is the daily plus weekly component for the given slots.
func (f *Forecaster) seasonal(d, w int) float64 {
	return f.daily[d] - f.dOff + f.weekly[w] - f.wOff[d]
}

// stepsTo is the number of buckets from the last folded bucket to t.
func (f *Forecaster) stepsTo(t time.Time) int {
	return int(t.Sub(f.lastBucket) / f.bucket)
}

// damp returns φ + φ² + … + φ^h.
func (f *Forecaster) damp(h int) float64 {
	phi := f.p.Damping
	if phi >= 1 {
		return float64(h)
	}
	s, p := 0.0, 1.0
	for i := 0; i < h; i++ {
		p *= phi
		s += p
	}
	return s
}

// at is the model's forecast for the bucket starting at t.
func (f *Forecaster) at(t time.Time) float64 {
	h := f.stepsTo(t)
	if h < 1 {
		h = 1
	}
	d, w := f.slots(t)
	v := f.level + f.damp(h)*f.trend + f.seasonal(d, w)
	if v < 0 {
		v = 0
	}
	return v
}

func (f *Forecaster) update(t time.Time, y float64) {
	// Score the forecast that was made Horizon ahead for this bucket.
	for len(f.predictions) > 0 && !f.predictions[0].t.After(t) {
		pv := f.predictions[0]
		f.predictions = f.predictions[1:]
		if pv.t.Equal(t) {
			f.scoreError(y, pv.v)
		}
	}

	h := f.stepsTo(t)
	if h < 1 {
		return
	}
	// Roll the level and trend forward over missing buckets.
	if h > 1 {
		f.level += f.damp(h-1) * f.trend
		f.trend *= math.Pow(f.p.Damping, float64(h-1))
	}
	d, w := f.slots(t)
	pred := f.level + f.p.Damping*f.trend + f.seasonal(d, w)
	e := y - pred
	f.level += f.p.Damping*f.trend + f.p.Alpha*e
	f.trend = f.p.Damping*f.trend + f.p.Beta*e
	// Seasonal updates, renormalised (Archibald & Koehler 2003) so that
	// the daily component sums to zero over a day and the weekly one to
	// zero over the seven days of each time-of-day slot: without this the
	// level and the two components trade the same error back and forth
	// and the model oscillates with growing amplitude on long series.
	// The shifts leave every other slot's fitted value unchanged.
	m1 := float64(f.m1)
	g := f.p.Gamma * e
	f.daily[d] += g
	f.dOff += g / m1
	f.level += g / m1
	o := f.p.Omega * e
	f.weekly[w] += o
	f.wOff[d] += o / 7
	f.daily[d] += o / 7
	f.dOff += o / 7 / m1
	f.level += o / 7 / m1
	if !f.weeklySeen[w] {
		f.weeklySeen[w] = true
		f.weeklyCount++
	}
	f.lastBucket = t
	f.bucketsSeen++

	// Record the forecast for the bucket Horizon ahead, to be scored.
	ahead := f.horizonBuckets()
	tt := t.Add(time.Duration(ahead) * f.bucket)
	f.predictions = append(f.predictions, bucketVal{tt, f.at(tt)})
}

func (f *Forecaster) horizonBuckets() int {
	n := int((f.p.Horizon.D() + f.bucket - 1) / f.bucket)
	if n < 1 {
		n = 1
	}
	return n
}

func (f *Forecaster) scoreError(y, pred float64) {
	ae := math.Abs(y - pred)
	ape := ae / math.Max(y, 1e-9)
	if y <= 0 {
		ape = 0
		if pred > 0 {
			ape = 1
		}
	}
	f.errN++
	n := f.errN
	if n > f.m1 {
		n = f.m1
	}
	f.mae += (ae - f.mae) / float64(n)
	f.mape += (math.Min(ape, 10) - f.mape) / float64(n)
}

// Ready reports whether the model has started and has MinHistory.
func (f *Forecaster) Ready() bool {
	return f.started && f.History() >= f.p.MinHistory.D()
}

// Forecast returns the forecast seen from now: the next bucket and the peak
// over [now, now+Horizon]. It is nil until the model has a whole day.
func (f *Forecaster) Forecast(now time.Time) *Forecast {
	if !f.started {
		return nil
	}
	out := &Forecast{
		Method:  MethodHoltWinters,
		Ready:   f.Ready(),
		History: Duration(f.History()),
		Weekly:  f.weeklyCount == f.m2,
		Horizon: f.p.Horizon,
		MAE:     f.mae,
		MAPE:    f.mape,
	}
	b := now.Truncate(f.bucket)
	if !b.After(f.lastBucket) {
		b = f.lastBucket.Add(f.bucket)
	}
	end := now.Add(f.p.Horizon.D())
	out.NextRPS = f.at(b)
	out.PeakRPS = out.NextRPS
	for t := b.Add(f.bucket); !t.After(end); t = t.Add(f.bucket) {
		if v := f.at(t); v > out.PeakRPS {
			out.PeakRPS = v
		}
	}
	return out
}
