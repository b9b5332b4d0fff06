package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/test/harness"
	"github.com/loadmesh/loadmesh/test/retry"
)

const (
	dashboardFile = "../deploy/grafana/loadmesh.json"
	alertsFile    = "../deploy/prometheus/alerts.yml"
)

var metricName = regexp.MustCompile(`\bloadmesh_[a-z0-9_]+`)

// alertRules is the part of a Prometheus rules file the tests read.
type alertRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readAlerts(t *testing.T) alertRules {
	t.Helper()
	b, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var r alertRules
	if err := yaml.Unmarshal(b, &r); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	return r
}

// dashboardExprs returns every PromQL expression in the dashboard: panel
// targets (rows included) and query variables.
func dashboardExprs(t *testing.T) (exprs []string, dash map[string]any) {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "expr" || k == "definition") {
					exprs = append(exprs, s)
				}
				if q, ok := x.(map[string]any); ok && k == "query" {
					if s, ok := q["query"].(string); ok {
						exprs = append(exprs, s)
					}
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(dash)
	return exprs, dash
}

// referencedMetrics is every loadmesh_* name in the dashboard and the
// alert rules, with where it was found.
func referencedMetrics(t *testing.T) map[string]string {
	t.Helper()
	names := map[string]string{}
	exprs, _ := dashboardExprs(t)
	for _, e := range exprs {
		for _, n := range metricName.FindAllString(e, -1) {
			names[n] = dashboardFile
		}
	}
	for _, g := range readAlerts(t).Groups {
		for _, r := range g.Rules {
			for _, n := range metricName.FindAllString(r.Expr, -1) {
				names[n] = alertsFile
			}
		}
	}
	return names
}

// TestAlertRules checks the rules file's shape: the required alerts exist,
// every alert waits (for:), has a severity and says what and why.
func TestAlertRules(t *testing.T) {
	var alerts []string
	for _, g := range readAlerts(t).Groups {
		for _, r := range g.Rules {
			if r.Expr == "" {
				t.Errorf("rule %s%s has no expr", r.Alert, r.Record)
			}
			if r.Alert == "" {
				continue
			}
			alerts = append(alerts, r.Alert)
			if r.For == "" {
				t.Errorf("%s has no for:", r.Alert)
			}
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("%s: severity %q", r.Alert, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s lacks a summary or description", r.Alert)
			}
		}
	}
	for _, want := range []string{"LoadmeshNoLeader", "LoadmeshSLOBurnRate", "LoadmeshNodeFlapping",
		"LoadmeshHookFailures", "LoadmeshCertificateExpiringSoon",
		"LoadmeshMonthlyBudgetProjectedExceeded"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("no alert %s (have %v)", want, alerts)
		}
	}
}

// TestAlertRulesPromtool has Prometheus's own tool check the rules.
func TestAlertRulesPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (Debian package prometheus); .ci/run installs it")
	}
	out, err := exec.Command(promtool, "check", "rules", alertsFile).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}

// TestGrafanaDashboard checks the dashboard's shape: a recent schema, a
// Prometheus data source variable that every panel uses, and the panels
// an operator looks for.
func TestGrafanaDashboard(t *testing.T) {
	_, dash := dashboardExprs(t)
	if v, _ := dash["schemaVersion"].(float64); v < 36 {
		t.Errorf("schemaVersion %v, want 36 or later", dash["schemaVersion"])
	}
	var dsVar bool
	for _, v := range dash["templating"].(map[string]any)["list"].([]any) {
		m := v.(map[string]any)
		if m["type"] == "datasource" && m["query"] == "prometheus" && m["name"] == "datasource" {
			dsVar = true
		}
	}
	if !dsVar {
		t.Error("no Prometheus data source variable")
	}
	var titles []string
	for _, p := range dash["panels"].([]any) {
		m := p.(map[string]any)
		titles = append(titles, m["title"].(string))
		if m["type"] == "row" {
			continue
		}
		if ds, _ := m["datasource"].(map[string]any); ds["uid"] != "${datasource}" {
			t.Errorf("panel %q does not use the data source variable: %v", m["title"], m["datasource"])
		}
		if targets, _ := m["targets"].([]any); len(targets) == 0 {
			t.Errorf("panel %q has no query", m["title"])
		}
	}
	for _, want := range []string{"Requests/s by outcome", "Requests/s by route", "Latency p50 / p95 / p99", "In flight",
		"Forwarded bytes/s", "Members by status", "Leader", "Raft term", "Plan version", "Active nodes", "Standby nodes",
		"Scaling events", "Hook outcomes", "Rate-limit rejections/s", "Shed requests/s", "Certificate expiry"} {
		if !slices.Contains(titles, want) {
			t.Errorf("no panel %q", want)
		}
	}
}

