package cluster

import (
	"errors"
	"fmt"
	"slices"

	"github.com/hashicorp/memberlist"
)

// ErrNotEncrypted is returned by the keyring methods on a node started
// without a gossip key: a cluster that gossips in the clear stays so (turn
// encryption on by restarting every agent with --encrypt).
var ErrNotEncrypted = errors.New("gossip is not encrypted on this node; restart every agent with --encrypt to turn encryption on")

// newKeyring builds memberlist's keyring from the configured primary key
// and extra keys, or returns nil when gossip is not encrypted. memberlist
// tries every key of the ring on what it receives and encrypts with the
// primary, which is what makes a rotation possible at run time.
func newKeyring(primary []byte, extra [][]byte) (*memberlist.Keyring, error) {
	if len(primary) == 0 {
		return nil, nil
	}
	kr, err := memberlist.NewKeyring(extra, primary)
	if err != nil {
		return nil, fmt.Errorf("gossip keyring: %w", err)
	}
	return kr, nil
}

// GossipKeys returns the keys gossip currently uses: the primary (used to
// encrypt) and all of them (tried when decrypting), primary first. Both are
// empty when gossip is not encrypted.
func (c *Cluster) GossipKeys() (primary []byte, all [][]byte) {
	if c.keyring == nil {
		return nil, nil
	}
	primary = c.keyring.GetPrimaryKey()
	for _, k := range c.keyring.GetKeys() {
		all = append(all, slices.Clone(k))
	}
	return slices.Clone(primary), all
}

// InstallKey adds key to the gossip keyring: it is tried on received
// messages from now on. Installing a key already there is a no-op.
func (c *Cluster) InstallKey(key []byte) error {
	if c.keyring == nil {
		return ErrNotEncrypted
	}
	return c.keyring.AddKey(key)
}

// UseKey makes the installed key the primary: gossip sent from now on is
// encrypted with it.
func (c *Cluster) UseKey(key []byte) error {
	if c.keyring == nil {
		return ErrNotEncrypted
	}
	return c.keyring.UseKey(key)
}

// RemoveKey drops key from the gossip keyring; not the primary.
func (c *Cluster) RemoveKey(key []byte) error {
	if c.keyring == nil {
		return ErrNotEncrypted
	}
	return c.keyring.RemoveKey(key)
}
