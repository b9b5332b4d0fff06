//go:build unix

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/test/retry"
)

// provisionResult is the documented JSON line of `loadmesh provision local`.
type provisionResult struct {
	Started []struct {
		Name    string `json:"name"`
		Zone    string `json:"zone"`
		PID     int    `json:"pid"`
		API     string `json:"api"`
		Ingress string `json:"ingress"`
	} `json:"started"`
	Stopped []struct {
		Name       string `json:"name"`
		PID        int    `json:"pid"`
		WasRunning bool   `json:"was_running"`
	} `json:"stopped"`
}

// runProvision runs `loadmesh args...` with stdin, as the leader runs a
// hook command. Unlike run it does not use t.Context(), so that it also
// works in a cleanup.
func runProvision(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	timeout := retry.Scale(90 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, loadmeshBin(t), args...)
	cmd.Env = childEnv()
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = sysProcAttr()
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("loadmesh %s: still running after %s; killed it. stderr:\n%s", strings.Join(args, " "), timeout, stderr.String())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("loadmesh %s: %v", strings.Join(args, " "), err)
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}

// processGone reports whether pid has exited. The agents the provisioner
// starts are not children of the test, so an exited one may linger as a
// zombie until init reaps it; that counts as gone.
func processGone(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return true
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] == 'Z'
}

