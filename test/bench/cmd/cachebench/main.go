// Command cachebench measures the response cache (make bench-cache): three
// real agents on loopback in front of one backend that counts its requests
// and answers after a fixed delay, under a Zipf-distributed GET workload at
// a fixed rate spread over the three ingresses. Three configurations, each
// on a fresh cluster, in the same run and interleaved over the
// repetitions: no cache, a per-node cache (--cache-owner-lookup=false) and
// the mesh cache. It reports backend requests, hit ratio and latency
// percentiles (medians over the repetitions) and rewrites its section of
// docs/benchmarks.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/test/bench/internal/benchproc"
)

type config struct {
	bin, version, workDir, pidFile, doc string
	rate                                int
	duration, delay                     time.Duration
	reps, keys, body                    int
	zipfS                               float64
	cacheSize                           string
}

var nodeNames = []string{"a", "b", "c"}

const benchToken = "lm_cace000000000000_cacecacecacecacecacecacecacecacecacecacecacecacecacecacecacecace"

func main() {
	var cfg config
	flag.StringVar(&cfg.bin, "bin", "bin/loadmesh", "loadmesh binary")
	flag.StringVar(&cfg.version, "version", "", "version measured, for the report")
	flag.StringVar(&cfg.workDir, "work", "", "scratch directory (default: a new temporary one)")
	flag.StringVar(&cfg.pidFile, "pidfile", "", "append every started PID here")
	flag.StringVar(&cfg.doc, "doc", "docs/benchmarks.md", `where the results go ("" for nowhere)`)
	flag.IntVar(&cfg.rate, "rate", 400, "requests/s over the three ingresses")
	flag.DurationVar(&cfg.duration, "duration", 15*time.Second, "length of one run")
	flag.DurationVar(&cfg.delay, "delay", 5*time.Millisecond, "backend latency")
	flag.IntVar(&cfg.reps, "reps", 3, "repetitions of each configuration (medians reported)")
	flag.IntVar(&cfg.keys, "keys", 10_000, "distinct URLs")
	flag.IntVar(&cfg.body, "body", 1024, "bytes per answer")
	flag.Float64Var(&cfg.zipfS, "zipf-s", 1.1, "Zipf exponent (> 1)")
	flag.StringVar(&cfg.cacheSize, "cache-size", "4MiB", "--cache-size of each agent")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "cachebench:", err)
		os.Exit(1)
	}
}

// variant is one configuration measured.
type variant struct {
	name string
	args []string
}

var variants = []variant{
	{"no cache", nil},
	{"per-node cache", []string{"--cache", "/item/", "--cache-owner-lookup=false"}},
	{"mesh cache", []string{"--cache", "/item/"}},
}

// result is one run's figures.
type result struct {
	backend              int64
	requests, ok, hits   int
	p50, p90, p99, mean  time.Duration
	achieved             float64
	collapsed, evictions float64
	lookupErrors         float64
}

