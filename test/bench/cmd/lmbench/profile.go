package main

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// perfProfile is the CPU profile of one process, from perf.
type perfProfile struct {
	Label      string
	RPS        float64 // achieved under perf
	Conns      int
	Samples    string
	Self       []perfEntry // top functions by self time
	Inclusive  []perfEntry // top functions by inclusive time
	Categories []perfEntry // self time summed by area
	Err        error
}

type perfEntry struct {
	Pct  float64
	Name string
}

// perfRecorder samples one process with `perf record` for d.
type perfRecorder struct {
	perf  string
	label string
	pid   int
	out   string
	cmd   *exec.Cmd
	done  chan error
}

func startPerf(ctx context.Context, perf, label string, pid int, out string, d time.Duration) (*perfRecorder, error) {
	// Frame-pointer call graphs: Go keeps frame pointers on amd64.
	cmd := exec.CommandContext(ctx, perf, "record", "-F", "999", "-g", "-p", strconv.Itoa(pid), "-o", out,
		"--", "sleep", strconv.Itoa(max(1, int(d/time.Second))))
	r := &perfRecorder{perf: perf, label: label, pid: pid, out: out, cmd: cmd, done: make(chan error, 1)}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		err := cmd.Wait()
		if err != nil {
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
		}
		r.done <- err
	}()
	return r, nil
}

var (
	perfSelfLine  = regexp.MustCompile(`^\s*([\d.]+)%\s+\[(.)\]\s+(.+?)\s*$`)
	perfChildLine = regexp.MustCompile(`^\s*([\d.]+)%\s+([\d.]+)%\s+\[(.)\]\s+(.+?)\s*$`)
	perfSamples   = regexp.MustCompile(`# Samples: (\S+)`)
)

func (r *perfRecorder) wait(ctx context.Context) perfProfile {
	p := perfProfile{Label: r.label}
	if err := <-r.done; err != nil {
		p.Err = err
		return p
	}
	self, err := exec.CommandContext(ctx, r.perf, "report", "-i", r.out, "--no-children", "--sort", "sym",
		"-g", "none", "--percent-limit", "0.3", "--stdio").Output()
	if err != nil {
		p.Err = fmt.Errorf("perf report: %w", err)
		return p
	}
	if m := perfSamples.FindSubmatch(self); m != nil {
		p.Samples = string(m[1])
	}
	cats := map[string]float64{}
	all, err := exec.CommandContext(ctx, r.perf, "report", "-i", r.out, "--no-children", "--sort", "sym",
		"-g", "none", "--stdio").Output()
	if err == nil {
		sc := bufio.NewScanner(strings.NewReader(string(all)))
		for sc.Scan() {
			if m := perfSelfLine.FindStringSubmatch(sc.Text()); m != nil {
				v, _ := strconv.ParseFloat(m[1], 64)
				cats[category(m[2], m[3])] += v
			}
		}
	}
	sc := bufio.NewScanner(strings.NewReader(string(self)))
	for sc.Scan() {
		if m := perfSelfLine.FindStringSubmatch(sc.Text()); m != nil && len(p.Self) < 20 {
			v, _ := strconv.ParseFloat(m[1], 64)
			p.Self = append(p.Self, perfEntry{v, symName(m[2], m[3])})
		}
	}
	for k, v := range cats {
		p.Categories = append(p.Categories, perfEntry{v, k})
	}
	sort.Slice(p.Categories, func(i, j int) bool { return p.Categories[i].Pct > p.Categories[j].Pct })

	incl, err := exec.CommandContext(ctx, r.perf, "report", "-i", r.out, "--children", "--sort", "sym",
		"-g", "none", "--percent-limit", "3", "--stdio").Output()
	if err == nil {
		sc := bufio.NewScanner(strings.NewReader(string(incl)))
		for sc.Scan() {
			m := perfChildLine.FindStringSubmatch(sc.Text())
			if m == nil {
				continue
			}
			v, _ := strconv.ParseFloat(m[1], 64)
			name := m[4]
			if v > 90 || boring(name) || len(p.Inclusive) >= 25 {
				continue
			}
			p.Inclusive = append(p.Inclusive, perfEntry{v, symName(m[3], name)})
		}
	}
	return p
}

func symName(kind, name string) string {
	if kind == "k" {
		return name + " [kernel]"
	}
	return name
}

// boring filters frames that are on every stack and say nothing.
func boring(name string) bool {
	for _, s := range []string{"runtime.goexit", "runtime.main", "runtime.mstart", "runtime.systemstack",
		"runtime.mcall", "runtime.schedule", "runtime.park_m", "main.main", "0x"} {
		if strings.HasPrefix(name, s) {
			return true
		}
	}
	return false
}

// category assigns a symbol to a coarse area for the self-time summary.
func category(kind, name string) string {
	has := func(ps ...string) bool {
		for _, p := range ps {
			if strings.HasPrefix(name, p) {
				return true
			}
		}
		return false
	}
	switch {
	case kind == "k":
		return "kernel (syscalls, UDP/TCP stack, scheduling, IRQ)"
	case has("crypto/", "vendor/golang.org/x/crypto", "golang.org/x/crypto"):
		return "crypto (AES-GCM, header protection, TLS)"
	case has("github.com/quic-go/quic-go/http3", "github.com/quic-go/qpack"):
		return "quic-go/http3 + qpack"
	case has("github.com/quic-go/quic-go"):
		return "quic-go (packets, frames, streams, flow control)"
	case has("net/http", "net/textproto", "net/url", "mime"):
		return "net/http (HTTP/1.1 server & client, ReverseProxy)"
	case has("github.com/loadmesh/"):
		return "loadmesh"
	case has("github.com/prometheus/"):
		return "prometheus client"
	case has("runtime.memmove", "runtime.memclr"):
		return "runtime: memmove/memclr (copies)"
	case has("runtime.", "internal/runtime", "gcWriteBarrier", "runtime·"):
		if strings.Contains(name, "gc") || strings.Contains(name, "mark") || strings.Contains(name, "scan") ||
			strings.Contains(name, "sweep") || strings.Contains(name, "alloc") || strings.Contains(name, "heap") ||
			strings.Contains(name, "span") || strings.Contains(name, "Barrier") || strings.Contains(name, "greyobject") ||
			strings.Contains(name, "findObject") || strings.Contains(name, "mallocgc") {
			if !strings.Contains(name, "syscall") {
				return "runtime: GC & allocation"
			}
		}
		return "runtime: scheduler, netpoll, syscalls & other"
	case has("syscall.", "internal/poll", "net.", "golang.org/x/sys", "internal/syscall"):
		return "syscall wrappers, net, poll"
	case has("sync.", "internal/sync", "context.", "time.", "io.", "bufio.", "bytes.", "strings.", "strconv.", "fmt.", "log/slog", "sort.", "slices.", "maps.", "unicode", "errors."):
		return "std: sync, context, io, strings, fmt, …"
	default:
		return "other"
	}
}
