package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/test/harness"
	"github.com/loadmesh/loadmesh/test/retry"
)

// TestDashboardInBrowser opens the dashboard of a 3-node cluster in headless
// Chromium and checks that it shows the three members, the leader and a
// chart with data, then takes a screenshot.
//
// The browser reads from a loopback address without a token, as a local
// read-only viewer would (StrictAuth: the API treats it as anonymous).
//
// LOADMESH_SCREENSHOT=docs/dashboard.png (relative to the repository root,
// or absolute) makes it the README's screenshot instead: two minutes of
// varying load, a scaling policy with a schedule, and a drain and
// activation with reasons, so every panel has something to show.
func TestDashboardInBrowser(t *testing.T) {
	skipShort(t)
	browser := findBrowser()
	if browser == "" {
		t.Skip("dashboard browser test skipped: no chromium, chromium-browser or google-chrome in PATH " +
			"(Debian: apt-get install chromium; .ci/run installs it)")
	}
	screenshot := os.Getenv("LOADMESH_SCREENSHOT")
	if screenshot != "" && !filepath.IsAbs(screenshot) {
		screenshot = filepath.Join("..", screenshot)
	}
	interval := 250 * time.Millisecond
	if screenshot != "" {
		interval = time.Second
	}
	zones := []string{"north", "south", "west"}
	c := harness.Start(t, 3, harness.Options{
		Backends: true, BackendDelay: 3 * time.Millisecond, StrictAuth: true,
		Tune: func(i int, cfg *agent.Config) {
			cfg.Zone = zones[i%len(zones)]
			cfg.SeriesInterval = interval
		},
	})
	leader := c.WaitForLeader(t)
	c.WaitForMembers(t)
	// A follower serves the page: its reads are its own replica's, its
	// autoscaler panel is carried to the leader.
	var page *harness.Node
	for _, n := range c.Live() {
		if n != leader {
			page = n
			break
		}
	}

	rate := func(time.Duration) float64 { return 30 }
	if screenshot != "" {
		rate = func(d time.Duration) float64 {
			return 25 + 10*math.Sin(d.Seconds()/15) + 5*math.Sin(d.Seconds()/4.3) + min(d.Seconds()/8, 15)
		}
	}
	startTraffic(t, c, rate)
	if screenshot != "" {
		stageScreenshot(t, c, leader)
	}
	retry.Run(t, func(r *retry.R) {
		s := getSeries(r, page)
		busy := 0
		for _, p := range s.Points {
			if p.RPS > 0 {
				busy++
			}
		}
		if busy < 3 {
			r.Fatalf("%d of %d samples show traffic, want 3", busy, len(s.Points))
		}
	})

	url := "http://" + page.APIAddr() + "/ui/"
	retry.RunFor(t, 3*time.Minute, func(r *retry.R) {
		dom, err := runBrowser(t, browser, "--dump-dom", url, "1400,1000")
		if err == nil {
			err = checkDashboardDOM(dom, c)
		}
		if err != nil {
			t.Logf("attempt failed: %v", err) // retry reports only the last
		}
		r.Check(err)
	})

	path, size := filepath.Join(t.TempDir(), "dashboard.png"), "1400,1000"
	if screenshot != "" {
		// Tall enough for the policy and a few events.
		path, size = screenshot, "1400,1240"
	}
	retry.RunFor(t, 2*time.Minute, func(r *retry.R) {
		_, err := runBrowser(t, browser, "--screenshot="+path, url, size)
		r.Check(err)
		b, err := os.ReadFile(path)
		r.Check(err)
		if !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) || len(b) < 10_000 {
			r.Fatalf("%s is not a plausible screenshot (%d bytes)", path, len(b))
		}
	})
	t.Logf("dashboard screenshot: %s", path)
}

// checkDashboardDOM checks the page as the browser rendered it: loaded,
// every member listed, exactly one of them marked leader (the one the
// header names), a requests/s chart with data, and the members' joins in
// the event timeline.
func checkDashboardDOM(dom string, c *harness.Cluster) error {
	if !strings.Contains(dom, `data-ready="true"`) {
		return fmt.Errorf("the page never loaded its data; banner: %q", bannerText(dom))
	}
	// The leader as the page saw it: under load an election may move it
	// between the test's look and the page's.
	lm := regexp.MustCompile(`id="leader-name"[^>]*>([^<]*)<`).FindStringSubmatch(dom)
	if lm == nil || c.Node(lm[1]) == nil {
		return fmt.Errorf("the header names no member as leader: %q", lm)
	}
	leader := lm[1]
	for _, n := range c.Live() {
		row := regexp.MustCompile(`<tr[^>]*data-member="` + regexp.QuoteMeta(n.Name()) + `"[^>]*>`).FindString(dom)
		if row == "" {
			return fmt.Errorf("member %s is not on the page", n.Name())
		}
		if want := strconv.Quote(strconv.FormatBool(n.Name() == leader)); !strings.Contains(row, "data-leader="+want) {
			return fmt.Errorf("member %s: row %s, want data-leader=%s (leader %s)", n.Name(), row, want, leader)
		}
	}
	if n := strings.Count(dom, `data-leader="true"`); n != 1 {
		return fmt.Errorf("%d members marked leader, want 1", n)
	}
	if n := strings.Count(dom, "data-leader-mark"); n != 1 {
		return fmt.Errorf("%d leader badges, want 1", n)
	}
	m := regexp.MustCompile(`data-chart="rps"[^>]*data-points="(\d+)"`).FindStringSubmatch(dom)
	if m == nil {
		return fmt.Errorf("no requests/s chart")
	}
	if n, _ := strconv.Atoi(m[1]); n < 2 {
		return fmt.Errorf("the requests/s chart has %d points", n)
	}
	if !strings.Contains(dom, `data-kind="node.upsert"`) {
		return fmt.Errorf("the event timeline does not show the members joining")
	}
	return nil
}

