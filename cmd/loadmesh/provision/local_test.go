//go:build unix

package provision

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/transport"
)

func TestNodeName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		prefix, zone string
		n            int
		want         string
	}{
		{"local", "eu-west-1a", 3, "local-eu-west-1a-3"},
		{"local", "", 1, "local-default-1"},
		{"lm", "a/../b c", 12, "lm-a_.._b_c-12"},
		{"lm", "..", 2, "lm-default-2"},
		{"lm", "zöne", 2, "lm-z__ne-2"},
	}
	for _, tt := range tests {
		if got := nodeName(tt.prefix, tt.zone, tt.n); got != tt.want {
			t.Errorf("nodeName(%q, %q, %d) = %q, want %q", tt.prefix, tt.zone, tt.n, got, tt.want)
		}
		if got := nodeName(tt.prefix, tt.zone, tt.n); filepath.Base(got) != got || !labelRE.MatchString(got) {
			t.Errorf("nodeName(%q, %q, %d) = %q is not a safe directory name", tt.prefix, tt.zone, tt.n, got)
		}
	}
}

func TestLocalConfigValidate(t *testing.T) {
	t.Parallel()
	valid := func() LocalConfig {
		c := DefaultLocalConfig()
		c.Dir, c.TLSCA, c.TLSCAKey = "/tmp/x", "ca.pem", "ca-key.pem"
		return c
	}
	if err := valid().Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	tests := []struct {
		name   string
		change func(c *LocalConfig)
		want   []string
	}{
		{"no dir", func(c *LocalConfig) { c.Dir = "" }, []string{"--dir is required"}},
		{"prefix with a slash", func(c *LocalConfig) { c.NamePrefix = "a/b" }, []string{`--name-prefix "a/b"`}},
		{"empty prefix", func(c *LocalConfig) { c.NamePrefix = "" }, []string{`--name-prefix ""`}},
		{"host not an IP", func(c *LocalConfig) { c.Host = "localhost" }, []string{`--host "localhost"`}},
		{"host unspecified", func(c *LocalConfig) { c.Host = "0.0.0.0" }, []string{`--host "0.0.0.0"`}},
		{"CA without key", func(c *LocalConfig) { c.TLSCAKey = "" }, []string{"--tls-ca and --tls-ca-key go together"}},
		{"both backends", func(c *LocalConfig) { c.Backend, c.DemoBackend = "http://127.0.0.1:9000", true }, []string{"--backend and --demo-backend"}},
		{"backend not a URL", func(c *LocalConfig) { c.Backend = "127.0.0.1:9000" }, []string{`--backend "127.0.0.1:9000"`}},
		{"empty join", func(c *LocalConfig) { c.Join = []string{" "} }, []string{"--join: empty address"}},
		{"stop timeout", func(c *LocalConfig) { c.StopTimeout = 0 }, []string{"--stop-timeout 0s"}},
		{"everything at once", func(c *LocalConfig) { c.Dir, c.Host, c.StopTimeout = "", "", -time.Second },
			[]string{"--dir", "--host", "--stop-timeout -1s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.change(&c)
			err := c.Validate()
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// testCA writes a cluster CA to dir and returns its files.
func testCA(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	ca, err := transport.NewCA("test CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	if err := os.WriteFile(certFile, ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// testLocal returns a Local with a fresh state dir and CA; /bin/true
// stands in for the loadmesh binary (nothing here starts it).
func testLocal(t *testing.T, change func(c *LocalConfig)) *Local {
	t.Helper()
	c := DefaultLocalConfig()
	c.Dir = filepath.Join(t.TempDir(), "state")
	c.TLSCA, c.TLSCAKey = testCA(t, t.TempDir())
	c.Bin = "/bin/true"
	if change != nil {
		change(&c)
	}
	l, err := NewLocal(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(l.cfg.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return l
}

func TestNewLocalRefuses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	caFile, keyFile := testCA(t, dir)
	otherCA, _ := testCA(t, t.TempDir())
	tests := []struct {
		name   string
		change func(c *LocalConfig)
		want   string
	}{
		{"bin missing", func(c *LocalConfig) { c.Bin = filepath.Join(dir, "nope") }, "--bin"},
		{"bin a directory", func(c *LocalConfig) { c.Bin = dir }, "is not an executable file"},
		{"CA missing", func(c *LocalConfig) { c.TLSCA = filepath.Join(dir, "missing.pem") }, "missing.pem"},
		{"key of another CA", func(c *LocalConfig) { c.TLSCA = otherCA }, "does not match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultLocalConfig()
			c.Dir, c.Bin, c.TLSCA, c.TLSCAKey = filepath.Join(dir, "state"), "/bin/true", caFile, keyFile
			tt.change(&c)
			_, err := NewLocal(c)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewLocal: %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

func TestLocalNodeRoundTrip(t *testing.T) {
	t.Parallel()
	l := testLocal(t, nil)
	dir := filepath.Join(l.cfg.Dir, "local-a-1")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	want := LocalNode{Name: "local-a-1", Zone: "a", PID: 1234, BackendPID: 1233, Host: "127.0.0.1",
		Ports:     LocalPorts{Gossip: 1, Raft: 2, Peer: 3, HTTP: 4, API: 5, Backend: 6},
		RequestID: "req-1", Started: time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)}
	if err := l.writeNode(dir, want); err != nil {
		t.Fatal(err)
	}
	got, err := readNode(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("node.json round trip:\n got %+v\nwant %+v", got, want)
	}
	if got.API() != "http://127.0.0.1:5" || got.Ingress() != "http://127.0.0.1:4" {
		t.Errorf("API %s, Ingress %s", got.API(), got.Ingress())
	}

	// A node.json copied into another node's directory is refused.
	other := filepath.Join(l.cfg.Dir, "local-a-2")
	os.Mkdir(other, 0o700)
	if err := l.writeNode(other, want); err != nil {
		t.Fatal(err)
	}
	if _, err := readNode(other); err == nil || !strings.Contains(err.Error(), `names node "local-a-1"`) {
		t.Errorf("readNode of a misplaced node.json: %v", err)
	}
}

func TestAllocateNeverReusesNames(t *testing.T) {
	t.Parallel()
	l := testLocal(t, nil)
	var mu sync.Mutex
	seen := map[string]bool{}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			name, dir, err := l.allocate("a")
			if err != nil {
				t.Error(err)
				return
			}
			if filepath.Base(dir) != name {
				t.Errorf("dir %s for node %s", dir, name)
			}
			mu.Lock()
			defer mu.Unlock()
			if seen[name] {
				t.Errorf("name %s allocated twice", name)
			}
			seen[name] = true
		})
	}
	wg.Wait()
	if !seen["local-a-1"] || !seen["local-a-20"] {
		t.Errorf("names %v, want local-a-1 to local-a-20", seen)
	}
	// Removing the newest does not free its number.
	os.RemoveAll(filepath.Join(l.cfg.Dir, "local-a-20"))
	name, _, err := l.allocate("b")
	if err != nil || name != "local-b-21" {
		t.Errorf("next name %q (%v), want local-b-21", name, err)
	}
}

// deadPID returns the pid of a process that has exited and been reaped.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

func TestListAndStopAllWithoutProcesses(t *testing.T) {
	t.Parallel()
	l := testLocal(t, nil)
	dead := LocalNode{Name: "local-a-1", Zone: "a", PID: deadPID(t), Host: "127.0.0.1", Ports: LocalPorts{API: 5, HTTP: 4}}
	os.Mkdir(filepath.Join(l.cfg.Dir, dead.Name), 0o700)
	if err := l.writeNode(filepath.Join(l.cfg.Dir, dead.Name), dead); err != nil {
		t.Fatal(err)
	}
	// A start that crashed before writing node.json.
	os.Mkdir(filepath.Join(l.cfg.Dir, "local-a-2"), 0o700)
	// This process is alive but is not local-a-3's agent: its command
	// line does not name it.
	imposter := LocalNode{Name: "local-a-3", PID: os.Getpid(), Host: "127.0.0.1"}
	os.Mkdir(filepath.Join(l.cfg.Dir, imposter.Name), 0o700)
	l.writeNode(filepath.Join(l.cfg.Dir, imposter.Name), imposter)

	got, err := l.List()
	if err != nil {
		t.Fatal(err)
	}
	want := []ListedNode{
		{Name: "local-a-1", Zone: "a", PID: dead.PID, API: "http://127.0.0.1:5", Ingress: "http://127.0.0.1:4"},
		{Name: "local-a-2"},
		{Name: "local-a-3", PID: os.Getpid()},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("List:\n got %+v\nwant %+v", got, want)
	}

	res, err := l.StopAll(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Stopped) != 3 {
		t.Errorf("stopped %+v, want 3", res.Stopped)
	}
	for _, s := range res.Stopped {
		if s.WasRunning || s.Forced {
			t.Errorf("%+v: want was_running false (and this test process not signalled)", s)
		}
	}
	if left, _ := l.nodes(); len(left) != 0 {
		t.Errorf("left after --stop-all: %+v", left)
	}
}

func TestHandleErrorsWithoutProcesses(t *testing.T) {
	t.Parallel()
	req := testRequest()
	t.Run("scale_out without a CA", func(t *testing.T) {
		t.Parallel()
		l := testLocal(t, func(c *LocalConfig) { c.TLSCA, c.TLSCAKey = "", "" })
		if _, err := l.Handle(t.Context(), req); !errors.Is(err, ErrNoCA) {
			t.Errorf("error %v, want ErrNoCA", err)
		}
	})
	t.Run("scale_out without seeds", func(t *testing.T) {
		t.Parallel()
		r := req
		r.Cluster.Seeds = nil
		_, err := testLocal(t, nil).Handle(t.Context(), r)
		if err == nil || !strings.Contains(err.Error(), "no gossip seeds") {
			t.Errorf("error %v, want no gossip seeds", err)
		}
	})
	t.Run("invalid request", func(t *testing.T) {
		t.Parallel()
		r := req
		r.Count = 0
		_, err := testLocal(t, nil).Handle(t.Context(), r)
		if err == nil || !strings.Contains(err.Error(), "count 0") {
			t.Errorf("error %v, want the validation error", err)
		}
	})
	t.Run("scale_in of strangers", func(t *testing.T) {
		t.Parallel()
		l := testLocal(t, nil)
		dead := LocalNode{Name: "local-a-1", Zone: "a", PID: deadPID(t), Host: "127.0.0.1"}
		os.Mkdir(filepath.Join(l.cfg.Dir, dead.Name), 0o700)
		l.writeNode(filepath.Join(l.cfg.Dir, dead.Name), dead)
		r := Request{Version: 1, ID: "in-1", Kind: KindScaleIn, Nodes: []string{"node1", "local-a-1", "../state", ".requests"}}
		res, err := l.Handle(t.Context(), r)
		if err == nil {
			t.Fatal("no error")
		}
		for _, w := range []string{`"node1" was not started by this provisioner`, `"../state"`, `".requests"`} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not mention %q", err, w)
			}
		}
		if len(res.Stopped) != 1 || res.Stopped[0].Name != "local-a-1" || res.Stopped[0].WasRunning {
			t.Errorf("stopped %+v, want the dead local-a-1 released", res.Stopped)
		}
		if _, err := os.Stat(filepath.Join(l.cfg.Dir, "local-a-1")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("local-a-1's directory is still there: %v", err)
		}
		// A retry of the same request remembers local-a-1 was released
		// by it; a different request does not.
		res, _ = l.Handle(t.Context(), r)
		if len(res.Stopped) != 1 || res.Stopped[0].Name != "local-a-1" {
			t.Errorf("retry: stopped %+v, want local-a-1 again", res.Stopped)
		}
		r.ID = "in-2"
		res, err = l.Handle(t.Context(), r)
		if len(res.Stopped) != 0 || err == nil || !strings.Contains(err.Error(), `"local-a-1" was not started`) {
			t.Errorf("another request: stopped %+v, error %v", res.Stopped, err)
		}
	})
}

func TestTerminateRespectsStopTimeout(t *testing.T) {
	t.Parallel()
	// A process that ignores SIGTERM gets SIGKILL after the grace period.
	cmd := exec.Command("/bin/sh", "-c", `trap "" TERM; echo ready; while :; do sleep 1; done`, "--name", "x")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	b := make([]byte, 6)
	if _, err := out.Read(b); err != nil { // the trap is set
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	if !isAlive(pid, nameMarker("x")) {
		t.Fatal("isAlive false for a running process with the marker")
	}
	if isAlive(pid, nameMarker("y")) {
		t.Error("isAlive true for a process without the marker")
	}
	start := time.Now()
	// Our own child turns zombie until reaped, which isAlive must see
	// through.
	if forced := terminate(context.Background(), pid, nameMarker("x"), 300*time.Millisecond); !forced {
		t.Error("terminate: not forced, want SIGKILL after the grace period")
	}
	if took := time.Since(start); took < 300*time.Millisecond || took > 10*time.Second {
		t.Errorf("terminate took %s with a 300ms grace period", took)
	}
	<-done
}
