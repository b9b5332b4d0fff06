package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
)

// TestAgentSourcesReload reads a configuration, changes the file, and
// reads it again as SIGHUP does: the command line and the environment
// still win, a key removed from the file falls back to its default, and a
// list from the file is replaced, not appended to.
func TestAgentSourcesReload(t *testing.T) {
	cfg := agent.DefaultConfig()
	var configFile, level, format string
	fs := pflag.NewFlagSet("agent", pflag.ContinueOnError)
	fs.StringVar(&configFile, "config", "", "")
	fs.StringVar(&cfg.Name, "name", "", "")
	fs.StringVar(&cfg.Zone, "zone", cfg.Zone, "")
	fs.StringVar(&cfg.Backend, "backend", "", "")
	fs.StringSliceVar(&cfg.Join, "join", nil, "")
	fs.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", cfg.ShutdownGrace, "")
	fs.StringVar(&level, "log-level", "info", "")
	fs.StringVar(&format, "log-format", "text", "")

	file := filepath.Join(t.TempDir(), "agent.yaml")
	write := func(s string) {
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("name: file-name\nzone: file-zone\nbackend: http://127.0.0.1:1\njoin: [a:1, b:1]\nshutdown-grace: 5s\nlog-level: warn\n")
	t.Setenv("LOADMESH_BACKEND", "http://127.0.0.1:2")
	if err := fs.Parse([]string{"--config", file, "--name", "cli-name"}); err != nil {
		t.Fatal(err)
	}
	src := &agentSources{fs: fs, cfg: &cfg, configFile: &configFile, logLevel: &level, logFormat: &format}
	got, err := src.load()
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "cli-name" || got.Zone != "file-zone" || got.Backend != "http://127.0.0.1:2" ||
		!slices.Equal(got.Join, []string{"a:1", "b:1"}) || got.ShutdownGrace != 5*time.Second || level != "warn" {
		t.Fatalf("first load: %+v, level %s", got, level)
	}

	write("name: other\nbackend: http://127.0.0.1:3\njoin: [c:1]\n")
	got, err = src.load()
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "cli-name" || got.Zone != "default" || got.Backend != "http://127.0.0.1:2" ||
		!slices.Equal(got.Join, []string{"c:1"}) || got.ShutdownGrace != 2*time.Second || level != "info" {
		t.Fatalf("reload: name %q zone %q backend %q join %q grace %s level %s", got.Name, got.Zone, got.Backend, got.Join, got.ShutdownGrace, level)
	}

	write("zone: [broken\n")
	if _, err := src.load(); err == nil {
		t.Fatal("a broken file loaded")
	}
}

func TestParseSliceDefault(t *testing.T) {
	for in, want := range map[string][]string{"[]": nil, "[a]": {"a"}, "[a,b]": {"a", "b"}, `["x,y",z]`: {"x,y", "z"}} {
		if got := parseSliceDefault(in); !slices.Equal(got, want) {
			t.Errorf("%s: %q, want %q", in, got, want)
		}
	}
}
