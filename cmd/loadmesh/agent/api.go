package agent

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/transport"
)

// Status is the body of GET /v1/status.
type Status struct {
	Node    NodeStatus         `json:"node"`
	Leader  string             `json:"leader"`
	Raft    cluster.RaftStatus `json:"raft"`
	Plan    PlanStatus         `json:"plan"`
	Members []MemberView       `json:"members"`
	// TLS is when this node's certificates expire.
	TLS *TLSStatus `json:"tls,omitempty"`
	// Services are this node's TCP services with their figures.
	Services []ServiceStatus `json:"services,omitempty"`
}

// ServiceStatus is one of this node's TCP services: its figures and,
// for a service it accepts connections for, the nodes it may place them
// on now (offering it, healthy for it, taking traffic in the plan).
type ServiceStatus struct {
	transport.TCPServiceStatus
	Candidates []string `json:"candidates,omitempty"`
}

// MemberView is a member with its last gossiped load and what this node's
// scheduler thinks of it.
type MemberView struct {
	cluster.Member
	Load *LoadView `json:"load,omitempty"`
	// Services are the TCP services the member offers, as gossiped.
	Services map[string]ServiceView `json:"services,omitempty"`
}

// ServiceView is a TCP service a member offers.
type ServiceView struct {
	Healthy bool `json:"healthy"`
	// Open is the connections open to the member's backend.
	Open int `json:"open_connections"`
}

// LoadView is a member's load summary as received by this node.
type LoadView struct {
	Version     uint64  `json:"version"`
	AgeSeconds  float64 `json:"age_seconds"`
	Inflight    int     `json:"inflight"`
	Capacity    int     `json:"capacity"`
	RPS         float64 `json:"rps"`
	LatencyEWMA float64 `json:"latency_ewma_seconds"`
	P95         float64 `json:"p95_seconds"`
	ErrorRate   float64 `json:"error_ratio"`
	CPU         float64 `json:"cpu_ratio"`
	Mem         float64 `json:"memory_ratio"`
	Healthy     bool    `json:"healthy"`
	// Ejected is true while this node's outlier detector keeps the member
	// out of rotation.
	Ejected bool `json:"ejected,omitempty"`
}

// NodeStatus describes the answering node.
type NodeStatus struct {
	Name string `json:"name"`
	Zone string `json:"zone"`
	// State is the node's state in the capacity plan, or "joining" while the
	// plan does not list it yet.
	State   string `json:"state"`
	Backend string `json:"backend,omitempty"`
}

// PlanStatus summarises the replicated plan.
type PlanStatus struct {
	Version uint64 `json:"version"`
}

// Status gathers this node's view of the cluster.
func (a *Agent) Status() Status {
	plan := a.fsm.Plan()
	state := "joining"
	if st, ok := plan.StateOf(a.cfg.Name); ok {
		state = string(st)
	}
	backend := a.cfg.Backend
	if a.demo != nil {
		backend = a.demo.URL()
	}
	return Status{
		Node:     NodeStatus{Name: a.cfg.Name, Zone: a.cfg.Zone, State: state, Backend: backend},
		Leader:   a.cluster.Leader(),
		Raft:     a.cluster.RaftStatus(),
		Plan:     PlanStatus{Version: plan.Version},
		Members:  a.memberViews(),
		TLS:      a.sec.tlsStatus(),
		Services: a.serviceStatus(),
	}
}

func (a *Agent) serviceStatus() []ServiceStatus {
	if a.tcp == nil {
		return nil
	}
	var out []ServiceStatus
	for _, s := range a.tcp.Status() {
		out = append(out, ServiceStatus{TCPServiceStatus: s, Candidates: a.services.candidates(s.Name)})
	}
	return out
}

// memberViews joins membership with gossiped load and scheduler state.
func (a *Agent) memberViews() []MemberView {
	members := a.cluster.Members()
	ejected := map[string]bool{}
	now := time.Now()
	for _, ps := range a.peers.sched.Status() {
		ejected[ps.Name] = ps.EjectedUntil.After(now)
	}
	out := make([]MemberView, 0, len(members))
	for _, m := range members {
		mv := MemberView{Member: m}
		if len(m.Services) > 0 {
			mv.Services = make(map[string]ServiceView, len(m.Services))
			for name, sm := range m.Services {
				mv.Services[name] = ServiceView{Healthy: sm.Healthy, Open: sm.Open}
			}
		}
		var l scheduler.Load
		var age time.Duration
		ok := false
		if m.Name == a.cfg.Name {
			cpu, mem := a.sys.sample()
			l, ok = a.peers.meter.Load(a.cfg.Capacity, a.peers.health(), cpu, mem), true
		} else {
			l, age, ok = a.peers.loads.Get(m.Name)
		}
		if ok {
			mv.Load = &LoadView{
				Version: l.Version, AgeSeconds: age.Seconds(), Inflight: l.Inflight, Capacity: l.Capacity,
				RPS: l.RPS, LatencyEWMA: l.LatencyEWMA.Seconds(), P95: l.P95.Seconds(), ErrorRate: l.ErrorRate,
				CPU: l.CPU, Mem: l.Mem, Healthy: l.Healthy, Ejected: ejected[m.Name],
			}
		}
		out = append(out, mv)
	}
	return out
}

func (a *Agent) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.Status())
	})
	mux.HandleFunc("GET /v1/members", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.memberViews())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeText(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		switch {
		case a.draining.Load():
			writeText(w, http.StatusServiceUnavailable, "not ready: shutting down (draining)")
		case !a.cluster.Joined():
			writeText(w, http.StatusServiceUnavailable, "not ready: not joined to a cluster yet")
		case a.cluster.Leader() == "":
			writeText(w, http.StatusServiceUnavailable, "not ready: no raft leader known")
		case a.dataDirWritable() != nil:
			writeText(w, http.StatusServiceUnavailable, "not ready: "+a.dataDirWritable().Error())
		default:
			writeText(w, http.StatusOK, "ready")
		}
	})
	a.registerPlanAPI(mux)
	a.registerAutoscalerAPI(mux)
	a.registerTokenAPI(mux)
	a.registerSnapshotAPI(mux)
	a.registerDashboard(mux)
	a.registerCostAPI(mux)
	a.registerCacheAPI(mux)
	a.registerKeyringAPI(mux)
	mux.HandleFunc("POST /v1/nodes/{name}/revoke", a.leaderOnly(a.revokeNode))
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return a.requireAuth(mux)
}

// apiError is the body of every API error.
type apiError struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, apiError{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeText(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	w.Write([]byte(msg + "\n"))
}
