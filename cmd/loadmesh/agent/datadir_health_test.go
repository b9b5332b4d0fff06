package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestProbeDir(t *testing.T) {
	dir := t.TempDir()
	if err := probeDir(dir); err != nil {
		t.Fatalf("a writable dir: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".write-probe-*")); len(left) != 0 {
		t.Fatalf("probe files left behind: %v", left)
	}
	// A data dir that vanished (or became a file) does not take writes.
	gone := filepath.Join(dir, "gone")
	if err := probeDir(gone); err == nil || !strings.Contains(err.Error(), gone) {
		t.Fatalf("missing dir: %v", err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := probeDir(file); err == nil {
		t.Fatal("a file as data dir passed the probe")
	}
}
