package transport_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"time"

	"github.com/loadmesh/loadmesh/transport"
)

// Two nodes in one process: node-a's front door forwards a request to
// node-b through the QUIC peer channel.
func ExamplePeerServer() {
	ctx := context.Background()
	ca, err := transport.NewCA("example cluster", time.Hour)
	if err != nil {
		panic(err)
	}
	cfg := transport.DefaultPeerConfig()
	cfg.Addr = "127.0.0.1:0"

	start := func(name string, handler http.Handler) *transport.PeerServer {
		id, err := transport.DevMutualTLS(name, ca)
		if err != nil {
			panic(err)
		}
		srv, err := transport.NewPeerServer(cfg, transport.PeerDeps{TLS: id, Handler: handler})
		if err != nil {
			panic(err)
		}
		if err := srv.Start(ctx); err != nil {
			panic(err)
		}
		return srv
	}

	// node-b serves forwarded requests with its "backend".
	b := start("node-b", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		from, _ := transport.PeerNameFromContext(r.Context())
		fmt.Fprintf(w, "node-b served %s%s for %s", r.Host, r.URL.Path, from)
	}))
	defer b.Shutdown(ctx)

	// node-a forwards everything to node-b.
	a := start("node-a", http.NotFoundHandler())
	defer a.Shutdown(ctx)
	peer := transport.PeerTarget{Name: "node-b", Addr: b.Addr().String()}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out = pr.Out.WithContext(transport.WithPeerTarget(pr.Out.Context(), peer))
			pr.Out.Host = pr.In.Host
		},
		Transport: a.Client(),
	}

	rec := httptest.NewRecorder()
	proxy.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://shop.example/cart", nil))
	fmt.Println(rec.Code, rec.Body.String())
	// Output: 200 node-b served shop.example/cart for node-a
}
