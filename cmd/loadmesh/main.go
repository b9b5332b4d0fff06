// Command loadmesh is the loadmesh agent and its command-line tools.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// exitError carries a specific exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	root := newRootCmd()
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "loadmesh:", oneLine(err))
		code := 1
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
		os.Exit(code)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "loadmesh",
		Short: "A gossip-based, peer-to-peer load-distribution mesh",
		Long: `loadmesh spreads requests over servers without a central load balancer.
Every server runs one agent; agents find each other by gossip, elect a Raft
leader that holds the capacity plan, and forward requests to each other.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	agentCmd := newAgentCmd()
	agentCmd.PreRun = func(*cobra.Command, []string) { tuneRuntime() }
	root.AddCommand(agentCmd, newBackendCmd(), newStatusCmd(), newMembersCmd(), newKeygenCmd(), newTLSCmd(), newVersionCmd(),
		newPlanCmd(), newEventsCmd(), newSimulateCmd(), newProvisionCmd(), newTokenCmd(), newLoadtestCmd(), newSnapshotCmd(), newRecoverCmd(), newCacheCmd(),
		newNodeActionCmd("drain", "Drain a node: it finishes in-flight requests and takes no new ones"),
		newNodeActionCmd("activate", "Make a node active: it takes traffic"),
		newNodeActionCmd("cordon", "Hold a node out of rotation (operator hold)"),
		newKeyringCmd(), newNodeCmd()) // cmd_keyring.go
	root.AddCommand(newCostCmd())
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the loadmesh version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, args []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "loadmesh", version)
		},
	}
}

// oneLine keeps an error to one line for the terminal: the first line of
// each joined error, separated by "; ".
func oneLine(err error) string {
	var parts []string
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		parts = append(parts, e.Error())
	}
	walk(err)
	out := ""
	for i, p := range parts {
		if i > 0 {
			out += "; "
		}
		for j := 0; j < len(p); j++ {
			if p[j] == '\n' {
				p = p[:j]
				break
			}
		}
		out += p
	}
	return out
}

// gcPercent is the agent's GC target when GOGC is not set. The agent's
// live heap is small (a few MiB) and nearly everything it allocates is
// per-request garbage, so with Go's default of 100 it collects every few
// MiB of traffic. At 400 it collects a fifth as often; measured on the
// loopback benchmark (docs/benchmarks.md), about 25–30 % less CPU per
// request. The soft memory limit below keeps the larger target safe.
const gcPercent = 400

// tuneRuntime applies the agent's runtime settings. Explicit GOGC and
// GOMEMLIMIT environment variables always win (the Go runtime has already
// applied them).
//
// Without GOMEMLIMIT, the soft memory limit is 3/4 of the cgroup's memory
// limit when one is set, else 1/4 of physical memory, and never less than
// 64 MiB: far above the agent's steady state, so it only makes the GC run
// more often (at most about half the CPU, the runtime's own cap) if the
// heap ever approaches it, instead of growing 5× the live heap towards an
// out-of-memory kill. GOMEMLIMIT=off disables it.
func tuneRuntime() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(gcPercent)
	}
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		if limit := defaultMemoryLimit(); limit > 0 {
			debug.SetMemoryLimit(limit)
		}
	}
}

// defaultMemoryLimit is the soft memory limit described at tuneRuntime,
// or 0 when no memory size is known.
func defaultMemoryLimit() int64 {
	var limit int64
	if cg := cgroupMemoryLimit(); cg > 0 {
		limit = cg / 4 * 3
	} else {
		var si syscall.Sysinfo_t
		if err := syscall.Sysinfo(&si); err != nil || si.Totalram == 0 {
			return 0
		}
		limit = int64(si.Totalram) * int64(si.Unit) / 4
	}
	return max(limit, 64<<20)
}

// cgroupMemoryLimit reads this process's cgroup memory limit (v2
// memory.max, or v1 memory.limit_in_bytes), or 0 when there is none.
func cgroupMemoryLimit() int64 {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return 0
	}
	defer f.Close()
	var files []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// hierarchy-ID:controller-list:cgroup-path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			files = append(files, filepath.Join("/sys/fs/cgroup", parts[2], "memory.max"))
		case strings.Contains(","+parts[1]+",", ",memory,"):
			files = append(files, filepath.Join("/sys/fs/cgroup/memory", parts[2], "memory.limit_in_bytes"),
				"/sys/fs/cgroup/memory/memory.limit_in_bytes")
		}
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			continue
		}
		v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		// "max" (v2) fails to parse; v1 reports "no limit" as a huge
		// number.
		if err == nil && v > 0 && v < 1<<50 {
			return v
		}
	}
	return 0
}
