package cluster

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestKeyringMethodsWithoutEncryption(t *testing.T) {
	c := &Cluster{}
	if p, all := c.GossipKeys(); p != nil || all != nil {
		t.Fatalf("unencrypted node reports keys %x %x", p, all)
	}
	for _, err := range []error{c.InstallKey(make([]byte, 16)), c.UseKey(make([]byte, 16)), c.RemoveKey(make([]byte, 16))} {
		if !errors.Is(err, ErrNotEncrypted) {
			t.Fatalf("got %v, want ErrNotEncrypted", err)
		}
	}
}

func TestKeyringMethods(t *testing.T) {
	a, b := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 16)
	kr, err := newKeyring(a, [][]byte{b})
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{keyring: kr}
	if p, all := c.GossipKeys(); !bytes.Equal(p, a) || len(all) != 2 {
		t.Fatalf("keys %x %x", p, all)
	}
	if err := c.RemoveKey(a); err == nil {
		t.Fatal("removed the primary")
	}
	if err := c.UseKey(b); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveKey(a); err != nil {
		t.Fatal(err)
	}
	if p, all := c.GossipKeys(); !bytes.Equal(p, b) || len(all) != 1 {
		t.Fatalf("after rotation %x %x", p, all)
	}
	if err := c.InstallKey([]byte("short")); err == nil {
		t.Fatal("installed a 5-byte key")
	}
	cfg := DefaultConfig()
	cfg.NodeName = "n1"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.GossipKeys = [][]byte{a}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "without a primary") {
		t.Fatalf("extra gossip keys without a primary: %v", err)
	}
}
