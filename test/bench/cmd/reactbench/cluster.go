package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/loadmesh/loadmesh/test/bench/internal/benchproc"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// nodeNames are the four agents; each fronts its own demo backend. The
// first three bootstrap Raft, the fourth joins the formed cluster.
var nodeNames = []string{"a", "b", "c", "d"}

// agent is one started agent.
type agent struct {
	name                          string
	gossip, raft, peer, http, api int
}

func (a *agent) ingressURL() string { return "http://" + benchproc.Addr(a.http) }
func (a *agent) apiURL() string     { return "http://" + benchproc.Addr(a.api) }

// cluster is one set of four backends and four agents, started together
// and stopped together.
type cluster struct {
	ps     *benchproc.Procs
	agents map[string]*agent
}

func (c *cluster) stop() { c.ps.Stop() }

// apiClient is for the agents' status API.
var apiClient = &http.Client{Timeout: 3 * time.Second}

// makeTLS creates the cluster CA and one certificate per node, once.
func makeTLS(ctx context.Context, bin, dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ca, caKey := filepath.Join(dir, "loadmesh-ca.pem"), filepath.Join(dir, "loadmesh-ca-key.pem")
	cmds := [][]string{{"tls", "ca", "create", "--dir", dir}}
	for _, n := range nodeNames {
		cmds = append(cmds, []string{"tls", "cert", "create", "--node", n, "--ca", ca, "--ca-key", caKey, "--dir", dir})
	}
	for _, c := range cmds {
		if out, err := exec.CommandContext(ctx, bin, c...).CombinedOutput(); err != nil {
			return fmt.Errorf("loadmesh %s: %w: %s", strings.Join(c, " "), err, out)
		}
	}
	return nil
}

// startCluster starts four backends and four agents (--capacity each) in
// dir and waits until every agent is ready and the plan lists all four.
func startCluster(ctx context.Context, cfg config, dir string) (*cluster, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	c := &cluster{ps: &benchproc.Procs{Dir: dir, PIDFile: cfg.pidFile}, agents: map[string]*agent{}}
	ok := false
	defer func() {
		if !ok {
			c.stop()
		}
	}()
	pp := benchproc.Ports{}
	var perr error
	port := func() int {
		n, err := pp.Next()
		if err != nil && perr == nil {
			perr = err
		}
		return n
	}
	tlsDir := filepath.Join(cfg.workDir, "tls")
	seed := ""
	for _, n := range nodeNames {
		be := benchproc.Addr(port())
		if _, err := c.ps.Start("backend-"+n, cfg.bin, "backend", "--listen", be, "--name", n); err != nil {
			return nil, err
		}
		a := &agent{name: n, gossip: port(), raft: port(), peer: port(), http: port(), api: port()}
		if perr != nil {
			return nil, perr
		}
		args := []string{"agent", "--name", n, "--data-dir", filepath.Join(dir, "data-"+n),
			"--gossip", benchproc.Addr(a.gossip), "--raft", benchproc.Addr(a.raft), "--peer", benchproc.Addr(a.peer),
			"--http", benchproc.Addr(a.http), "--api", benchproc.Addr(a.api),
			"--backend", "http://" + be, "--capacity", strconv.Itoa(cfg.capacity),
			"--tls-ca", filepath.Join(tlsDir, "loadmesh-ca.pem"), "--tls-cert", filepath.Join(tlsDir, n+".pem"),
			"--tls-key", filepath.Join(tlsDir, n+"-key.pem"), "--log-level", "info", "--bootstrap-token", benchToken}
		if n != "d" {
			// a, b and c bootstrap Raft; d only joins. Four agents all
			// expecting three can bootstrap two different configurations.
			args = append(args, "--bootstrap-expect", "3")
		}
		if seed != "" {
			args = append(args, "--join", seed)
		} else {
			seed = benchproc.Addr(a.gossip)
		}
		if _, err := c.ps.Start("agent-"+n, cfg.bin, args...); err != nil {
			return nil, err
		}
		c.agents[n] = a
	}
	err := c.waitFor(ctx, 60*time.Second, "every agent ready and all four in the plan as active", func() (bool, error) {
		for _, n := range nodeNames {
			if code, _, err := c.get(n, "/readyz"); err != nil || code != http.StatusOK {
				return false, nil
			}
		}
		p, err := c.plan("a")
		if err != nil {
			return false, nil
		}
		return len(p.active()) == len(nodeNames), nil
	})
	if err != nil {
		return nil, err
	}
	ok = true
	return c, nil
}

