package httpcache_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/loadmesh/loadmesh/transport/httpcache"
)

// A cache alone (no owners, no peers) in front of a handler: the second
// request for a URL under a cached prefix is a hit.
func Example() {
	cfg := httpcache.DefaultConfig()
	cfg.NodeName = "a"
	cfg.Prefixes = []string{"/api/"}
	c, err := httpcache.New(cfg, httpcache.Deps{})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	origin := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "hello")
	})
	h := c.Handler(origin)
	for range 2 {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "http://example.org/api/greeting", nil))
		fmt.Println(w.Header().Get(httpcache.HeaderXCache), w.Body.String())
	}
	// Output:
	// MISS hello
	// HIT hello
}
