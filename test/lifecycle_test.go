package test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/test/harness"
	"github.com/loadmesh/loadmesh/test/retry"
	"github.com/loadmesh/loadmesh/transport"
)

// steadyLoad sends GETs from a few workers, round-robin over the ingress
// addresses, until stopped. Like a load balancer, it sends a request that
// finds no listener (connection refused: it cannot have reached the node)
// to the next address; anything else that is not a 200 is a failure.
type steadyLoad struct {
	hc      *http.Client
	targets []string
	stopCh  chan struct{}
	wg      sync.WaitGroup

	sent, redirected atomic.Int64
	mu               sync.Mutex
	failures         []string
	servedBy         map[string]int
}

func startSteadyLoad(t *testing.T, targets []string, workers int) *steadyLoad {
	l := &steadyLoad{hc: client(t), targets: targets, stopCh: make(chan struct{}), servedBy: map[string]int{}}
	for w := range workers {
		l.wg.Go(func() {
			for i := w; ; i++ {
				select {
				case <-l.stopCh:
					return
				default:
				}
				l.one(i)
			}
		})
	}
	t.Cleanup(l.stop)
	return l
}

func (l *steadyLoad) one(i int) {
	l.sent.Add(1)
	for try := range len(l.targets) {
		u := fmt.Sprintf("http://%s/steady/%d", l.targets[(i+try)%len(l.targets)], i)
		resp, err := l.hc.Get(u)
		if errors.Is(err, syscall.ECONNREFUSED) {
			l.redirected.Add(1)
			continue
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		if err != nil {
			l.failures = append(l.failures, err.Error())
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			l.failures = append(l.failures, fmt.Sprintf("GET %s: %s: %s", u, resp.Status, bytes.TrimSpace(body)))
			return
		}
		l.servedBy[resp.Header.Get(transport.HeaderNode)]++
		return
	}
	l.mu.Lock()
	l.failures = append(l.failures, "every ingress refused the connection")
	l.mu.Unlock()
}

func (l *steadyLoad) stop() {
	select {
	case <-l.stopCh:
	default:
		close(l.stopCh)
	}
	l.wg.Wait()
}

func (l *steadyLoad) report(t *testing.T) {
	t.Helper()
	l.stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Logf("steady load: %d requests sent, %d failed, %d sent to another ingress after a refused connection; served by %v",
		l.sent.Load(), len(l.failures), l.redirected.Load(), l.servedBy)
	if len(l.failures) > 0 {
		t.Errorf("%d of %d requests failed; the first: %s", len(l.failures), l.sent.Load(), l.failures[0])
	}
}

// TestGracefulShutdownUnderLoad shuts the leader down while four nodes
// take steady load: its peers hear at once that it leaves and stop sending
// it requests while it still accepts (the grace), it drains, hands over
// leadership and leaves, and no request fails. The fourth node has no
// backend and forwards everything, so it shows that peers stop choosing
// the leaving node.
func TestGracefulShutdownUnderLoad(t *testing.T) {
	skipShort(t)
	c := harness.Start(t, 4, harness.Options{
		Backends: true, BackendDelay: 5 * time.Millisecond, IngressOnly: []int{3},
		MaxVoters: 3, // node-3, the ingress-only node, is a non-voter: never the leader
		Tune:      func(i int, cfg *agent.Config) { cfg.ShutdownGrace = 4 * time.Second },
	})
	c.WaitForMembers(t)
	leader := c.WaitForLeader(t)
	ingress := c.Nodes[3]
	waitServingPeers(t, c, ingress, 3)
	var targets []string
	for _, n := range c.Live() {
		targets = append(targets, n.HTTPAddr())
	}
	load := startSteadyLoad(t, targets, 6)
	others := slices.DeleteFunc(c.Live(), func(n *harness.Node) bool { return n == leader })

	stopped := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(stopped)
		c.Stop(t, leader)
	}()

	// Announced at once: every peer sees it leaving while it still runs.
	retry.Run(t, func(r *retry.R) {
		if !leader.Draining() {
			r.Fatalf("%s does not drain yet", leader.Name())
		}
		for _, n := range others {
			if m, ok := n.Cluster().Member(leader.Name()); !ok || !m.Leaving {
				r.Fatalf("%s does not see %s leaving: %+v", n.Name(), leader.Name(), m)
			}
		}
	})
	announced := time.Since(start)
	resp, err := http.Get("http://" + leader.APIAddr() + "/readyz")
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "draining") {
			t.Errorf("/readyz of the draining node: %s %s", resp.Status, body)
		}
	}
	// Peers stop choosing it.
	hc := client(t)
	retry.Run(t, func(r *retry.R) {
		for i := range 20 {
			resp, err := hc.Get(fmt.Sprintf("http://%s/probe/%d", ingress.HTTPAddr(), i))
			r.Check(err)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if by := resp.Header.Get(transport.HeaderNode); by == leader.Name() {
				r.Fatalf("%s still forwards to the leaving %s", ingress.Name(), leader.Name())
			}
		}
	})
	avoided := time.Since(start)
	<-stopped
	t.Logf("%s: peers saw it leaving after %s and sent it nothing new after %s; stopped after %s",
		leader.Name(), announced.Round(time.Millisecond), avoided.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))

	next := c.WaitForLeader(t)
	if next.Name() == leader.Name() {
		t.Fatalf("leader is still %s", leader.Name())
	}
	retry.Run(t, func(r *retry.R) {
		if m, ok := next.Cluster().Member(leader.Name()); !ok || m.Status != cluster.StatusLeft {
			r.Fatalf("%s sees %s as %+v, want left", next.Name(), leader.Name(), m)
		}
	})
	load.report(t)
}

