// Package retry runs a check again and again until it passes or a deadline
// expires, reporting only the last failure. Tests wait with it instead of
// sleeping:
//
//	retry.Run(t, func(r *retry.R) {
//		if n := len(agent.Members()); n != 3 {
//			r.Fatalf("have %d members, want 3", n)
//		}
//	})
//
// WARNING: the check runs many times; it must not have side effects that
// break when repeated.
package retry

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// R is passed to each attempt. Fatalf and Errorf end the attempt.
type R struct {
	failed bool
	msg    string
}

type stop struct{}

// Errorf fails this attempt.
func (r *R) Errorf(format string, args ...any) {
	r.failed = true
	r.msg = fmt.Sprintf(format, args...)
	panic(stop{})
}

// Fatalf fails this attempt.
func (r *R) Fatalf(format string, args ...any) { r.Errorf(format, args...) }

// Check fails the attempt when err is not nil.
func (r *R) Check(err error) {
	if err != nil {
		r.Errorf("%v", err)
	}
}

// Scale multiplies durations by LOADMESH_TIMESCALE (default 1), so slow CI
// machines can be given more time without changing the tests.
func Scale(d time.Duration) time.Duration {
	if f, err := strconv.ParseFloat(os.Getenv("LOADMESH_TIMESCALE"), 64); err == nil && f > 0 {
		return time.Duration(float64(d) * f)
	}
	return d
}

// Run retries f every 50ms for up to 20s (scaled).
func Run(t testing.TB, f func(r *R)) {
	t.Helper()
	RunFor(t, 20*time.Second, f)
}

// RunFor retries f every 50ms until it passes or timeout (scaled) expires,
// then fails t with the last attempt's message.
func RunFor(t testing.TB, timeout time.Duration, f func(r *R)) {
	t.Helper()
	deadline := time.Now().Add(Scale(timeout))
	for {
		r := attempt(f)
		if !r.failed {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("retry: gave up after %s: %s", Scale(timeout), r.msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Until retries f until it passes or timeout expires and reports whether
// it passed, without failing the test.
func Until(timeout time.Duration, f func(r *R)) bool {
	deadline := time.Now().Add(Scale(timeout))
	for {
		if r := attempt(f); !r.failed {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func attempt(f func(r *R)) (r *R) {
	r = &R{}
	defer func() {
		if v := recover(); v != nil {
			if _, ok := v.(stop); !ok {
				buf := make([]byte, 4096)
				buf = buf[:runtime.Stack(buf, false)]
				panic(fmt.Sprintf("%v\n%s", v, buf))
			}
		}
	}()
	f(r)
	return r
}
