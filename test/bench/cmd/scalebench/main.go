// Command scalebench measures how a loadmesh cluster's costs grow with its
// size, run by `make bench-scale` (see docs/scaling.md). It starts 25, 50,
// 100 and (memory allowing) 200 complete agents in one process on
// loopback, one run per child process so that every run starts from a
// fresh Go runtime, and measures from the outside, through each agent's
// own view:
//
//   - from the last agent's start until every node lists every node alive
//     (cluster.Members, polled every 50 ms, or 100 ms above 50 nodes);
//   - until every node's Raft configuration has all N servers with
//     min(5, N) voters and the rest non-voters, and its plan all N nodes;
//   - during a steady window with nothing polled: process CPU time and
//     memberlist's sent bytes (its go-metrics counters, received by a sink
//     installed here) divided by N, and after it the live heap and RSS
//     grown since before the first agent, divided by N;
//   - a load change: requests held in flight on one agent (through its
//     ingress, served by its local backend), then released, and the time
//     until every other node's gossip view of that agent shows the new
//     in-flight figure;
//   - an abrupt Kill of one non-voter, and the time until every other
//     node lists it dead;
//   - after every agent is killed, whether the goroutines went back to
//     where they were (a leak check).
//
// Sizes are run in rounds (every size once, then again), so that a run cut
// short by -budget still has every size; each table cell is the median
// over the rounds. The machine is shared: before each run the 1-minute
// load average is checked and, above -max-load, waited on (at most
// -load-wait in all). Every child is bounded by -run-timeout and dies
// with this program.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type config struct {
	sizes      []int
	reps       int
	timers     string
	raft       string
	steady     time.Duration
	hold       int
	stagger    time.Duration
	budget     time.Duration
	maxLoad    float64
	loadWait   time.Duration
	memLimit   float64
	runTimeout time.Duration
	jsonOut    string
	logDir     string
}

func main() {
	var (
		cfg   config
		sizes string
		memGi float64
		child bool
		from  string
		n     int
		rep   int
	)
	flag.StringVar(&sizes, "sizes", "25,50,100,200", "cluster sizes, comma-separated")
	flag.IntVar(&cfg.reps, "reps", 3, "runs per size (rounds)")
	flag.StringVar(&cfg.timers, "timers", "prod", "gossip timers: prod (cluster.DefaultConfig) or fast (test/harness.FastTimers)")
	flag.StringVar(&cfg.raft, "raft", "relaxed", "Raft timers: prod (500/500/250ms) or relaxed (2s/2s/1s, for many agents sharing few cores)")
	flag.DurationVar(&cfg.steady, "steady", 20*time.Second, "steady window for CPU, bandwidth and memory")
	flag.IntVar(&cfg.hold, "hold", 8, "requests held in flight on one agent for the load change")
	flag.DurationVar(&cfg.stagger, "stagger", 10*time.Millisecond, "pause between agent starts")
	flag.DurationVar(&cfg.budget, "budget", 14*time.Minute, "total time for runs; a run that would not fit is skipped")
	flag.Float64Var(&cfg.maxLoad, "max-load", 3, "wait before a run while the 1-minute load average is above this")
	flag.DurationVar(&cfg.loadWait, "load-wait", 10*time.Minute, "longest total wait for the load average")
	flag.Float64Var(&memGi, "mem-limit", 16, "skip a size whose estimated RSS (from the largest smaller run) exceeds this many GiB")
	flag.DurationVar(&cfg.runTimeout, "run-timeout", 8*time.Minute, "longest single run")
	flag.StringVar(&cfg.jsonOut, "json", "", "also write every run's result to this JSON file")
	flag.StringVar(&cfg.logDir, "log-dir", "", "write each run's agent logs (Info), a CPU profile of its steady window and a heap profile after it to this directory")
	flag.StringVar(&from, "from", "", "print the tables of the results in this JSON file (written by -json) instead of running")
	flag.BoolVar(&child, "child", false, "internal: run one size in this process and print its result as JSON")
	flag.IntVar(&n, "n", 0, "internal: agents in a -child run")
	flag.IntVar(&rep, "rep", 0, "internal: round number of a -child run")
	flag.Parse()
	cfg.memLimit = memGi * (1 << 30)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if cfg.timers != "prod" && cfg.timers != "fast" {
		fatalf("-timers %q: want prod or fast", cfg.timers)
	}
	if cfg.raft != "prod" && cfg.raft != "relaxed" {
		fatalf("-raft %q: want prod or relaxed", cfg.raft)
	}
	if child {
		rc := runConfig{n: n, rep: rep, timers: cfg.timers, raft: cfg.raft, steady: cfg.steady, hold: cfg.hold, stagger: cfg.stagger}
		if cfg.logDir != "" {
			rc.logFile = fmt.Sprintf("%s/scalebench-n%d-r%d.log", cfg.logDir, n, rep)
			rc.cpuProfile = fmt.Sprintf("%s/scalebench-n%d-r%d.cpu.pprof", cfg.logDir, n, rep)
			rc.heapProfile = fmt.Sprintf("%s/scalebench-n%d-r%d.heap.pprof", cfg.logDir, n, rep)
		}
		if n < 3 {
			fatalf("-n %d: at least 3", n)
		}
		res := runChild(ctx, rc)
		if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
			fatalf("%v", err)
		}
		return
	}
	for _, s := range strings.Split(sizes, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || v < 3 {
			fatalf("-sizes: %q is not a size of at least 3", s)
		}
		cfg.sizes = append(cfg.sizes, v)
	}
	slices.Sort(cfg.sizes)
	if from != "" {
		b, err := os.ReadFile(from)
		if err != nil {
			fatalf("%v", err)
		}
		var results []runResult
		if err := json.Unmarshal(b, &results); err != nil {
			fatalf("%s: %v", from, err)
		}
		fmt.Print(report(cfg, results))
		return
	}
	if err := runParent(ctx, cfg); err != nil {
		fatalf("%v", err)
	}
}