// TestReloadAppliesLimitsAndNamesTheRest reloads a running node: limits
// change at once, settings that need a restart are named and keep their
// value, and a configuration that does not validate changes nothing.
func TestReloadAppliesLimitsAndNamesTheRest(t *testing.T) {
	skipShort(t)
	c := harness.Start(t, 1, harness.Options{
		Backends: true,
		Tune:     func(i int, cfg *agent.Config) { cfg.RateLimit, cfg.RateLimitScope = 1000, "node" },
	})
	n := c.WaitForLeader(t)
	hc := client(t)
	post := func(body string) int {
		t.Helper()
		resp, err := hc.Post("http://"+n.HTTPAddr()+"/reload", "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(strings.Repeat("x", 100)); code != http.StatusOK {
		t.Fatalf("before the reload: status %d", code)
	}

	cfg := n.Cfg
	cfg.RateLimit, cfg.RateBurst = 0.5, 2
	cfg.MaxBodyBytes = 10
	cfg.ShutdownGrace = 7 * time.Second
	cfg.Zone = "elsewhere"
	rep, err := n.Reload(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("applied: %q; restart: %q", rep.Applied, rep.Restart)
	for _, want := range []string{"rate-limit: 1000 → 0.5", "rate-burst: 0 → 2", "max-body-bytes: 4294967296 → 10", "shutdown-grace: 2s → 7s"} {
		if !slices.Contains(rep.Applied, want) {
			t.Errorf("applied %q, want it to include %q", rep.Applied, want)
		}
	}
	if !slices.Equal(rep.Restart, []string{"zone"}) {
		t.Errorf("restart %q, want [zone]", rep.Restart)
	}
	if got := n.ShutdownGrace(); got != 7*time.Second {
		t.Errorf("shutdown grace %s, want 7s", got)
	}
	if code := post(strings.Repeat("x", 100)); code != http.StatusRequestEntityTooLarge {
		t.Errorf("a 100-byte body after lowering --max-body-bytes to 10: status %d, want 413", code)
	}
	// The client's bucket (full at 1000) takes the new rate at the next
	// tick; from then on, a burst of 2 at most.
	retry.Run(t, func(r *retry.R) {
		codes := map[int]int{}
		for range 5 {
			codes[post("")]++
		}
		if codes[http.StatusTooManyRequests] < 3 {
			r.Fatalf("5 requests at once: %v, want at least 3 answered 429", codes)
		}
	})

	bad := cfg
	bad.MaxBodyBytes = 1000
	bad.QueueTarget = -time.Second
	if _, err := n.Reload(bad); err == nil || !strings.Contains(err.Error(), "--queue-target") {
		t.Fatalf("reload with a negative --queue-target: %v, want an error naming it", err)
	}
	if code := post(strings.Repeat("x", 100)); code != http.StatusRequestEntityTooLarge && code != http.StatusTooManyRequests {
		t.Errorf("after a refused reload: status %d, want the limits of the last good one", code)
	}
	// Reloading the same configuration changes nothing.
	if rep, err := n.Reload(cfg); err != nil || len(rep.Applied) != 0 {
		t.Errorf("second reload of the same configuration: %q, %v; want nothing applied", rep.Applied, err)
	}
}

func gossipKey(b byte) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, 32)) }

