package transport

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestPeerDrainKeepsTheClient drains a node's peer channel while it serves
// a request from a peer: new connections are refused, the request in
// flight finishes, and the node itself keeps forwarding to its peers
// (what its own ingress accepted) during and after the drain.
func TestPeerDrainKeepsTheClient(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	b := ptStart(t, "node-b", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
		}
		_, _ = io.WriteString(w, "done")
	}))
	a := ptStart(t, "node-a", nil)
	c := ptStart(t, "node-c", nil)

	inflight := make(chan error, 1)
	go func() {
		_, body, err := ptDo(t.Context(), a.client(), b.target(), http.MethodGet, "/slow", nil)
		if err == nil && string(body) != "done" {
			err = errors.New("body " + string(body))
		}
		inflight <- err
	}()
	<-started
	drained := make(chan error, 1)
	go func() { drained <- b.srv.Drain(context.Background()) }()
	ptWait(t, 5*time.Second, func() error {
		if !b.srv.draining.Load() {
			return errors.New("not draining yet")
		}
		return nil
	})
	if _, _, err := ptDo(t.Context(), c.client(), b.target(), http.MethodGet, "/", nil); !errors.Is(err, ErrDial) {
		t.Fatalf("new connection while draining: %v, want ErrDial", err)
	}
	if _, body, err := ptDo(t.Context(), b.client(), c.target(), http.MethodPost, "/", strings.NewReader("out")); err != nil || string(body) != "out" {
		t.Fatalf("forwarding from the draining node: %q, %v", body, err)
	}
	close(release)
	if err := <-inflight; err != nil {
		t.Fatalf("request in flight: %v", err)
	}
	if err := <-drained; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if _, body, err := ptDo(t.Context(), b.client(), c.target(), http.MethodPost, "/", strings.NewReader("after")); err != nil || string(body) != "after" {
		t.Fatalf("forwarding after the drain: %q, %v", body, err)
	}
	if err := b.srv.Drain(context.Background()); err != nil {
		t.Errorf("second Drain: %v", err)
	}
}
