package benchproc

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

// Machine describes where a benchmark's figures come from: the machine,
// the versions measured and the load average around the run. The
// programs fill in HAProxy, LoadEnd and Elapsed as they learn them.
type Machine struct {
	Date      time.Time
	CPU       string
	Cores     int
	Virtual   bool
	Kernel    string
	MemTotal  string
	Go        string
	Loadmesh  string
	HAProxy   string
	LoadStart string
	LoadEnd   string
	Elapsed   time.Duration
}

// ReadMachine reads the CPU, kernel and memory from /proc and the load
// average now; version is the loadmesh build measured.
func ReadMachine(version string) Machine {
	m := Machine{Date: time.Now().UTC(), Cores: runtime.NumCPU(), Go: runtime.Version(), Loadmesh: version}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if !ok {
				continue
			}
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			if k == "model name" && m.CPU == "" {
				m.CPU = v
			}
			if k == "flags" && strings.Contains(" "+v+" ", " hypervisor ") {
				m.Virtual = true
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
				var kib int64
				fmt.Sscan(strings.TrimSpace(v), &kib)
				m.MemTotal = fmt.Sprintf("%.1f GiB", float64(kib)/(1<<20))
			}
		}
		f.Close()
	}
	m.LoadStart = LoadAvg()
	if m.Loadmesh == "" {
		m.Loadmesh = "(unknown)"
	}
	return m
}

// LoadAvg is the 1, 5 and 15 minute load averages, or "?".
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
