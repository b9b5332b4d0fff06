package transport

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// scriptedPicker offers a dead peer first, then refuses (as a spent retry
// budget does).
type scriptedPicker struct {
	mu    sync.Mutex
	calls [][]string
}

func (p *scriptedPicker) Pick(r *http.Request, tried []string) (PeerTarget, func(Outcome), error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, append([]string(nil), tried...))
	if len(tried) == 0 {
		// A peer that was reachable a moment ago and is not now.
		return PeerTarget{Name: "node-2", Addr: "127.0.0.1:9"}, func(Outcome) {}, nil
	}
	return PeerTarget{}, nil, errors.New("retry budget exhausted")
}

// failingPeers fails every forward before a byte is sent.
type failingPeers struct{}

func (failingPeers) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, &DialError{Peer: "node-2", Err: errors.New("connection refused")}
}

func TestIngressFallsBackToItsOwnBackendWhenAForwardFailsAndNoOneElseWill(t *testing.T) {
	local := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "local") })
	p := &scriptedPicker{}
	in := NewIngress(IngressConfig{NodeName: "node-1"}, IngressDeps{Local: local, Picker: p, Peers: failingPeers{}, Registerer: prometheus.NewRegistry()})
	rec := httptest.NewRecorder()
	in.ServeHTTP(rec, httptest.NewRequest("GET", "/x", nil))
	if rec.Code != 200 || rec.Body.String() != "local" {
		t.Fatalf("got %d %q; want the local backend's answer after the failed forward", rec.Code, rec.Body.String())
	}
	if len(p.calls) != 2 || len(p.calls[1]) != 1 || p.calls[1][0] != "node-2" {
		t.Fatalf("picker calls %v", p.calls)
	}
}

func TestIngressRefusesConnectAndH2Preface(t *testing.T) {
	reached := false
	local := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached = true })
	in := NewIngress(IngressConfig{NodeName: "node-1"}, IngressDeps{Local: local, Registerer: prometheus.NewRegistry()})
	for method, want := range map[string]int{http.MethodConnect: http.StatusMethodNotAllowed, "PRI": http.StatusBadRequest} {
		rec := httptest.NewRecorder()
		in.ServeHTTP(rec, httptest.NewRequest(method, "/", nil))
		if rec.Code != want || !strings.HasPrefix(rec.Body.String(), "loadmesh: ") {
			t.Errorf("%s: %d %q, want %d", method, rec.Code, rec.Body.String(), want)
		}
	}
	if reached {
		t.Fatal("the backend saw a CONNECT or PRI request")
	}
}
