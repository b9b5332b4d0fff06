package scheduler

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// Config holds the scheduler's tunables. Collaborators (clock, random
// source, metrics registerer) go in Deps. Start from DefaultConfig.
type Config struct {
	// Policy names the selection policy (the --policy flag): p2c-ewma
	// (default), least-inflight, weighted-round-robin, random or
	// consistent-hash. See NewPolicy.
	Policy string
	// Balance tunes the policies.
	Balance PolicyConfig
	// Tracker tunes this node's per-peer latency and in-flight figures.
	Tracker TrackerConfig
	// Outliers tunes passive outlier detection.
	Outliers OutlierConfig
	// Retry tunes the retry budget and Retry-After handling.
	Retry RetryConfig
	// Breaker tunes the per-peer in-flight caps.
	Breaker BreakerConfig
}

// DefaultConfig returns production settings.
func DefaultConfig() Config {
	return Config{
		Policy:   DefaultPolicy,
		Balance:  DefaultPolicyConfig(),
		Tracker:  DefaultTrackerConfig(),
		Outliers: DefaultOutlierConfig(),
		Retry:    DefaultRetryConfig(),
		Breaker:  DefaultBreakerConfig(),
	}
}

// Validate reports every invalid field at once, naming each.
func (c Config) Validate() error {
	var errs []error
	if !slices.Contains(PolicyNames(), c.Policy) {
		errs = append(errs, fmt.Errorf("Policy %q: unknown (want %s)", c.Policy, strings.Join(PolicyNames(), ", ")))
	}
	errs = append(errs, c.Balance.validate("Balance.")...)
	errs = append(errs, c.Tracker.validate("Tracker.")...)
	errs = append(errs, c.Outliers.validate("Outliers.")...)
	errs = append(errs, c.Retry.validate("Retry.")...)
	errs = append(errs, c.Breaker.validate("Breaker.")...)
	return errors.Join(errs...)
}

// PolicyConfig tunes the selection policies; each policy reads the fields
// it needs.
type PolicyConfig struct {
	// DefaultLatency is the latency p2c-ewma assumes for a peer it knows no
	// latency of (new, or never measured) while requests to it are in
	// flight; an idle one is probed first. Default 10ms; positive.
	DefaultLatency time.Duration
	// LoadFactor is c of consistent hashing with bounded loads: no peer
	// takes more than ceil(c × average) of the requests in flight. Lower
	// spreads load more evenly; higher keeps keys on their home peer
	// longer. Default 1.25; greater than 1, at most 100.
	LoadFactor float64
	// Replicas is the number of points each peer has on the
	// consistent-hash ring; more points spread keys more evenly and cost
	// memory (16 bytes each) and rebuild time. Default 64; 1 to 4096.
	Replicas int
	// Zone is this ingress node's zone. When set, every policy prefers
	// candidates in this zone while the zone has headroom (see
	// ZoneHeadroom) and spills to all zones otherwise. Default "" (zone
	// awareness off).
	Zone string
	// ZoneHeadroom is the share of its capacity a zone may be using and
	// still count as having headroom: the sum of in-flight requests of its
	// candidates must be below ZoneHeadroom × the sum of their capacities.
	// Default 0.8; above 0, at most 1.
	ZoneHeadroom float64
	// ZoneRecheck is how long a zone headroom verdict is reused before it
	// is recomputed (an O(zone size) sum). 0 recomputes for every request.
	// Default 10ms; 0 to 1s.
	ZoneRecheck time.Duration
}

// DefaultPolicyConfig returns the default policy tunables.
func DefaultPolicyConfig() PolicyConfig {
	return PolicyConfig{
		DefaultLatency: 10 * time.Millisecond,
		LoadFactor:     1.25,
		Replicas:       64,
		ZoneHeadroom:   0.8,
		ZoneRecheck:    10 * time.Millisecond,
	}
}

// Validate reports every invalid field.
func (c PolicyConfig) Validate() error { return errors.Join(c.validate("")...) }

