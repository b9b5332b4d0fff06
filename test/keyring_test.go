package test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
	"github.com/loadmesh/loadmesh/store"
	"github.com/loadmesh/loadmesh/test/harness"
	"github.com/loadmesh/loadmesh/test/retry"
	"github.com/loadmesh/loadmesh/transport"
)

// pacedLoad sends GETs at a fixed rate, round-robin over the ingress
// addresses, until stopped, and counts every answer that is not a 200.
type pacedLoad struct {
	stopCh chan struct{}
	wg     sync.WaitGroup

	mu       sync.Mutex
	sent     int
	failures []string
	servedBy map[string]int
}

func startPacedLoad(t *testing.T, targets []string, perSecond int) *pacedLoad {
	hc := client(t)
	l := &pacedLoad{stopCh: make(chan struct{}), servedBy: map[string]int{}}
	tick := time.NewTicker(time.Second / time.Duration(perSecond))
	l.wg.Go(func() {
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-l.stopCh:
				return
			case <-tick.C:
			}
			l.wg.Go(func() {
				u := fmt.Sprintf("http://%s/paced/%d", targets[i%len(targets)], i)
				resp, err := hc.Get(u)
				l.mu.Lock()
				defer l.mu.Unlock()
				l.sent++
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
			})
		}
	})
	t.Cleanup(l.stop)
	return l
}

func (l *pacedLoad) stop() {
	select {
	case <-l.stopCh:
	default:
		close(l.stopCh)
	}
	l.wg.Wait()
}

func (l *pacedLoad) snapshot() (sent int, failures []string, servedBy map[string]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	sb := map[string]int{}
	for k, v := range l.servedBy {
		sb[k] = v
	}
	return l.sent, append([]string(nil), l.failures...), sb
}

// apiCall sends method path with body (JSON) to a node's API and decodes
// the answer into v; it returns the status.
func apiCall(t *testing.T, n *harness.Node, method, path string, body, v any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+n.APIAddr()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+harness.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	if resp.StatusCode != http.StatusOK {
		t.Logf("%s %s: %s %s", method, path, resp.Status, strings.Join(strings.Fields(string(b)), " "))
	}
	return resp.StatusCode
}

