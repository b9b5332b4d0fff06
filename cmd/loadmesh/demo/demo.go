// Package demo is loadmesh's built-in demo and test backend: an HTTP server
// that answers any path with a short text naming itself, optionally after a
// delay. `loadmesh backend`, `loadmesh agent --dev`, the tests and the
// benchmarks use it.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Server is a running demo backend.
type Server struct {
	name  string
	delay time.Duration
	ln    net.Listener
	srv   *http.Server
	wg    sync.WaitGroup
}

// Start listens on addr and serves until Shutdown.
//
// Besides the fixed answer it understands a few query parameters that tests
// and benchmarks use: ?size=N answers N bytes, ?sleep=D waits D more,
// ?status=N answers with that status, and POST/PUT bodies are read and their
// length reported (?echo=1 streams the body back).
func Start(addr, name string, delay time.Duration) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("backend listen %s: %w", addr, err)
	}
	s := &Server{name: name, delay: delay, ln: ln}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Println("backend:", err)
		}
	}()
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// URL is the backend's base URL.
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() }

// Shutdown stops the server, waiting for in-flight requests until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	s.wg.Wait()
	return err
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	wait := s.delay
	if d, err := time.ParseDuration(q.Get("sleep")); err == nil && d > 0 {
		wait += d
	}
	if wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	status := http.StatusOK
	if n, err := strconv.Atoi(q.Get("status")); err == nil && n >= 200 && n < 600 {
		status = n
	}
	w.Header().Set("X-Backend", s.name)
	if q.Get("echo") != "" {
		// Stream the body back as it arrives (HTTP/1.1 needs full duplex
		// for that).
		http.NewResponseController(w).EnableFullDuplex()
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(status)
		io.Copy(w, r.Body)
		return
	}
	var got int64
	if r.Body != nil {
		got, _ = io.Copy(io.Discard, r.Body)
	}
	if n, err := strconv.ParseInt(q.Get("size"), 10, 64); err == nil && n > 0 {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		w.WriteHeader(status)
		writeZeros(w, n)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	if got > 0 {
		fmt.Fprintf(w, "hello from %s: %s %s (received %d bytes)\n", s.name, r.Method, r.URL.Path, got)
		return
	}
	fmt.Fprintf(w, "hello from %s: %s %s\n", s.name, r.Method, r.URL.Path)
}

var zeros = make([]byte, 64<<10)

func writeZeros(w io.Writer, n int64) {
	for n > 0 {
		chunk := min(n, int64(len(zeros)))
		if _, err := w.Write(zeros[:chunk]); err != nil {
			return
		}
		n -= chunk
	}
}
