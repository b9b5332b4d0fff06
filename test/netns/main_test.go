//go:build linux

package netns

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// enableVar must be 1 for the tests to run (make test-hosts sets it).
const enableVar = "LOADMESH_TEST_HOSTS"

var (
	// runDir holds the binary built for this run, the PKI, the data dirs
	// and the logs; TestMain removes it.
	runDir  string
	binOnce sync.Once
	binPath string
	binErr  error
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(clientVar); spec != "" {
		os.Exit(clientMain(spec)) // run inside a namespace by doInside
	}
	if os.Getenv(enableVar) != "1" {
		os.Exit(m.Run()) // every test skips; nothing to set up
	}
	dir, err := os.MkdirTemp("", "loadmesh-hosts-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "netns:", err)
		os.Exit(1)
	}
	runDir = dir
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "\nnetns: %s: killing the agents and removing the namespaces and bridges\n", s)
		killLeftovers()
		runCleanups()
		os.RemoveAll(dir)
		os.Exit(130)
	}()
	code := m.Run()
	signal.Stop(sigs)
	if left := killLeftovers(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "netns: processes still running after the tests (killed now): %s\n", strings.Join(left, ", "))
		code = 1
	}
	runCleanups() // normally t.Cleanup ran them all already
	os.RemoveAll(dir)
	os.Exit(code)
}

// requireBed skips t unless the test bed can run here, with one message
// naming what is missing.
func requireBed(t *testing.T) {
	t.Helper()
	switch {
	case os.Getenv(enableVar) != "1":
		t.Skipf("test/netns: the multi-host test bed runs only with %s=1 (make test-hosts)", enableVar)
	case testing.Short():
		t.Skip("test/netns: skipped with -short")
	case os.Geteuid() != 0:
		t.Skipf("test/netns: needs root for network namespaces and bridges (running as uid %d)", os.Geteuid())
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("test/netns: needs ip (iproute2) for network namespaces: not on PATH")
	}
	if err := sh("ip", "netns", "list"); err != nil {
		t.Skipf("test/netns: `ip netns` does not work here: %v", err)
	}
}

// loadmeshBin returns the loadmesh binary, building it on first use (set
// LOADMESH_E2E_BINARY to test one built elsewhere, as make test-hosts does
// with bin/loadmesh).
func loadmeshBin(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		if p := os.Getenv("LOADMESH_E2E_BINARY"); p != "" {
			binPath, binErr = filepath.Abs(p)
			return
		}
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			binErr = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		gomod := strings.TrimSpace(string(out))
		if gomod == "" || gomod == os.DevNull {
			binErr = errors.New("go env GOMOD: not inside a Go module")
			return
		}
		bin := filepath.Join(runDir, "loadmesh")
		cmd := exec.Command("go", "build", "-o", bin, "./cmd/loadmesh")
		cmd.Dir = filepath.Dir(gomod)
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build ./cmd/loadmesh: %v\n%s", err, out)
			return
		}
		binPath = bin
	})
	if binErr != nil {
		t.Fatalf("loadmesh binary: %v", binErr)
	}
	return binPath
}

// cleanups are the clean-up functions not yet run, for the signal handler
// (each is also registered with t.Cleanup; whichever comes first runs it).
var cleanups = struct {
	sync.Mutex
	fs []*cleanup
}{}

type cleanup struct {
	name string
	once sync.Once
	f    func()
}

func (c *cleanup) run() {
	c.once.Do(func() {
		c.f()
		cleanups.Lock()
		cleanups.fs = slices.DeleteFunc(cleanups.fs, func(o *cleanup) bool { return o == c })
		cleanups.Unlock()
	})
}

// onCleanup runs f when t ends, or when the run is interrupted, once.
func onCleanup(t *testing.T, name string, f func()) {
	c := &cleanup{name: name, f: f}
	cleanups.Lock()
	cleanups.fs = append(cleanups.fs, c)
	cleanups.Unlock()
	t.Cleanup(c.run)
}

// runCleanups runs the pending clean-ups, last registered first.
func runCleanups() {
	cleanups.Lock()
	fs := slices.Clone(cleanups.fs)
	cleanups.Unlock()
	for _, c := range slices.Backward(fs) {
		c.run()
	}
}
