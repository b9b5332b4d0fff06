package main

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/loadmesh/loadmesh/test/bench/internal/benchproc"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// skewRow is one way of spreading load over the three backends.
type skewRow struct {
	key  string
	name string
	url  string
	api  string // the ingress agent's API, for loadmesh rows
}

type skewKey struct {
	key   string
	conns int
}

// policyKeys are short row keys for loadmesh policies.
var policyKeys = map[string]string{
	"p2c-ewma":             "p2c",
	"weighted-round-robin": "wrr",
	"least-inflight":       "lif",
	"random":               "rnd",
	"consistent-hash":      "chash",
}

// runSkew starts the skewed cluster: backends a, b and c (c adds
// cfg.delay to every answer), serving agents a, b and c with
// --capacity cfg.capacity, one ingress-only agent per policy, and two
// HAProxies (roundrobin, leastconn) directly in front of the same three
// backends; then measures every row at every connection count in
// interleaved rounds.
func (b *bench) runSkew(ctx context.Context) error {
	backends := []backendSpec{{name: "a"}, {name: "b"}, {name: "c", delay: b.cfg.delay}}
	var agents []agentSpec
	for _, n := range []string{"a", "b", "c"} {
		agents = append(agents, agentSpec{name: n, backend: n, capacity: b.cfg.capacity})
	}
	for _, pol := range b.cfg.policies {
		agents = append(agents, agentSpec{name: "in-" + policyKeys[pol], policy: pol})
	}
	fmt.Println("starting the skewed cluster")
	t := time.Now()
	c, err := b.startCluster(ctx, "skew", backends, agents)
	if err != nil {
		return err
	}
	defer c.stop()
	var rows []skewRow
	for _, pol := range b.cfg.policies {
		a := c.agents["in-"+policyKeys[pol]]
		rows = append(rows, skewRow{key: policyKeys[pol], name: "loadmesh " + pol, url: a.url(), api: a.apiURL()})
	}
	if b.haproxy != "" {
		for _, bal := range []string{"roundrobin", "leastconn"} {
			p, err := benchproc.FreePort()
			if err != nil {
				return err
			}
			path := filepath.Join(b.cfg.workDir, "skew", "haproxy-"+bal+".cfg")
			if err := os.WriteFile(path, []byte(haproxyConfig(benchproc.Addr(p), bal, c.beAddr, []string{"a", "b", "c"})), 0o644); err != nil {
				return err
			}
			if _, err := c.ps.Start("haproxy-"+bal, b.haproxy, "-db", "-f", path); err != nil {
				return err
			}
			rows = append(rows, skewRow{key: "hap-" + bal, name: "HAProxy balance " + bal, url: "http://" + benchproc.Addr(p) + "/"})
		}
		if err := waitAnswering(ctx, rows[len(rows)-2:], 20*time.Second); err != nil {
			return err
		}
	}
	b.skewRows = rows
	fmt.Printf("skewed cluster ready in %s\n", time.Since(t).Round(time.Millisecond))

	fmt.Println("warming up")
	for _, r := range rows {
		runLoad(ctx, loadConfig{url: r.url, conns: slices.Max(b.cfg.conns), duration: b.cfg.warmup, timeout: 5 * time.Second})
	}
	type job struct {
		r     skewRow
		conns int
	}
	var jobs []job
	for _, n := range b.cfg.conns {
		for _, r := range rows {
			jobs = append(jobs, job{r, n})
		}
	}
	for round := range b.cfg.rounds {
		fmt.Printf("skew round %d/%d\n", round+1, b.cfg.rounds)
		for i := range jobs {
			j := jobs[(i+round*(len(rows)+1))%len(jobs)]
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var est, gossip map[string]time.Duration
			var wg sync.WaitGroup
			pctx, stopPoll := context.WithCancel(ctx)
			if j.r.api != "" {
				wg.Go(func() { est, gossip = pollEstimates(pctx, j.r.api) })
			}
			run := runLoad(ctx, loadConfig{url: j.r.url, conns: j.conns, duration: b.cfg.duration, timeout: 5 * time.Second})
			stopPoll()
			wg.Wait()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			s := summarize(run)
			s.estimates, s.gossiped = est, gossip
			if run.capped {
				b.note(fmt.Sprintf("%s c=%d round %d hit the request cap", j.r.key, j.conns, round+1))
			}
			k := skewKey{j.r.key, j.conns}
			b.skew[k] = append(b.skew[k], s)
			fmt.Printf("  %-15s c=%-3d %8.0f req/s  p50 %7.3f ms  p99 %7.3f ms (a+b only %7.3f)  slow share %6.2f%%  failed %d%s\n",
				j.r.key, j.conns, s.rps, ms(s.p50), ms(s.p99), ms(s.p99Fast), 100*slowShare(s), s.failed, fmtEstimates("est.", est)+fmtEstimates("gossiped", gossip))
			if err := c.ps.Dead(); err != nil {
				return fmt.Errorf("during the skew rounds: %w", err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

// slowShare is the share of answered requests served by backend c.
func slowShare(s stats) float64 {
	if s.requests == 0 {
		return 0
	}
	return float64(s.byNode["c"]) / float64(s.requests)
}

func waitAnswering(ctx context.Context, rows []skewRow, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for _, r := range rows {
		for {
			run := runLoad(ctx, loadConfig{url: r.url, conns: 1, duration: time.Millisecond, timeout: time.Second, maxRequests: 1})
			if len(run.recs) == 1 && run.recs[0].ok() {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("%s (%s) not answering", r.name, r.url)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// pollEstimates samples, every 250ms until ctx ends, the ingress's
// latency estimate of each serving agent (loadmesh_scheduler_peer_latency_seconds,
// the peak-EWMA its policy uses) and the latency each agent gossips about
// its own backend (latency_ewma_seconds in /v1/members), and returns the
// median of each per peer.
func pollEstimates(ctx context.Context, api string) (est, gossip map[string]time.Duration) {
	client := &http.Client{Timeout: time.Second}
	es, gs := map[string][]float64{}, map[string][]float64{}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	medians := func(m map[string][]float64) map[string]time.Duration {
		out := map[string]time.Duration{}
		for p, xs := range m {
			out[p] = time.Duration(median(xs) * float64(time.Second))
		}
		return out
	}
	for {
		select {
		case <-ctx.Done():
			return medians(es), medians(gs)
		case <-tick.C:
		}
		if m, ok := scrape(ctx, client, api+"/metrics", "loadmesh_scheduler_peer_latency_seconds"); ok {
			for _, p := range []string{"a", "b", "c"} {
				if v, found := m[`loadmesh_scheduler_peer_latency_seconds{peer="`+p+`"}`]; found {
					es[p] = append(es[p], v)
				}
			}
		}
		for p, v := range gossipedLatency(ctx, client, api) {
			gs[p] = append(gs[p], v)
		}
	}
}

// gossipedLatency returns each member's gossiped backend latency
// (seconds) as the agent behind api has received it.
func gossipedLatency(ctx context.Context, client *http.Client, api string) map[string]float64 {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, api+"/v1/members", nil)
	resp, err := client.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var ms []struct {
		Name string `json:"name"`
		Load *struct {
			Latency float64 `json:"latency_ewma_seconds"`
		} `json:"load"`
	}
	if json.NewDecoder(resp.Body).Decode(&ms) != nil {
		return nil
	}
	out := map[string]float64{}
	for _, m := range ms {
		if m.Load != nil && (m.Name == "a" || m.Name == "b" || m.Name == "c") {
			out[m.Name] = m.Load.Latency
		}
	}
	return out
}

func fmtEstimates(label string, est map[string]time.Duration) string {
	if len(est) == 0 {
		return ""
	}
	var parts []string
	for _, p := range []string{"a", "b", "c"} {
		if d, ok := est[p]; ok {
			parts = append(parts, fmt.Sprintf("%s %.1f", p, ms(d)))
		}
	}
	return "  " + label + " ms " + strings.Join(parts, " ")
}