func rawKey(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

// waitGossipKeys waits until every node in nodes encrypts with primary and
// holds exactly keys.
func waitGossipKeys(t *testing.T, nodes []*harness.Node, primary []byte, keys ...[]byte) {
	t.Helper()
	retry.Run(t, func(r *retry.R) {
		for _, n := range nodes {
			p, all := n.Cluster().GossipKeys()
			if !bytes.Equal(p, primary) {
				r.Fatalf("%s encrypts with %s, want %s", n.Name(), store.KeyFingerprint(p), store.KeyFingerprint(primary))
			}
			if len(all) != len(keys) {
				r.Fatalf("%s holds %d keys, want %d", n.Name(), len(all), len(keys))
			}
			for _, k := range keys {
				if !containsKey(all, k) {
					r.Fatalf("%s lacks key %s", n.Name(), store.KeyFingerprint(k))
				}
			}
		}
	})
}

func containsKey(all [][]byte, k []byte) bool {
	for _, x := range all {
		if bytes.Equal(x, k) {
			return true
		}
	}
	return false
}

// TestGossipKeyRotationUnderLoad rotates the gossip key of an encrypted
// three-node cluster (install new, use new, remove old) through the API
// while the three ingresses take 50 requests/s together (one node has no
// backend and forwards all it gets over the peer channel): no request fails, every node
// ends with only the new key (and its keyring file says so), gossip still
// works (a node with the new key joins, one with only the old key is
// refused), and a restarted node comes back with the new key although its
// --encrypt still names the old one.
func TestGossipKeyRotationUnderLoad(t *testing.T) {
	skipShort(t)
	oldKey, newKey := rawKey(1), rawKey(2)
	keyFor := map[int][]byte{3: newKey, 4: oldKey}
	c := harness.Start(t, 3, harness.Options{Backends: true, IngressOnly: []int{2}, Tune: func(i int, cfg *agent.Config) {
		k, ok := keyFor[i]
		if !ok {
			k = oldKey
		}
		cfg.Encrypt = base64.StdEncoding.EncodeToString(k)
	}})
	c.WaitForMembers(t)
	c.WaitForLeader(t)
	// The first leader seeded the replicated keyring with its key.
	retry.Run(t, func(r *retry.R) {
		for _, n := range c.Live() {
			if kr := n.Plan().Keyring(); kr.Primary != store.KeyFingerprint(oldKey) || len(kr.Keys) != 1 {
				r.Fatalf("%s: replicated keyring %v primary %s", n.Name(), kr.Fingerprints(), kr.Primary)
			}
		}
	})
	waitServingPeers(t, c, c.Nodes[2], 2) // node-2 has no backend: it forwards everything
	var targets []string
	for _, n := range c.Live() {
		targets = append(targets, n.HTTPAddr())
	}
	load := startPacedLoad(t, targets, 50)
	time.Sleep(500 * time.Millisecond) // load before the rotation, as a baseline

	// The operator's steps, each sent to a follower (carried to the leader)
	// and each checked on every node before the next, as the README says.
	api := c.Nodes[1]
	b64 := base64.StdEncoding.EncodeToString(newKey)
	var res agent.KeyringChange
	if st := apiCall(t, api, http.MethodPost, "/v1/keyring/install", agent.KeyringRequest{Key: b64}, &res); st != http.StatusOK || !res.Changed {
		t.Fatalf("install: %d %+v", st, res)
	}
	waitGossipKeys(t, c.Live(), oldKey, oldKey, newKey)
	if st := apiCall(t, api, http.MethodPost, "/v1/keyring/use", agent.KeyringRequest{Key: res.Fingerprint}, nil); st != http.StatusOK {
		t.Fatalf("use: %d", st)
	}
	waitGossipKeys(t, c.Live(), newKey, oldKey, newKey)
	if st := apiCall(t, api, http.MethodDelete, "/v1/keyring/"+store.KeyFingerprint(oldKey), nil, nil); st != http.StatusOK {
		t.Fatalf("remove: %d", st)
	}
	waitGossipKeys(t, c.Live(), newKey, newKey)
	time.Sleep(time.Second) // load after the rotation
	load.stop()
	sent, failures, servedBy := load.snapshot()
	t.Logf("paced load (50/s) over the rotation: %d requests, %d failed, served by %v", sent, len(failures), servedBy)
	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed; the first: %s", len(failures), sent, failures[0])
	}
	if sent < 50 {
		t.Errorf("only %d requests sent", sent)
	}

	// Errors are one clear line with the right status.
	for _, tc := range []struct {
		method, path string
		body         any
		want         int
	}{
		{http.MethodPost, "/v1/keyring/install", agent.KeyringRequest{Key: "not base64!"}, http.StatusBadRequest},
		{http.MethodPost, "/v1/keyring/install", agent.KeyringRequest{Key: base64.StdEncoding.EncodeToString([]byte("short"))}, http.StatusBadRequest},
		{http.MethodPost, "/v1/keyring/use", agent.KeyringRequest{Key: store.KeyFingerprint(oldKey)}, http.StatusNotFound},
		{http.MethodDelete, "/v1/keyring/" + store.KeyFingerprint(newKey), nil, http.StatusConflict},
	} {
		if st := apiCall(t, c.Nodes[0], tc.method, tc.path, tc.body, nil); st != tc.want {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, st, tc.want)
		}
	}
	// Audit events name keys by fingerprint only.
	for _, ev := range c.Nodes[0].Plan().Events(0) {
		js, _ := json.Marshal(ev)
		for _, k := range [][]byte{oldKey, newKey} {
			if strings.Contains(string(js), base64.StdEncoding.EncodeToString(k)) {
				t.Fatalf("audit event holds a key: %s", js)
			}
		}
	}
	// Each node keeps the keyring in its data dir, owner-only.
	for _, n := range c.Live() {
		p := filepath.Join(n.Cfg.DataDir, agent.KeyringFile)
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s is %v, want 0600", p, fi.Mode().Perm())
		}
		b, _ := os.ReadFile(p)
		if !strings.Contains(string(b), b64) || strings.Contains(string(b), base64.StdEncoding.EncodeToString(oldKey)) {
			t.Errorf("%s: %s", p, b)
		}
	}

	// Gossip works with the new key only: a node with it joins, a node
	// with only the old key is refused.
	joiner := c.Add(t)
	c.WaitForMembers(t)
	retry.Run(t, func(r *retry.R) {
		if !joiner.Plan().Keyring().Equal(c.Nodes[0].Plan().Keyring()) {
			r.Fatalf("the joiner has not caught up with the keyring")
		}
	})
	stale := c.Add(t)
	select {
	case err := <-stale.Failed():
		if !errors.Is(err, cluster.ErrGossipKey) {
			t.Fatalf("the node with the old key failed with %v, want %v", err, cluster.ErrGossipKey)
		}
		t.Logf("old key refused: %v", err)
	case <-time.After(retry.Scale(20 * time.Second)):
		t.Fatalf("the node with only the old key has not failed")
	}
	c.Kill(t, stale)

	// A restart keeps the new key (the keyring file overrides --encrypt,
	// which still names the old key).
	restarted := c.Restart(t, func() *harness.Node { n := c.Nodes[2]; c.Stop(t, n); return n }())
	waitGossipKeys(t, []*harness.Node{restarted}, newKey, newKey)
	c.WaitForMembers(t)
	retry.Run(t, func(r *retry.R) {
		if kr := restarted.Plan().Keyring(); kr.Primary != store.KeyFingerprint(newKey) || len(kr.Keys) != 1 {
			r.Fatalf("restarted replica's keyring %v primary %s", kr.Fingerprints(), kr.Primary)
		}
	})
}

