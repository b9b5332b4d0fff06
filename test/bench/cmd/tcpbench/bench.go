package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/loadmesh/loadmesh/test/bench/internal/benchproc"
)

const (
	pathLoadmesh = "loadmesh"
	pathHAProxy  = "haproxy"
	pathDirect   = "direct"
)

// path is one way from the client to the backends.
type path struct {
	Key    string
	Name   string
	Addr   map[string]string // service → address the client dials
	Procs  []*benchproc.Proc // proxy processes whose CPU and RSS count
	Labels []string          // one per Procs entry
	API    []string          // agents' API addresses (loadmesh only)
}

// cpuSample is the CPU the path's proxies used during one run, seconds.
type rateSample struct {
	rateResult
	CPU float64
}

type bulkSample struct {
	bulkResult
	CPU       float64
	ExtraPeak []int64 // KiB of peak RSS above the RSS before, per proc
}

type rttSample struct {
	rttResult
	CPU float64
}

// memSample is one idle-connection run: RSS (KiB) of each proxy before
// the connections, with them open and idle, after each has echoed
// idleEcho bytes and gone idle again, and after they were closed.
type memSample struct {
	Conns                        int
	Before, Idle, Active, Closed []int64
	OpenAfterClose               int // open connections the agents still report (-1: unknown)
	Err                          string
}

type bench struct {
	cfg config
	// ps holds the backends, which run for the whole benchmark.
	ps *benchproc.Procs
	// proxies holds the current generation of HAProxy and the agents:
	// they are started afresh before each memory run (see restart).
	proxies   *benchproc.Procs
	gens      []*benchproc.Procs
	genProcs  []*benchproc.Proc
	gen       int
	ports     benchproc.Ports
	beAddr    map[string]string
	agentTLS  string // directory of the cluster CA and node certificates
	info      machineInfo
	haproxy   string
	paths     []*path
	lm        *path
	tlsClient *tls.Config
	notes     []string
	started   time.Time

	rate      map[string][]rateSample
	up, down  map[string][]bulkSample
	rtt       map[string][]rttSample
	mem       map[string][]memSample
	halfClose map[string]string // "" when it works, else what happened

	statusEnd []agentStatus
	// errByMeasure counts the agents' service errors during each
	// measure: measure → "agent X: kind" → count.
	errByMeasure map[string]map[string]float64
	leakCheck    string
}

