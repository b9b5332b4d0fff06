// Command lmbench is loadmesh's loopback benchmark, run by `make bench`
// through test/bench/run.sh. It starts a demo backend, a two-node loadmesh
// cluster (B fronts the backend, A is ingress-only so that everything
// entering A is forwarded to B over QUIC) and, when installed, HAProxy one
// hop and two hops in front of the same backend. It then measures each
// path with the same load in interleaved rounds, moves 1 GiB through the
// two-hop path while sampling the agents' RSS, profiles both agents with
// perf during a two-hop run, and writes the medians, ratios and profile
// summary into docs/benchmarks.md between the generated-section markers.
//
// Every load run is bounded in time (and the built-in generator also in
// count); every process it starts is tracked by PID, killed on exit, and
// dies with it (Pdeathsig).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/loadmesh/loadmesh/test/bench/internal/benchproc"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type config struct {
	bin         string
	workDir     string
	doc         string
	pidFile     string
	version     string
	rounds      int
	duration    time.Duration
	conns       []int
	bulkSize    int64
	bulkTimeout time.Duration
	profile     bool
	loadgen     string
	capacity    int
}

func main() {
	var cfg config
	var conns string
	flag.StringVar(&cfg.bin, "bin", "bin/loadmesh", "loadmesh binary (keep its symbol table for perf)")
	flag.StringVar(&cfg.workDir, "work", "", "scratch directory (default: a new temporary one, removed at exit)")
	flag.StringVar(&cfg.doc, "doc", "docs/benchmarks.md", "markdown file whose generated section is rewritten; empty: none")
	flag.StringVar(&cfg.pidFile, "pidfile", "", "append the PID of every started process to this file")
	flag.StringVar(&cfg.version, "version", "", "loadmesh version string for the report")
	flag.IntVar(&cfg.rounds, "rounds", 5, "interleaved rounds per scenario; medians are reported")
	flag.DurationVar(&cfg.duration, "duration", 5*time.Second, "length of one load run (whole seconds)")
	flag.StringVar(&conns, "conns", "64,8", "comma-separated connection counts, the same for every path")
	flag.Int64Var(&cfg.bulkSize, "bulk-size", 1<<30, "bytes per large transfer; 0 skips them")
	flag.DurationVar(&cfg.bulkTimeout, "bulk-timeout", 180*time.Second, "limit for one large transfer")
	flag.BoolVar(&cfg.profile, "profile", true, "profile both agents with perf during a two-hop run")
	flag.StringVar(&cfg.loadgen, "loadgen", "auto", "auto (wrk if installed, else loadtest), wrk, loadtest (loadmesh loadtest) or go")
	flag.IntVar(&cfg.capacity, "capacity", 1024, "--capacity of the serving agent (above every connection count, so it always serves locally)")
	flag.Parse()
	for _, s := range strings.Split(conns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "lmbench: bad -conns %q\n", conns)
			os.Exit(2)
		}
		cfg.conns = append(cfg.conns, n)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	err := run(ctx, cfg)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "lmbench:", err)
		os.Exit(1)
	}
}

// scenario is one path under load.
type scenario struct {
	Key   string
	Name  string
	Hops  int
	URL   string
	Ref   string            // key of the HAProxy row this one is compared to
	Procs []*benchproc.Proc // proxy processes whose CPU time is counted
	check func(*http.Response) error
}

// sample is one load run of one scenario.
type sample struct {
	loadResult
	CPU float64 // seconds of CPU used by the scenario's proxies
}

type runKey struct {
	Key   string
	Conns int
}

type bench struct {
	cfg      config
	ps       *benchproc.Procs
	info     machineInfo
	loader   loader
	scen     []*scenario
	results  map[runKey][]sample
	bulk     []bulkResult
	profiles []perfProfile
	notes    []string
	agentA   *benchproc.Proc
	agentB   *benchproc.Proc
	haproxy  string
	perf     string
	started  time.Time
}