// TestGossipKeyRotationCatchUp crashes a node, rotates the gossip key
// completely (install, use, remove) while it is down, and restarts it: its
// keyring file holds only the removed key, so it cannot gossip, but it is
// still in the Raft configuration (within --dead-server-grace), catches up
// with the keyring through Raft, applies it and rejoins gossip.
func TestGossipKeyRotationCatchUp(t *testing.T) {
	skipShort(t)
	oldKey, newKey := rawKey(3), rawKey(4)
	c := harness.Start(t, 3, harness.Options{DeadServerGrace: time.Minute, Tune: func(i int, cfg *agent.Config) {
		cfg.Encrypt = base64.StdEncoding.EncodeToString(oldKey)
	}})
	c.WaitForMembers(t)
	c.WaitForLeader(t)
	waitGossipKeys(t, c.Live(), oldKey, oldKey)
	retry.Run(t, func(r *retry.R) { // the keyring file exists once the seed applied
		for _, n := range c.Live() {
			if _, err := os.Stat(filepath.Join(n.Cfg.DataDir, agent.KeyringFile)); err != nil {
				r.Fatalf("%s: %v", n.Name(), err)
			}
		}
	})
	leader := c.WaitForLeader(t)
	var away *harness.Node
	for _, n := range c.Live() {
		if n != leader {
			away = n
			break
		}
	}
	c.Kill(t, away)
	var api *harness.Node
	for _, n := range c.Live() {
		api = n
	}
	rotate := func(method, path string, body any) {
		t.Helper()
		retry.Run(t, func(r *retry.R) {
			if st := apiCall(t, api, method, path, body, nil); st != http.StatusOK {
				r.Fatalf("%s %s: %d", method, path, st)
			}
		})
	}
	rotate(http.MethodPost, "/v1/keyring/install", agent.KeyringRequest{Key: base64.StdEncoding.EncodeToString(newKey)})
	waitGossipKeys(t, c.Live(), oldKey, oldKey, newKey)
	rotate(http.MethodPost, "/v1/keyring/use", agent.KeyringRequest{Key: store.KeyFingerprint(newKey)})
	waitGossipKeys(t, c.Live(), newKey, oldKey, newKey)
	rotate(http.MethodDelete, "/v1/keyring/"+store.KeyFingerprint(oldKey), nil)
	waitGossipKeys(t, c.Live(), newKey, newKey)

	back := c.Restart(t, away)
	waitGossipKeys(t, []*harness.Node{back}, newKey, newKey)
	c.WaitForMembers(t)
	select {
	case err := <-back.Failed():
		t.Fatalf("the returning node failed: %v", err)
	default:
	}
}