func (c PolicyConfig) validate(p string) []error {
	var errs []error
	if c.DefaultLatency <= 0 {
		errs = append(errs, fmt.Errorf("%sDefaultLatency %v: must be positive", p, c.DefaultLatency))
	}
	if !(c.LoadFactor > 1 && c.LoadFactor <= 100) {
		errs = append(errs, fmt.Errorf("%sLoadFactor %v: must be greater than 1 and at most 100", p, c.LoadFactor))
	}
	if c.Replicas < 1 || c.Replicas > 4096 {
		errs = append(errs, fmt.Errorf("%sReplicas %d: must be between 1 and 4096", p, c.Replicas))
	}
	if !(c.ZoneHeadroom > 0 && c.ZoneHeadroom <= 1) {
		errs = append(errs, fmt.Errorf("%sZoneHeadroom %v: must be above 0 and at most 1", p, c.ZoneHeadroom))
	}
	if c.ZoneRecheck < 0 || c.ZoneRecheck > time.Second {
		errs = append(errs, fmt.Errorf("%sZoneRecheck %v: must be between 0 and 1s", p, c.ZoneRecheck))
	}
	return errs
}

// TrackerConfig tunes a Tracker.
type TrackerConfig struct {
	// Decay is the time constant (tau) of the per-peer latency peak-EWMA.
	// Default 10s; 1ms to 10m.
	Decay time.Duration
	// FreshFor is how long after its last sample this node's latency
	// estimate for a peer is preferred to the peer's gossiped figure.
	// Default 5s; positive.
	FreshFor time.Duration
	// StaleLoadAfter is the age after which a peer's gossiped in-flight
	// figure is ignored (only this node's own count is used). 0 never
	// ignores it. Default 10s.
	StaleLoadAfter time.Duration
	// ForgetAfter is how long the Scheduler keeps the figures, ejection
	// history and Retry-After hold of a peer that dropped out of the peer
	// list, so a flapping peer does not escape its ejection. Default 5m;
	// not negative.
	ForgetAfter time.Duration
}

// DefaultTrackerConfig returns the default tracker tunables.
func DefaultTrackerConfig() TrackerConfig {
	return TrackerConfig{
		Decay:          DefaultDecay,
		FreshFor:       5 * time.Second,
		StaleLoadAfter: 10 * time.Second,
		ForgetAfter:    5 * time.Minute,
	}
}

// Validate reports every invalid field.
func (c TrackerConfig) Validate() error { return errors.Join(c.validate("")...) }

func (c TrackerConfig) validate(p string) []error {
	var errs []error
	if c.Decay < time.Millisecond || c.Decay > 10*time.Minute {
		errs = append(errs, fmt.Errorf("%sDecay %v: must be between 1ms and 10m", p, c.Decay))
	}
	if c.FreshFor <= 0 {
		errs = append(errs, fmt.Errorf("%sFreshFor %v: must be positive", p, c.FreshFor))
	}
	if c.StaleLoadAfter < 0 {
		errs = append(errs, fmt.Errorf("%sStaleLoadAfter %v: must not be negative", p, c.StaleLoadAfter))
	}
	if c.ForgetAfter < 0 {
		errs = append(errs, fmt.Errorf("%sForgetAfter %v: must not be negative", p, c.ForgetAfter))
	}
	return errs
}

// OutlierConfig tunes Outliers.
type OutlierConfig struct {
	// ConsecutiveFailures ejects a peer after this many failures in a row.
	// Default 5; 0 disables this rule.
	ConsecutiveFailures int
	// ErrorRate ejects a peer whose share of failed requests over Window
	// exceeds it, once there are MinRequests requests in the window.
	// Default 0.5; 0 disables this rule, else above 0 and below 1.
	ErrorRate float64
	// MinRequests is the fewest requests in Window for ErrorRate to
	// apply. Default 20; at least 1.
	MinRequests int
	// Window is the sliding window ErrorRate is measured over. Default
	// 10s; at least 10ms.
	Window time.Duration
	// BaseEjection is the first ejection's length; each further recent
	// ejection doubles it. Default 30s; positive.
	BaseEjection time.Duration
	// MaxEjection caps an ejection's length. Default 5m; at least
	// BaseEjection.
	MaxEjection time.Duration
	// MaxEjectedShare is the largest share of peers ejected at once
	// (rounded down, but one peer of two or more may always be ejected).
	// Default 0.5; 0 to 1 (0 disables ejection).
	MaxEjectedShare float64
}

