package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/scheduler/autoscale"
	"github.com/loadmesh/loadmesh/store"
)

// PlanView is the body of GET /v1/plan.
type PlanView struct {
	Version uint64                        `json:"version"`
	Nodes   map[string]scheduler.PlanNode `json:"nodes"`
	Spec    store.SpecRecord              `json:"spec"`
	Leader  string                        `json:"leader"`
}

// maxAPIBody bounds request bodies on the API.
const maxAPIBody = 1 << 20

func (a *Agent) registerPlanAPI(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/plan", func(w http.ResponseWriter, r *http.Request) {
		p := a.fsm.Plan()
		writeJSON(w, http.StatusOK, PlanView{Version: p.Version, Nodes: p.Nodes, Spec: a.fsm.Spec(), Leader: a.cluster.Leader()})
	})
	mux.HandleFunc("GET /v1/plan/history", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.fsm.SpecHistory())
	})
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) {
		n := 100
		if v := r.URL.Query().Get("limit"); v != "" {
			var err error
			if n, err = strconv.Atoi(v); err != nil || n < 1 || n > 10000 {
				writeError(w, http.StatusBadRequest, "limit must be an integer in 1..10000")
				return
			}
		}
		var since uint64
		if v := r.URL.Query().Get("since"); v != "" {
			var err error
			if since, err = strconv.ParseUint(v, 10, 64); err != nil {
				writeError(w, http.StatusBadRequest, "since must be an audit sequence number (a non-negative integer)")
				return
			}
		}
		out := []scheduler.Event{}
		for _, e := range a.fsm.Events(0) {
			if e.Seq > since {
				out = append(out, e)
			}
		}
		if len(out) > n {
			out = out[len(out)-n:]
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("POST /v1/plan", a.leaderOnly(a.applySpec))
	mux.HandleFunc("POST /v1/plan/rollback", a.leaderOnly(a.rollbackSpec))
	for action, state := range map[string]scheduler.NodeState{
		"drain": scheduler.StateDraining, "activate": scheduler.StateActive, "cordon": scheduler.StateCordoned, "standby": scheduler.StateStandby,
	} {
		mux.HandleFunc("POST /v1/nodes/{name}/"+action, a.leaderOnly(func(w http.ResponseWriter, r *http.Request) {
			a.setNodeState(w, r, r.PathValue("name"), state, action)
		}))
	}
}

// nodeActionRequest is the optional JSON body of node actions.
type nodeActionRequest struct {
	Reason string `json:"reason"`
}

func (a *Agent) setNodeState(w http.ResponseWriter, r *http.Request, name string, state scheduler.NodeState, action string) {
	if err := validateName(name); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var req nodeActionRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, bodyStatus(err), err.Error())
		return
	}
	if _, ok := a.fsm.Plan().Nodes[name]; !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("node %q is not in the plan", name))
		return
	}
	why := req.Reason
	if why == "" {
		why = "operator asked to " + action
	}
	cmd := store.Command{Op: store.OpNodeState, Node: name, State: state, Time: a.now().UTC(), Who: actor(r), Why: why}
	ev, err := a.apply(cmd)
	if err != nil {
		writeApplyError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ev)
}

// apply proposes cmd through Raft on the leader.
func (a *Agent) apply(cmd store.Command) (any, error) {
	b, err := store.EncodeCommand(cmd)
	if err != nil {
		return nil, err
	}
	return a.cluster.Apply(b, 10*time.Second)
}

func writeApplyError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, cluster.ErrNotLeader):
		writeError(w, http.StatusServiceUnavailable, "leadership changed during the write; try again")
	case errors.Is(err, store.ErrUnknownNode):
		writeError(w, http.StatusNotFound, err.Error())
	default:
		writeError(w, http.StatusInternalServerError, "write failed: "+err.Error())
	}
}

// leaderOnly runs h on the leader; a follower carries the request to the
// leader's API (learned from gossip) and relays the answer.
func (a *Agent) leaderOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.cluster.IsLeader() {
			h(w, r)
			return
		}
		if r.Header.Get(headerForwardedBy) != "" {
			// Already carried once; leadership moved meanwhile.
			writeError(w, http.StatusServiceUnavailable, "no leader to carry the write to; try again")
			return
		}
		leader := a.cluster.Leader()
		m, ok := a.cluster.Member(leader)
		if leader == "" || !ok || m.Addresses.API == "" {
			writeError(w, http.StatusServiceUnavailable, "no raft leader known; try again when the cluster has one")
			return
		}
		target := &url.URL{Scheme: a.sec.apiScheme(), Host: m.Addresses.API}
		// The Authorization header goes along: the leader checks the
		// token itself.
		proxy := &httputil.ReverseProxy{
			Transport: a.sec.forward,
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(target)
				pr.Out.Header.Set(headerForwardedBy, a.cfg.Name)
			},
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
				writeError(w, http.StatusBadGateway, fmt.Sprintf("cannot reach the leader %s at %s: %v", leader, m.Addresses.API, errText(err)))
			},
		}
		proxy.ServeHTTP(w, r)
	}
}

