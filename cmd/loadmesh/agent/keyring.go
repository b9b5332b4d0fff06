package agent

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/store"
)

// KeyringFile is the file in the data dir that keeps this node's gossip
// keyring across restarts. When present it overrides --encrypt.
const KeyringFile = "keyring.json"

// keyringFileBody is KeyringFile's content: base64 keys, primary first.
type keyringFileBody struct {
	Primary string   `json:"primary"`
	Keys    []string `json:"keys"`
}

func readKeyringFile(dir string) (primary []byte, all [][]byte, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, KeyringFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, false, nil
	}
	if err != nil {
		return nil, nil, false, fmt.Errorf("read gossip keyring: %w", err)
	}
	var body keyringFileBody
	if err := json.Unmarshal(b, &body); err != nil {
		return nil, nil, false, fmt.Errorf("read gossip keyring %s: %w", KeyringFile, err)
	}
	if primary, err = DecodeGossipKey(body.Primary); err != nil {
		return nil, nil, false, fmt.Errorf("gossip keyring %s: primary %w", KeyringFile, err)
	}
	for _, s := range body.Keys {
		k, err := DecodeGossipKey(s)
		if err != nil {
			return nil, nil, false, fmt.Errorf("gossip keyring %s: %w", KeyringFile, err)
		}
		all = append(all, k)
	}
	return primary, all, true, nil
}

// writeKeyringFile replaces KeyringFile atomically, readable by the owner
// only.
func writeKeyringFile(dir string, primary []byte, all [][]byte) error {
	body := keyringFileBody{Primary: base64.StdEncoding.EncodeToString(primary)}
	for _, k := range all {
		body.Keys = append(body.Keys, base64.StdEncoding.EncodeToString(k))
	}
	b, err := json.MarshalIndent(body, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, KeyringFile+".tmp*")
	if err != nil {
		return fmt.Errorf("write gossip keyring: %w", err)
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err == nil {
		if _, err = f.Write(append(b, '\n')); err == nil {
			err = f.Sync()
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, KeyringFile))
	}
	if err != nil {
		return fmt.Errorf("write gossip keyring: %w", err)
	}
	return nil
}

// startingGossipKeys decides the keyring gossip starts with: the keyring
// file's when there is one (it holds the rotations this node applied;
// --encrypt, unchanged in a service's unit file, would be stale), else
// --encrypt. With a keyring file the node has been in the cluster, so a
// first join refused for its key (retryKeys) is retried: it missed a
// rotation while it was down and catches up with the keyring through Raft
// (the leader still has it in its configuration, for --dead-server-grace).
// A node dropped from Raft meanwhile cannot: it comes back with its keyring
// file deleted and --encrypt set to the current key.
func (a *Agent) startingGossipKeys(dir string, flagKey []byte) (primary []byte, extra [][]byte, retryKeys bool, err error) {
	primary, all, ok, err := readKeyringFile(dir)
	if err != nil || !ok {
		return flagKey, nil, false, err
	}
	a.log.Info("gossip keyring file found; it overrides --encrypt", "file", filepath.Join(dir, KeyringFile),
		"keys", len(all), "primary", store.KeyFingerprint(primary))
	for _, k := range all {
		if !bytes.Equal(k, primary) {
			extra = append(extra, k)
		}
	}
	return primary, extra, true, nil
}

// keyringSync applies the replicated keyring to this node's gossip and
// keeps the keyring file in step. It wakes on every keyring change of the
// FSM (store.FSM.SecurityChanged) and every keyringResync.
type keyringSync struct {
	a    *Agent
	stop chan struct{}
	wg   sync.WaitGroup
	// mu serialises sync (the loop and API handlers waiting for it).
	mu    sync.Mutex
	saved string // fingerprint list last written to the file
}

const keyringResync = 2 * time.Second

func (a *Agent) startKeyringSync() {
	k := &keyringSync{a: a, stop: make(chan struct{})}
	a.keyring = k
	if p, _ := a.cluster.GossipKeys(); p == nil {
		return // gossip in the clear: nothing to keep in step
	}
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		t := time.NewTicker(keyringResync)
		defer t.Stop()
		for {
			ch := a.fsm.SecurityChanged()
			k.sync()
			select {
			case <-k.stop:
				return
			case <-ch:
			case <-t.C:
			}
		}
	}()
}

func (a *Agent) stopKeyringSync() {
	if a.keyring != nil && a.keyring.stop != nil {
		close(a.keyring.stop)
		a.keyring.wg.Wait()
		a.keyring.stop = nil
	}
}

// caughtUp reports whether this node's replica is current enough to act
// on: a leader is known and every entry it knows committed is applied. A
// node replaying its log after a restart passes through old keyrings;
// applying those would drop the keys the cluster uses now.
func (a *Agent) caughtUp() bool {
	st := a.cluster.RaftStatus()
	return a.cluster.Leader() != "" && st.AppliedIndex >= st.CommitIndex
}

