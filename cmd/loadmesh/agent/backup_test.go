package agent

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestBackupFilesArePrunedPerNode(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	var mine []string
	for i := range 5 {
		p, err := writeBackupFile(dir, "a", t0.Add(time.Duration(i)*time.Second), []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		mine = append(mine, filepath.Base(p))
		if _, err := writeBackupFile(dir, "a-1", t0.Add(time.Duration(i)*time.Second), []byte("y")); err != nil {
			t.Fatal(err)
		}
	}
	// Not the agent's: another name pattern, a directory, a temporary file.
	os.WriteFile(filepath.Join(dir, "loadmesh-a-manual.snap"), nil, 0o600)
	os.Mkdir(filepath.Join(dir, "loadmesh-a-20260101T000000.000Z.snap"), 0o700)
	os.WriteFile(filepath.Join(dir, ".snapshot-1.tmp"), nil, 0o600)

	removed, err := pruneBackups(dir, "a", 2)
	if err != nil || !slices.Equal(removed, mine[:3]) {
		t.Fatalf("pruned %v, %v; want %v", removed, err, mine[:3])
	}
	if got, _ := backupFiles(dir, "a"); !slices.Equal(got, mine[3:]) {
		t.Fatalf("left %v, want %v", got, mine[3:])
	}
	if got, _ := backupFiles(dir, "a-1"); len(got) != 5 {
		t.Fatalf("node a-1's files were touched: %v", got)
	}
	for _, keep := range []string{"loadmesh-a-manual.snap", "loadmesh-a-20260101T000000.000Z.snap", ".snapshot-1.tmp"} {
		if _, err := os.Stat(filepath.Join(dir, keep)); err != nil {
			t.Errorf("%s: %v", keep, err)
		}
	}
	if p := backupPrefix("we/ird name"); p != "loadmesh-we_ird_name-" {
		t.Fatalf("prefix %q", p)
	}
}

func TestSnapshotFlagsValidate(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Name, cfg.DataDir = "a", "/tmp/x"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.SnapshotInterval, cfg.SnapshotRetain = 500*time.Millisecond, 0
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "--snapshot-interval 500ms must be 0 (off) or at least 1s") ||
		!strings.Contains(err.Error(), "--snapshot-retain 0 is outside 1..10000") {
		t.Fatalf("validate: %v", err)
	}
}
