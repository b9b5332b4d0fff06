// Command schedbench measures loadmesh's scheduling on loopback, run by
// `make bench` (test/bench/run.sh) after lmbench. Two experiments:
//
//   - Skewed cluster: three serving agents a, b and c, each with its own
//     demo backend, c's adding -delay (25ms) to every answer. Load at a
//     fixed concurrency enters through an ingress-only agent (no backend),
//     so that the policy places every request; one ingress agent per
//     policy (p2c-ewma, weighted-round-robin, ...) joins the same cluster.
//     HAProxy with balance roundrobin and with balance leastconn in front
//     of the same three backends are measured in the same run. Rows are
//     interleaved over rounds; medians of p50, p99, requests/s and the
//     share of answers from the slow backend are reported.
//   - Failure: on a fresh cluster of the same shape (no delay), steady GET
//     load through the ingress agent, then SIGKILL of agent c (and, in a
//     second scenario, of its backend too). Every failed request is
//     counted, and the time until nothing is sent to c any more is taken
//     from a packet capture of c's QUIC port and from the ingress's
//     metrics.
//
// The results go to stdout and into the generated section of
// docs/benchmarks-scheduling.md. Every load run is bounded in time and
// count; every process is tracked by PID, killed on exit, and dies with
// this program (Pdeathsig).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type config struct {
	bin        string
	workDir    string
	doc        string
	pidFile    string
	version    string
	rounds     int
	duration   time.Duration
	warmup     time.Duration
	conns      []int
	delay      time.Duration
	capacity   int
	policies   []string
	kills      int
	killConns  int
	preKill    time.Duration
	postKill   time.Duration
	reqTimeout time.Duration
	skip       string
	trace      string
}

func main() {
	var cfg config
	var conns, policies string
	flag.StringVar(&cfg.bin, "bin", "bin/loadmesh", "loadmesh binary")
	flag.StringVar(&cfg.workDir, "work", "", "scratch directory (default: a new temporary one, removed at exit)")
	flag.StringVar(&cfg.doc, "doc", "docs/benchmarks-scheduling.md", "markdown file whose generated section is rewritten; empty: none")
	flag.StringVar(&cfg.pidFile, "pidfile", "", "append the PID of every started process to this file")
	flag.StringVar(&cfg.version, "version", "", "loadmesh version string for the report")
	flag.IntVar(&cfg.rounds, "rounds", 5, "skewed cluster: interleaved rounds per row; medians are reported")
	flag.DurationVar(&cfg.duration, "duration", 4*time.Second, "skewed cluster: length of one load run")
	flag.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "load before measuring, per row and per failure cluster")
	flag.StringVar(&conns, "conns", "32,8", "skewed cluster: comma-separated connection counts, the same for every row")
	flag.DurationVar(&cfg.delay, "delay", 25*time.Millisecond, "skewed cluster: delay added by the slow backend")
	flag.IntVar(&cfg.capacity, "capacity", 64, "--capacity of the serving agents")
	flag.StringVar(&policies, "policies", "p2c-ewma,weighted-round-robin,least-inflight", "skewed cluster: loadmesh policies, one ingress agent each (p2c-ewma and weighted-round-robin are needed for the targets)")
	flag.IntVar(&cfg.kills, "kills", 5, "failure: repetitions of each kill scenario")
	flag.IntVar(&cfg.killConns, "kill-conns", 32, "failure: connections of the steady load")
	flag.DurationVar(&cfg.preKill, "pre-kill", 3*time.Second, "failure: load before the kill")
	flag.DurationVar(&cfg.postKill, "post-kill", 8*time.Second, "failure: load after the kill")
	flag.DurationVar(&cfg.reqTimeout, "request-timeout", 10*time.Second, "failure: client timeout of one request (a timeout counts as a failed request)")
	flag.StringVar(&cfg.skip, "skip", "", "skip an experiment: skew or failure")
	flag.StringVar(&cfg.trace, "trace", "", "failure: write the ingress's polled view of c (in flight, latency estimate, member status) per repetition as CSV into this directory")
	dieWithParent := flag.Bool("die-with-parent", false, "get SIGTERM when the parent process dies (for test/bench/run.sh)")
	flag.Parse()
	if *dieWithParent {
		// PR_SET_PDEATHSIG: should run.sh be killed, this program still
		// stops and cleans up after itself.
		if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0); e != 0 {
			fmt.Fprintln(os.Stderr, "schedbench: prctl(PR_SET_PDEATHSIG):", e)
		}
		if os.Getppid() == 1 {
			os.Exit(1) // the parent is gone already
		}
	}
	for _, s := range strings.Split(conns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "schedbench: bad -conns %q\n", conns)
			os.Exit(2)
		}
		cfg.conns = append(cfg.conns, n)
	}
	for _, p := range strings.Split(policies, ",") {
		p = strings.TrimSpace(p)
		if _, ok := policyKeys[p]; !ok {
			fmt.Fprintf(os.Stderr, "schedbench: unknown policy %q\n", p)
			os.Exit(2)
		}
		cfg.policies = append(cfg.policies, p)
	}
	if cfg.rounds < 1 || cfg.kills < 0 || cfg.killConns < 1 || cfg.duration < 100*time.Millisecond ||
		cfg.preKill < time.Second || cfg.postKill < time.Second || cfg.reqTimeout < time.Second {
		fmt.Fprintln(os.Stderr, "schedbench: bad flags (rounds ≥ 1, kill-conns ≥ 1, duration ≥ 100ms, pre-kill, post-kill and request-timeout ≥ 1s)")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	err := run(ctx, cfg)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "schedbench:", err)
		os.Exit(1)
	}
}