// findBrowser returns the first Chromium-like browser in PATH, or "".
func findBrowser() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// runBrowser runs one headless browser with the given action (--dump-dom
// or --screenshot=PATH) on url and returns its standard output. The page
// gets 8 s of virtual time (network waits do not count), enough for a few
// refreshes. size is the window's "width,height". The browser's whole
// process group is killed when it ends or after a minute (scaled).
func runBrowser(t *testing.T, bin, action, url, size string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), retry.Scale(time.Minute))
	defer cancel()
	cmd := exec.CommandContext(ctx, bin,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-sync",
		"--hide-scrollbars", "--mute-audio", "--user-data-dir="+t.TempDir(),
		"--window-size="+size, "--virtual-time-budget=8000", action, url)
	cmd.SysProcAttr = browserProcAttr()
	cmd.Cancel = func() error { return killBrowser(cmd) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	began := time.Now()
	err := cmd.Run()
	killBrowser(cmd) // helpers that outlive the browser
	t.Logf("%s %s: %v after %s", filepath.Base(bin), strings.SplitN(action, "=", 2)[0], err, time.Since(began).Round(time.Millisecond))
	if err != nil {
		return "", fmt.Errorf("%s %s: %v; stderr: %s", filepath.Base(bin), action, err, lastLines(stderr.String(), 5))
	}
	return stdout.String(), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func bannerText(dom string) string {
	m := regexp.MustCompile(`id="banner"[^>]*>([^<]*)<`).FindStringSubmatch(dom)
	if m == nil {
		return ""
	}
	return m[1]
}

func getSeries(r *retry.R, n *harness.Node) agent.Series {
	resp, err := http.Get("http://" + n.APIAddr() + "/v1/timeseries")
	r.Check(err)
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		r.Fatalf("GET /v1/timeseries: %s", resp.Status)
	}
	var s agent.Series
	r.Check(json.NewDecoder(resp.Body).Decode(&s))
	return s
}

// startTraffic sends GET requests to the nodes' ingresses in turn at
// rate(time since start) requests/s until the test ends. Requests the
// workers cannot take at once are dropped rather than queued.
func startTraffic(t *testing.T, c *harness.Cluster, rate func(time.Duration) float64) {
	ctx, cancel := context.WithCancel(context.Background())
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	jobs := make(chan string)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := range jobs {
				req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
				if resp, err := client.Do(req); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(jobs)
		start := time.Now()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		owed, i := 0.0, 0
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			owed += rate(time.Since(start)) / 100
			for ; owed >= 1; owed-- {
				nodes := c.Live()
				u := "http://" + nodes[i%len(nodes)].HTTPAddr() + "/"
				i++
				select {
				case jobs <- u:
				default:
				}
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		client.CloseIdleConnections()
	})
}

// screenshotSpec is the scaling policy shown in the README's screenshot.
const screenshotSpec = `mode: auto
interval: 5s
limits:
  min_active: 2
  max_active: 3
targets:
  inflight_utilisation: 0.7
  p95_latency: 250ms
scale_in:
  stabilisation: 10m
schedules:
  - name: friday-evening-peak
    start: "0 18 * * 5"
    duration: 6h
    min_active: 3
  - name: month-end-batch
    start: "0 0 1 * *"
    duration: 4h
    max_active: 3
`

// stageScreenshot gives the screenshot something to show: a scaling
// policy, then a drain and an activation with reasons as the chart fills
// up with two minutes of load (the waits are for samples, not for time).
func stageScreenshot(t *testing.T, c *harness.Cluster, leader *harness.Node) {
	t.Helper()
	operatorPost(t, leader, "/v1/plan", "application/yaml", screenshotSpec)
	target := c.Nodes[2].Name()
	waitForSamples(t, leader, 40)
	operatorPost(t, leader, "/v1/nodes/"+target+"/drain", "application/json", `{"reason":"kernel update (CHG-1042)"}`)
	waitForSamples(t, leader, 85)
	operatorPost(t, leader, "/v1/nodes/"+target+"/activate", "application/json", `{"reason":"kernel update done"}`)
	waitForSamples(t, leader, 120)
}

// waitForSamples waits until n's time series holds at least want samples.
func waitForSamples(t *testing.T, n *harness.Node, want int) {
	t.Helper()
	retry.RunFor(t, 3*time.Minute, func(r *retry.R) {
		if got := len(getSeries(r, n).Points); got < want {
			r.Fatalf("%s has %d samples, want %d", n.Name(), got, want)
		}
	})
}

// operatorPost sends body to the leader's API with the harness's
// operator token, retrying while the cluster has no leader (503).
func operatorPost(t *testing.T, n *harness.Node, path, contentType, body string) {
	t.Helper()
	client := &http.Client{Transport: harness.AuthTransport(nil, harness.Token)}
	retry.Run(t, func(r *retry.R) {
		resp, err := client.Post("http://"+n.APIAddr()+path, contentType, strings.NewReader(body))
		r.Check(err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			r.Fatalf("POST %s: %s: %s", path, resp.Status, b)
		}
	})
}
