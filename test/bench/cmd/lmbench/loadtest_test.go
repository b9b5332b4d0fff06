package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/loadtest"
)

// TestParseLoadtest reads a real `loadmesh loadtest --json` document, so
// lmbench and the report's schema cannot drift apart.
func TestParseLoadtest(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("fail") != "" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer ts.Close()
	cfg := loadtest.DefaultConfig()
	cfg.URL, cfg.Rate, cfg.Connections, cfg.Duration, cfg.MaxRequests = ts.URL, 0, 2, 5*time.Second, 300
	rep, err := loadtest.Run(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	var doc bytes.Buffer
	if err := rep.WriteJSON(&doc); err != nil {
		t.Fatal(err)
	}
	got, err := parseLoadtest(doc.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if got.Requests != 300 || got.Errors != 0 || got.RPS <= 0 || got.P50 <= 0 || got.P99 < got.P50 || got.Seconds <= 0 {
		t.Errorf("parsed %+v from %s", got, doc.String())
	}

	cfg.URL += "/?fail=1"
	rep, _ = loadtest.Run(context.Background(), cfg, nil)
	doc.Reset()
	rep.WriteJSON(&doc)
	if _, err := parseLoadtest(doc.Bytes()); err == nil {
		t.Error("no error when every request failed")
	}
}
