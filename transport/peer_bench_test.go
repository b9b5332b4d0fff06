package transport

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkPeerForward measures small forwarded requests per second over
// one peer connection at several concurrency levels: node-a's PeerClient
// sends GET requests to node-b's PeerServer, whose handler answers with a
// short body.
func BenchmarkPeerForward(b *testing.B) {
	for _, concurrency := range []int{8, 64} {
		b.Run(fmt.Sprintf("c=%d", concurrency), func(b *testing.B) {
			srv := ptStart(b, "node-b", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.WriteString(w, "ok")
			}))
			cli := ptStart(b, "node-a", nil)
			target := srv.target()
			ptForward(b, cli.client(), target, concurrency, func(ctx context.Context) *http.Request {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://example.com/bench", nil)
				return req
			})
		})
	}
}

// BenchmarkPeerForwardBody measures throughput for 1 MiB uploads and
// downloads over one peer connection with 8 requests in flight.
func BenchmarkPeerForwardBody(b *testing.B) {
	const size = 1 << 20
	payload := make([]byte, 64<<10)
	for _, dir := range []string{"upload", "download"} {
		b.Run(dir, func(b *testing.B) {
			srv := ptStart(b, "node-b", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				if r.Method == http.MethodGet {
					w.Header().Set("Content-Length", strconv.Itoa(size))
					_, _ = io.Copy(w, newPTPattern(payload, size))
				}
			}))
			cli := ptStart(b, "node-a", nil)
			b.SetBytes(size)
			ptForward(b, cli.client(), srv.target(), 8, func(ctx context.Context) *http.Request {
				if dir == "download" {
					req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://example.com/bench", nil)
					return req
				}
				req, _ := http.NewRequestWithContext(ctx, http.MethodPut, "https://example.com/bench", newPTPattern(payload, size))
				req.ContentLength = size
				return req
			})
		})
	}
}

// ptForward runs b.N requests made by newReq through c with concurrency
// requests in flight and reports requests per second.
func ptForward(b *testing.B, c *PeerClient, target PeerTarget, concurrency int, newReq func(context.Context) *http.Request) {
	ctx := b.Context()
	// Establish the connection outside the measurement.
	resp, err := c.RoundTripPeer(newReq(ctx), target)
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range concurrency {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				resp, err := c.RoundTripPeer(newReq(ctx), target)
				if err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(*err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
}
