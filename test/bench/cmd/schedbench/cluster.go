package main

import (
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

// agentSpec is one loadmesh agent of a test cluster.
type agentSpec struct {
	name     string
	backend  string // backend name ("" for an ingress-only agent)
	policy   string // --policy; "" for the default
	capacity int    // --capacity of a serving agent
}

// backendSpec is one `loadmesh backend` process.
type backendSpec struct {
	name  string
	delay time.Duration
}

// agent is a started agent.
type agent struct {
	spec                          agentSpec
	p                             *benchproc.Proc
	gossip, raft, peer, http, api int
}

func (a *agent) url() string    { return "http://" + benchproc.Addr(a.http) + "/" }
func (a *agent) apiURL() string { return "http://" + benchproc.Addr(a.api) }

// cluster is one set of backends, agents and (optionally) HAProxies,
// started together and stopped together.
type cluster struct {
	ps       *benchproc.Procs
	backends map[string]*benchproc.Proc
	beAddr   map[string]string
	agents   map[string]*agent
	order    []string // agent names in start order
}

func (c *cluster) stop() { c.ps.Stop() }

// makeTLS creates the cluster CA and one certificate per node name.
func (b *bench) makeTLS(ctx context.Context, names []string) error {
	dir := b.tlsDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	cmds := [][]string{{"tls", "ca", "create", "--dir", dir}}
	ca, caKey := filepath.Join(dir, "loadmesh-ca.pem"), filepath.Join(dir, "loadmesh-ca-key.pem")
	for _, n := range names {
		cmds = append(cmds, []string{"tls", "cert", "create", "--node", n, "--ca", ca, "--ca-key", caKey, "--dir", dir})
	}
	for _, c := range cmds {
		if out, err := exec.CommandContext(ctx, b.cfg.bin, c...).CombinedOutput(); err != nil {
			return fmt.Errorf("loadmesh %s: %w: %s", strings.Join(c, " "), err, out)
		}
	}
	return nil
}

func (b *bench) tlsDir() string { return filepath.Join(b.cfg.workDir, "tls") }

// startCluster starts the backends, then the serving agents (the first
// three bootstrap Raft), waits until they are ready, then starts the
// ingress agents; all join the first agent. It returns once every agent is
// ready and every ingress agent has had answers from every backend.
func (b *bench) startCluster(ctx context.Context, label string, backends []backendSpec, agents []agentSpec) (*cluster, error) {
	dir := filepath.Join(b.cfg.workDir, label)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	c := &cluster{
		ps:       &benchproc.Procs{Dir: dir, PIDFile: b.cfg.pidFile},
		backends: map[string]*benchproc.Proc{}, beAddr: map[string]string{}, agents: map[string]*agent{},
	}
	ok := false
	defer func() {
		if !ok {
			c.stop()
		}
	}()
	pp := benchproc.Ports{}
	port := func() int {
		n, err := pp.Next()
		if err != nil {
			panic(err)
		}
		return n
	}
	for _, be := range backends {
		a := benchproc.Addr(port())
		args := []string{"backend", "--listen", a, "--name", be.name}
		if be.delay > 0 {
			args = append(args, "--delay", be.delay.String())
		}
		p, err := c.ps.Start("backend-"+be.name, b.cfg.bin, args...)
		if err != nil {
			return nil, err
		}
		c.backends[be.name], c.beAddr[be.name] = p, a
	}
	serving := 0
	for _, s := range agents {
		if s.backend != "" {
			serving++
		}
	}
	tls := b.tlsDir()
	var seed string
	staged := false
	for _, s := range agents {
		if s.backend == "" && !staged {
			// The serving agents form Raft among themselves first; the
			// ingress agents join the formed cluster.
			staged = true
			if err := c.waitReady(ctx, 90*time.Second); err != nil {
				return nil, err
			}
		}
		a := &agent{spec: s, gossip: port(), raft: port(), peer: port(), http: port(), api: port()}
		args := []string{"agent", "--name", s.name, "--data-dir", filepath.Join(dir, "data-"+s.name),
			"--gossip", benchproc.Addr(a.gossip), "--raft", benchproc.Addr(a.raft), "--peer", benchproc.Addr(a.peer),
			"--http", benchproc.Addr(a.http), "--api", benchproc.Addr(a.api), "--bootstrap-expect", strconv.Itoa(min(serving, 3)),
			"--tls-ca", filepath.Join(tls, "loadmesh-ca.pem"), "--tls-cert", filepath.Join(tls, s.name+".pem"),
			"--tls-key", filepath.Join(tls, s.name+"-key.pem"), "--log-level", "warn"}
		if s.backend != "" {
			args = append(args, "--backend", "http://"+c.beAddr[s.backend], "--capacity", strconv.Itoa(s.capacity))
		}
		if s.policy != "" {
			args = append(args, "--policy", s.policy)
		}
		if seed != "" {
			args = append(args, "--join", seed)
		} else {
			seed = benchproc.Addr(a.gossip)
		}
		p, err := c.ps.Start("agent-"+s.name, b.cfg.bin, args...)
		if err != nil {
			return nil, err
		}
		a.p = p
		c.agents[s.name] = a
		c.order = append(c.order, s.name)
	}
	if err := c.waitReady(ctx, 90*time.Second); err != nil {
		return nil, err
	}
	ok = true
	return c, nil
}

// waitReady waits for /readyz on every agent, then until each ingress-only
// agent has had answers from every backend.
func (c *cluster) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	client := &http.Client{Timeout: 2 * time.Second}
	check := func() error {
		if err := c.ps.Dead(); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster not ready after %s", limit)
		}
		return nil
	}
	for _, n := range c.order {
		a := c.agents[n]
		for {
			resp, err := client.Get(a.apiURL() + "/readyz")
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if err := check(); err != nil {
				return fmt.Errorf("agent %s: %w\n%s", n, err, a.p.Tail(10))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for _, n := range c.order {
		a := c.agents[n]
		if a.spec.backend != "" {
			continue
		}
		seen := map[string]bool{}
		for len(seen) < len(c.backends) {
			resp, err := client.Get(a.url())
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					seen[resp.Header.Get("X-Backend")] = true
					continue
				}
			}
			if err := check(); err != nil {
				return fmt.Errorf("ingress %s reached only %v: %w\n%s", n, seen, err, a.p.Tail(10))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// leader returns the Raft leader as an agent's /v1/status reports it.
func (a *agent) leader() string {
	client := &http.Client{Timeout: time.Second}
	resp, err := client.Get(a.apiURL() + "/v1/status")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var st struct {
		Leader string `json:"leader"`
	}
	if json.NewDecoder(resp.Body).Decode(&st) != nil {
		return ""
	}
	return st.Leader
}

// haproxyConfig is one HAProxy in front of the backends, configured like
// lmbench's (2 threads, keep-alive both sides, connection reuse,
// X-Forwarded-For) with the given balance algorithm.
func haproxyConfig(bind, balance string, servers map[string]string, names []string) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, `global
    maxconn 4000
    nbthread 2
defaults
    mode http
    option http-keep-alive
    option forwardfor
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend fe
    bind %s
    default_backend be
backend be
    balance %s
    http-reuse always
`, bind, balance)
	for _, n := range names {
		fmt.Fprintf(&sb, "    server %s %s\n", n, servers[n])
	}
	return sb.String()
}
