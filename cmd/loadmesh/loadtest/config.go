package loadtest

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Limits that keep a typo from becoming an accident.
const (
	// MaxRate is the highest rate one load generator process is allowed
	// to pace, in requests/s; beyond it one process cannot keep time
	// anyway, and several generators give truer numbers.
	MaxRate = 200_000
	// MaxDuration is the longest run.
	MaxDuration = 24 * time.Hour
	// MaxConnections bounds --connections and --max-workers.
	MaxConnections = 100_000
	// MaxRequestsLimit bounds --max-requests.
	MaxRequestsLimit = 1_000_000_000
	// MaxStages bounds the stages of a ramp.
	MaxStages = 100
	// MaxBodyBytes bounds the request body.
	MaxBodyBytes = 64 << 20
)

// Stage is one part of a ramp: the rate moves linearly from the rate at
// the end of the previous stage (0 before the first) to Rate over Duration.
// A zero Duration is a step.
type Stage struct {
	Rate     float64       // requests/s at the end of the stage
	Duration time.Duration // length of the stage
}

// Config is one load test.
type Config struct {
	// URL is the target, http:// or https://.
	URL string
	// Method is the HTTP method. Default GET.
	Method string
	// Header is sent with every request ("Host" sets the Host header).
	Header http.Header
	// Body is sent with every request.
	Body []byte
	// Rate is the target rate in requests/s, reached after the ramp.
	// 0 means as fast as MaxWorkers closed-loop workers can go (a
	// throughput test, not a constant-rate one). Range 0..MaxRate.
	// Default 50.
	Rate float64
	// Ramp, when set, shapes the rate before it settles; the rate after
	// the last stage holds for the rest of Duration. Empty: Rate from the
	// start.
	Ramp []Stage
	// Duration is the length of the run, ramp included. Default 10s,
	// range (0, MaxDuration].
	Duration time.Duration
	// Connections is the most connections opened to the target (HTTP/2
	// multiplexes many requests on each). Default 100.
	Connections int
	// Workers is the number of workers started at once; vegeta adds more
	// when all are busy, up to MaxWorkers. Default 10.
	Workers int
	// MaxWorkers bounds the requests in flight. 0 means Connections
	// (one request per HTTP/1.1 connection). With Rate 0 it is the
	// concurrency of the closed loop.
	MaxWorkers int
	// Timeout bounds one request, body included. Default 30s, range
	// (0, 10m].
	Timeout time.Duration
	// HTTP2 negotiates HTTP/2 with https:// targets (ALPN).
	HTTP2 bool
	// Insecure skips TLS certificate verification.
	Insecure bool
	// MaxRequests is a hard bound on the requests sent, whatever the rate
	// and duration say. Default 10,000,000, range 1..MaxRequestsLimit.
	MaxRequests int64
}

// DefaultConfig returns the defaults described on Config, with no URL.
func DefaultConfig() Config {
	return Config{
		Method:      http.MethodGet,
		Rate:        50,
		Duration:    10 * time.Second,
		Connections: 100,
		Workers:     10,
		Timeout:     30 * time.Second,
		MaxRequests: 10_000_000,
	}
}