type bench struct {
	cfg      config
	info     machineInfo
	haproxy  string
	skewRows []skewRow
	skew     map[skewKey][]stats
	kills    []killResult
	notes    []string
	started  time.Time
}

func run(ctx context.Context, cfg config) error {
	b := &bench{cfg: cfg, skew: map[skewKey][]stats{}, started: time.Now()}
	if cfg.workDir == "" {
		dir, err := os.MkdirTemp("", "schedbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		b.cfg.workDir = dir
	}
	bin, err := filepath.Abs(cfg.bin)
	if err != nil {
		return err
	}
	b.cfg.bin = bin
	b.info = readMachineInfo(cfg.version)
	fmt.Print(b.info.text())
	if p, err := exec.LookPath("haproxy"); err == nil {
		b.haproxy = p
		b.info.HAProxy = firstLine(exec.Command(p, "-v"))
		fmt.Println("haproxy:  ", b.info.HAProxy)
	} else {
		b.note("HAProxy is not installed: the HAProxy rows and the HAProxy target are skipped")
	}
	names := []string{"a", "b", "c", "in"}
	for _, p := range cfg.policies {
		names = append(names, "in-"+policyKeys[p])
	}
	if err := b.makeTLS(ctx, names); err != nil {
		return err
	}
	if cfg.skip != "skew" {
		if err := b.runSkew(ctx); err != nil {
			return fmt.Errorf("skewed cluster: %w", err)
		}
	}
	if cfg.skip != "failure" && cfg.kills > 0 {
		fmt.Printf("failure: %d repetitions of %d scenarios, %d connections, kill after %s, load until %s after it\n",
			cfg.kills, len(killScenarios), cfg.killConns, cfg.preKill, cfg.postKill)
		if err := b.runFailures(ctx); err != nil {
			return fmt.Errorf("failure: %w", err)
		}
	}
	b.info.LoadEnd = loadAvg()
	b.info.Elapsed = time.Since(b.started)
	md := b.markdown()
	fmt.Println()
	fmt.Println(md)
	if cfg.doc != "" {
		if err := writeDoc(cfg.doc, md); err != nil {
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

func firstLine(cmd *exec.Cmd) string {
	out, _ := cmd.CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}
