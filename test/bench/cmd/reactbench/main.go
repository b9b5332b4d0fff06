// Command reactbench measures how fast loadmesh's autoscaler reacts on a
// real cluster, run by `make bench-autoscale` and by test/bench/run.sh
// after lmbench and schedbench.
//
// Each run starts a fresh cluster of four agents (a, b, c, d) as separate
// processes on loopback, each fronting its own `loadmesh backend`, with
// mutual TLS. Nodes c and d are drained by hand into standby, then a plan
// with a 1 s control interval, min 2 and max 4 active nodes and an
// inflight_utilisation target is applied. Open-loop constant-rate load
// (GET /?sleep=50ms) through the ingresses of a and b is low (utilisation
// about 0.4), then steps to about twice the target, then falls back.
// Measured: when the leader's view first shows the breach, when the
// autoscaler decides, when c or d first answers a request, when the
// autoscaler scales in after the fall, and every failed request.
//
// The results go to stdout and into the section "## Reaction on a real
// cluster" of docs/autoscaling.md. Every load phase is bounded in time and
// count, the whole program by -budget; every process is tracked by PID,
// stopped after its run, and dies with this program (Pdeathsig).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

type config struct {
	bin, workDir, doc, pidFile, version string

	runs          int
	capacity      int
	sleep         time.Duration
	lowUtil       float64
	highUtil      float64
	interval      time.Duration
	target        float64
	tolerance     float64
	stabilisation time.Duration
	low, high     time.Duration
	tail          time.Duration
	reqTimeout    time.Duration
	budget        time.Duration
}