func fatalf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "scalebench: "+format+"\n", a...)
	os.Exit(1)
}

func runParent(ctx context.Context, cfg config) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	begin := time.Now()
	fmt.Println(machine())
	fmt.Printf("timers: %s; steady window %s; %d requests held for the load change; start stagger %s\n\n",
		timersText(cfg.timers, cfg.raft), cfg.steady, cfg.hold, cfg.stagger)

	var results []runResult
	var notes []string
	waited := time.Duration(0)
	spent := map[int]float64{} // seconds of the last run per size
	// A size whose run did not converge is not repeated: such a run takes
	// its full timeouts, and the time is better spent on the others.
	unconverged := map[int]string{}
	for round := 1; round <= cfg.reps; round++ {
		for _, n := range cfg.sizes {
			if ctx.Err() != nil {
				break
			}
			if why, ok := unconverged[n]; ok {
				note := fmt.Sprintf("round %d: n=%d not repeated: %s", round, n, why)
				fmt.Fprintln(os.Stderr, note)
				continue
			}
			if why := memoryTooSmall(cfg, results, n); why != "" {
				note := fmt.Sprintf("round %d: n=%d skipped: %s", round, n, why)
				fmt.Fprintln(os.Stderr, note)
				notes = appendOnce(notes, fmt.Sprintf("n=%d skipped: %s", n, why))
				continue
			}
			est := estimateSeconds(spent, n)
			if el := time.Since(begin) - waited; el.Seconds()+est > cfg.budget.Seconds() {
				note := fmt.Sprintf("round %d: n=%d skipped: about %.0fs left of the %s budget, a run takes about %.0fs",
					round, n, (cfg.budget - el).Seconds(), cfg.budget, est)
				fmt.Fprintln(os.Stderr, note)
				notes = append(notes, note)
				continue
			}
			w, load := waitForLoad(ctx, cfg.maxLoad, cfg.loadWait-waited)
			waited += w
			if w > 0 {
				fmt.Fprintf(os.Stderr, "waited %s for the load average (now %.2f)\n", w.Round(time.Second), load)
			}
			fmt.Fprintf(os.Stderr, "round %d: n=%d (load average %.2f)\n", round, n, load)
			res, err := runOne(ctx, exe, cfg, n, round)
			if err != nil {
				note := fmt.Sprintf("round %d: n=%d failed: %v", round, n, err)
				fmt.Fprintln(os.Stderr, note)
				notes = append(notes, note)
				continue
			}
			spent[n] = res.Seconds
			for _, e := range res.Errors {
				notes = append(notes, fmt.Sprintf("round %d: n=%d: %s", round, n, e))
				if strings.HasPrefix(e, "gossip convergence") || strings.HasPrefix(e, "raft convergence") {
					unconverged[n] = fmt.Sprintf("round %d did not converge", round)
				}
			}
			if res.LeftoverGoroutines > 0 {
				notes = append(notes, fmt.Sprintf("round %d: n=%d: %d goroutines left after every agent was killed: %s",
					round, n, res.LeftoverGoroutines, strings.Join(res.LeftoverStacks[:min(2, len(res.LeftoverStacks))], "; ")))
			}
			results = append(results, res)
		}
	}
	fmt.Print(report(cfg, results))
	if len(notes) > 0 {
		fmt.Println("\nNotes:")
		for _, n := range notes {
			fmt.Println("- " + n)
		}
	}
	fmt.Printf("\ntotal %s, of which %s waiting for the load average\n",
		time.Since(begin).Round(time.Second), waited.Round(time.Second))
	if cfg.jsonOut != "" {
		b, err := json.MarshalIndent(results, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(cfg.jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return ctx.Err()
}

func appendOnce(xs []string, s string) []string {
	if slices.Contains(xs, s) {
		return xs
	}
	return append(xs, s)
}

// runOne runs one size in a child process.
func runOne(ctx context.Context, exe string, cfg config, n, round int) (runResult, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.runTimeout)
	defer cancel()
	args := []string{"-child", "-n", strconv.Itoa(n), "-rep", strconv.Itoa(round), "-timers", cfg.timers, "-raft", cfg.raft,
		"-steady", cfg.steady.String(), "-hold", strconv.Itoa(cfg.hold), "-stagger", cfg.stagger.String()}
	if cfg.logDir != "" {
		args = append(args, "-log-dir", cfg.logDir)
	}
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return runResult{}, fmt.Errorf("child: %w", err)
	}
	var res runResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		return runResult{}, fmt.Errorf("child result: %w", err)
	}
	return res, nil
}