// maxWorkers is MaxWorkers with its default applied.
func (c Config) maxWorkers() int {
	if c.MaxWorkers > 0 {
		return c.MaxWorkers
	}
	return c.Connections
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if u, err := url.Parse(c.URL); err != nil {
		bad("bad URL %q: %v", c.URL, unwrapURLParse(err))
	} else if u.Scheme != "http" && u.Scheme != "https" {
		bad("bad URL %q: want http:// or https://", c.URL)
	} else if u.Host == "" || u.Hostname() == "" {
		bad("bad URL %q: no host", c.URL)
	}
	if c.Method == "" || strings.ContainsAny(c.Method, " \t\r\n") {
		bad("bad --method %q", c.Method)
	}
	switch {
	case c.Rate != c.Rate || c.Rate < 0: // NaN or negative
		bad("--rate %v: want requests/s, 0 (as fast as possible) up to %d", c.Rate, MaxRate)
	case c.Rate > MaxRate:
		bad("--rate %v is above %d req/s, more than one generator can pace: run several", c.Rate, MaxRate)
	}
	if c.Duration <= 0 || c.Duration > MaxDuration {
		bad("--duration %s: want more than 0 and at most %s", c.Duration, MaxDuration)
	}
	if len(c.Ramp) > 0 {
		if c.Rate == 0 {
			bad("--ramp needs a rate: --rate 0 (as fast as possible) has nothing to ramp to")
		}
		if len(c.Ramp) > MaxStages {
			bad("--ramp has %d stages, at most %d", len(c.Ramp), MaxStages)
		}
		var total time.Duration
		for i, s := range c.Ramp {
			if s.Rate != s.Rate || s.Rate < 0 || s.Rate > MaxRate {
				bad("--ramp stage %d: rate %v, want 0..%d", i+1, s.Rate, MaxRate)
			}
			if s.Duration < 0 {
				bad("--ramp stage %d: negative duration %s", i+1, s.Duration)
			}
			total += s.Duration
		}
		if total > c.Duration {
			bad("--ramp takes %s, longer than --duration %s", total, c.Duration)
		}
	}
	if c.Connections < 1 || c.Connections > MaxConnections {
		bad("--connections %d: want 1..%d", c.Connections, MaxConnections)
	}
	if c.MaxWorkers < 0 || c.MaxWorkers > MaxConnections {
		bad("--max-workers %d: want 0 (same as --connections) up to %d", c.MaxWorkers, MaxConnections)
	}
	if c.Workers < 1 || c.Workers > MaxConnections {
		bad("--workers %d: want 1..%d", c.Workers, MaxConnections)
	} else if c.MaxWorkers > 0 && c.Workers > c.MaxWorkers {
		bad("--workers %d is more than --max-workers %d", c.Workers, c.MaxWorkers)
	}
	if c.Timeout <= 0 || c.Timeout > 10*time.Minute {
		bad("--timeout %s: want more than 0 and at most 10m", c.Timeout)
	}
	if c.MaxRequests < 1 || c.MaxRequests > MaxRequestsLimit {
		bad("--max-requests %d: want 1..%d", c.MaxRequests, MaxRequestsLimit)
	}
	if len(c.Body) > MaxBodyBytes {
		bad("request body of %d bytes: at most %d", len(c.Body), MaxBodyBytes)
	}
	return errors.Join(errs...)
}

func unwrapURLParse(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// ParseRamp parses the --ramp flag. Two forms:
//
//	30s             a linear ramp from 0 to rate over 30 s (one stage)
//	100:30s,500:1m  stages RATE:DURATION, each moving linearly from the
//	                previous stage's rate (0 before the first) to RATE;
//	                repeat a rate for a plateau (500:1m,500:5m), give a
//	                0 duration for a step (500:0s)
//
// It returns the stages and whether the form was staged (which sets the
// rate itself: the last stage's rate).
func ParseRamp(s string, rate float64) (stages []Stage, staged bool, err error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, false, nil
	}
	if !strings.Contains(s, ":") {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return nil, false, fmt.Errorf("bad --ramp %q: want a duration (30s) or stages RATE:DURATION,... (100:30s,500:1m)", s)
		}
		return []Stage{{Rate: rate, Duration: d}}, false, nil
	}
	for i, part := range strings.Split(s, ",") {
		r, d, ok := strings.Cut(strings.TrimSpace(part), ":")
		rv, rerr := strconv.ParseFloat(strings.TrimSpace(r), 64)
		dv, derr := time.ParseDuration(strings.TrimSpace(d))
		if !ok || rerr != nil || derr != nil || rv != rv || rv < 0 || dv < 0 {
			return nil, true, fmt.Errorf("bad --ramp %q: stage %d %q is not RATE:DURATION (500:1m)", s, i+1, part)
		}
		stages = append(stages, Stage{Rate: rv, Duration: dv})
	}
	return stages, true, nil
}

// RampDuration is the total length of the stages.
func RampDuration(stages []Stage) time.Duration {
	var d time.Duration
	for _, s := range stages {
		d += s.Duration
	}
	return d
}

// describe is a one-line summary of the load shape.
func (c Config) describe() string {
	if c.Rate == 0 {
		return fmt.Sprintf("as fast as %d concurrent requests allow, for %s", c.maxWorkers(), c.Duration)
	}
	s := fmt.Sprintf("%s req/s for %s", fmtNum(c.Rate), c.Duration)
	if len(c.Ramp) > 0 {
		var parts []string
		for _, st := range c.Ramp {
			parts = append(parts, fmt.Sprintf("%s:%s", fmtNum(st.Rate), st.Duration))
		}
		s += " (ramp 0→" + strings.Join(parts, "→") + ")"
	}
	return s
}

func fmtNum(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