// DefaultOutlierConfig returns the default outlier detection tunables.
func DefaultOutlierConfig() OutlierConfig {
	return OutlierConfig{
		ConsecutiveFailures: 5,
		ErrorRate:           0.5,
		MinRequests:         20,
		Window:              10 * time.Second,
		BaseEjection:        30 * time.Second,
		MaxEjection:         5 * time.Minute,
		MaxEjectedShare:     0.5,
	}
}

// Validate reports every invalid field.
func (c OutlierConfig) Validate() error { return errors.Join(c.validate("")...) }

func (c OutlierConfig) validate(p string) []error {
	var errs []error
	if c.ConsecutiveFailures < 0 {
		errs = append(errs, fmt.Errorf("%sConsecutiveFailures %d: must not be negative", p, c.ConsecutiveFailures))
	}
	if !(c.ErrorRate >= 0 && c.ErrorRate < 1) {
		errs = append(errs, fmt.Errorf("%sErrorRate %v: must be 0 (off) or between 0 and 1", p, c.ErrorRate))
	}
	if c.MinRequests < 1 {
		errs = append(errs, fmt.Errorf("%sMinRequests %d: must be at least 1", p, c.MinRequests))
	}
	if c.Window < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("%sWindow %v: must be at least 10ms", p, c.Window))
	}
	if c.BaseEjection <= 0 {
		errs = append(errs, fmt.Errorf("%sBaseEjection %v: must be positive", p, c.BaseEjection))
	}
	if c.MaxEjection < c.BaseEjection {
		errs = append(errs, fmt.Errorf("%sMaxEjection %v: must be at least BaseEjection (%v)", p, c.MaxEjection, c.BaseEjection))
	}
	if !(c.MaxEjectedShare >= 0 && c.MaxEjectedShare <= 1) {
		errs = append(errs, fmt.Errorf("%sMaxEjectedShare %v: must be between 0 and 1", p, c.MaxEjectedShare))
	}
	return errs
}

// RetryConfig tunes the RetryBudget and Retry-After handling.
type RetryConfig struct {
	// BudgetRatio is the share of first attempts that may be retried over
	// Window. Default 0.2; 0 to 10.
	BudgetRatio float64
	// MinPerSecond is a floor of retries per second allowed whatever the
	// traffic. Default 3; 0 to 1000.
	MinPerSecond float64
	// Window is the sliding window the budget is measured over. Default
	// 10s; at least 10ms.
	Window time.Duration
	// MaxRetryAfter caps how long a peer answering 429 or 503 with
	// Retry-After is avoided, whatever it asks for. Default 60s; 0 ignores
	// Retry-After.
	MaxRetryAfter time.Duration
}

// DefaultRetryConfig returns the default retry tunables.
func DefaultRetryConfig() RetryConfig {
	return RetryConfig{BudgetRatio: 0.2, MinPerSecond: 3, Window: 10 * time.Second, MaxRetryAfter: time.Minute}
}

// Validate reports every invalid field.
func (c RetryConfig) Validate() error { return errors.Join(c.validate("")...) }

func (c RetryConfig) validate(p string) []error {
	var errs []error
	if !(c.BudgetRatio >= 0 && c.BudgetRatio <= 10) {
		errs = append(errs, fmt.Errorf("%sBudgetRatio %v: must be between 0 and 10", p, c.BudgetRatio))
	}
	if !(c.MinPerSecond >= 0 && c.MinPerSecond <= 1000) {
		errs = append(errs, fmt.Errorf("%sMinPerSecond %v: must be between 0 and 1000", p, c.MinPerSecond))
	}
	if c.Window < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("%sWindow %v: must be at least 10ms", p, c.Window))
	}
	if c.MaxRetryAfter < 0 {
		errs = append(errs, fmt.Errorf("%sMaxRetryAfter %v: must not be negative", p, c.MaxRetryAfter))
	}
	return errs
}

