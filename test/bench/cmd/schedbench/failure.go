package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// killScenario is what is killed on node c.
type killScenario struct {
	key, name   string
	killBackend bool
}

var killScenarios = []killScenario{
	{key: "agent", name: "agent c SIGKILLed (its backend stays up)"},
	{key: "agent+backend", name: "agent c and its backend SIGKILLed", killBackend: true},
}

// killResult is one repetition of a kill scenario. Durations are from the
// SIGKILL; -1 means "never" (nothing of the kind seen after the kill).
type killResult struct {
	scenario string
	rep      int
	leader   string // the Raft leader before the kill, as the ingress saw it
	requests int64  // answered 200
	failed   int64  // anything else, over the whole run
	errs     map[string]int

	sniffOK    bool          // the sniffer saw packets to c before the kill
	sniffErr   string        // why there is no packet figure
	lastPacket time.Duration // last UDP datagram sent to c's peer port
	packets    int           // datagrams to c's peer port after the kill

	lastRise  time.Duration // last increase of the ingress's in-flight gauge for c
	inflight0 time.Duration // in-flight gauge for c at 0 (or gone) for good
	removed   time.Duration // c gone from the ingress's scheduler metrics for good
	dead      time.Duration // ingress's /v1/members shows c dead (or no longer lists it)
	maxStuck  int           // highest in-flight gauge for c after the kill

	maxLat   time.Duration // slowest request in flight at or sent after the kill
	over1s   int           // requests in flight at or sent after the kill that took over 1s
	p99After time.Duration // p99 of requests sent in the 2s after the kill
	servedC  int           // answers from c to requests sent after the kill
	preRPS   float64       // req/s in the second before the kill
	postRPS  float64       // req/s from 1s to 2s after the kill
}

// runFailures repeats each kill scenario cfg.kills times, each on a fresh
// cluster.
func (b *bench) runFailures(ctx context.Context) error {
	for rep := range b.cfg.kills {
		for _, sc := range killScenarios {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r, err := b.killOnce(ctx, sc, rep+1)
			if err != nil {
				return fmt.Errorf("kill %s #%d: %w", sc.key, rep+1, err)
			}
			b.kills = append(b.kills, r)
			fmt.Printf("  %-14s #%d  failed %d of %d  last packet to c %s  last new request to c %s  in-flight→0 %s  removed %s  dead %s  max latency %s ms  >1s %d\n",
				sc.key, rep+1, r.failed, r.failed+r.requests, fmtSince(r.lastPacket), fmtSince(r.lastRise), fmtSince(r.inflight0),
				fmtSince(r.removed), fmtSince(r.dead), fmtDur(r.maxLat), r.over1s)
		}
	}
	return nil
}

func fmtSince(d time.Duration) string {
	if d < 0 {
		return "none"
	}
	return fmt.Sprintf("%.3fs", d.Seconds())
}

// killOnce: a fresh cluster (backends and serving agents a, b, c with
// --capacity cfg.capacity, ingress-only agent "in" with the default
// policy), load through "in", SIGKILL of agent c (and its backend) after
// cfg.preKill, load until cfg.postKill after it.
func (b *bench) killOnce(ctx context.Context, sc killScenario, rep int) (killResult, error) {
	res := killResult{scenario: sc.key, rep: rep, lastPacket: -1, lastRise: -1, inflight0: -1, removed: -1,
		dead: -1, errs: map[string]int{}}
	backends := []backendSpec{{name: "a"}, {name: "b"}, {name: "c"}}
	var agents []agentSpec
	for _, n := range []string{"a", "b", "c"} {
		agents = append(agents, agentSpec{name: n, backend: n, capacity: b.cfg.capacity})
	}
	agents = append(agents, agentSpec{name: "in"})
	c, err := b.startCluster(ctx, fmt.Sprintf("kill-%s-%d", strings.ReplaceAll(sc.key, "+", "-"), rep), backends, agents)
	if err != nil {
		return res, err
	}
	defer c.stop()
	in, victim := c.agents["in"], c.agents["c"]
	runLoad(ctx, loadConfig{url: in.url(), conns: b.cfg.killConns, duration: b.cfg.warmup, timeout: 5 * time.Second})
	res.leader = in.leader()

	t0 := time.Now()
	pollCtx, stopPoll := context.WithCancel(ctx)
	var polls []pollSample
	var pwg sync.WaitGroup
	pwg.Go(func() { polls = pollIngress(pollCtx, in, t0) })

	var run loadRun
	var lwg sync.WaitGroup
	lwg.Go(func() {
		run = runLoad(ctx, loadConfig{url: in.url(), conns: b.cfg.killConns, duration: b.cfg.preKill + b.cfg.postKill,
			timeout: b.cfg.reqTimeout})
	})
	// The load generator's clock starts a moment after t0; its times are
	// converted below.
	sleepCtx(ctx, b.cfg.preKill-300*time.Millisecond)
	sn, snErr := startSniffer(victim.peer, t0)
	sleepCtx(ctx, 300*time.Millisecond)
	killAt := time.Since(t0)
	err = victim.p.Kill()
	if err == nil && sc.killBackend {
		err = c.backends["c"].Kill()
	}
	if err != nil {
		stopPoll()
		lwg.Wait()
		pwg.Wait()
		if sn != nil {
			sn.finish()
		}
		return res, err
	}
	lwg.Wait()
	// Keep polling a little after the load so that a late removal is seen.
	sleepCtx(ctx, 500*time.Millisecond)
	stopPoll()
	pwg.Wait()
	if ctx.Err() != nil {
		return res, ctx.Err()
	}

	// Packets to c's peer port.
	if snErr != nil {
		res.sniffErr = snErr.Error()
	} else {
		times, err := sn.finish()
		if err != nil {
			res.sniffErr = err.Error()
		}
		for _, t := range times {
			if t < killAt {
				res.sniffOK = true
				continue
			}
			res.packets++
			res.lastPacket = max(res.lastPacket, t-killAt)
		}
		if !res.sniffOK && res.sniffErr == "" {
			res.sniffErr = "no packet to c seen before the kill: the sniffer cannot be trusted"
		}
	}

	// The ingress's view, polled.
	prev := -1
	for _, p := range polls {
		since := p.at - killAt
		if since < 0 {
			prev = p.inflightC
			continue
		}
		if p.inflightC > prev && prev >= 0 {
			res.lastRise = since
		}
		if p.inflightC > 0 {
			res.inflight0 = -1
			res.maxStuck = max(res.maxStuck, p.inflightC)
		} else if res.inflight0 < 0 {
			res.inflight0 = since
		}
		if p.inflightC >= 0 {
			res.removed = -1
		} else if res.removed < 0 {
			res.removed = since
		}
		if res.dead < 0 && (p.member == "dead" || p.member == "left" || p.member == "gone") {
			res.dead = since
		}
		prev = p.inflightC
	}

	// The client's view. The generator's t0 is run.t0.
	off := run.t0.Sub(t0)
	kill := killAt - off
	var after []time.Duration
	for _, r := range run.recs {
		if !r.ok() {
			res.failed++
			res.errs[failText(r)]++
		} else {
			res.requests++
		}
		lat := r.end - r.start
		if r.end >= kill {
			res.maxLat = max(res.maxLat, lat)
			if lat > time.Second {
				res.over1s++
			}
		}
		if r.start >= kill && r.start < kill+2*time.Second {
			after = append(after, lat)
		}
		if r.start >= kill && r.ok() && r.node == "c" {
			res.servedC++
		}
		if r.ok() && r.end >= kill-time.Second && r.end < kill {
			res.preRPS++
		}
		if r.ok() && r.end >= kill+time.Second && r.end < kill+2*time.Second {
			res.postRPS++
		}
	}
	slices.Sort(after)
	res.p99After = pct(after, 0.99)
	if b.cfg.trace != "" {
		if err := writeTrace(b.cfg.trace, sc, rep, killAt, polls); err != nil {
			b.note("trace: " + err.Error())
		}
	}
	return res, nil
}