// sync brings memberlist's keyring in line with the replicated one: add
// what is missing, switch the primary, then drop the keys no longer listed
// (in that order, so gossip is never without a key peers can read).
func (k *keyringSync) sync() {
	k.mu.Lock()
	defer k.mu.Unlock()
	a := k.a
	want := a.fsm.Keyring()
	if len(want.Keys) == 0 || !a.caughtUp() {
		return
	}
	c := a.cluster
	for _, g := range want.Keys {
		if err := c.InstallKey(g.Key); err != nil {
			a.log.Error("install gossip key", "key", store.KeyFingerprint(g.Key), "error", err)
			return
		}
	}
	if p := want.PrimaryKey(); p != nil {
		if cur, _ := c.GossipKeys(); !bytes.Equal(cur, p) {
			if err := c.UseKey(p); err != nil {
				a.log.Error("use gossip key", "key", want.Primary, "error", err)
				return
			}
			a.log.Info("gossip primary key changed", "key", want.Primary)
		}
	}
	_, have := c.GossipKeys()
	for _, key := range have {
		if want.Find(store.KeyFingerprint(key)) < 0 {
			if err := c.RemoveKey(key); err != nil {
				a.log.Error("remove gossip key", "key", store.KeyFingerprint(key), "error", err)
				return
			}
			a.log.Info("gossip key removed", "key", store.KeyFingerprint(key))
		}
	}
	primary, all := c.GossipKeys()
	fps := fmt.Sprint(store.KeyFingerprint(primary), fingerprints(all))
	if fps == k.saved {
		return
	}
	if err := writeKeyringFile(a.dataDir.Path, primary, all); err != nil {
		a.log.Error("persist gossip keyring", "error", err)
		return
	}
	k.saved = fps
}

func fingerprints(keys [][]byte) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = store.KeyFingerprint(k)
	}
	slices.Sort(out)
	return out
}

// keyringHook seeds the replicated keyring, on the first leader of an
// encrypted cluster, with the leader's gossip keys.
type keyringHook struct{ a *Agent }

func (h keyringHook) Establish() error { return h.a.seedKeyring() }
func (h keyringHook) Revoke()          {}

func (a *Agent) seedKeyring() error {
	if len(a.fsm.Keyring().Keys) > 0 {
		return nil
	}
	primary, _ := a.cluster.GossipKeys()
	if primary == nil {
		return nil // gossip in the clear stays so
	}
	_, err := a.apply(store.Command{Op: store.OpKeyringInstall, Key: primary, Time: a.now().UTC(),
		Who: "leader", Why: "seeded the replicated gossip keyring with the leader's key"})
	if err != nil {
		return fmt.Errorf("seed gossip keyring: %w", err)
	}
	return nil
}

// KeyringView is the body of GET /v1/keyring: the replicated keyring (by
// fingerprint, never the keys) and this node's view of it.
type KeyringView struct {
	Node string `json:"node"`
	// Primary is the replicated keyring's primary key.
	Primary string    `json:"primary"`
	Keys    []KeyView `json:"keys"`
	// LocalPrimary and LocalKeys are what this node's gossip uses now;
	// InSync says they match the replicated keyring.
	LocalPrimary string   `json:"local_primary"`
	LocalKeys    []string `json:"local_keys"`
	InSync       bool     `json:"in_sync"`
	// AppliedIndex is this node's last applied Raft index.
	AppliedIndex uint64 `json:"applied_index"`
	// Encrypted is false for a cluster that gossips in the clear.
	Encrypted bool `json:"encrypted"`
	// Revoked are the revoked nodes (they no longer follow the keyring).
	Revoked []string `json:"revoked,omitempty"`
}

// KeyView is one key of the replicated keyring.
type KeyView struct {
	Fingerprint string    `json:"fingerprint"`
	Primary     bool      `json:"primary,omitempty"`
	Installed   time.Time `json:"installed"`
	By          string    `json:"by,omitempty"`
	// Local says this node's gossip holds the key.
	Local bool `json:"local"`
}

// KeyringRequest is the body of POST /v1/keyring/install and /use: a
// base64 key (install and use) or a key fingerprint (use).
type KeyringRequest struct {
	Key    string `json:"key"`
	Reason string `json:"reason,omitempty"`
}

// KeyringChange answers a keyring write.
type KeyringChange struct {
	Fingerprint string `json:"fingerprint"`
	// Changed is false for a write that changed nothing (a key already
	// installed, already primary).
	Changed bool             `json:"changed"`
	Event   *scheduler.Event `json:"event,omitempty"`
}

