package agent

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// sysLoad samples the machine's CPU and memory use from Linux /proc,
// limited by the process's cgroup when one sets limits (cgroup v2
// cpu.max/memory.max, or v1 cpu.cfs_quota_us/memory.limit_in_bytes).
// On other systems both figures read 0.
type sysLoad struct {
	mu       sync.Mutex
	lastBusy float64 // CPU seconds used (machine or cgroup)
	lastAt   time.Time
	cpu      float64
	cgroup   cgroupPaths
	cores    float64
}

type cgroupPaths struct {
	v2        string // unified hierarchy dir of this process, if any
	v1CPU     string
	v1Memory  string
	v1CPUAcct string
}

func newSysLoad() *sysLoad {
	s := &sysLoad{cores: float64(runtime.NumCPU())}
	s.cgroup = findCgroups()
	if q := s.cgroupCPUQuota(); q > 0 && q < s.cores {
		s.cores = q
	}
	s.lastBusy, s.lastAt = s.busySeconds(), time.Now()
	return s
}

// sample returns CPU use (0..1 of the cores available to us) since the
// previous sample, and memory use (0..1 of the limit or the machine).
func (s *sysLoad) sample() (cpu, mem float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now, busy := time.Now(), s.busySeconds()
	if el := now.Sub(s.lastAt).Seconds(); el > 0.05 && busy >= s.lastBusy {
		s.cpu = clamp01((busy - s.lastBusy) / el / s.cores)
		s.lastBusy, s.lastAt = busy, now
	}
	return s.cpu, s.memory()
}

func clamp01(f float64) float64 { return max(0, min(1, f)) }

func findCgroups() cgroupPaths {
	var p cgroupPaths
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return p
	}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			if fileExists("/sys/fs/cgroup/cgroup.controllers") {
				p.v2 = filepath.Join("/sys/fs/cgroup", parts[2])
			}
		case strings.Contains(parts[1], "memory"):
			p.v1Memory = filepath.Join("/sys/fs/cgroup/memory", parts[2])
		case strings.Contains(parts[1], "cpuacct"):
			p.v1CPUAcct = filepath.Join("/sys/fs/cgroup/cpuacct", parts[2])
			if strings.Contains(parts[1], "cpu,") {
				p.v1CPU = filepath.Join("/sys/fs/cgroup/cpu,cpuacct", parts[2])
			}
		case parts[1] == "cpu":
			p.v1CPU = filepath.Join("/sys/fs/cgroup/cpu", parts[2])
		}
	}
	return p
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func readInt(path string) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, false
	}
	v, err := strconv.ParseInt(s, 10, 64)
	return v, err == nil
}

// cgroupCPUQuota is the number of cores the cgroup allows, or 0.
func (s *sysLoad) cgroupCPUQuota() float64 {
	if s.cgroup.v2 != "" {
		if b, err := os.ReadFile(filepath.Join(s.cgroup.v2, "cpu.max")); err == nil {
			f := strings.Fields(string(b))
			if len(f) == 2 && f[0] != "max" {
				q, _ := strconv.ParseFloat(f[0], 64)
				p, _ := strconv.ParseFloat(f[1], 64)
				if q > 0 && p > 0 {
					return q / p
				}
			}
		}
	}
	if s.cgroup.v1CPU != "" {
		q, ok1 := readInt(filepath.Join(s.cgroup.v1CPU, "cpu.cfs_quota_us"))
		p, ok2 := readInt(filepath.Join(s.cgroup.v1CPU, "cpu.cfs_period_us"))
		if ok1 && ok2 && q > 0 && p > 0 {
			return float64(q) / float64(p)
		}
	}
	return 0
}

// busySeconds is CPU time used: by the cgroup when it is limited, else by
// the whole machine (from /proc/stat).
func (s *sysLoad) busySeconds() float64 {
	if s.cores < float64(runtime.NumCPU()) {
		if s.cgroup.v2 != "" {
			if b, err := os.ReadFile(filepath.Join(s.cgroup.v2, "cpu.stat")); err == nil {
				for _, line := range strings.Split(string(b), "\n") {
					if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
						us, _ := strconv.ParseFloat(v, 64)
						return us / 1e6
					}
				}
			}
		}
		if v, ok := readInt(filepath.Join(s.cgroup.v1CPUAcct, "cpuacct.usage")); ok && s.cgroup.v1CPUAcct != "" {
			return float64(v) / 1e9
		}
	}
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0
	}
	fields := bytes.Fields(sc.Bytes())
	if len(fields) < 5 || string(fields[0]) != "cpu" {
		return 0
	}
	var busy float64
	for i, fv := range fields[1:] {
		v, _ := strconv.ParseFloat(string(fv), 64)
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		busy += v
	}
	return busy / 100 // USER_HZ
}

// memory is used/limit for a limited cgroup, else 1 - MemAvailable/MemTotal.
func (s *sysLoad) memory() float64 {
	if s.cgroup.v2 != "" {
		cur, ok1 := readInt(filepath.Join(s.cgroup.v2, "memory.current"))
		lim, ok2 := readInt(filepath.Join(s.cgroup.v2, "memory.max"))
		if ok1 && ok2 && lim > 0 {
			return clamp01(float64(cur) / float64(lim))
		}
	}
	if s.cgroup.v1Memory != "" {
		cur, ok1 := readInt(filepath.Join(s.cgroup.v1Memory, "memory.usage_in_bytes"))
		lim, ok2 := readInt(filepath.Join(s.cgroup.v1Memory, "memory.limit_in_bytes"))
		if ok1 && ok2 && lim > 0 && lim < 1<<60 {
			return clamp01(float64(cur) / float64(lim))
		}
	}
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	var total, avail float64
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "MemTotal:":
			total = v
		case "MemAvailable:":
			avail = v
		}
	}
	if total == 0 {
		return 0
	}
	return clamp01(1 - avail/total)
}