// scaleInSpec drains an idle cluster to two active nodes and has
// a scale_in hook that always fails, so that scaling events and hook
// outcomes are exported. The rps target is out of reach: the test's own
// traffic (over 100 requests/s on a fast machine) must not scale the
// cluster out again before the standby node is released.
const scaleInSpec = `mode: auto
interval: 1s
limits: {min_active: 2, max_active: 3}
targets: {inflight_utilisation: 0.7, rps_per_node: 1000000}
scale_in: {stabilisation: 0s, max_step_nodes: 3, max_step_percent: 100}
standby: {keep: 0, release_after: 1s}
hooks:
  scale_in: {command: ["/bin/sh", "-c", "echo no cloud here >&2; exit 3"], timeout: 5s, retries: 0}
predictive: {enabled: false}
`

// TestObservabilityMetricsExported checks that every metric the Grafana
// dashboard and the alert rules name is exported by a running cluster's
// /metrics. Some series exist only after an event, so the test makes
// those events happen: traffic into every ingress (local and forwarded
// over QUIC, with bodies), the autoscaler draining idle nodes (scaling
// events) and its scale_in hook failing (hook outcomes); the rate limiter
// is on (its counters exist from the start).
func TestObservabilityMetricsExported(t *testing.T) {
	skipShort(t)
	want := referencedMetrics(t)
	if len(want) < 20 {
		t.Fatalf("only %d metric names found in the dashboard and alerts: %v", len(want), want)
	}
	// A TCP service: node-0 accepts, node-1 and node-2 offer it.
	svcBackend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var svcWG sync.WaitGroup
	svcWG.Go(func() {
		for {
			conn, err := svcBackend.Accept()
			if err != nil {
				return
			}
			svcWG.Go(func() { io.Copy(conn, conn); conn.Close() })
		}
	})
	t.Cleanup(func() { svcBackend.Close(); svcWG.Wait() })
	c := harness.Start(t, 3, harness.Options{Backends: true, Tune: func(i int, cfg *agent.Config) {
		cfg.RateLimit = 100_000
		if i == 0 {
			cfg.Services = []string{"name=echo,mode=tcp,listen=127.0.0.1:0"}
		} else {
			cfg.Services = []string{"name=echo,mode=tcp,backend=" + svcBackend.Addr().String()}
		}
	}})
	leader := c.WaitForLeader(t)
	waitAllActive(t, c, leader)
	retry.Run(t, func(r *retry.R) {
		resp, err := http.Post("http://"+leader.APIAddr()+"/v1/plan", "application/yaml", strings.NewReader(scaleInSpec))
		r.Check(err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			r.Fatalf("apply spec: %s %s", resp.Status, b)
		}
	})
	// Wait for the drain: the drained node's ingress then forwards.
	retry.RunFor(t, 60*time.Second, func(r *retry.R) {
		if active, others := activeNodes(leader); active != 2 {
			r.Fatalf("%d active nodes, want 2; others %v", active, others)
		}
	})

	client := &http.Client{Timeout: retry.Scale(10 * time.Second)}
	svcAddr := c.Nodes[0].Status().Services[0].Listen
	traffic := func() {
		if conn, err := net.DialTimeout("tcp", svcAddr, time.Second); err == nil {
			conn.SetDeadline(time.Now().Add(time.Second))
			conn.Write([]byte("x"))
			conn.Read(make([]byte, 1))
			conn.Close()
		}
		for i := range 40 {
			n := c.Nodes[i%len(c.Nodes)]
			resp, err := client.Post("http://"+n.HTTPAddr()+"/echo?echo=1", "text/plain", bytes.NewReader(make([]byte, 1000)))
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}
	scrape := func() (map[string]string, error) {
		types := map[string]string{}
		for _, n := range c.Nodes {
			resp, err := client.Get("http://" + n.APIAddr() + "/metrics")
			if err != nil {
				return nil, err
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return nil, err
			}
			for _, l := range strings.Split(string(b), "\n") {
				if f := strings.Fields(l); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
					types[f[2]] = f[3]
				}
			}
		}
		return types, nil
	}
	var missing []string
	retry.RunFor(t, 60*time.Second, func(r *retry.R) {
		traffic()
		types, err := scrape()
		r.Check(err)
		missing = missing[:0]
		for name, where := range want {
			if _, ok := types[name]; ok {
				continue
			}
			base := name
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				base = strings.TrimSuffix(base, s)
			}
			if types[base] == "histogram" || types[base] == "summary" {
				continue
			}
			missing = append(missing, fmt.Sprintf("%s (%s)", name, where))
		}
		if len(missing) > 0 {
			slices.Sort(missing)
			r.Fatalf("%d metrics named in the dashboard or alerts are not exported:\n  %s", len(missing), strings.Join(missing, "\n  "))
		}
	})
}