func (a *Agent) keyringView() KeyringView {
	kr := a.fsm.Keyring()
	primary, all := a.cluster.GossipKeys()
	local := map[string]bool{}
	v := KeyringView{Node: a.cfg.Name, Primary: kr.Primary, Keys: []KeyView{}, LocalKeys: fingerprints(all),
		AppliedIndex: a.cluster.RaftStatus().AppliedIndex, Encrypted: primary != nil}
	for _, fp := range v.LocalKeys {
		local[fp] = true
	}
	if primary != nil {
		v.LocalPrimary = store.KeyFingerprint(primary)
	}
	for _, g := range kr.Keys {
		fp := store.KeyFingerprint(g.Key)
		v.Keys = append(v.Keys, KeyView{Fingerprint: fp, Primary: fp == kr.Primary, Installed: g.Installed, By: g.By, Local: local[fp]})
	}
	want := kr.Fingerprints()
	slices.Sort(want)
	v.InSync = len(kr.Keys) > 0 && kr.Primary == v.LocalPrimary && slices.Equal(want, v.LocalKeys)
	v.Revoked = slices.Sorted(maps.Keys(a.fsm.RevokedNodes()))
	return v
}

func (a *Agent) registerKeyringAPI(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/keyring", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.keyringView())
	})
	mux.HandleFunc("POST /v1/keyring/install", a.leaderOnly(a.keyringWrite(store.OpKeyringInstall)))
	mux.HandleFunc("POST /v1/keyring/use", a.leaderOnly(a.keyringWrite(store.OpKeyringUse)))
	mux.HandleFunc("DELETE /v1/keyring/{fingerprint}", a.leaderOnly(a.keyringWrite(store.OpKeyringRemove)))
}

// resolveKey turns what the operator gave (a base64 key, or for use and
// remove a fingerprint of an installed key) into the key's fingerprint
// and, when given, the key.
func resolveKey(s string, op store.Op, kr store.Keyring) (fp string, key []byte, err error) {
	if op != store.OpKeyringInstall && len(s) == 16 {
		if _, herr := hex.DecodeString(s); herr == nil {
			return s, nil, nil
		}
	}
	key, err = DecodeGossipKey(s)
	if err != nil {
		if op == store.OpKeyringInstall {
			return "", nil, fmt.Errorf("gossip key: %w", err)
		}
		return "", nil, fmt.Errorf("want a base64 gossip key or a 16-digit key fingerprint: %w", err)
	}
	return store.KeyFingerprint(key), key, nil
}

func (a *Agent) keyringWrite(op store.Op) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req KeyringRequest
		if op == store.OpKeyringRemove {
			req.Key, req.Reason = r.PathValue("fingerprint"), r.URL.Query().Get("reason")
		} else if err := decodeBody(r, &req); err != nil {
			writeError(w, bodyStatus(err), err.Error())
			return
		}
		if p, _ := a.cluster.GossipKeys(); p == nil {
			writeError(w, http.StatusConflict, cluster.ErrNotEncrypted.Error())
			return
		}
		if err := a.seedKeyring(); err != nil {
			writeApplyError(w, err)
			return
		}
		kr := a.fsm.Keyring()
		fp, key, err := resolveKey(req.Key, op, kr)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		if op != store.OpKeyringInstall && kr.Find(fp) < 0 {
			writeError(w, http.StatusNotFound, fmt.Sprintf("key %s is not in the gossip keyring; install it first", fp))
			return
		}
		if op == store.OpKeyringRemove && kr.Primary == fp {
			writeError(w, http.StatusConflict, fmt.Sprintf("key %s is the primary gossip key; make another key primary (keyring use) before removing it", fp))
			return
		}
		if op == store.OpKeyringInstall && kr.Find(fp) < 0 && len(kr.Keys) >= store.MaxGossipKeys {
			writeError(w, http.StatusConflict, store.ErrKeyringFull.Error())
			return
		}
		why := req.Reason
		if why == "" {
			why = "operator: " + string(op)
		}
		cmd := store.Command{Op: op, Time: a.now().UTC(), Who: actor(r), Why: why}
		if op == store.OpKeyringInstall {
			cmd.Key = key
		} else {
			cmd.KeyID = fp
		}
		res, err := a.apply(cmd)
		if err != nil {
			writeApplyError(w, err)
			return
		}
		// Apply locally before answering, so that the next step of a
		// rotation (from the same operator) finds the leader ready.
		if a.keyring != nil {
			a.keyring.sync()
		}
		out := KeyringChange{Fingerprint: fp}
		if ev, ok := res.(scheduler.Event); ok && ev.Kind != "" {
			out.Changed, out.Event = true, &ev
		}
		writeJSON(w, http.StatusOK, out)
	}
}
