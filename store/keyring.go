package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/loadmesh/loadmesh/scheduler"
)

// Gossip keyring ops. The keyring is replicated through Raft so that every
// node (each is a Raft voter or non-voter) applies a rotation, and a node
// that was down catches up from the log when it returns.
const (
	// OpKeyringInstall adds Key to the gossip keyring (idempotent). The
	// first key of an empty keyring becomes the primary.
	OpKeyringInstall Op = "keyring.install"
	// OpKeyringUse makes the installed key KeyID the primary: the key new
	// gossip messages are encrypted with.
	OpKeyringUse Op = "keyring.use"
	// OpKeyringRemove drops the installed key KeyID; not the primary.
	OpKeyringRemove Op = "keyring.remove"
)

// MaxGossipKeys bounds how many keys the keyring holds.
const MaxGossipKeys = 8

var (
	// ErrUnknownKey is returned for a use or remove of a key the keyring
	// does not hold.
	ErrUnknownKey = errors.New("no such key in the gossip keyring")
	// ErrPrimaryKey is returned for a removal of the primary key.
	ErrPrimaryKey = errors.New("the key is the primary gossip key; make another key primary first")
	// ErrKeyringFull is returned for an install into a full keyring.
	ErrKeyringFull = fmt.Errorf("the gossip keyring holds %d keys; remove one first", MaxGossipKeys)
)

// GossipKey is one key of the gossip keyring. The state (and so every
// snapshot and backup) holds the key itself: that is how a node that
// missed a rotation catches up.
type GossipKey struct {
	Key       []byte    `json:"key"`
	Installed time.Time `json:"installed"`
	By        string    `json:"by,omitempty"`
}

// Keyring is the cluster's gossip keyring.
type Keyring struct {
	// Keys in order of installation.
	Keys []GossipKey `json:"keys"`
	// Primary is the fingerprint of the key gossip is encrypted with.
	Primary string `json:"primary"`
}

// KeyFingerprint names a gossip key without revealing it: the first 8
// bytes of its SHA-256, in hex.
func KeyFingerprint(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:8])
}

// ValidateGossipKey accepts AES-128, -192 and -256 keys.
func ValidateGossipKey(key []byte) error {
	switch len(key) {
	case 16, 24, 32:
		return nil
	}
	return fmt.Errorf("gossip key is %d bytes; want 16, 24 or 32", len(key))
}

// Clone returns a deep copy of k.
func (k Keyring) Clone() Keyring {
	out := Keyring{Primary: k.Primary, Keys: make([]GossipKey, len(k.Keys))}
	for i, g := range k.Keys {
		g.Key = slices.Clone(g.Key)
		out.Keys[i] = g
	}
	return out
}

// Find returns the index of the key with fingerprint fp, or -1.
func (k Keyring) Find(fp string) int {
	return slices.IndexFunc(k.Keys, func(g GossipKey) bool { return KeyFingerprint(g.Key) == fp })
}

// PrimaryKey returns the primary key, or nil for an empty keyring.
func (k Keyring) PrimaryKey() []byte {
	if i := k.Find(k.Primary); i >= 0 {
		return k.Keys[i].Key
	}
	return nil
}

// Fingerprints lists the keys' fingerprints in installation order.
func (k Keyring) Fingerprints() []string {
	out := make([]string, len(k.Keys))
	for i, g := range k.Keys {
		out[i] = KeyFingerprint(g.Key)
	}
	return out
}

// Keyring returns a copy of the gossip keyring (empty when the cluster does
// not encrypt gossip or no leader has seeded it yet).
func (f *FSM) Keyring() Keyring {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.Keyring.Clone()
}

func validateKeyringCommand(c Command) error {
	switch c.Op {
	case OpKeyringInstall:
		return ValidateGossipKey(c.Key)
	default:
		if len(c.KeyID) != 16 {
			return errors.New("key fingerprint must be 16 hex digits")
		}
		if _, err := hex.DecodeString(c.KeyID); err != nil {
			return errors.New("key fingerprint must be 16 hex digits")
		}
	}
	return nil
}

// applyKeyring runs a keyring command. The caller holds f.mu. Events name
// keys by fingerprint, never the key.
func (f *FSM) applyKeyring(c Command, ev scheduler.Event) (scheduler.Event, error) {
	k := &f.st.Keyring
	ev.Version = f.st.Plan.Version
	ev.Node = ""
	switch c.Op {
	case OpKeyringInstall:
		fp := KeyFingerprint(c.Key)
		if k.Find(fp) >= 0 {
			return scheduler.Event{}, nil // idempotent: nothing changes, nothing to audit
		}
		if len(k.Keys) >= MaxGossipKeys {
			return ev, ErrKeyringFull
		}
		k.Keys = append(k.Keys, GossipKey{Key: slices.Clone(c.Key), Installed: c.Time, By: c.Who})
		ev.After = "installed key " + fp
		if k.Primary == "" {
			k.Primary = fp
			ev.After += " (primary)"
		}
	case OpKeyringUse:
		if k.Find(c.KeyID) < 0 {
			return ev, fmt.Errorf("%w: %s", ErrUnknownKey, c.KeyID)
		}
		if k.Primary == c.KeyID {
			return scheduler.Event{}, nil
		}
		ev.Before = "primary key " + k.Primary
		k.Primary = c.KeyID
		ev.After = "primary key " + c.KeyID
	case OpKeyringRemove:
		i := k.Find(c.KeyID)
		if i < 0 {
			return ev, fmt.Errorf("%w: %s", ErrUnknownKey, c.KeyID)
		}
		if k.Primary == c.KeyID {
			return ev, ErrPrimaryKey
		}
		k.Keys = slices.Delete(k.Keys, i, i+1)
		ev.Before = "installed key " + c.KeyID
		ev.After = "removed key " + c.KeyID
	}
	f.notifySecurity()
	return f.record(ev), nil
}

// SecurityChanged returns a channel that is closed at the next change of
// the gossip keyring or the revoked nodes (or a restore). Take a new one
// after each wake-up, before reading the state.
func (f *FSM) SecurityChanged() <-chan struct{} {
	f.secMu.Lock()
	defer f.secMu.Unlock()
	if f.secCh == nil {
		f.secCh = make(chan struct{})
	}
	return f.secCh
}

// notifySecurity wakes the SecurityChanged watchers. Never blocks.
func (f *FSM) notifySecurity() {
	f.secMu.Lock()
	defer f.secMu.Unlock()
	if f.secCh != nil {
		close(f.secCh)
		f.secCh = nil
	}
}

// Equal reports whether k and o hold the same keys and primary.
func (k Keyring) Equal(o Keyring) bool {
	if k.Primary != o.Primary || len(k.Keys) != len(o.Keys) {
		return false
	}
	for i := range k.Keys {
		if !bytes.Equal(k.Keys[i].Key, o.Keys[i].Key) {
			return false
		}
	}
	return true
}