func run(ctx context.Context, cfg config) error {
	b := &bench{cfg: cfg, started: time.Now(),
		rate: map[string][]rateSample{}, up: map[string][]bulkSample{}, down: map[string][]bulkSample{},
		rtt: map[string][]rttSample{}, mem: map[string][]memSample{}, halfClose: map[string]string{}}
	if cfg.workDir == "" {
		dir, err := os.MkdirTemp("", "tcpbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		b.cfg.workDir = dir
	} else if err := os.MkdirAll(cfg.workDir, 0o755); err != nil {
		return err
	}
	bin, err := filepath.Abs(cfg.bin)
	if err != nil {
		return err
	}
	b.cfg.bin = bin
	b.ps = &benchproc.Procs{Dir: b.cfg.workDir, PIDFile: cfg.pidFile}
	defer b.ps.Stop()
	defer func() {
		for _, g := range b.gens {
			g.Stop()
		}
	}()

	b.info = readMachineInfo(cfg.version)
	fmt.Print(b.info.text())
	if b.want(pathHAProxy) {
		if p, err := exec.LookPath("haproxy"); err == nil {
			b.haproxy = p
			b.info.HAProxy = firstLine(exec.Command(p, "-v"))
		} else {
			b.note("HAProxy is not installed: the HAProxy rows, and so every ratio and target, are skipped")
		}
	}
	if b.want(pathLoadmesh) {
		out, _ := exec.CommandContext(ctx, bin, "agent", "--help").CombinedOutput()
		if !strings.Contains(string(out), "--service") {
			return fmt.Errorf("%s agent has no --service flag: this build has no TCP services to measure", bin)
		}
	}

	if err := b.setup(ctx); err != nil {
		return err
	}
	fmt.Printf("setup done in %s\n", time.Since(b.started).Round(time.Millisecond))
	b.checkHalfClose(ctx)
	if err := b.runRounds(ctx); err != nil {
		return err
	}
	if b.lm != nil {
		b.leakCheck = b.waitReleased(ctx, 10*time.Second)
		b.statusEnd = b.agentStatuses(ctx)
	}
	b.info.LoadEnd = loadAvg()
	b.info.Elapsed = time.Since(b.started)
	fmt.Println()
	fmt.Print(b.textReport())
	if cfg.doc != "" && ctx.Err() == nil {
		if err := writeDoc(cfg.doc, b.markdown()); err != nil {
			return err
		}
		fmt.Println("wrote the tcpbench section of", cfg.doc)
	}
	return ctx.Err()
}

func (b *bench) want(key string) bool {
	for _, p := range b.cfg.paths {
		if p == key {
			return true
		}
	}
	return false
}

func (b *bench) note(s string) {
	fmt.Println("note:", s)
	b.notes = append(b.notes, s)
}

// setup starts the backends, then the first generation of proxies.
func (b *bench) setup(ctx context.Context) error {
	dir := b.cfg.workDir
	b.ports = benchproc.Ports{}

	// Backends, in a subprocess of their own.
	certPEM, keyPEM, err := selfSigned()
	if err != nil {
		return err
	}
	if b.tlsClient, err = clientTLSConfig(certPEM); err != nil {
		return err
	}
	certFile, keyFile := filepath.Join(dir, "backend.pem"), filepath.Join(dir, "backend-key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return err
	}
	b.beAddr = map[string]string{}
	args := []string{"backend", "-tls-cert", certFile, "-tls-key", keyFile}
	for _, s := range services {
		if b.beAddr[s], err = b.port(); err != nil {
			return err
		}
		args = append(args, "-"+s, b.beAddr[s])
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if _, err := b.ps.Start("backends", self, args...); err != nil {
		return err
	}
	// The backends must answer before anything is put in front of them.
	if err := b.waitPath(ctx, &path{Key: "backends", Name: "backends", Addr: b.beAddr}, 15*time.Second); err != nil {
		return err
	}
	if b.want(pathLoadmesh) {
		if err := b.makeAgentTLS(ctx); err != nil {
			return err
		}
	}
	return b.startProxies(ctx)
}

func (b *bench) port() (string, error) {
	n, err := b.ports.Next()
	return benchproc.Addr(n), err
}

// startProxies starts a new generation of HAProxy and the two agents, on
// new ports with new data directories, and waits until every service
// answers on every path.
func (b *bench) startProxies(ctx context.Context) error {
	b.gen++
	dir := filepath.Join(b.cfg.workDir, fmt.Sprintf("gen%d", b.gen))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b.proxies = &benchproc.Procs{Dir: dir, PIDFile: b.cfg.pidFile}
	b.gens = append(b.gens, b.proxies)
	b.genProcs = nil
	b.paths, b.lm = nil, nil
	if b.want(pathDirect) {
		b.paths = append(b.paths, &path{Key: pathDirect, Name: "backend directly (no proxy)", Addr: b.beAddr})
	}
	if b.haproxy != "" {
		hp := &path{Key: pathHAProxy, Name: "HAProxy (mode tcp) → backend", Addr: map[string]string{}, Labels: []string{"HAProxy"}}
		var ls []haproxyListen
		for _, s := range services {
			var err error
			if hp.Addr[s], err = b.port(); err != nil {
				return err
			}
			ls = append(ls, haproxyListen{Name: s, Bind: hp.Addr[s], Server: b.beAddr[s]})
		}
		cfgPath := filepath.Join(dir, "haproxy.cfg")
		conf := haproxyConfig(runtime.NumCPU(), max(4000, b.cfg.idle+b.cfg.workers+1000), ls)
		if err := os.WriteFile(cfgPath, []byte(conf), 0o644); err != nil {
			return err
		}
		p, err := b.proxies.Start("haproxy", b.haproxy, "-db", "-f", cfgPath)
		if err != nil {
			return err
		}
		hp.Procs = []*benchproc.Proc{p}
		b.genProcs = append(b.genProcs, p)
		b.paths = append(b.paths, hp)
	}
	if b.want(pathLoadmesh) {
		lm, err := b.startAgents(dir)
		if err != nil {
			return err
		}
		b.lm = lm
		b.paths = append(b.paths, lm)
	}
	for _, p := range b.paths {
		if err := b.waitPath(ctx, p, 60*time.Second); err != nil {
			return err
		}
	}
	if b.lm != nil {
		if err := b.checkPlacement(ctx); err != nil {
			return err
		}
	}
	return nil
}

// restart replaces HAProxy and the agents by fresh processes (SIGKILL,
// by PID), so that a memory run measures what its connections add to a
// process that has not yet grown a heap or pools for earlier runs: a Go
// runtime, like HAProxy's pools, keeps freed memory and reuses it, which
// would hide the cost of later runs' connections.
func (b *bench) restart(ctx context.Context) error {
	for _, p := range b.genProcs {
		if err := p.Kill(); err != nil {
			return err
		}
	}
	t0 := time.Now()
	if err := b.startProxies(ctx); err != nil {
		return err
	}
	fmt.Printf("  fresh HAProxy and agents (generation %d) ready in %s\n", b.gen, time.Since(t0).Round(time.Millisecond))
	return nil
}

// makeAgentTLS creates the cluster CA and the certificates of nodes a
// and b, as lmbench does.
func (b *bench) makeAgentTLS(ctx context.Context) error {
	tlsDir := filepath.Join(b.cfg.workDir, "tls")
	b.agentTLS = tlsDir
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
	return nil
}

// startAgents starts a two-node cluster with mutual TLS, as lmbench does:
// B offers every service (backend only), A listens for every service (no
// backend), so every connection through A is relayed to B.
func (b *bench) startAgents(dir string) (*path, error) {
	tlsDir := b.agentTLS
	type agentPorts struct{ gossip, raft, peer, http, api string }
	var ports []string
	for range 10 + len(services) {
		p, err := b.port()
		if err != nil {
			return nil, err
		}
		ports = append(ports, p)
	}
	pa := agentPorts{ports[0], ports[1], ports[2], ports[3], ports[4]}
	pb := agentPorts{ports[5], ports[6], ports[7], ports[8], ports[9]}
	agentArgs := func(name string, p agentPorts) []string {
		return []string{"agent", "--name", name, "--data-dir", filepath.Join(dir, "data-"+name),
			"--gossip", p.gossip, "--raft", p.raft, "--peer", p.peer,
			"--http", p.http, "--api", p.api, "--bootstrap-expect", "2",
			"--tls-ca", filepath.Join(tlsDir, "loadmesh-ca.pem"), "--tls-cert", filepath.Join(tlsDir, name+".pem"),
			"--tls-key", filepath.Join(tlsDir, name+"-key.pem"), "--log-level", "warn"}
	}
	lm := &path{Key: pathLoadmesh, Name: "loadmesh A → QUIC+mTLS → B → backend", Addr: map[string]string{},
		Labels: []string{"agent A", "agent B"}, API: []string{pa.api, pb.api}}
	argsA, argsB := agentArgs("a", pa), agentArgs("b", pb)
	for i, s := range services {
		lm.Addr[s] = ports[10+i]
		argsB = append(argsB, "--service", serviceSpec(s, "", b.beAddr[s], b.cfg.serviceOpts))
		argsA = append(argsA, "--service", serviceSpec(s, lm.Addr[s], "", b.cfg.serviceOpts))
	}
	argsA = append(argsA, "--join", pb.gossip)
	pB, err := b.proxies.Start("agent-b", b.cfg.bin, argsB...)
	if err != nil {
		return nil, err
	}
	b.genProcs = append(b.genProcs, pB)
	pA, err := b.proxies.Start("agent-a", b.cfg.bin, argsA...)
	if err != nil {
		return nil, err
	}
	b.genProcs = append(b.genProcs, pA)
	lm.Procs = []*benchproc.Proc{pA, pB}
	return lm, nil
}

// serviceSpec is the value of one --service flag: listen only, or
// backend only (with a TCP health check of that backend).
func serviceSpec(name, listen, backend, extra string) string {
	parts := []string{"name=" + name, "mode=tcp"}
	if listen != "" {
		parts = append(parts, "listen="+listen)
	}
	if backend != "" {
		parts = append(parts, "backend="+backend, "health=tcp://"+backend)
	}
	if extra = strings.Trim(extra, ", "); extra != "" {
		parts = append(parts, extra)
	}
	return strings.Join(parts, ",")
}

// waitPath waits until every service of p answers end to end.
func (b *bench) waitPath(ctx context.Context, p *path, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for _, s := range services {
		for {
			err := probe(ctx, s, p.Addr[s], b.tlsClient)
			if err == nil {
				break
			}
			if derr := b.deadProc(); derr != nil {
				return derr
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				msg := fmt.Sprintf("%s: service %s (%s) not answering after %s: %v", p.Name, s, p.Addr[s], limit, err)
				for _, pr := range p.Procs {
					msg += fmt.Sprintf("\n%s log:\n%s", pr.Name, pr.Tail(15))
				}
				return errors.New(msg)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

// checkHalfClose records, per path, whether a client's half-close
// reaches the backend and the backend's comes back.
func (b *bench) checkHalfClose(ctx context.Context) {
	for _, p := range b.paths {
		err := halfClose(ctx, p.Addr[svcEcho])
		if err != nil {
			b.halfClose[p.Key] = err.Error()
			fmt.Printf("half-close through %s: %v\n", p.Key, err)
		} else {
			b.halfClose[p.Key] = ""
		}
	}
}

// warmUp runs each measure briefly through each proxy (not recorded),
// so that fresh processes reach their steady state.
func (b *bench) warmUp(ctx context.Context) {
	for _, p := range b.paths {
		if len(p.Procs) == 0 {
			continue
		}
		connRate(ctx, p.Addr[svcEcho], b.cfg.workers, 200*time.Millisecond, b.cfg.maxConns)
		if b.cfg.bulkSize > 0 {
			upload(ctx, p.Addr[svcSink], min(b.cfg.bulkSize, 8<<20), b.cfg.bulkTimeout)
			download(ctx, p.Addr[svcSource], min(b.cfg.bulkSize, 8<<20), b.cfg.bulkTimeout)
		}
		tlsRTT(ctx, p.Addr[svcTLSEcho], b.tlsClient, b.cfg.rttSize, 0, 200, b.cfg.rttTimeout)
	}
	time.Sleep(200 * time.Millisecond)
}

// runRounds measures every path, rounds times, rotating the order of the
// paths each round so that slow drifts of a shared machine spread over
// all of them.
func (b *bench) runRounds(ctx context.Context) error {
	pause := func() { time.Sleep(200 * time.Millisecond) }
	for r := range b.cfg.rounds {
		fmt.Printf("round %d/%d (load avg %s)\n", r+1, b.cfg.rounds, loadAvg())
		// The memory run comes first, on fresh proxies (see restart);
		// without it the proxies live through every round.
		if b.cfg.idle > 0 && r > 0 {
			if err := b.restart(ctx); err != nil {
				return err
			}
		}
		order := rotate(b.paths, r)
		if b.cfg.idle > 0 {
			for _, p := range order {
				if len(p.Procs) == 0 {
					continue
				}
				if err := b.alive(ctx); err != nil {
					return err
				}
				done := b.errMark(ctx, p, "memory")
				s := b.runMem(ctx, p)
				done()
				b.mem[p.Key] = append(b.mem[p.Key], s)
				fmt.Printf("  %-8s memory   %s%s\n", p.Key, b.memText(p, s), firstErr(s.Err))
			}
		}
		if b.cfg.idle > 0 || r == 0 {
			b.warmUp(ctx)
		}
		for _, p := range order {
			if err := b.alive(ctx); err != nil {
				return err
			}
			done := b.errMark(ctx, p, "set-up")
			cpu0 := procsCPU(p.Procs)
			res := connRate(ctx, p.Addr[svcEcho], b.cfg.workers, b.cfg.duration, b.cfg.maxConns)
			s := rateSample{rateResult: res, CPU: procsCPU(p.Procs) - cpu0}
			done()
			b.rate[p.Key] = append(b.rate[p.Key], s)
			fmt.Printf("  %-8s set-up   %8.0f conns/s  p50 %6.0f µs  p99 %6.0f µs  proxy CPU %5.0f µs/conn  errors %d  timeouts %d%s\n",
				p.Key, res.PerSec(), us(res.P50), us(res.P99), perOp(s.CPU, res.Conns), res.Errors, res.Timeouts, firstErr(res.FirstErr))
			pause()
		}
		if b.cfg.bulkSize > 0 {
			for _, dir := range []string{"upload", "download"} {
				for _, p := range order {
					if err := b.alive(ctx); err != nil {
						return err
					}
					done := b.errMark(ctx, p, dir)
					s := b.runBulk(ctx, p, dir)
					done()
					if dir == "upload" {
						b.up[p.Key] = append(b.up[p.Key], s)
					} else {
						b.down[p.Key] = append(b.down[p.Key], s)
					}
					fmt.Printf("  %-8s %-8s %8.1f MB/s  %5.1f s  proxy CPU %5.2f s/GB%s%s\n", p.Key, dir, s.MBps(), s.Seconds,
						perGB(s.CPU, s.Bytes), peakText(p, s.ExtraPeak), firstErr(s.Err))
					pause()
				}
			}
		}
		for _, p := range order {
			if err := b.alive(ctx); err != nil {
				return err
			}
			done := b.errMark(ctx, p, "TLS round trips")
			cpu0 := procsCPU(p.Procs)
			res := tlsRTT(ctx, p.Addr[svcTLSEcho], b.tlsClient, b.cfg.rttSize, b.cfg.rttWarm, b.cfg.rttN, b.cfg.rttTimeout)
			s := rttSample{rttResult: res, CPU: procsCPU(p.Procs) - cpu0}
			done()
			b.rtt[p.Key] = append(b.rtt[p.Key], s)
			fmt.Printf("  %-8s TLS rtt  p50 %6.0f µs  p99 %6.0f µs  p99.9 %6.0f µs  max %6.0f µs  handshake %5.1f ms%s\n",
				p.Key, us(res.P50), us(res.P99), us(res.P999), us(res.Max), ms(res.Handshake), firstErr(res.Err))
			pause()
		}
	}
	return ctx.Err()
}

// alive fails when the run was interrupted or a started process died.
func (b *bench) alive(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.deadProc()
}

// deadProc names a started process of the current generation (or a
// backend) that has exited.
func (b *bench) deadProc() error {
	if err := b.ps.Dead(); err != nil {
		return err
	}
	if b.proxies != nil {
		return b.proxies.Dead()
	}
	return nil
}

func firstErr(s string) string {
	if s == "" {
		return ""
	}
	return "  ERROR: " + s
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func perOp(cpu float64, n int64) float64 {
	if n == 0 {
		return 0
	}
	return cpu / float64(n) * 1e6
}

func perGB(cpu float64, bytes int64) float64 {
	if bytes == 0 {
		return 0
	}
	return cpu / (float64(bytes) / 1e9)
}

func procsCPU(ps []*benchproc.Proc) float64 {
	var t float64
	for _, p := range ps {
		v, _ := benchproc.CPUSeconds(p.PID())
		t += v
	}
	return t
}

func procsRSS(ps []*benchproc.Proc) []int64 {
	out := make([]int64, len(ps))
	for i, p := range ps {
		out[i], _, _ = benchproc.MemKiB(p.PID())
	}
	return out
}

// runBulk moves cfg.bulkSize bytes one way through p over one connection
// while it samples the RSS of p's proxies.
func (b *bench) runBulk(ctx context.Context, p *path, dir string) bulkSample {
	before := procsRSS(p.Procs)
	peak := make([]int64, len(p.Procs))
	copy(peak, before)
	for _, pr := range p.Procs {
		_ = benchproc.ResetPeakRSS(pr.PID())
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	wg.Go(func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			now := procsRSS(p.Procs)
			mu.Lock()
			for i := range now {
				peak[i] = max(peak[i], now[i])
			}
			mu.Unlock()
		}
	})
	cpu0 := procsCPU(p.Procs)
	var res bulkResult
	if dir == "upload" {
		res = upload(ctx, p.Addr[svcSink], b.cfg.bulkSize, b.cfg.bulkTimeout)
	} else {
		res = download(ctx, p.Addr[svcSource], b.cfg.bulkSize, b.cfg.bulkTimeout)
	}
	cpu := procsCPU(p.Procs) - cpu0
	close(stop)
	wg.Wait()
	s := bulkSample{bulkResult: res, CPU: cpu, ExtraPeak: make([]int64, len(p.Procs))}
	for i, pr := range p.Procs {
		if _, hwm, err := benchproc.MemKiB(pr.PID()); err == nil {
			peak[i] = max(peak[i], hwm)
		}
		s.ExtraPeak[i] = peak[i] - before[i]
	}
	return s
}

func peakText(p *path, extra []int64) string {
	var parts []string
	for i, l := range p.Labels {
		if i < len(extra) {
			parts = append(parts, fmt.Sprintf("%s +%.1f MiB", l, float64(extra[i])/1024))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "  peak RSS " + strings.Join(parts, ", ")
}

// runMem holds cfg.idle connections open through p and reads the RSS of
// p's proxies before, with them idle, after each echoed cfg.idleEcho
// bytes, and after they were closed.
func (b *bench) runMem(ctx context.Context, p *path) memSample {
	s := memSample{Conns: b.cfg.idle, OpenAfterClose: -1}
	time.Sleep(b.cfg.settle)
	s.Before = procsRSS(p.Procs)
	set, err := openIdle(ctx, p.Addr[svcEcho], b.cfg.idle, 16)
	defer set.Close()
	if err != nil {
		s.Err = "opening: " + err.Error()
		return s
	}
	time.Sleep(b.cfg.settle)
	s.Idle = procsRSS(p.Procs)
	if b.cfg.idleEcho > 0 {
		if err := set.echoEach(ctx, b.cfg.idleEcho, 16); err != nil {
			s.Err = fmt.Sprintf("echoing %d bytes: %v", b.cfg.idleEcho, err)
			return s
		}
		time.Sleep(b.cfg.settle)
		s.Active = procsRSS(p.Procs)
	}
	set.Close()
	if p.Key == pathLoadmesh {
		s.OpenAfterClose = b.openConns(ctx, 10*time.Second)
	} else {
		time.Sleep(b.cfg.settle)
	}
	s.Closed = procsRSS(p.Procs)
	return s
}

func (b *bench) memText(p *path, s memSample) string {
	var parts []string
	for i, l := range p.Labels {
		if i >= len(s.Before) || i >= len(s.Idle) {
			continue
		}
		t := fmt.Sprintf("%s %.1f KiB/conn idle", l, perConnKiB(s.Before[i], s.Idle[i], s.Conns))
		if i < len(s.Active) {
			t += fmt.Sprintf(", %.1f after %d KiB echo", perConnKiB(s.Before[i], s.Active[i], s.Conns), b.cfg.idleEcho>>10)
		}
		if i < len(s.Closed) {
			t += fmt.Sprintf(", %+.1f MiB after close", float64(s.Closed[i]-s.Before[i])/1024)
		}
		parts = append(parts, t)
	}
	if s.OpenAfterClose > 0 {
		parts = append(parts, fmt.Sprintf("%d connections still open after close", s.OpenAfterClose))
	}
	return strings.Join(parts, "; ")
}

// errMark reads the agents' service error counters before a measure on
// the loadmesh path; the returned function reads them again and adds
// the difference to errByMeasure[measure].
func (b *bench) errMark(ctx context.Context, p *path, measure string) func() {
	if p.Key != pathLoadmesh {
		return func() {}
	}
	before := serviceErrors(b.agentStatuses(ctx))
	return func() {
		after := serviceErrors(b.agentStatuses(ctx))
		if b.errByMeasure == nil {
			b.errByMeasure = map[string]map[string]float64{}
		}
		for agent, kinds := range after {
			for k, v := range kinds {
				if d := v - before[agent][k]; d > 0 {
					if b.errByMeasure[measure] == nil {
						b.errByMeasure[measure] = map[string]float64{}
					}
					b.errByMeasure[measure][agent+": "+k] += d
				}
			}
		}
	}
}