// waitFor polls cond every 100ms until it holds, an agent dies, ctx ends
// or limit passes.
func (c *cluster) waitFor(ctx context.Context, limit time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(limit)
	for {
		done, err := cond()
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		if err := c.ps.Dead(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not reached within %s: %s", limit, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// get fetches path from node's API and returns status and body.
func (c *cluster) get(node, path string) (int, []byte, error) {
	resp, err := apiClient.Get(c.agents[node].apiURL() + path)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return resp.StatusCode, b, err
}

// benchToken is the cluster's first operator token (--bootstrap-token):
// plan writes and drains need one.
const benchToken = "lm_be7c000000000000_be7cbe7cbe7cbe7cbe7cbe7cbe7cbe7cbe7cbe7cbe7cbe7cbe7cbe7cbe7cbe7c"

// post sends body to node's API, retrying on 502/503 (leadership moving)
// for up to 10s.
func (c *cluster) post(ctx context.Context, node, path, ctype string, body []byte) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.agents[node].apiURL()+path, bytes.NewReader(body))
		req.Header.Set("Content-Type", ctype)
		req.Header.Set("Authorization", "Bearer "+benchToken)
		resp, err := apiClient.Do(req)
		code, msg := 0, ""
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			code, msg = resp.StatusCode, strings.TrimSpace(string(b))
			if code/100 == 2 {
				return nil
			}
			if code != http.StatusServiceUnavailable && code != http.StatusBadGateway {
				return fmt.Errorf("POST %s: %d %s", path, code, msg)
			}
		} else {
			msg = err.Error()
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("POST %s: %d %s", path, code, msg)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// planView is the part of GET /v1/plan this program reads.
type planView struct {
	Version uint64 `json:"version"`
	Nodes   map[string]struct {
		State string    `json:"state"`
		Since time.Time `json:"since"`
	} `json:"nodes"`
	Leader string `json:"leader"`
}

func (p planView) inState(st string) []string {
	var out []string
	for _, n := range nodeNames {
		if p.Nodes[n].State == st {
			out = append(out, n)
		}
	}
	return out
}

func (p planView) active() []string { return p.inState("active") }

func (c *cluster) plan(node string) (planView, error) {
	var p planView
	code, b, err := c.get(node, "/v1/plan")
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("GET /v1/plan: %d", code)
	}
	if err == nil {
		err = json.Unmarshal(b, &p)
	}
	return p, err
}

// leader returns the Raft leader as the first agent that answers
// /v1/status reports it.
func (c *cluster) leader() string {
	for _, n := range nodeNames {
		code, b, err := c.get(n, "/v1/status")
		if err != nil || code != http.StatusOK {
			continue
		}
		var st struct {
			Leader string `json:"leader"`
		}
		if json.Unmarshal(b, &st) == nil && c.agents[st.Leader] != nil {
			return st.Leader
		}
	}
	return ""
}

// decision is the part of GET /v1/autoscaler this program reads.
type decision struct {
	Time        time.Time `json:"time"`
	Active      int       `json:"active"`
	Recommended int       `json:"recommended"`
	Desired     int       `json:"desired"`
	Reason      string    `json:"reason"`
	Metrics     []struct {
		Name    string  `json:"name"`
		Value   float64 `json:"value"`
		Target  float64 `json:"target"`
		Ratio   float64 `json:"ratio"`
		Desired int     `json:"desired"`
	} `json:"metrics"`
	Activate []struct {
		Node string `json:"node"`
	} `json:"activate"`
	Drain []struct {
		Node string `json:"node"`
	} `json:"drain"`
}

// ratio is the inflight_utilisation reading's ratio (value ÷ target over
// the active nodes), or -1.
func (d decision) ratio() float64 {
	for _, m := range d.Metrics {
		if m.Name == "inflight_utilisation" {
			return m.Ratio
		}
	}
	return -1
}

func (c *cluster) decision(node string) (decision, bool) {
	var d decision
	code, b, err := c.get(node, "/v1/autoscaler")
	if err != nil || code != http.StatusOK || json.Unmarshal(b, &d) != nil {
		return d, false
	}
	return d, true
}

// memberLoad is one member of GET /v1/members with its gossiped load.
type memberLoad struct {
	Name string `json:"name"`
	Load *struct {
		Inflight int     `json:"inflight"`
		Capacity int     `json:"capacity"`
		Age      float64 `json:"age_seconds"`
	} `json:"load"`
}

func (c *cluster) members(node string) ([]memberLoad, bool) {
	var ms []memberLoad
	code, b, err := c.get(node, "/v1/members")
	if err != nil || code != http.StatusOK || json.Unmarshal(b, &ms) != nil {
		return nil, false
	}
	return ms, true
}