func run(ctx context.Context, cfg config) error {
	b := &bench{cfg: cfg, results: map[runKey][]sample{}, started: time.Now()}
	if cfg.workDir == "" {
		dir, err := os.MkdirTemp("", "lmbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cfg.workDir = dir
		b.cfg.workDir = dir
	}
	bin, err := filepath.Abs(cfg.bin)
	if err != nil {
		return err
	}
	b.cfg.bin = bin
	b.ps = &benchproc.Procs{Dir: b.cfg.workDir, PIDFile: cfg.pidFile}
	defer b.ps.Stop()

	b.info = readMachineInfo(bin, cfg.version)
	fmt.Print(b.info.text())

	switch {
	case cfg.loadgen == "go":
		b.loader = goLoader{}
	case cfg.loadgen == "loadtest":
		b.loader = loadtestLoader{bin: bin}
	default:
		if p, err := exec.LookPath("wrk"); err == nil {
			b.loader = wrkLoader{path: p, threads: 2}
		} else if cfg.loadgen == "wrk" {
			return errors.New("wrk not found")
		} else {
			b.loader = loadtestLoader{bin: bin}
			b.note("wrk is not installed: `loadmesh loadtest --rate 0` was the load generator")
		}
	}
	fmt.Println("load generator:", b.loader.name())
	if p, err := exec.LookPath("haproxy"); err == nil {
		b.haproxy = p
		b.info.HAProxy = firstLine(exec.Command(p, "-v"))
	} else {
		b.note("HAProxy is not installed: the HAProxy rows, and so every ratio and target, are skipped")
	}
	if cfg.profile {
		if p, err := exec.LookPath("perf"); err == nil {
			b.perf = p
		} else {
			b.note("perf is not installed: no CPU profile")
		}
	}

	if err := b.setup(ctx); err != nil {
		return err
	}
	fmt.Printf("setup done in %s\n", time.Since(b.started).Round(time.Millisecond))

	b.warmUp(ctx)
	if cfg.bulkSize > 0 {
		b.runBulk(ctx)
	}
	if err := b.runRounds(ctx); err != nil {
		return err
	}
	if b.perf != "" {
		b.runProfile(ctx)
	}
	b.info.LoadEnd = loadAvg()
	b.info.Elapsed = time.Since(b.started)
	fmt.Println()
	fmt.Print(b.textReport())
	if cfg.doc != "" {
		if err := writeDoc(cfg.doc, b.markdown()); err != nil {
			return err
		}
		fmt.Println("wrote", cfg.doc)
	}
	return ctx.Err()
}

func (b *bench) note(s string) {
	fmt.Println("note:", s)
	b.notes = append(b.notes, s)
}

// setup starts the backend, the agents and the HAProxies and waits until
// every path answers.
func (b *bench) setup(ctx context.Context) error {
	dir := b.cfg.workDir
	tlsDir := filepath.Join(dir, "tls")
	ca, caKey := filepath.Join(tlsDir, "loadmesh-ca.pem"), filepath.Join(tlsDir, "loadmesh-ca-key.pem")
	if err := os.MkdirAll(tlsDir, 0o700); err != nil {
		return err
	}
	cmds := [][]string{{"tls", "ca", "create", "--dir", tlsDir}}
	for _, n := range []string{"a", "b"} {
		cmds = append(cmds, []string{"tls", "cert", "create", "--node", n, "--ca", ca, "--ca-key", caKey, "--dir", tlsDir})
	}
	for _, c := range cmds {
		if out, err := exec.CommandContext(ctx, b.cfg.bin, c...).CombinedOutput(); err != nil {
			return fmt.Errorf("loadmesh %s: %w: %s", strings.Join(c, " "), err, out)
		}
	}

	pp := benchproc.Ports{}
	port := func() int {
		n, err := pp.Next()
		if err != nil {
			panic(err)
		}
		return n
	}
	beAddr := benchproc.Addr(port())
	if _, err := b.ps.Start("backend", b.cfg.bin, "backend", "--listen", beAddr, "--name", "bench-backend"); err != nil {
		return err
	}
	var err error

	type agentPorts struct{ gossip, raft, peer, http, api int }
	pa := agentPorts{port(), port(), port(), port(), port()}
	pb := agentPorts{port(), port(), port(), port(), port()}
	agentArgs := func(name string, p agentPorts) []string {
		return []string{"agent", "--name", name, "--data-dir", filepath.Join(dir, "data-"+name),
			"--gossip", benchproc.Addr(p.gossip), "--raft", benchproc.Addr(p.raft), "--peer", benchproc.Addr(p.peer),
			"--http", benchproc.Addr(p.http), "--api", benchproc.Addr(p.api), "--bootstrap-expect", "2",
			"--tls-ca", ca, "--tls-cert", filepath.Join(tlsDir, name+".pem"),
			"--tls-key", filepath.Join(tlsDir, name+"-key.pem"), "--log-level", "warn"}
	}
	argsB := append(agentArgs("b", pb), "--backend", "http://"+beAddr, "--capacity", strconv.Itoa(b.cfg.capacity))
	if b.agentB, err = b.ps.Start("agent-b", b.cfg.bin, argsB...); err != nil {
		return err
	}
	argsA := append(agentArgs("a", pa), "--join", benchproc.Addr(pb.gossip))
	if b.agentA, err = b.ps.Start("agent-a", b.cfg.bin, argsA...); err != nil {
		return err
	}

	local := &scenario{Key: "local", Name: "loadmesh, one node serving locally", Hops: 1,
		URL: "http://" + benchproc.Addr(pb.http) + "/", Ref: "haproxy", Procs: []*benchproc.Proc{b.agentB},
		check: wantNode("b")}
	twoHop := &scenario{Key: "twohop", Name: "loadmesh A → QUIC+mTLS → B", Hops: 2,
		URL: "http://" + benchproc.Addr(pa.http) + "/", Ref: "haproxy2", Procs: []*benchproc.Proc{b.agentA, b.agentB},
		check: wantNode("b")}
	direct := &scenario{Key: "backend", Name: "backend directly (no proxy)", Hops: 0,
		URL: "http://" + beAddr + "/", Ref: "haproxy"}
	b.scen = []*scenario{direct}

	if b.haproxy != "" {
		h1, h2, h1t, h2t := port(), port(), port(), port()
		// HAProxy wants certificate and key in one file.
		for _, n := range []string{"a", "b"} {
			crt, _ := os.ReadFile(filepath.Join(tlsDir, n+".pem"))
			key, _ := os.ReadFile(filepath.Join(tlsDir, n+"-key.pem"))
			if err := os.WriteFile(filepath.Join(tlsDir, n+"-haproxy.pem"), append(crt, key...), 0o600); err != nil {
				return err
			}
		}
		tlsFront := fmt.Sprintf("ssl crt %s ca-file %s verify required ssl-min-ver TLSv1.3", filepath.Join(tlsDir, "b-haproxy.pem"), ca)
		tlsBack := fmt.Sprintf("ssl crt %s ca-file %s verify required ssl-min-ver TLSv1.3", filepath.Join(tlsDir, "a-haproxy.pem"), ca)
		hp := []struct {
			label, bind, bindOpts, server, serverOpts string
		}{
			{"haproxy1", benchproc.Addr(h1), "", beAddr, ""},
			{"haproxy2", benchproc.Addr(h2), "", benchproc.Addr(h1), ""},
			{"haproxy1-tls", benchproc.Addr(h1t), tlsFront, beAddr, ""},
			{"haproxy2-tls", benchproc.Addr(h2t), "", benchproc.Addr(h1t), tlsBack},
		}
		started := map[string]*benchproc.Proc{}
		for _, h := range hp {
			path := filepath.Join(dir, h.label+".cfg")
			if err := os.WriteFile(path, []byte(haproxyConfig(h.bind, h.bindOpts, h.server, h.serverOpts)), 0o644); err != nil {
				return err
			}
			p, err := b.ps.Start(h.label, b.haproxy, "-db", "-f", path)
			if err != nil {
				return err
			}
			started[h.label] = p
		}
		b.scen = append(b.scen,
			&scenario{Key: "haproxy", Name: "HAProxy → backend", Hops: 1, URL: "http://" + benchproc.Addr(h1) + "/",
				Ref: "haproxy", Procs: []*benchproc.Proc{started["haproxy1"]}},
			local,
			&scenario{Key: "haproxy2", Name: "HAProxy → HAProxy → backend (plain HTTP between them)", Hops: 2,
				URL: "http://" + benchproc.Addr(h2) + "/", Ref: "haproxy2", Procs: []*benchproc.Proc{started["haproxy2"], started["haproxy1"]}},
			&scenario{Key: "haproxy2tls", Name: "HAProxy → HAProxy → backend (mutual TLS 1.3 between them)", Hops: 2,
				URL: "http://" + benchproc.Addr(h2t) + "/", Ref: "haproxy2tls", Procs: []*benchproc.Proc{started["haproxy2-tls"], started["haproxy1-tls"]}},
			twoHop,
		)
	} else {
		b.scen = append(b.scen, local, twoHop)
	}

	// Wait until every path answers (the two-hop path needs gossip to
	// have told A about B).
	deadline := time.Now().Add(60 * time.Second)
	client := &http.Client{Timeout: 2 * time.Second}
	for _, s := range b.scen {
		for {
			err := probe(ctx, client, s)
			if err == nil {
				break
			}
			if err := b.ps.Dead(); err != nil {
				return err
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("%s (%s) not answering: %w\nagent-a log:\n%s\nagent-b log:\n%s",
					s.Name, s.URL, err, b.agentA.Tail(10), b.agentB.Tail(10))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

func probe(ctx context.Context, client *http.Client, s *scenario) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL, nil)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	if s.check != nil {
		return s.check(resp)
	}
	return nil
}

func wantNode(name string) func(*http.Response) error {
	return func(r *http.Response) error {
		if got := r.Header.Get("X-Loadmesh-Node"); got != name {
			return fmt.Errorf("served by %q, want %q", got, name)
		}
		return nil
	}
}

// haproxyConfig is one HAProxy hop: 2 threads like the agents' 2 cores,
// keep-alive on both sides, connections to the next hop reused across
// client connections (as loadmesh keeps one QUIC connection per peer), and
// X-Forwarded-For added as loadmesh does.
func haproxyConfig(bind, bindOpts, server, serverOpts string) string {
	return fmt.Sprintf(`global
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
    bind %s %s
    default_backend be
backend be
    http-reuse always
    server next %s %s
`, bind, bindOpts, server, serverOpts)
}

// warmUp runs each path briefly so that connection pools, the QUIC
// connection and the Go heaps are in their steady state.
func (b *bench) warmUp(ctx context.Context) {
	fmt.Println("warming up")
	for _, s := range b.scen {
		if _, err := b.loader.run(ctx, s.URL, slices.Max(b.cfg.conns), time.Second); err != nil {
			fmt.Println("warm-up", s.Key, err)
		}
	}
}

// runRounds measures every scenario at every connection count, rounds
// times, rotating the order each round so that slow drifts of a shared
// machine spread over all rows.
func (b *bench) runRounds(ctx context.Context) error {
	type job struct {
		s     *scenario
		conns int
	}
	var jobs []job
	for _, c := range b.cfg.conns {
		for _, s := range b.scen {
			jobs = append(jobs, job{s, c})
		}
	}
	for r := range b.cfg.rounds {
		fmt.Printf("round %d/%d\n", r+1, b.cfg.rounds)
		for i := range jobs {
			j := jobs[(i+r*(len(b.scen)+1))%len(jobs)]
			if ctx.Err() != nil {
				return ctx.Err()
			}
			cpu0 := procsCPU(j.s.Procs)
			res, err := b.loader.run(ctx, j.s.URL, j.conns, b.cfg.duration)
			if err != nil {
				return fmt.Errorf("%s c=%d: %w", j.s.Key, j.conns, err)
			}
			smp := sample{loadResult: res, CPU: procsCPU(j.s.Procs) - cpu0}
			b.results[runKey{j.s.Key, j.conns}] = append(b.results[runKey{j.s.Key, j.conns}], smp)
			fmt.Printf("  %-12s c=%-3d %8.0f req/s  p50 %7.2f ms  p99 %7.2f ms  proxy CPU %6.1f µs/req  errors %d\n",
				j.s.Key, j.conns, res.RPS, ms(res.P50), ms(res.P99), cpuPerReq(smp), res.Errors)
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

func procsCPU(ps []*benchproc.Proc) float64 {
	var t float64
	for _, p := range ps {
		v, _ := benchproc.CPUSeconds(p.PID())
		t += v
	}
	return t
}

func cpuPerReq(s sample) float64 {
	if s.Requests == 0 {
		return 0
	}
	return s.CPU / float64(s.Requests) * 1e6
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// runBulk moves cfg.bulkSize bytes through the two-hop paths.
func (b *bench) runBulk(ctx context.Context) {
	var cases []bulkCase
	for _, s := range b.scen {
		switch s.Key {
		case "twohop":
			for _, k := range []string{"download", "upload", "echo"} {
				cases = append(cases, bulkCase{Path: s.Name, Kind: k, URL: strings.TrimSuffix(s.URL, "/"),
					Procs: s.Procs, Labels: []string{"agent A", "agent B"}})
			}
		case "haproxy2":
			for _, k := range []string{"download", "upload"} {
				cases = append(cases, bulkCase{Path: "HAProxy → HAProxy (plain)", Kind: k, URL: strings.TrimSuffix(s.URL, "/"),
					Procs: s.Procs, Labels: []string{"front HAProxy", "back HAProxy"}})
			}
		}
	}
	for _, c := range cases {
		if ctx.Err() != nil {
			return
		}
		fmt.Printf("%s of %d bytes through %s … ", c.Kind, b.cfg.bulkSize, c.Path)
		r := runBulk(ctx, c, b.cfg.bulkSize, b.cfg.bulkTimeout)
		b.bulk = append(b.bulk, r)
		if r.Err != nil {
			fmt.Printf("FAILED after %.1fs: %v\n", r.Seconds, r.Err)
			continue
		}
		fmt.Printf("%.1fs, %.0f MiB/s", r.Seconds, r.MiBps())
		for i, l := range r.Labels {
			fmt.Printf(", %s RSS %d→%d KiB (+%.1f MiB)", l, r.Before[i], r.Peak[i], float64(r.Peak[i]-r.Before[i])/1024)
		}
		fmt.Println()
	}
}

// runProfile samples the agents with perf during one extra run of the
// two-hop path (both agents) and one of the local path (agent B), at the
// highest connection count; these runs are not part of the medians.
func (b *bench) runProfile(ctx context.Context) {
	conns := slices.Max(b.cfg.conns)
	for _, x := range b.scen {
		var targets []*benchproc.Proc
		switch x.Key {
		case "twohop":
			targets = []*benchproc.Proc{b.agentA, b.agentB}
		case "local":
			targets = []*benchproc.Proc{b.agentB}
		default:
			continue
		}
		fmt.Printf("profiling %s with perf during a %s run at c=%d\n", x.Name, b.cfg.duration, conns)
		var recs []*perfRecorder
		for _, p := range targets {
			label := x.Key + ": " + agentRole(x.Key, p == b.agentA)
			r, err := startPerf(ctx, b.perf, label, p.PID(), filepath.Join(b.cfg.workDir, x.Key+"-"+p.Name+".perf.data"), b.cfg.duration+2*time.Second)
			if err != nil {
				b.note("perf record failed: " + err.Error())
				return
			}
			recs = append(recs, r)
		}
		time.Sleep(500 * time.Millisecond)
		res, err := b.loader.run(ctx, x.URL, conns, b.cfg.duration)
		rps := 0.0
		if err == nil {
			rps = res.RPS
		}
		for _, r := range recs {
			p := r.wait(ctx)
			p.RPS, p.Conns = rps, conns
			if p.Err != nil {
				b.note(fmt.Sprintf("perf for %s failed: %v", p.Label, p.Err))
			}
			b.profiles = append(b.profiles, p)
		}
	}
}

func agentRole(key string, isA bool) string {
	switch {
	case key == "local":
		return "agent B serving from its own backend"
	case isA:
		return "agent A (ingress-only, forwards over QUIC)"
	default:
		return "agent B (QUIC server, proxies to its backend)"
	}
}

func firstLine(cmd *exec.Cmd) string {
	out, _ := cmd.CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}
