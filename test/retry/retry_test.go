package retry

import (
	"testing"
	"time"
)

func TestRunPassesAfterFailures(t *testing.T) {
	n := 0
	Run(t, func(r *R) {
		n++
		if n < 3 {
			r.Fatalf("attempt %d", n)
		}
	})
	if n != 3 {
		t.Fatalf("ran %d times, want 3", n)
	}
}

func TestUntilGivesUp(t *testing.T) {
	start := time.Now()
	if Until(100*time.Millisecond, func(r *R) { r.Errorf("never") }) {
		t.Fatal("Until reported success for a check that always fails")
	}
	if time.Since(start) < 100*time.Millisecond {
		t.Fatal("Until gave up before its timeout")
	}
}