func run(ctx context.Context, cfg config) error {
	if cfg.zipfS <= 1 {
		return errors.New("-zipf-s must be above 1")
	}
	if cfg.workDir == "" {
		d, err := os.MkdirTemp("", "loadmesh-cachebench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		cfg.workDir = d
	}
	m := benchproc.ReadMachine(cfg.version)
	start := time.Now()
	if err := makeTLS(ctx, cfg.bin, filepath.Join(cfg.workDir, "tls")); err != nil {
		return err
	}
	be, err := startBackend(cfg)
	if err != nil {
		return err
	}
	defer be.srv.Close()
	results := make([][]result, len(variants))
	for rep := range cfg.reps {
		// Rotate the order so that no configuration always runs first.
		for k := range variants {
			i := (k + rep) % len(variants)
			v := variants[i]
			fmt.Fprintf(os.Stderr, "rep %d/%d: %s ...\n", rep+1, cfg.reps, v.name)
			r, err := measure(ctx, cfg, be, v, fmt.Sprintf("%d-%d", rep, i))
			if err != nil {
				return fmt.Errorf("%s: %w", v.name, err)
			}
			fmt.Fprintf(os.Stderr, "  backend %d, hits %.1f %%, p50 %s, p99 %s, %.0f req/s\n",
				r.backend, 100*float64(r.hits)/float64(max(r.requests, 1)), r.p50, r.p99, r.achieved)
			results[i] = append(results[i], r)
		}
	}
	m.LoadEnd = benchproc.LoadAvg()
	m.Elapsed = time.Since(start)
	out := report(cfg, m, results)
	fmt.Print(out)
	if cfg.doc != "" {
		return writeDoc(cfg.doc, out)
	}
	return nil
}

// backend counts requests and answers each after cfg.delay with a
// cacheable body.
type backend struct {
	srv   *http.Server
	url   string
	count atomic.Int64
}

func startBackend(cfg config) (*backend, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &backend{url: "http://" + ln.Addr().String()}
	body := []byte(strings.Repeat("x", cfg.body))
	b.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/item/") {
			return // health checks
		}
		b.count.Add(1)
		time.Sleep(cfg.delay)
		w.Header().Set("Cache-Control", "max-age=3600")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	})}
	go b.srv.Serve(ln)
	return b, nil
}

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