func TestProvisionLocal(t *testing.T) {
	skipShort(t)
	t.Parallel()
	c := startCluster(t, 1, false)
	seed := c.agents[0]
	retry.Run(t, func(r *retry.R) {
		_, _, err := agreedLeader(apis(c.agents))
		r.Check(err)
	})

	caKey := filepath.Join(filepath.Dir(seed.tls.ca), "loadmesh-ca-key.pem")
	state := filepath.Join(t.TempDir(), "state")
	prov := []string{"provision", "local", "--dir", state, "--tls-ca", seed.tls.ca, "--tls-ca-key", caKey,
		"--name-prefix", "e2e", "--demo-backend", "--stop-timeout", "10s"}
	// Registered after the cluster's and the temp dir's cleanups, so it
	// runs before them: every agent the provisioner started is stopped
	// while its logs still exist.
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := filepath.Glob(filepath.Join(state, "*", "agent.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				t.Logf("==== %s ====\n%s", l, b)
			}
		}
		res := runProvision(t, "", "provision", "local", "--dir", state, "--stop-all", "--stop-timeout", "10s")
		if res.code != 0 {
			t.Errorf("provision local --stop-all: exit %d: %s", res.code, res.stderr)
		}
	})

	request := func(id, kind, extra string) string {
		return fmt.Sprintf(`{"version":1,"id":%q,"kind":%q,"time":"2025-01-01T00:00:00Z","why":"e2e",`+
			`"cluster":{"leader":%q,"seeds":[%q]}%s}`, id, kind, seed.name, seed.gossip, extra)
	}
	provision := func(stdin string) provisionResult {
		t.Helper()
		start := time.Now()
		res := runProvision(t, stdin, prov...)
		t.Logf("loadmesh provision local <<< %s\nexit %d after %s\nstdout: %sstderr: %s",
			stdin, res.code, time.Since(start).Round(time.Millisecond), res.stdout, res.stderr)
		if res.code != 0 {
			t.Fatalf("provision local: exit %d: %s", res.code, res.stderr)
		}
		var pr provisionResult
		if err := json.Unmarshal([]byte(res.stdout), &pr); err != nil || strings.Count(res.stdout, "\n") != 1 {
			t.Fatalf("provision local stdout is not one JSON line (%v): %q", err, res.stdout)
		}
		return pr
	}

	// scale_out: one new agent joins.
	outReq := request("e2e-out-1", "scale_out", `,"zone":"z1","count":1`)
	pr := provision(outReq)
	if len(pr.Started) != 1 || pr.Started[0].Name != "e2e-z1-1" || pr.Started[0].Zone != "z1" || pr.Started[0].PID <= 0 {
		t.Fatalf("started %+v, want one node e2e-z1-1 in zone z1", pr.Started)
	}
	node := pr.Started[0]
	if err := httpOK(node.API + "/readyz"); err != nil {
		t.Errorf("new node's API: %v", err)
	}
	retry.Run(t, func(r *retry.R) {
		st, err := getStatus(seed.api)
		r.Check(err)
		m, ok := st.member(node.Name)
		if !ok || m.Status != "alive" || m.Zone != "z1" {
			r.Fatalf("%s lists %s as %+v, want alive in zone z1", seed.name, node.Name, m)
		}
		var plan struct {
			Nodes map[string]struct {
				State string `json:"state"`
				Zone  string `json:"zone"`
			} `json:"nodes"`
		}
		resp, body, err := get("http://" + seed.api + "/v1/plan")
		r.Check(err)
		if resp.StatusCode != 200 {
			r.Fatalf("GET /v1/plan: %s", resp.Status)
		}
		r.Check(json.Unmarshal(body, &plan))
		if e, ok := plan.Nodes[node.Name]; !ok || e.Zone != "z1" {
			r.Fatalf("plan has no entry for %s in zone z1: %s", node.Name, body)
		}
	})
	// Through the new node's ingress to its demo backend.
	resp, body, err := get(node.Ingress + "/e2e")
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("GET %s/e2e: %v %v: %s", node.Ingress, err, resp, body)
	}

	// The leader retrying the same request starts nothing more.
	again := provision(outReq)
	if len(again.Started) != 1 || again.Started[0].Name != node.Name || again.Started[0].PID != node.PID {
		t.Errorf("retried scale_out: started %+v, want the same %s (pid %d)", again.Started, node.Name, node.PID)
	}
	list := runProvision(t, "", "provision", "local", "--dir", state, "--list", "--json")
	var listed []struct {
		Name  string `json:"name"`
		PID   int    `json:"pid"`
		Alive bool   `json:"alive"`
	}
	if err := json.Unmarshal([]byte(list.stdout), &listed); err != nil || len(listed) != 1 ||
		listed[0].Name != node.Name || listed[0].PID != node.PID || !listed[0].Alive {
		t.Errorf("--list --json: %q (%v), want %s alive", list.stdout, err, node.Name)
	}

	// scale_in: it stops and leaves.
	pr = provision(request("e2e-in-1", "scale_in", fmt.Sprintf(`,"nodes":[%q]`, node.Name)))
	if len(pr.Stopped) != 1 || pr.Stopped[0].Name != node.Name || pr.Stopped[0].PID != node.PID || !pr.Stopped[0].WasRunning {
		t.Fatalf("stopped %+v, want %s (pid %d), running until now", pr.Stopped, node.Name, node.PID)
	}
	if !processGone(node.PID) {
		t.Errorf("%s (pid %d) still running after scale_in", node.Name, node.PID)
	}
	retry.Run(t, func(r *retry.R) {
		st, err := getStatus(seed.api)
		r.Check(err)
		if m, ok := st.member(node.Name); ok && m.Status != "left" {
			r.Fatalf("%s lists %s as %q, want left (or gone)", seed.name, node.Name, m.Status)
		}
	})
	if _, err := os.Stat(filepath.Join(state, node.Name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s's directory is still there after scale_in: %v", node.Name, err)
	}

	// A node the provisioner did not start is refused, in one line.
	res := runProvision(t, request("e2e-in-2", "scale_in", fmt.Sprintf(`,"nodes":[%q]`, seed.name)), prov...)
	if msg := strings.TrimSpace(res.stderr); res.code == 0 || strings.Contains(msg, "\n") ||
		!strings.Contains(msg, fmt.Sprintf("%q was not started by this provisioner", seed.name)) {
		t.Errorf("scale_in of %s: exit %d, stderr %q; want one line naming it", seed.name, res.code, res.stderr)
	}
	if seed.proc.exited() {
		t.Errorf("scale_in of a node it did not start stopped %s", seed.name)
	}
}
