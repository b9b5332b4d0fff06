package test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/test/harness"
	"github.com/loadmesh/loadmesh/test/retry"
)

// namedEcho is a TCP backend that first writes its name and a newline,
// then echoes.
func namedEcho(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				io.WriteString(c, name+"\n")
				io.Copy(c, c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// whoServes opens a connection to addr and returns the name its backend
// announced; with keep, the connection stays open until the test ends
// or closeKept.
func whoServes(t *testing.T, addr string, keep bool) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	c.SetDeadline(time.Now().Add(retry.Scale(10 * time.Second)))
	buf := make([]byte, 64)
	n := 0
	for n == 0 || !strings.Contains(string(buf[:n]), "\n") {
		k, err := c.Read(buf[n:])
		n += k
		if err != nil {
			c.Close()
			return "", err
		}
	}
	if keep {
		keptMu.Lock()
		kept = append(kept, c)
		keptMu.Unlock()
		t.Cleanup(closeKept)
	} else {
		c.Close()
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

var (
	keptMu sync.Mutex
	kept   []net.Conn
)

func closeKept() {
	keptMu.Lock()
	defer keptMu.Unlock()
	for _, c := range kept {
		c.Close()
	}
	kept = nil
}

func serviceStatus(t *testing.T, n *harness.Node, name string) agent.ServiceStatus {
	t.Helper()
	for _, s := range n.Status().Services {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("%s has no service %q", n.Name(), name)
	return agent.ServiceStatus{}
}

// Three nodes: node-0 only accepts, node-1 and node-2 offer the service.
// Gossip shows who offers it; least-conn spreads long-lived connections;
// an unhealthy or drained node gets no new ones.
func TestServicesPlacementHealthAndPlan(t *testing.T) {
	backends := []string{"", namedEcho(t, "b1"), namedEcho(t, "b2")}
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close() // a port nothing listens on
	c := harness.Start(t, 3, harness.Options{Tune: func(i int, cfg *agent.Config) {
		switch i {
		case 0:
			cfg.Services = []string{"name=echo,mode=tcp,listen=127.0.0.1:0"}
		case 1:
			cfg.Services = []string{"name=echo,mode=tcp,backend=" + backends[1]}
		case 2:
			cfg.Services = []string{"name=echo,mode=tcp,backend=" + backends[2]}
		}
	}})
	c.WaitForLeader(t)
	in := c.Nodes[0]
	addr := serviceStatus(t, in, "echo").Listen

	// Gossip: node-0 sees both offering it, healthy.
	retry.Run(t, func(r *retry.R) {
		offered := 0
		for _, m := range in.Status().Members {
			if s, ok := m.Services["echo"]; ok && s.Healthy {
				offered++
			}
		}
		if offered != 2 {
			r.Errorf("node-0 sees %d healthy nodes offering echo, want 2", offered)
		}
	})

	// least-conn: 20 connections held open spread evenly.
	served := map[string]int{}
	for range 20 {
		var who string
		retry.Run(t, func(r *retry.R) {
			var err error
			who, err = whoServes(t, addr, true)
			r.Check(err)
		})
		served[who]++
	}
	if served["b1"] < 8 || served["b2"] < 8 {
		t.Errorf("20 open connections spread %v; least-conn should split them about evenly", served)
	}
	st := serviceStatus(t, in, "echo")
	if st.OpenClients != 20 || st.Placed["node-1"]+st.Placed["node-2"] != 20 {
		t.Errorf("node-0's status: %d open, placed %v", st.OpenClients, st.Placed)
	}
	closeKept()
	retry.Run(t, func(r *retry.R) {
		if n := serviceStatus(t, in, "echo").OpenClients; n != 0 {
			r.Errorf("%d connections still open at node-0", n)
		}
	})

	// Drain node-1 in the plan: new connections go to node-2 only.
	resp, err := http.Post("http://"+in.APIAddr()+"/v1/nodes/node-1/drain", "application/json", strings.NewReader(`{"reason":"test"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("drain node-1: %s", resp.Status)
	}
	retry.Run(t, func(r *retry.R) {
		if st, _ := in.Plan().Plan().StateOf("node-1"); st != "draining" {
			r.Errorf("node-0's plan has node-1 %q, want draining", st)
		}
	})
	retry.Run(t, func(r *retry.R) {
		if got := serviceStatus(t, in, "echo").Candidates; len(got) != 1 || got[0] != "node-2" {
			r.Errorf("node-0 places echo on %v, want node-2 only while node-1 drains", got)
		}
	})
	for range 10 {
		if who, err := whoServes(t, addr, false); err != nil || who != "b2" {
			t.Fatalf("a new connection went to %q (%v) while node-1 drains", who, err)
		}
	}

	// Restart node-2 with an unhealthy backend check and reactivate
	// node-1: node-2 is out of the service's rotation only.
	resp, err = http.Post("http://"+in.APIAddr()+"/v1/nodes/node-1/activate", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("activate node-1: %s", resp.Status)
	}
	n2 := c.Nodes[2]
	c.Stop(t, n2)
	n2.Cfg.Services = []string{"name=echo,mode=tcp,backend=" + backends[2] + ",health=tcp://" + deadAddr}
	n2 = c.Restart(t, n2)
	retry.Run(t, func(r *retry.R) {
		for _, m := range in.Status().Members {
			if m.Name == "node-2" {
				if s, ok := m.Services["echo"]; !ok || s.Healthy || m.Status != "alive" {
					r.Errorf("node-0 sees node-2 %s with echo %+v (offered %v), want alive and unhealthy", m.Status, s, ok)
				}
			}
		}
	})
	retry.Run(t, func(r *retry.R) {
		if got := serviceStatus(t, in, "echo").Candidates; len(got) != 1 || got[0] != "node-1" {
			r.Errorf("node-0 places echo on %v, want node-1 only", got)
		}
	})
	for range 10 {
		if who, err := whoServes(t, addr, false); err != nil || who != "b1" {
			t.Fatalf("a new connection went to %q (%v) while node-2's echo is unhealthy", who, err)
		}
	}
	// node-2 still serves HTTP: only the service is out of rotation.
	if m := memberByName(in.Status().Members, "node-2"); m == nil || m.Load == nil || !m.Load.Healthy {
		t.Errorf("node-2's HTTP backend should stay healthy: %+v", m)
	}
	_ = n2
}

// consistent-hash keeps a client on one node.
func TestServicesConsistentHash(t *testing.T) {
	b1, b2 := namedEcho(t, "b1"), namedEcho(t, "b2")
	c := harness.Start(t, 3, harness.Options{Tune: func(i int, cfg *agent.Config) {
		switch i {
		case 0:
			cfg.Services = []string{"name=echo,mode=tcp,listen=127.0.0.1:0,balance=consistent-hash"}
		case 1:
			cfg.Services = []string{"name=echo,mode=tcp,backend=" + b1}
		case 2:
			cfg.Services = []string{"name=echo,mode=tcp,backend=" + b2}
		}
	}})
	in := c.Nodes[0]
	addr := serviceStatus(t, in, "echo").Listen
	retry.Run(t, func(r *retry.R) {
		if got := serviceStatus(t, in, "echo").Candidates; len(got) != 2 {
			r.Errorf("node-0 places echo on %v, want node-1 and node-2", got)
		}
	})
	var first string
	retry.Run(t, func(r *retry.R) { // until node-0's view has both
		var err error
		first, err = whoServes(t, addr, false)
		r.Check(err)
	})
	for i := range 10 {
		if who, err := whoServes(t, addr, false); err != nil || who != first {
			t.Fatalf("connection %d from the same client went to %q (%v), the first to %q", i, who, err, first)
		}
	}
}

func memberByName(ms []agent.MemberView, name string) *agent.MemberView {
	for i := range ms {
		if ms[i].Name == name {
			return &ms[i]
		}
	}
	return nil
}

func TestServiceSpecErrors(t *testing.T) {
	for spec, want := range map[string]string{
		"name=x,mode=tcp,listen=127.0.0.1:0":                          "",
		"name=x,mode=tcp,backend=127.0.0.1:1,proxy_protocol=v2":       "",
		"name=x,listen=127.0.0.1:0":                                   "mode is missing",
		"name=x,mode=udp,listen=127.0.0.1:0":                          "only tcp",
		"name=x,mode=tcp,listen=127.0.0.1:0,max_conns=lots":           `"lots" is not a number`,
		"name=x,mode=tcp,listen=127.0.0.1:0,colour=blue":              "unknown key",
		"name=x,mode=tcp,listen=127.0.0.1:0,name=y":                   "given twice",
		"name=x,mode=tcp,backend=127.0.0.1:1,proxy_protocol=v1":       "want v2 or none",
		"mode=tcp,listen=127.0.0.1:0":                                 "service name",
		"name=x,mode=tcp,listen=127.0.0.1:0,idle_timeout=forever":     "idle_timeout",
		"name=x,mode=tcp,listen=127.0.0.1:0,backend=127.0.0.1:1,rate": "not key=value",
	} {
		_, err := agent.ParseServiceSpec(spec)
		switch {
		case want == "" && err != nil:
			t.Errorf("%s: %v", spec, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("%s: error %v, want one containing %q", spec, err, want)
		case err != nil && strings.Contains(err.Error(), "\n"):
			t.Errorf("%s: error spans lines: %q", spec, err)
		}
	}
	cfg := agent.DefaultConfig()
	cfg.Name, cfg.Dev = "n", true
	for i := range 5 {
		cfg.Services = append(cfg.Services, fmt.Sprintf("name=s%d,mode=tcp,listen=127.0.0.1:0", i))
	}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "at most 4") {
		t.Errorf("5 services: %v", err)
	}
}
