package agent

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// TestKeyringFile: the keyring file round-trips, is owner-only, and at
// start overrides --encrypt (which is used only without a file).
func TestKeyringFile(t *testing.T) {
	dir := t.TempDir()
	a := &Agent{log: slog.New(slog.DiscardHandler)}
	flag := bytes.Repeat([]byte{9}, 32)
	p, extra, retry, err := a.startingGossipKeys(dir, flag)
	if err != nil || !bytes.Equal(p, flag) || extra != nil || retry {
		t.Fatalf("without a file: %x %v %v %v", p, extra, retry, err)
	}
	k1, k2 := bytes.Repeat([]byte{1}, 16), bytes.Repeat([]byte{2}, 32)
	if err := writeKeyringFile(dir, k2, [][]byte{k1, k2}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, KeyringFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("keyring file: %v %v", fi.Mode(), err)
	}
	p, extra, retry, err = a.startingGossipKeys(dir, flag)
	if err != nil || !bytes.Equal(p, k2) || len(extra) != 1 || !bytes.Equal(extra[0], k1) || !retry {
		t.Fatalf("with a file: primary %x extra %x retry %v err %v", p, extra, retry, err)
	}
	if err := os.WriteFile(filepath.Join(dir, KeyringFile), []byte(`{"primary":"short","keys":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := a.startingGossipKeys(dir, flag); err == nil {
		t.Fatal("a corrupt keyring file was accepted")
	} else {
		t.Logf("corrupt file: %v", err)
	}
}
