package autoscale

import (
	"fmt"
	"time"
)

// MinutePoint is one minute of demand history.
type MinutePoint struct {
	// Minute is the start of the minute (UTC, truncated to the minute).
	Minute time.Time `json:"minute"`
	// MeanRPS and MaxRPS are the mean and the highest of the demand
	// readings taken during the minute.
	MeanRPS float64 `json:"mean_rps"`
	MaxRPS  float64 `json:"max_rps"`
}

// History is a bounded ring of per-minute demand points, oldest first.
// It is not safe for concurrent use.
type History struct {
	pts   []MinutePoint
	start int
	n     int
}

// NewHistory returns a ring holding length worth of minutes.
func NewHistory(length time.Duration) *History {
	m := int(length / time.Minute)
	if m < 1 {
		m = 1
	}
	return &History{pts: make([]MinutePoint, m)}
}

// Len is the number of points held.
func (h *History) Len() int { return h.n }

// Add appends p. Points must come in increasing minute order; an older or
// equal minute is refused.
func (h *History) Add(p MinutePoint) error {
	if h.n > 0 {
		last := h.at(h.n - 1)
		if !p.Minute.After(last.Minute) {
			return fmt.Errorf("history point %s is not after the last one %s", p.Minute.Format(time.RFC3339), last.Minute.Format(time.RFC3339))
		}
	}
	if h.n < len(h.pts) {
		h.pts[(h.start+h.n)%len(h.pts)] = p
		h.n++
		return nil
	}
	h.pts[h.start] = p
	h.start = (h.start + 1) % len(h.pts)
	return nil
}

func (h *History) at(i int) MinutePoint { return h.pts[(h.start+i)%len(h.pts)] }

// Points returns a copy of the points, oldest first.
func (h *History) Points() []MinutePoint {
	out := make([]MinutePoint, h.n)
	for i := range out {
		out[i] = h.at(i)
	}
	return out
}

// Last returns the newest point and whether there is one.
func (h *History) Last() (MinutePoint, bool) {
	if h.n == 0 {
		return MinutePoint{}, false
	}
	return h.at(h.n - 1), true
}

// minuteAgg accumulates demand readings within one minute.
type minuteAgg struct {
	Minute time.Time `json:"minute"`
	Sum    float64   `json:"sum"`
	Max    float64   `json:"max"`
	N      int       `json:"n"`
}

func (m minuteAgg) point() MinutePoint {
	mean := 0.0
	if m.N > 0 {
		mean = m.Sum / float64(m.N)
	}
	return MinutePoint{Minute: m.Minute, MeanRPS: mean, MaxRPS: m.Max}
}
