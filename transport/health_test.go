package transport

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestHealthCheckerRiseAndFall(t *testing.T) {
	var failing atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	changes := make(chan bool, 8)
	h, err := NewHealthChecker(HealthConfig{URL: srv.URL + "/health", Interval: 20 * time.Millisecond, Timeout: 10 * time.Millisecond, Rise: 2, Fall: 3},
		nil, func(ok bool) { changes <- ok })
	if err != nil {
		t.Fatal(err)
	}
	h.Start()
	defer h.Shutdown()
	if !h.Healthy() {
		t.Fatal("a new checker must start healthy")
	}
	failing.Store(true)
	if ok := <-changes; ok || h.Healthy() {
		t.Fatal("want a flip to unhealthy")
	}
	failing.Store(false)
	if ok := <-changes; !ok || !h.Healthy() {
		t.Fatal("want a flip back to healthy")
	}
}

func TestHealthConfigValidate(t *testing.T) {
	bad := []HealthConfig{
		{URL: "ftp://x", Interval: time.Second, Timeout: time.Millisecond, Rise: 1, Fall: 1},
		{URL: "http://x", Interval: time.Second, Timeout: 2 * time.Second, Rise: 1, Fall: 1},
		{URL: "http://x", Interval: time.Second, Timeout: time.Millisecond, Rise: 0, Fall: 1},
	}
	for _, c := range bad {
		if c.Validate() == nil {
			t.Errorf("%+v validated", c)
		}
	}
}