// BreakerConfig tunes the per-peer in-flight caps (see Breaker).
type BreakerConfig struct {
	// MaxInflight caps this node's requests in flight to any one peer.
	// 0 derives each peer's cap from its capacity (CapacityFactor).
	// Default 0; not negative.
	MaxInflight int
	// CapacityFactor sets a peer's cap to ceil(CapacityFactor × its
	// capacity) when MaxInflight is 0; peers of unknown capacity get no
	// cap. 0 disables derived caps. Default 1; 0 to 100.
	CapacityFactor float64
}

// DefaultBreakerConfig returns the default breaker tunables.
func DefaultBreakerConfig() BreakerConfig { return BreakerConfig{CapacityFactor: 1} }

// Validate reports every invalid field.
func (c BreakerConfig) Validate() error { return errors.Join(c.validate("")...) }

func (c BreakerConfig) validate(p string) []error {
	var errs []error
	if c.MaxInflight < 0 {
		errs = append(errs, fmt.Errorf("%sMaxInflight %d: must not be negative", p, c.MaxInflight))
	}
	if !(c.CapacityFactor >= 0 && c.CapacityFactor <= 100) {
		errs = append(errs, fmt.Errorf("%sCapacityFactor %v: must be between 0 and 100", p, c.CapacityFactor))
	}
	return errs
}

// capFor returns the in-flight cap for a peer of the given capacity.
func (c BreakerConfig) capFor(capacity int) int {
	if c.MaxInflight > 0 {
		return c.MaxInflight
	}
	if c.CapacityFactor > 0 && capacity > 0 {
		return int(math.Ceil(c.CapacityFactor * float64(capacity)))
	}
	return 0
}

// WindowConfig sizes a Window.
type WindowConfig struct {
	// Length is how much history the figures cover. Default 10s; at least
	// 1ms.
	Length time.Duration
	// Buckets is how many time buckets Length is cut into; the figures
	// move in steps of Length/Buckets. Default 10; 2 to 600.
	Buckets int
}

// DefaultWindowConfig returns a 10s window of ten 1s buckets.
func DefaultWindowConfig() WindowConfig { return WindowConfig{Length: 10 * time.Second, Buckets: 10} }

// Validate reports every invalid field.
func (c WindowConfig) Validate() error { return errors.Join(c.validate("")...) }

func (c WindowConfig) validate(p string) []error {
	var errs []error
	if c.Length < time.Millisecond {
		errs = append(errs, fmt.Errorf("%sLength %v: must be at least 1ms", p, c.Length))
	}
	if c.Buckets < 2 || c.Buckets > 600 {
		errs = append(errs, fmt.Errorf("%sBuckets %d: must be between 2 and 600", p, c.Buckets))
	}
	return errs
}

// MeterConfig tunes a Meter.
type MeterConfig struct {
	// Window sizes the rate, error rate and percentile window.
	Window WindowConfig
	// Decay is the time constant of the latency peak-EWMA. Default 10s;
	// 1ms to 10m.
	Decay time.Duration
}

// DefaultMeterConfig returns the default meter tunables.
func DefaultMeterConfig() MeterConfig {
	return MeterConfig{Window: DefaultWindowConfig(), Decay: DefaultDecay}
}

// Validate reports every invalid field.
func (c MeterConfig) Validate() error {
	errs := c.Window.validate("Window.")
	if c.Decay < time.Millisecond || c.Decay > 10*time.Minute {
		errs = append(errs, fmt.Errorf("Decay %v: must be between 1ms and 10m", c.Decay))
	}
	return errors.Join(errs...)
}
