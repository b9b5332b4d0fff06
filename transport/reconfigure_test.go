package transport

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Tests of the setters a reload (SIGHUP) uses: each takes effect for what
// comes next and leaves what is under way alone.

func TestConnLimiterSetLimits(t *testing.T) {
	cl, err := NewConnLimiter(ConnLimitConfig{}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	a, b := KeyFromRemoteAddr("192.0.2.1:1"), KeyFromRemoteAddr("192.0.2.2:1")
	for range 3 {
		if !cl.Acquire(a) {
			t.Fatal("refused without limits")
		}
	}
	// A per-client limit turned on later counts the connections opened
	// before it.
	if err := cl.SetLimits(ConnLimitConfig{MaxConns: 5, MaxConnsPerClient: 3}); err != nil {
		t.Fatal(err)
	}
	if cl.Acquire(a) {
		t.Fatal("a fourth connection of a client allowed with a per-client limit of 3")
	}
	if !cl.Acquire(b) || !cl.Acquire(b) {
		t.Fatal("another client refused")
	}
	if cl.Acquire(b) {
		t.Fatal("a sixth connection allowed with a total limit of 5")
	}
	cl.Release(a)
	if !cl.Acquire(a) {
		t.Fatal("refused after a release")
	}
	if err := cl.SetLimits(ConnLimitConfig{MaxConns: -1}); err == nil {
		t.Fatal("a negative limit accepted")
	}
	if err := cl.SetLimits(ConnLimitConfig{}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		cl.Release(a)
	}
	cl.Release(b)
	cl.Release(b)
	if cl.Open() != 0 || len(cl.per) != 0 {
		t.Fatalf("all released: open %d, per-client entries %d; want 0 and 0", cl.Open(), len(cl.per))
	}
}

func TestAdmissionSetConfigAdmitsWaiters(t *testing.T) {
	a := newTestAdmission(t, AdmissionConfig{MaxInflight: 1, MaxQueue: 4, Interval: time.Hour, Target: time.Hour})
	ctx := context.Background()
	r1, err := a.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan func(), 2)
	for range 2 {
		go func() {
			release, err := a.Acquire(ctx)
			if err != nil {
				t.Error(err)
			}
			got <- release
		}()
	}
	limWait(t, func() bool { _, q := a.Load(); return q == 2 })
	if err := a.SetConfig(AdmissionConfig{MaxInflight: 3, MaxQueue: 4}); err != nil {
		t.Fatal(err)
	}
	r2, r3 := <-got, <-got
	if in, q := a.Load(); in != 3 || q != 0 {
		t.Fatalf("after raising the limit to 3: %d in flight, %d queued; want 3 and 0", in, q)
	}
	if err := a.SetConfig(AdmissionConfig{MaxInflight: 0}); err == nil {
		t.Fatal("max in-flight 0 accepted")
	}
	r1()
	r2()
	r3()
	if in, q := a.Load(); in != 0 || q != 0 {
		t.Fatalf("after all released: %d in flight, %d queued", in, q)
	}
}

func TestGuardSetLimits(t *testing.T) {
	g := NewGuard(GuardConfig{MaxBodyBytes: 1000}, GuardDeps{}, http.HandlerFunc(echoBody))
	send := func(body string) int {
		w := httptest.NewRecorder()
		r := httptest.NewRequest("POST", "/", strings.NewReader(body))
		g.ServeHTTP(w, r)
		return w.Code
	}
	if code := send(strings.Repeat("x", 100)); code != http.StatusOK {
		t.Fatalf("100 bytes under a 1000-byte limit: %d", code)
	}
	g.SetLimits(GuardConfig{MaxBodyBytes: 10})
	if code := send(strings.Repeat("x", 100)); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("100 bytes under a 10-byte limit: %d, want 413", code)
	}
}

func TestRateLimiterSetRate(t *testing.T) {
	clk := newRLClock()
	l := newTestLimiter(t, RateLimitConfig{Rate: 100, Burst: 100}, clk, nil)
	k := KeyFromRemoteAddr("192.0.2.1:1")
	if ok, _ := l.Allow(k); !ok {
		t.Fatal("refused")
	}
	if err := l.SetRate(0, 0); err == nil {
		t.Fatal("rate 0 accepted")
	}
	if err := l.SetRate(1, 2); err != nil {
		t.Fatal(err)
	}
	if l.Rate() != 1 {
		t.Fatalf("rate %v, want 1", l.Rate())
	}
	// A tracked key gets the new rate at the next Tick, a new one at once.
	l.Tick()
	allowed := 0
	for range 10 {
		if ok, _ := l.Allow(k); ok {
			allowed++
		}
	}
	if allowed != 2 {
		t.Fatalf("allowed %d of 10 at once after SetRate(1, 2), want the burst of 2", allowed)
	}
	fresh := KeyFromRemoteAddr("192.0.2.2:1")
	allowed = 0
	for range 10 {
		if ok, _ := l.Allow(fresh); ok {
			allowed++
		}
	}
	if allowed != 2 {
		t.Fatalf("a new key: allowed %d of 10, want 2", allowed)
	}
}

func TestHealthCheckerReconfigure(t *testing.T) {
	var checks atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { checks.Add(1) }))
	defer srv.Close()
	h, err := NewHealthChecker(HealthConfig{URL: srv.URL, Interval: time.Hour, Timeout: time.Second, Rise: 1, Fall: 1}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Reconfigure(HealthConfig{Interval: time.Second, Timeout: 2 * time.Second, Rise: 1, Fall: 1}); err == nil {
		t.Fatal("a timeout above the interval accepted")
	}
	h.Start()
	defer h.Shutdown()
	limWait(t, func() bool { return checks.Load() == 1 }) // the first, at once
	// At the hourly interval nothing more would come.
	if err := h.Reconfigure(HealthConfig{URL: "ignored", Interval: 10 * time.Millisecond, Timeout: 5 * time.Millisecond, Rise: 1, Fall: 1}); err != nil {
		t.Fatal(err)
	}
	limWait(t, func() bool { return checks.Load() >= 3 })
}