// measure starts a fresh cluster with v's flags, runs the workload and
// stops the cluster.
func measure(ctx context.Context, cfg config, be *backend, v variant, label string) (result, error) {
	dir := filepath.Join(cfg.workDir, label)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return result{}, err
	}
	ps := &benchproc.Procs{Dir: dir, PIDFile: cfg.pidFile}
	defer ps.Stop()
	pp := benchproc.Ports{}
	tlsDir := filepath.Join(cfg.workDir, "tls")
	var ingresses, apis []string
	seed := ""
	for _, n := range nodeNames {
		var ports [5]int
		for i := range ports {
			p, err := pp.Next()
			if err != nil {
				return result{}, err
			}
			ports[i] = p
		}
		args := []string{"agent", "--name", n, "--data-dir", filepath.Join(dir, "data-"+n),
			"--gossip", benchproc.Addr(ports[0]), "--raft", benchproc.Addr(ports[1]), "--peer", benchproc.Addr(ports[2]),
			"--http", benchproc.Addr(ports[3]), "--api", benchproc.Addr(ports[4]),
			"--backend", be.url, "--capacity", "256", "--health-path", "/health", "--cache-size", cfg.cacheSize,
			"--tls-ca", filepath.Join(tlsDir, "loadmesh-ca.pem"), "--tls-cert", filepath.Join(tlsDir, n+".pem"),
			"--tls-key", filepath.Join(tlsDir, n+"-key.pem"), "--log-level", "warn", "--bootstrap-token", benchToken,
			"--bootstrap-expect", "3"}
		if seed != "" {
			args = append(args, "--join", seed)
		} else {
			seed = benchproc.Addr(ports[0])
		}
		args = append(args, v.args...)
		if _, err := ps.Start("agent-"+n, cfg.bin, args...); err != nil {
			return result{}, err
		}
		ingresses = append(ingresses, "http://"+benchproc.Addr(ports[3]))
		apis = append(apis, "http://"+benchproc.Addr(ports[4]))
	}
	hc := &http.Client{Timeout: 2 * time.Second}
	// Ready: every agent has a leader, and each sees all three nodes as
	// cache owners (when the cache is on).
	deadline := time.Now().Add(60 * time.Second)
	for {
		ready := true
		for _, api := range apis {
			if code, _ := httpGet(hc, api+"/readyz"); code != 200 {
				ready = false
			}
			if len(v.args) > 0 {
				var st struct {
					Owners []string `json:"owners"`
				}
				_, body := httpGet(hc, api+"/v1/cache")
				if json.Unmarshal([]byte(body), &st) != nil || len(st.Owners) != len(nodeNames) {
					ready = false
				}
			}
		}
		if ready {
			break
		}
		if err := ps.Dead(); err != nil {
			return result{}, err
		}
		if time.Now().After(deadline) {
			return result{}, errors.New("cluster not ready within 60s")
		}
		select {
		case <-ctx.Done():
			return result{}, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	before := be.count.Load()

	// The workload: Zipf over cfg.keys URLs, round robin over the
	// ingresses, one Host for all so that a URL is one cache key.
	// The same seed every run: every configuration gets the same sequence
	// of URLs.
	zipf := rand.NewZipf(rand.New(rand.NewPCG(1, 2)), cfg.zipfS, 1, uint64(cfg.keys-1))
	var seq atomic.Uint64
	hdr := http.Header{"Host": []string{"bench.example"}}
	targeter := func(t *vegeta.Target) error {
		n := seq.Add(1)
		t.Method = "GET"
		t.URL = ingresses[n%uint64(len(ingresses))] + "/item/" + strconv.FormatUint(zipf.Uint64(), 10)
		t.Header = hdr
		return nil
	}
	atk := vegeta.NewAttacker(vegeta.Timeout(10*time.Second), vegeta.Connections(64), vegeta.MaxWorkers(512), vegeta.KeepAlive(true))
	var mt vegeta.Metrics
	hits := 0
	lockedTargeter := lockTargeter(targeter)
	for res := range atk.Attack(lockedTargeter, vegeta.Rate{Freq: cfg.rate, Per: time.Second}, cfg.duration, label) {
		mt.Add(res)
		if x := res.Headers.Get("X-Cache"); x == "HIT" || x == "STALE" || x == "REVALIDATED" {
			hits++
		}
		if ctx.Err() != nil {
			atk.Stop()
		}
	}
	mt.Close()
	r := result{
		backend: be.count.Load() - before, requests: int(mt.Requests), ok: int(mt.Success * float64(mt.Requests)), hits: hits,
		p50: mt.Latencies.P50, p90: mt.Latencies.P90, p99: mt.Latencies.P99, mean: mt.Latencies.Mean, achieved: mt.Throughput,
	}
	for _, api := range apis {
		_, body := httpGet(hc, api+"/metrics")
		r.collapsed += metricValue(body, "loadmesh_cache_collapsed_total")
		r.evictions += metricValue(body, "loadmesh_cache_evictions_total")
		r.lookupErrors += metricValue(body, `loadmesh_cache_owner_lookups_total{result="error"}`)
	}
	if mt.Success < 0.999 {
		return r, fmt.Errorf("only %.2f %% of %d requests succeeded: %v", 100*mt.Success, mt.Requests, mt.Errors)
	}
	return r, nil
}

// lockTargeter serialises a targeter (the Zipf source is not safe for
// concurrent use).
func lockTargeter(t vegeta.Targeter) vegeta.Targeter {
	ch := make(chan struct{}, 1)
	ch <- struct{}{}
	return func(tgt *vegeta.Target) error {
		<-ch
		defer func() { ch <- struct{}{} }()
		return t(tgt)
	}
}

func httpGet(hc *http.Client, url string) (int, string) {
	resp, err := hc.Get(url)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return resp.StatusCode, string(b)
}

func metricValue(exposition, name string) float64 {
	for line := range strings.SplitSeq(exposition, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}

func median[T int64 | float64 | time.Duration](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func report(cfg config, m benchproc.Machine, results [][]result) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("### Response cache (`make bench-cache`)\n\n")
	p("Measured %s on %s (%d cores%s, %s, Linux %s), Go %s, loadmesh %s; load average %s at the start, %s at the end; %s in all.\n\n",
		m.Date.Format("2006-01-02 15:04 UTC"), m.CPU, m.Cores, map[bool]string{true: ", virtual"}[m.Virtual], m.MemTotal, m.Kernel,
		m.Go, m.Loadmesh, m.LoadStart, m.LoadEnd, m.Elapsed.Round(time.Second))
	p("Three agents on loopback (mutual TLS, `--bootstrap-expect 3`) in front of one backend that answers\n")
	p("every `/item/N` after %s with %d bytes and `Cache-Control: max-age=3600`, and counts its requests.\n", cfg.delay, cfg.body)
	p("The load is an open loop (vegeta) of %d GET/s for %s, round robin over the three ingresses, one Host;\n", cfg.rate, cfg.duration)
	p("URLs are Zipf-distributed (s = %.2f) over %d keys, the same sequence in every run. Each configuration starts on a fresh cluster with\n", cfg.zipfS, cfg.keys)
	perNode := "?"
	if n, err := agent.ParseByteSize(cfg.cacheSize); err == nil {
		// An entry costs its body, its header and 256 bytes (httpcache).
		perNode = strconv.FormatInt(n/int64(cfg.body+450), 10)
	}
	p("empty caches, `--cache-size %s` per agent (about %s answers of this size); the configurations are\n", cfg.cacheSize, perNode)
	p("interleaved over %d repetitions and the figures are medians (backend requests: also min–max).\n\n", cfg.reps)
	p("| configuration | backend requests (min–max) | of requests | hit ratio | p50 | p90 | p99 (min–max) | collapsed | evictions | owner lookup errors |\n")
	p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for i, v := range variants {
		rs := results[i]
		var be []int64
		var ratio, hitr, coll, ev, lerr []float64
		var p50, p90, p99 []time.Duration
		for _, r := range rs {
			be = append(be, r.backend)
			ratio = append(ratio, float64(r.backend)/float64(max(r.requests, 1)))
			hitr = append(hitr, float64(r.hits)/float64(max(r.requests, 1)))
			coll = append(coll, r.collapsed)
			ev = append(ev, r.evictions)
			lerr = append(lerr, r.lookupErrors)
			p50, p90, p99 = append(p50, r.p50), append(p90, r.p90), append(p99, r.p99)
		}
		p("| %s | %d (%d–%d) | %.1f %% | %.1f %% | %s | %s | %s (%s–%s) | %.0f | %.0f | %.0f |\n", v.name, median(be), slices.Min(be), slices.Max(be),
			100*median(ratio), 100*median(hitr), fmtDur(median(p50)), fmtDur(median(p90)), fmtDur(median(p99)),
			fmtDur(slices.Min(p99)), fmtDur(slices.Max(p99)), median(coll), median(ev), slices.Max(lerr))
	}
	p("\nRequests sent per run: %d. Hits count `X-Cache` HIT, STALE and REVALIDATED answers; owner lookup\n", results[0][0].requests)
	p("errors are the most any run had (loadmesh_cache_owner_lookups_total{result=\"error\"}, served without the owner).\n")
	p("Latencies on this shared 2-core machine depend on what else runs (see the load average): compare them\n")
	p("within a run, and read the backend requests and hit ratios, which do not depend on it, first.\n")
	return b.String()
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.2fms", float64(d)/1e6)
}

const (
	beginMarker = "<!-- cachebench:begin — generated by make bench-cache (test/bench/cmd/cachebench); do not edit between these markers -->"
	endMarker   = "<!-- cachebench:end -->"
)

// writeDoc replaces cachebench's section of path, or appends it.
func writeDoc(path, generated string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	doc := string(old)
	begin, end := strings.Index(doc, "<!-- cachebench:begin"), strings.Index(doc, endMarker)
	if begin < 0 || end < begin {
		if doc != "" && !strings.HasSuffix(doc, "\n") {
			doc += "\n"
		}
		doc += "\n" + beginMarker + "\n" + generated + endMarker + "\n"
	} else {
		doc = doc[:begin] + beginMarker + "\n" + generated + doc[end:]
	}
	tmp := path + ".cachebench.tmp"
	if err := os.WriteFile(tmp, []byte(doc), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
