package scheduler

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// RetryBudget limits retries to a share of recent traffic, as Finagle's
// RetryBudget and Envoy's retry budgets do: a retry is allowed while the
// retries over the last Window, this one included, stay at or below
// Ratio × the first attempts over the same Window plus MinPerSecond ×
// Window. The floor lets a quiet node still retry; the ratio keeps a
// struggling cluster from being hit by a retry storm that multiplies its
// load just when it can least take it.
//
// Record is lock-free; TryRetry takes a mutex so concurrent retries cannot
// overdraw the budget. Safe for concurrent use.
type RetryBudget struct {
	cfg    RetryConfig
	now    func() time.Time
	mu     sync.Mutex  // serialises TryRetry
	window counterRing // a: first attempts, b: retries

	granted, rejected atomic.Uint64
}

const retryBuckets = 10

// NewRetryBudget returns a budget with no history. now is the clock
// (time.Now if nil).
func NewRetryBudget(cfg RetryConfig, now func() time.Time) (*RetryBudget, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("retry config: %w", err)
	}
	if now == nil {
		now = time.Now
	}
	return &RetryBudget{cfg: cfg, now: now, window: newCounterRing(cfg.Window, retryBuckets)}, nil
}

// Record counts a first attempt (a request that is not a retry).
func (b *RetryBudget) Record() { b.record(b.now().UnixNano()) }

func (b *RetryBudget) record(now int64) { b.window.add(now, 1, 0) }

// TryRetry withdraws one retry from the budget and reports whether there
// was one to withdraw.
func (b *RetryBudget) TryRetry() bool { return b.tryRetry(b.now().UnixNano()) }

func (b *RetryBudget) tryRetry(now int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	req, ret := b.window.sum(now)
	if float64(ret+1) > b.allowance(req) {
		b.rejected.Add(1)
		return false
	}
	b.window.add(now, 0, 1)
	b.granted.Add(1)
	return true
}

func (b *RetryBudget) allowance(requests uint64) float64 {
	return b.cfg.BudgetRatio*float64(requests) + b.cfg.MinPerSecond*b.cfg.Window.Seconds()
}

// RetryBudgetStats are a RetryBudget's figures, ready to export as metrics.
type RetryBudgetStats struct {
	// Requests and Retries are the first attempts and granted retries in
	// the current window.
	Requests, Retries uint64
	// Available is how many more retries the window allows now.
	Available float64
	// Granted and Rejected count TryRetry outcomes since start.
	Granted, Rejected uint64
}

// Stats returns the budget's figures.
func (b *RetryBudget) Stats() RetryBudgetStats {
	req, ret := b.window.sum(b.now().UnixNano())
	return RetryBudgetStats{
		Requests: req, Retries: ret,
		Available: max(b.allowance(req)-float64(ret), 0),
		Granted:   b.granted.Load(), Rejected: b.rejected.Load(),
	}
}

// retryAfterLayouts are the HTTP-date forms of RFC 9110 section 5.6.7.
var retryAfterLayouts = []string{
	"Mon, 02 Jan 2006 15:04:05 GMT",  // IMF-fixdate
	"Monday, 02-Jan-06 15:04:05 GMT", // obsolete RFC 850
	"Mon Jan _2 15:04:05 2006",       // obsolete asctime
}

// ParseRetryAfter interprets a Retry-After header value received at now: a
// number of seconds or an HTTP date. It returns how long to wait (0 for a
// date in the past) and false when v is neither.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if v[0] >= '0' && v[0] <= '9' {
		secs, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
				return time.Duration(1<<63 - 1), true
			}
			return 0, false
		}
		if secs > uint64((1<<63-1)/time.Second) {
			return time.Duration(1<<63 - 1), true
		}
		return time.Duration(secs) * time.Second, true
	}
	for _, layout := range retryAfterLayouts {
		if t, err := time.Parse(layout, v); err == nil {
			return max(t.Sub(now), 0), true
		}
	}
	return 0, false
}