// headerForwardedBy marks an API write a follower carried to the leader.
const headerForwardedBy = "X-Loadmesh-Forwarded-By"

func errText(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// actor names who made a change, for the audit log: the name of the
// caller's API token.
func actor(r *http.Request) string {
	if p, ok := principalOf(r); ok {
		return p.Name
	}
	if by := r.Header.Get(headerForwardedBy); by != "" {
		return "api via " + by
	}
	return "api"
}

// errBodyTooLarge is decodeBody's answer to a body over maxAPIBody;
// bodyStatus maps it to 413.
var errBodyTooLarge = fmt.Errorf("request body larger than %d bytes", maxAPIBody)

// bodyStatus is the HTTP status for a decodeBody error.
func bodyStatus(err error) int {
	if errors.Is(err, errBodyTooLarge) {
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusBadRequest
}

func decodeBody(r *http.Request, v any) error {
	if r.Body == nil {
		return nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxAPIBody+1))
	if err != nil {
		return fmt.Errorf("read body: %v", err)
	}
	if len(b) > maxAPIBody {
		return errBodyTooLarge
	}
	if len(b) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("invalid JSON body: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("invalid JSON body: data after the JSON object")
	}
	return nil
}

// validateName rejects node names that cannot be real (path tricks,
// control characters, oversize).
func validateName(name string) error {
	if name == "" || len(name) > 128 {
		return errors.New("node name must be 1..128 bytes")
	}
	for _, c := range name {
		if c < 0x20 || c == 0x7f || c == '/' || c == '\\' {
			return fmt.Errorf("node name %q has a forbidden character", name)
		}
	}
	if name == "." || name == ".." {
		return fmt.Errorf("node name %q is not allowed", name)
	}
	return nil
}

// applySpec takes a plan file (YAML) and makes it the cluster's scaling
// spec, after validating it completely; an invalid file changes nothing.
func (a *Agent) applySpec(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxAPIBody+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("read plan file: %v", err))
		return
	}
	if len(body) > maxAPIBody {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("plan file larger than %d bytes", maxAPIBody))
		return
	}
	spec, err := autoscale.ParseSpec(body)
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, "invalid plan file: "+oneLine(err))
		return
	}
	a.proposeSpec(w, r, spec, r.URL.Query().Get("reason"), "plan apply")
}

func (a *Agent) proposeSpec(w http.ResponseWriter, r *http.Request, spec autoscale.Spec, why, kind string) {
	doc, err := json.Marshal(spec)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encode spec: "+err.Error())
		return
	}
	if why == "" {
		why = kind
	}
	ev, err := a.apply(store.Command{Op: store.OpSpecApply, Doc: doc, Time: a.now().UTC(), Who: actor(r), Why: why})
	if err != nil {
		writeApplyError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ev)
}

// rollbackRequest is the body of POST /v1/plan/rollback.
type rollbackRequest struct {
	// Version is the plan version whose spec to restore; 0 means the
	// spec before the current one.
	Version uint64 `json:"version"`
	Reason  string `json:"reason"`
}

func (a *Agent) rollbackSpec(w http.ResponseWriter, r *http.Request) {
	var req rollbackRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, bodyStatus(err), err.Error())
		return
	}
	var rec store.SpecRecord
	if req.Version == 0 {
		hist := a.fsm.SpecHistory()
		if len(hist) == 0 {
			writeError(w, http.StatusConflict, "no earlier spec to roll back to")
			return
		}
		rec = hist[len(hist)-1]
	} else {
		var ok bool
		if rec, ok = a.fsm.SpecAt(req.Version); !ok {
			writeError(w, http.StatusNotFound, fmt.Sprintf("plan version %d introduced no spec (see loadmesh plan history)", req.Version))
			return
		}
	}
	var spec autoscale.Spec
	if err := json.Unmarshal(rec.Doc, &spec); err != nil {
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("stored spec of version %d is unreadable: %v", rec.PlanVersion, err))
		return
	}
	why := req.Reason
	if why == "" {
		why = fmt.Sprintf("rollback to the spec of plan version %d", rec.PlanVersion)
	}
	a.proposeSpec(w, r, spec, why, "rollback")
}

// oneLine joins a multi-error into one line.
func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}
