package transport

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func newTestAdmission(t *testing.T, cfg AdmissionConfig) *Admission {
	t.Helper()
	a, err := NewAdmission(cfg, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAdmissionQueueFullSheds(t *testing.T) {
	a := newTestAdmission(t, AdmissionConfig{MaxInflight: 2, MaxQueue: 1, Interval: time.Hour, Target: time.Hour})
	ctx := context.Background()
	r1, err1 := a.Acquire(ctx)
	r2, err2 := a.Acquire(ctx)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	// The third waits in the queue; the fourth finds it full.
	got := make(chan error, 1)
	go func() {
		release, err := a.Acquire(ctx)
		if err == nil {
			release()
		}
		got <- err
	}()
	limWait(t, func() bool { _, q := a.Load(); return q == 1 })
	if _, err := a.Acquire(ctx); !errors.Is(err, ErrShed) {
		t.Fatalf("with the queue full: %v, want ErrShed", err)
	}
	r1() // hands the slot to the waiter
	if err := <-got; err != nil {
		t.Fatalf("queued request: %v", err)
	}
	r2()
	if in, q := a.Load(); in != 0 || q != 0 {
		t.Fatalf("after all released: %d in flight, %d queued", in, q)
	}
	if got := testutil.ToFloat64(a.metrics.shed[0]); got != 1 {
		t.Fatalf("shed{reason=queue_full} = %v, want 1", got)
	}
}

// TestAdmissionStandingQueueShedsAtTarget runs on synctest's fake clock,
// so the waits are exact.
func TestAdmissionStandingQueueShedsAtTarget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const target, interval = 5 * time.Millisecond, 100 * time.Millisecond
		a := newTestAdmission(t, AdmissionConfig{MaxInflight: 1, MaxQueue: 100, Target: target, Interval: interval})
		ctx := context.Background()
		hold, err := a.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// A queue that empties now and then: a waiter gets the interval.
		start := time.Now()
		if _, err := a.Acquire(ctx); !errors.Is(err, ErrShed) {
			t.Fatalf("waiting behind a stuck slot: %v, want ErrShed", err)
		}
		if waited := time.Since(start); waited != interval {
			t.Fatalf("shed after %s, want the interval %s", waited, interval)
		}
		// Two overlapping waiters keep the queue non-empty for longer
		// than the interval: it stands, and a newcomer waits the target.
		var wg sync.WaitGroup
		waiter := func() {
			if release, err := a.Acquire(ctx); err == nil {
				release()
			}
		}
		wg.Go(waiter)
		time.Sleep(interval / 2)
		wg.Go(waiter)
		time.Sleep(interval/2 + time.Millisecond)
		start = time.Now()
		if _, err := a.Acquire(ctx); !errors.Is(err, ErrShed) {
			t.Fatalf("in a standing queue: %v, want ErrShed", err)
		}
		if waited := time.Since(start); waited != target {
			t.Fatalf("in a standing queue, shed after %s, want the target %s", waited, target)
		}
		// Recovery: the slot frees, the second waiter takes it, and with the
		// queue empty again requests go straight in.
		hold()
		wg.Wait()
		for range 3 {
			release, err := a.Acquire(ctx)
			if err != nil {
				t.Fatalf("after recovery: %v", err)
			}
			release()
		}
		if in, q := a.Load(); in != 0 || q != 0 {
			t.Fatalf("after recovery: %d in flight, %d queued", in, q)
		}
		if got := testutil.ToFloat64(a.metrics.shed[1]); got != 3 {
			t.Fatalf("shed{reason=queue_timeout} = %v, want 3", got)
		}
	})
}

// TestAdmissionStandingQueueIsLIFO: once the queue stands, the newest
// waiter gets the next free slot.
func TestAdmissionStandingQueueIsLIFO(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := newTestAdmission(t, AdmissionConfig{MaxInflight: 1, MaxQueue: 10, Target: 50 * time.Millisecond, Interval: 100 * time.Millisecond})
		ctx := context.Background()
		hold, _ := a.Acquire(ctx)
		got := make(chan string, 2)
		go func() {
			if release, err := a.Acquire(ctx); err == nil {
				got <- "old"
				release()
			}
		}()
		time.Sleep(60 * time.Millisecond)
		go func() {
			if release, err := a.Acquire(ctx); err == nil {
				got <- "new"
				release()
			}
		}()
		time.Sleep(41 * time.Millisecond) // 101 ms since the queue filled: standing
		synctest.Wait()
		hold()
		if first := <-got; first != "new" {
			t.Fatalf("standing queue served %q first, want the newest", first)
		}
	})
}

func TestAdmissionContextEndsWait(t *testing.T) {
	a := newTestAdmission(t, AdmissionConfig{MaxInflight: 1, MaxQueue: 1, Interval: time.Hour, Target: time.Hour})
	hold, _ := a.Acquire(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan error, 1)
	go func() { _, err := a.Acquire(ctx); got <- err }()
	limWait(t, func() bool { _, q := a.Load(); return q == 1 })
	cancel()
	if err := <-got; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait: %v", err)
	}
	hold()
	if in, q := a.Load(); in != 0 || q != 0 {
		t.Fatalf("a cancelled waiter left %d in flight, %d queued", in, q)
	}
}

func TestAdmissionHandlerAnswers503(t *testing.T) {
	a := newTestAdmission(t, AdmissionConfig{MaxInflight: 1})
	block := make(chan struct{})
	entered := make(chan struct{})
	h := a.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-block
	}))
	go h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	<-entered
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "1" {
		t.Fatalf("over the limit: %d, Retry-After %q; want 503 and 1", w.Code, w.Header().Get("Retry-After"))
	}
	close(block)
	limWait(t, func() bool { in, _ := a.Load(); return in == 0 })
	go func() { <-entered }()
	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("after recovery: %d", w.Code)
	}
}

// limWait polls cond until it holds (10 s at most).
func limWait(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(ptScale(10 * time.Second))
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in time")
		}
		time.Sleep(time.Millisecond)
	}
}