// estimateSeconds guesses a run's length from the last run of that size,
// else from the largest smaller size (scaled by the ratio of sizes), else
// a minute.
func estimateSeconds(spent map[int]float64, n int) float64 {
	if s, ok := spent[n]; ok {
		return s
	}
	best := 0
	for m := range spent {
		if m < n && m > best {
			best = m
		}
	}
	if best == 0 {
		return 60
	}
	return spent[best] * float64(n) / float64(best)
}

// memoryTooSmall says why size n should not run: its RSS, estimated from
// the largest smaller run, would exceed the limit or the memory available.
func memoryTooSmall(cfg config, results []runResult, n int) string {
	var ref *runResult
	for i := range results {
		r := &results[i]
		if r.N < n && r.RSSTotal > 0 && (ref == nil || r.N > ref.N) {
			ref = r
		}
	}
	if ref == nil {
		return ""
	}
	est := estimateRSS(ref.RSSBase, ref.RSSTotal, ref.N, n, 0.25)
	limit := cfg.memLimit
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if avail, err := parseStatusKB(string(b), "MemAvailable"); err == nil {
			limit = min(limit, 0.8*float64(avail))
		}
	}
	if est > limit {
		return fmt.Sprintf("estimated RSS %.1f GiB (from the n=%d run) exceeds %.1f GiB", est/(1<<30), ref.N, limit/(1<<30))
	}
	return ""
}

// waitForLoad waits while the 1-minute load average is above max, at most
// limit, and returns how long it waited and the last load average.
func waitForLoad(ctx context.Context, maxLoad float64, limit time.Duration) (time.Duration, float64) {
	start := time.Now()
	for i := 0; ; i++ {
		load := readLoad()
		if !(load > maxLoad) || time.Since(start) >= limit || ctx.Err() != nil {
			if i == 0 {
				return 0, load
			}
			return time.Since(start), load
		}
		if i%6 == 0 {
			fmt.Fprintf(os.Stderr, "load average %.2f is above %.1f; waiting (at most %s more)\n",
				load, maxLoad, (limit - time.Since(start)).Round(time.Second))
		}
		sleepCtx(ctx, min(10*time.Second, limit-time.Since(start)))
	}
}

func readLoad() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return math.NaN()
	}
	v, err := parseLoadavg(string(b))
	if err != nil {
		return math.NaN()
	}
	return v
}

func timersText(gossip, raftTimers string) string {
	g := "production (cluster.DefaultConfig: gossip every 200ms to 3 nodes, probe 1s/500ms, suspicion ×4, push-pull 5s, reconcile 2s)"
	if gossip == "fast" {
		g = "fast (test/harness.FastTimers: gossip 50ms, probe 300ms/200ms, suspicion ×3, push-pull 1s, reconcile 200ms)"
	}
	r := "Raft production (heartbeat and election timeouts 500ms, leader lease 250ms)"
	if raftTimers == "relaxed" {
		r = "Raft relaxed (heartbeat and election timeouts 2s, leader lease 1s)"
	}
	return "gossip " + g + "; " + r
}

// machine describes the host: CPU model, cores, kernel, Go version, date.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := "unknown kernel"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if v, err := parseStatusKB(string(b), "MemTotal"); err == nil {
			mem = fmt.Sprintf(", %.0f GiB RAM", float64(v)/(1<<30))
		}
	}
	return fmt.Sprintf("%s, %d cores%s, Linux %s, %s, %s", model, runtime.NumCPU(), mem, kernel, runtime.Version(),
		time.Now().UTC().Format("2006-01-02 15:04 UTC"))
}
