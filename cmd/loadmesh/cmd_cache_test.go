package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/test/harness"
	"github.com/loadmesh/loadmesh/test/retry"
)

// TestCacheCommands runs loadmesh cache stats and purge against a one-node
// cluster with the cache on: a purge needs an operator token, is audited
// and empties the cache.
func TestCacheCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an agent; skipped with -short")
	}
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=300")
		io.WriteString(w, "ok")
	}))
	t.Cleanup(origin.Close)
	c := harness.Start(t, 1, harness.Options{StrictAuth: true, Tune: func(_ int, cfg *agent.Config) {
		cfg.Backend = origin.URL
		cfg.Cache = []string{"/c/"}
		cfg.CacheSize = 2 << 20
	}})
	n := c.WaitForLeader(t)
	api := []string{"--api", "http://" + n.APIAddr(), "--token", harness.Token}
	get := func() string {
		resp, err := http.Get("http://" + n.HTTPAddr() + "/c/x")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.Header.Get("X-Cache")
	}
	retry.Run(t, func(r *retry.R) {
		get()
		if x := get(); x != "HIT" {
			r.Fatalf("X-Cache %q", x)
		}
	})
	out, err := runCLI(t, "", append([]string{"cache", "stats"}, api...)...)
	if err != nil || !strings.Contains(out, "Prefixes:      /c/") || !strings.Contains(out, "W-TinyLFU") || !strings.Contains(out, "Stored:        1 items") {
		t.Fatalf("stats: %v\n%s", err, out)
	}
	if _, err := runCLI(t, "", "cache", "purge", "--prefix", "/c/", "--api", "http://"+n.APIAddr(), "--token", ""); err == nil {
		t.Fatal("purge without a token accepted")
	}
	if _, err := runCLI(t, "", append([]string{"cache", "purge"}, api...)...); err == nil || !strings.Contains(err.Error(), "exactly one of --key or --prefix") {
		t.Fatalf("purge without --key or --prefix: %v", err)
	}
	out, err = runCLI(t, "", append([]string{"cache", "purge", "--key", "http://" + n.HTTPAddr() + "/c/x", "--reason", "test"}, api...)...)
	if err != nil || !strings.Contains(out, "purge of key=127.0.0.1:") {
		t.Fatalf("purge: %v\n%s", err, out)
	}
	retry.Run(t, func(r *retry.R) {
		if x := get(); x != "MISS" {
			r.Fatalf("X-Cache %q after the purge", x)
		}
	})
	out, err = runCLI(t, "", append([]string{"events", "--limit", "1"}, api...)...)
	if err != nil || !strings.Contains(out, "cache.purge") || !strings.Contains(out, "test") {
		t.Fatalf("events: %v\n%s", err, out)
	}
}