func failText(r rec) string {
	if r.err != "" {
		return r.err
	}
	return "HTTP " + strconv.Itoa(r.status)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// pollSample is the ingress's state at one moment.
type pollSample struct {
	at        time.Duration
	inflightC int     // loadmesh_scheduler_peer_inflight{peer="c"}; -1 when c has no series
	latencyC  float64 // loadmesh_scheduler_peer_latency_seconds{peer="c"}, ms; -1 when none
	member    string  // c's status in /v1/members; "gone" when not listed; "" when not polled
}

// pollIngress reads the ingress's /metrics every 20ms and /v1/members
// every 100ms until ctx ends. Samples whose request failed are skipped.
func pollIngress(ctx context.Context, in *agent, t0 time.Time) []pollSample {
	client := &http.Client{Timeout: time.Second}
	var out []pollSample
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return out
		case <-tick.C:
		}
		s := pollSample{at: time.Since(t0), inflightC: -1, latencyC: -1}
		m, ok := scrape(ctx, client, in.apiURL()+"/metrics", "loadmesh_scheduler_peer_")
		if !ok {
			continue
		}
		if v, found := m[`loadmesh_scheduler_peer_inflight{peer="c"}`]; found {
			s.inflightC = int(v)
		}
		if v, found := m[`loadmesh_scheduler_peer_latency_seconds{peer="c"}`]; found {
			s.latencyC = v * 1000
		}
		if i%5 == 0 {
			s.member = memberStatus(ctx, client, in.apiURL()+"/v1/members", "c")
		}
		out = append(out, s)
	}
}

// scrape reads the series of a Prometheus text exposition whose names
// start with prefix, keyed by name and labels as written.
func scrape(ctx context.Context, client *http.Client, url, prefix string) (map[string]float64, bool) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := client.Do(req)
	if err != nil {
		return nil, false
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if f, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = f
		}
	}
	return out, sc.Err() == nil && resp.StatusCode == http.StatusOK
}

func memberStatus(ctx context.Context, client *http.Client, url, name string) string {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := client.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var ms []struct {
		Name   string `json:"name"`
		Status string `json:"status"`
	}
	if json.NewDecoder(resp.Body).Decode(&ms) != nil {
		return ""
	}
	for _, m := range ms {
		if m.Name == name {
			return m.Status
		}
	}
	return "gone"
}

// writeTrace writes the ingress's polled view of c around the kill as CSV
// (-trace), for a closer look at one repetition.
func writeTrace(dir string, sc killScenario, rep int, killAt time.Duration, polls []pollSample) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var sb strings.Builder
	sb.WriteString("ms_since_kill,inflight_c,latency_estimate_c_ms,member_c\n")
	for _, p := range polls {
		fmt.Fprintf(&sb, "%.1f,%d,%.3f,%s\n", ms(p.at-killAt), p.inflightC, p.latencyC, p.member)
	}
	name := fmt.Sprintf("kill-%s-%d.csv", strings.ReplaceAll(sc.key, "+", "-"), rep)
	return os.WriteFile(filepath.Join(dir, name), []byte(sb.String()), 0o644)
}
