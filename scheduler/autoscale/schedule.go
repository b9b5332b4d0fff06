package autoscale

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// cronParser reads standard 5-field expressions and @descriptors.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// compiledSchedule is a Schedule with its cron expressions parsed.
type compiledSchedule struct {
	Schedule
	start, end *cron.SpecSchedule // end is nil when Duration is used
	loc        *time.Location
}

// parseCron parses one expression in loc. Time-zone prefixes inside the
// expression are refused: the zone is the schedule's time_zone (and robfig
// cron v3.0.1 panics on a "TZ=" prefix without a following space).
func parseCron(expr string, loc *time.Location) (*cron.SpecSchedule, error) {
	if strings.Contains(expr, "TZ=") {
		return nil, fmt.Errorf("%q: put the zone in time_zone, not in the expression", expr)
	}
	if len(expr) > 200 {
		return nil, fmt.Errorf("expression of %d bytes, at most 200", len(expr))
	}
	s, err := cronParser.Parse(expr)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", expr, err)
	}
	ss, ok := s.(*cron.SpecSchedule)
	if !ok {
		return nil, fmt.Errorf("%q: @every is not a calendar schedule", expr)
	}
	ss.Location = loc
	return ss, nil
}

// refTime is where "does this schedule ever fire" is checked from.
var refTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func compileSchedule(sc Schedule) (*compiledSchedule, error) {
	tz := sc.TimeZone
	if tz == "" {
		tz = "UTC"
	}
	if strings.EqualFold(tz, "local") {
		return nil, fmt.Errorf("time_zone %q: name an IANA zone; Local differs between servers", tz)
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return nil, fmt.Errorf("time_zone %q: unknown zone", tz)
	}
	cs := &compiledSchedule{Schedule: sc, loc: loc}
	if sc.Start == "" {
		return nil, fmt.Errorf("start: required")
	}
	if cs.start, err = parseCron(sc.Start, loc); err != nil {
		return nil, fmt.Errorf("start %w", err)
	}
	switch {
	case sc.End != "" && sc.Duration != 0:
		return nil, fmt.Errorf("set duration or end, not both")
	case sc.End == "" && sc.Duration == 0:
		return nil, fmt.Errorf("set duration or end")
	case sc.End != "":
		if cs.end, err = parseCron(sc.End, loc); err != nil {
			return nil, fmt.Errorf("end %w", err)
		}
	default:
		if sc.Duration < Duration(time.Minute) || sc.Duration.D() > MaxScheduleLength {
			return nil, fmt.Errorf("duration %s: want 1m to 366d", sc.Duration)
		}
	}
	// Reject expressions that never fire (e.g. 30 February): cron gives up
	// after five years and returns the zero time.
	first := cs.start.Next(refTime)
	if first.IsZero() {
		return nil, fmt.Errorf("start %q never fires", sc.Start)
	}
	if cs.end != nil {
		e := cs.end.Next(first)
		if e.IsZero() {
			return nil, fmt.Errorf("end %q never fires", sc.End)
		}
		if e.Sub(first) > MaxScheduleLength {
			return nil, fmt.Errorf("end %q comes %s after start, over 366d", sc.End, e.Sub(first).Round(time.Hour))
		}
	}
	return cs, nil
}

// activeAt reports whether the schedule is active at t, and until when that
// answer holds (the caller may cache it until then).
func (cs *compiledSchedule) activeAt(t time.Time) (active bool, until time.Time) {
	if cs.end == nil {
		d := cs.Duration.D()
		// A period covers t when it started in (t-d, t].
		s := cs.start.Next(t.Add(-d))
		if s.IsZero() {
			return false, t.Add(24 * time.Hour)
		}
		if !s.After(t) {
			return true, s.Add(d)
		}
		return false, s
	}
	// With an end expression, t is inside a period when the next event is
	// an end rather than a start.
	ns, ne := cs.start.Next(t), cs.end.Next(t)
	switch {
	case ne.IsZero() && ns.IsZero():
		return false, t.Add(24 * time.Hour)
	case ne.IsZero():
		return false, ns
	case ns.IsZero():
		return true, ne
	case ne.Before(ns):
		return true, ne
	default:
		return false, minTime(ns, ne)
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// scheduleSet evaluates the spec's schedules with a per-schedule cache.
type scheduleSet struct {
	list   []*compiledSchedule
	active []bool
	from   []time.Time // when the cached answer was computed
	until  []time.Time // when it expires
}

func newScheduleSet(spec Spec) (*scheduleSet, error) {
	ss := &scheduleSet{}
	for _, sc := range spec.Schedules {
		cs, err := compileSchedule(sc)
		if err != nil {
			return nil, fmt.Errorf("schedule %s: %w", sc.Name, err)
		}
		ss.list = append(ss.list, cs)
	}
	ss.active = make([]bool, len(ss.list))
	ss.from = make([]time.Time, len(ss.list))
	ss.until = make([]time.Time, len(ss.list))
	return ss, nil
}

// limits returns the effective min and max active nodes at t and the names
// of the active schedules.
func (ss *scheduleSet) limits(t time.Time, base Limits) (lo, hi int, names []string) {
	lo, hi = base.MinActive, base.MaxActive
	var anyMin, anyMax bool
	var sMin, sMax int
	for i, cs := range ss.list {
		// Recompute when the cached answer expires, or when time went
		// backwards (a restored state, or a test).
		if ss.until[i].IsZero() || !t.Before(ss.until[i]) || t.Before(ss.from[i]) {
			ss.active[i], ss.until[i] = cs.activeAt(t)
			ss.from[i] = t
		}
		if !ss.active[i] {
			continue
		}
		names = append(names, cs.Name)
		if cs.MinActive != nil && (!anyMin || *cs.MinActive > sMin) {
			sMin, anyMin = *cs.MinActive, true
		}
		if cs.MaxActive != nil && (!anyMax || *cs.MaxActive > sMax) {
			sMax, anyMax = *cs.MaxActive, true
		}
	}
	if anyMin {
		lo = sMin
	}
	if anyMax {
		hi = sMax
	}
	if lo > hi {
		// A schedule that raises the minimum above the base maximum wins:
		// the operator asked for that capacity for that period.
		hi = lo
	}
	return lo, hi, names
}