func main() {
	var cfg config
	flag.StringVar(&cfg.bin, "bin", "bin/loadmesh", "loadmesh binary")
	flag.StringVar(&cfg.workDir, "work", "", "scratch directory, kept (default: a new temporary one, removed at exit)")
	flag.StringVar(&cfg.doc, "doc", "docs/autoscaling.md", `markdown file whose section "## Reaction on a real cluster" is replaced (added if missing); empty: none`)
	flag.StringVar(&cfg.pidFile, "pidfile", "", "append the PID of every started process to this file")
	flag.StringVar(&cfg.version, "version", "", "loadmesh version string for the report")
	flag.IntVar(&cfg.runs, "runs", 7, "runs that measure a reaction, each on a fresh cluster (a run whose low phase already scaled out is reported and repeated, up to twice this many runs); medians and maxima are reported")
	flag.IntVar(&cfg.capacity, "capacity", 20, "--capacity of every agent")
	flag.DurationVar(&cfg.sleep, "sleep", 50*time.Millisecond, "backend time per request (?sleep=)")
	flag.Float64Var(&cfg.lowUtil, "low-util", 0.4, "nominal in-flight utilisation of the two active nodes before and after the step")
	flag.Float64Var(&cfg.highUtil, "high-util", 1.4, "nominal in-flight utilisation of the two active nodes during the step")
	flag.DurationVar(&cfg.interval, "interval", time.Second, "plan: control interval")
	flag.Float64Var(&cfg.target, "target", 0.7, "plan: targets.inflight_utilisation")
	flag.Float64Var(&cfg.tolerance, "tolerance", 0.1, "plan: tolerance")
	flag.DurationVar(&cfg.stabilisation, "stabilisation", 20*time.Second, "plan: scale_in.stabilisation")
	flag.DurationVar(&cfg.low, "low", 8*time.Second, "length of the low phase before the step")
	flag.DurationVar(&cfg.high, "high", 8*time.Second, "length of the step")
	flag.DurationVar(&cfg.tail, "tail", 2*time.Second, "low load kept after the plan is back at two active nodes")
	flag.DurationVar(&cfg.reqTimeout, "request-timeout", 10*time.Second, "client timeout of one request (a timeout is a failed request)")
	flag.DurationVar(&cfg.budget, "budget", 9*time.Minute, "whole program: no run starts that would likely end after it; hard stop 30s after it")
	dieWithParent := flag.Bool("die-with-parent", false, "get SIGTERM when the parent process dies (for test/bench/run.sh)")
	flag.Parse()
	if *dieWithParent {
		if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0); e != 0 {
			fmt.Fprintln(os.Stderr, "reactbench: prctl(PR_SET_PDEATHSIG):", e)
		}
		if os.Getppid() == 1 {
			os.Exit(1)
		}
	}
	if cfg.runs < 1 || cfg.capacity < 1 || cfg.sleep < time.Millisecond || cfg.lowUtil <= 0 || cfg.highUtil <= cfg.lowUtil ||
		cfg.interval < time.Second || cfg.low < 3*time.Second || cfg.high < 2*time.Second || cfg.reqTimeout < time.Second ||
		cfg.highUtil*float64(2*cfg.capacity)/cfg.sleep.Seconds() > 5000 {
		fmt.Fprintln(os.Stderr, "reactbench: bad flags (runs, capacity ≥ 1; sleep ≥ 1ms; 0 < low-util < high-util; interval ≥ 1s; low ≥ 3s; high ≥ 2s; request-timeout ≥ 1s; at most 5000 req/s)")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	ctx, cancel := context.WithTimeout(ctx, cfg.budget+30*time.Second)
	err := run(ctx, cfg)
	cancel()
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "reactbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config) error {
	started := time.Now()
	if cfg.workDir == "" {
		dir, err := os.MkdirTemp("", "reactbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cfg.workDir = dir
	}
	bin, err := filepath.Abs(cfg.bin)
	if err != nil {
		return err
	}
	cfg.bin = bin
	info := readMachineInfo(cfg.version)
	fmt.Print(info.text())
	fmt.Printf("plan:\n%s", planYAML(cfg, "auto"))
	fmt.Printf("load: %.0f req/s (utilisation %.2f) for %s + U(0, interval), %.0f req/s (%.2f) for %s, then %.0f req/s until back at 2 active + %s; GET /?sleep=%s\n",
		cfg.rate(cfg.lowUtil, 2), cfg.lowUtil, cfg.low, cfg.rate(cfg.highUtil, 2), cfg.highUtil, cfg.high, cfg.rate(cfg.lowUtil, 2), cfg.tail, cfg.sleep)
	if err := makeTLS(ctx, cfg.bin, filepath.Join(cfg.workDir, "tls")); err != nil {
		return err
	}
	var results []runResult
	var notes []string
	var longest time.Duration
	valid := 0
	for n := 1; valid < cfg.runs && n <= 2*cfg.runs; n++ {
		if left := cfg.budget - time.Since(started); longest > 0 && left < longest+longest/5 {
			notes = append(notes, fmt.Sprintf("stopped after %d runs (%d of the %d wanted measured a reaction): %s left of the %s budget, a run took up to %s",
				n-1, valid, cfg.runs, left.Round(time.Second), cfg.budget, longest.Round(time.Second)))
			fmt.Println("note:", notes[len(notes)-1])
			break
		}
		t := time.Now()
		res, err := runOnce(ctx, cfg, n)
		longest = max(longest, time.Since(t))
		if err != nil {
			if ctx.Err() != nil {
				if len(results) == 0 || !errors.Is(ctx.Err(), context.DeadlineExceeded) {
					return fmt.Errorf("run %d: %w", n, err)
				}
				notes = append(notes, fmt.Sprintf("run %d was cut off by the hard time limit", n))
				break
			}
			notes = append(notes, fmt.Sprintf("run %d failed before measuring: %v", n, err))
			fmt.Println("note:", notes[len(notes)-1])
			continue
		}
		fmt.Printf("%s (%s)\n", res.line(cfg), time.Since(t).Round(time.Second))
		results = append(results, res)
		if res.valid() {
			valid++
		}
	}
	if len(results) == 0 {
		return errors.New("no run completed")
	}
	info.Elapsed = time.Since(started)
	info.LoadEnd = loadAvg()
	md := markdown(cfg, info, results, notes)
	fmt.Println()
	fmt.Println(md)
	if cfg.doc != "" {
		if err := writeDoc(cfg.doc, md); err != nil {
			return err
		}
		fmt.Println("wrote", cfg.doc)
	}
	return nil
}
