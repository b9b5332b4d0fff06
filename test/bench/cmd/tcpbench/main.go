// Command tcpbench measures loadmesh's TCP services against HAProxy in
// `mode tcp` and the bare backend, on loopback; `make bench-tcp` (and
// `make bench`, after lmbench) runs it through test/bench/run.sh.
//
// It starts its backends as a subprocess (itself, `tcpbench backend`: an
// echo, a sink, a source and a TLS echo server), a two-node loadmesh
// cluster with mutual TLS in which node A only listens for each service
// and node B only offers it (so every connection through A is relayed
// over the QUIC peer mesh to B, which dials the backend), and one HAProxy
// in front of the same backends. In interleaved rounds it measures the
// connection set-up rate, the bytes per second of one long upload and
// one long download, the p50/p99 of a 64-byte request/response over one
// kept-alive TLS connection, and the RSS per idle connection, then prints
// a table and rewrites its own generated section of docs/benchmarks.md
// (between the tcpbench markers; lmbench's section is left alone).
//
// Every loop is bounded in count and time; every process it starts is
// tracked by PID, stopped on exit, and dies with it (Pdeathsig).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
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
	paths       []string
	rounds      int
	duration    time.Duration
	workers     int
	maxConns    int64
	bulkSize    int64
	bulkTimeout time.Duration
	rttN        int
	rttWarm     int
	rttSize     int
	rttTimeout  time.Duration
	idle        int
	idleEcho    int
	memLimitKiB float64
	serviceOpts string
	settle      time.Duration
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "backend" {
		if err := backendMain(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "tcpbench backend:", err)
			os.Exit(1)
		}
		return
	}
	var cfg config
	var paths string
	flag.StringVar(&cfg.bin, "bin", "bin/loadmesh", "loadmesh binary")
	flag.StringVar(&cfg.workDir, "work", "", "scratch directory (default: a new temporary one, removed at exit)")
	flag.StringVar(&cfg.doc, "doc", "docs/benchmarks.md", "markdown file whose tcpbench section is rewritten; empty: none")
	flag.StringVar(&cfg.pidFile, "pidfile", "", "append the PID of every started process to this file")
	flag.StringVar(&cfg.version, "version", "", "loadmesh version string for the report")
	flag.StringVar(&paths, "paths", "loadmesh,haproxy,direct", "paths to measure (loadmesh, haproxy, direct)")
	flag.IntVar(&cfg.rounds, "rounds", 5, "interleaved rounds; medians are reported")
	flag.DurationVar(&cfg.duration, "duration", 2*time.Second, "connection set-up: length of one run")
	flag.IntVar(&cfg.workers, "workers", 32, "connection set-up: concurrent workers")
	flag.Int64Var(&cfg.maxConns, "max-conns", 500_000, "connection set-up: connections per run at most")
	flag.Int64Var(&cfg.bulkSize, "bulk-size", 512<<20, "bytes of each long upload and download; 0 skips them")
	flag.DurationVar(&cfg.bulkTimeout, "bulk-timeout", 60*time.Second, "limit of one long transfer")
	flag.IntVar(&cfg.rttN, "rtt", 20000, "TLS request/response: measured round trips per run")
	flag.IntVar(&cfg.rttWarm, "rtt-warmup", 1000, "TLS request/response: unmeasured round trips first")
	flag.IntVar(&cfg.rttSize, "rtt-size", 64, "TLS request/response: bytes each way")
	flag.DurationVar(&cfg.rttTimeout, "rtt-timeout", 60*time.Second, "TLS request/response: limit of one run")
	flag.IntVar(&cfg.idle, "idle", 1000, "memory: idle connections held open per run; 0 skips the test")
	flag.IntVar(&cfg.idleEcho, "idle-echo", 64<<10, "memory: bytes echoed through each idle connection in the second phase")
	flag.Float64Var(&cfg.memLimitKiB, "mem-limit", 128, "memory: KiB of RSS per connection that each agent must stay under")
	flag.StringVar(&cfg.serviceOpts, "service-opts", "", "extra comma-separated options for every --service of both agents (e.g. balance=round-robin)")
	flag.DurationVar(&cfg.settle, "settle", 500*time.Millisecond, "memory: pause before each RSS reading")
	dieWithParent := flag.Bool("die-with-parent", false, "get SIGTERM when the parent process dies (for test/bench/run.sh)")
	flag.Parse()
	if *dieWithParent {
		// PR_SET_PDEATHSIG: should run.sh be killed, this program still
		// stops and cleans up after itself.
		if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0); e != 0 {
			fmt.Fprintln(os.Stderr, "tcpbench: prctl(PR_SET_PDEATHSIG):", e)
		}
		if os.Getppid() == 1 {
			os.Exit(1) // the parent is gone already
		}
	}
	for _, p := range strings.Split(paths, ",") {
		switch p = strings.TrimSpace(p); p {
		case pathLoadmesh, pathHAProxy, pathDirect:
			cfg.paths = append(cfg.paths, p)
		case "":
		default:
			fmt.Fprintf(os.Stderr, "tcpbench: unknown path %q in -paths\n", p)
			os.Exit(2)
		}
	}
	if err := cfg.check(); err != nil {
		fmt.Fprintln(os.Stderr, "tcpbench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	err := run(ctx, cfg)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tcpbench:", err)
		os.Exit(1)
	}
}

func (c config) check() error {
	switch {
	case len(c.paths) == 0:
		return errors.New("no path to measure")
	case c.rounds < 1:
		return errors.New("-rounds must be ≥ 1")
	case c.duration < 100*time.Millisecond || c.duration > 5*time.Minute:
		return errors.New("-duration must be between 100ms and 5m")
	case c.workers < 1 || c.workers > 4096:
		return errors.New("-workers must be between 1 and 4096")
	case c.maxConns < 1:
		return errors.New("-max-conns must be ≥ 1")
	case c.bulkSize < 0:
		return errors.New("-bulk-size must be ≥ 0")
	case c.bulkTimeout < time.Second:
		return errors.New("-bulk-timeout must be ≥ 1s")
	case c.rttN < 100 || c.rttWarm < 0 || c.rttSize < 8 || c.rttSize > 1<<20:
		return errors.New("-rtt must be ≥ 100, -rtt-warmup ≥ 0, -rtt-size between 8 and 1 MiB")
	case c.rttTimeout < time.Second:
		return errors.New("-rtt-timeout must be ≥ 1s")
	case c.idle < 0 || c.idle > 8000:
		return errors.New("-idle must be between 0 and 8000")
	case c.idleEcho < 0 || c.idleEcho > 16<<20:
		return errors.New("-idle-echo must be between 0 and 16 MiB")
	}
	return nil
}