// TestGossipKeyMismatchFailsTheJoiner starts a node whose gossip
// encryption does not match the cluster's: it says which way it differs,
// and the cluster does not take it in.
func TestGossipKeyMismatchFailsTheJoiner(t *testing.T) {
	skipShort(t)
	for _, tc := range []struct {
		name             string
		seedKey, joinKey string
		want             string
	}{
		{"joiner has no key", gossipKey(1), "", "this node has no key"},
		{"cluster has no key", "", gossipKey(1), "do not encrypt gossip"},
		{"another key", gossipKey(1), gossipKey(2), "another gossip key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := harness.Start(t, 1, harness.Options{Tune: func(i int, cfg *agent.Config) {
				cfg.Encrypt = map[bool]string{true: tc.seedKey, false: tc.joinKey}[i == 0]
			}})
			c.WaitForLeader(t)
			n := c.Add(t)
			select {
			case err := <-n.Failed():
				if !errors.Is(err, cluster.ErrGossipKey) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("failed with %v, want %v saying %q", err, cluster.ErrGossipKey, tc.want)
				}
				t.Logf("refused: %v", err)
			case <-time.After(retry.Scale(20 * time.Second)):
				t.Fatalf("the joiner has not failed after %s", retry.Scale(20*time.Second))
			}
			if len(c.Nodes[0].Cluster().Members()) != 1 {
				t.Errorf("the seed lists %d members, want only itself", len(c.Nodes[0].Cluster().Members()))
			}
		})
	}
}

// TestDataDirOfAnotherClusterIsRefused restarts a node of one cluster with
// its data dir, pointed at another cluster: it fails, and the other
// cluster's leader does not add it to Raft.
func TestDataDirOfAnotherClusterIsRefused(t *testing.T) {
	skipShort(t)
	main := harness.Start(t, 1, harness.Options{})
	leader := main.WaitForLeader(t)
	other := harness.Start(t, 1, harness.Options{
		CAFor: func(int) *transport.CA { return main.CA },
		Tune:  func(i int, cfg *agent.Config) { cfg.Name = "stranger" },
	})
	stranger := other.WaitForLeader(t)
	retry.Run(t, func(r *retry.R) {
		if leader.Cluster().ClusterID() == "" || stranger.Cluster().ClusterID() == "" {
			r.Fatalf("cluster ids %q and %q, want both set", leader.Cluster().ClusterID(), stranger.Cluster().ClusterID())
		}
	})
	ours, theirs := leader.Cluster().ClusterID(), stranger.Cluster().ClusterID()
	if ours == theirs {
		t.Fatalf("two clusters share the id %s", ours)
	}
	other.Stop(t, stranger)

	// main.Restart joins the node to main's live members.
	back := main.Restart(t, &harness.Node{Agent: stranger.Agent, Cfg: stranger.Cfg})
	select {
	case err := <-back.Failed():
		var fe *cluster.ForeignClusterError
		if !errors.As(err, &fe) || fe.Ours != theirs || fe.Theirs != ours {
			t.Fatalf("failed with %v, want a ForeignClusterError (ours %s, theirs %s)", err, theirs, ours)
		}
		t.Logf("refused: %v", err)
	case <-time.After(retry.Scale(20 * time.Second)):
		t.Fatalf("the stranger has not failed after %s", retry.Scale(20*time.Second))
	}
	if v := voters(leader); !slices.Equal(v, []string{leader.Name()}) {
		t.Errorf("voters %v, want only %s", v, leader.Name())
	}
}
