package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/transport"
)

// runCLI runs the loadmesh command line in-process with stdin.
func runCLI(t *testing.T, stdin string, args ...string) (stdout string, err error) {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetArgs(args)
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&out)
	root.SetErr(&errOut)
	err = root.Execute()
	return out.String(), err
}

func TestProvisionLocalFlagErrors(t *testing.T) {
	dir := t.TempDir()
	ca, err := transport.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ca.KeyPEM()
	caFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	os.WriteFile(caFile, ca.CertPEM, 0o644)
	os.WriteFile(keyFile, key, 0o600)
	state := filepath.Join(dir, "state")
	tls := []string{"--tls-ca", caFile, "--tls-ca-key", keyFile}

	tests := []struct {
		name  string
		args  []string
		stdin string
		want  []string
	}{
		{"no dir", []string{"--list"}, "", []string{"--dir is required"}},
		{"list and stop-all", []string{"--dir", state, "--list", "--stop-all"}, "", []string{"--list and --stop-all"}},
		{"json without list", []string{"--dir", state, "--json"}, "", []string{"--json goes with --list"}},
		{"no CA", []string{"--dir", state}, "{}", []string{"--tls-ca and --tls-ca-key are required"}},
		{"CA without key", []string{"--dir", state, "--tls-ca", caFile}, "{}", []string{"--tls-ca and --tls-ca-key go together"}},
		{"bad host and prefix", append([]string{"--dir", state, "--host", "::", "--name-prefix", "a b"}, tls...), "",
			[]string{`--host "::"`, `--name-prefix "a b"`}},
		{"both backends", append([]string{"--dir", state, "--backend", "http://127.0.0.1:1", "--demo-backend"}, tls...), "",
			[]string{"--backend and --demo-backend"}},
		{"unknown flag", []string{"--dir", state, "--no-such-flag"}, "", []string{"unknown flag: --no-such-flag"}},
		{"stray argument", []string{"--dir", state, "scale_out"}, "", []string{"unknown command"}},
		{"stdin not JSON", append([]string{"--dir", state}, tls...), "scale out please", []string{"hook request is not valid JSON"}},
		{"stdin empty", append([]string{"--dir", state}, tls...), "", []string{"hook request is not valid JSON"}},
		{"invalid request", append([]string{"--dir", state}, tls...), `{"version":1,"kind":"scale_up"}`,
			[]string{`kind "scale_up"`}},
		{"no seeds", append([]string{"--dir", state}, tls...), `{"version":1,"id":"x","kind":"scale_out","count":1}`,
			[]string{"no gossip seeds"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runCLI(t, tt.stdin, append([]string{"provision", "local"}, tt.args...)...)
			if err == nil {
				t.Fatalf("no error; stdout %q", out)
			}
			msg := oneLine(err)
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing on an error", out)
			}
		})
	}
}

func TestProvisionLocalListEmpty(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	out, err := runCLI(t, "", "provision", "local", "--dir", state, "--list")
	if err != nil || strings.TrimSpace(out) != "NAME  ZONE  PID  ALIVE  API" {
		t.Errorf("--list of an empty dir: %q, %v", out, err)
	}
	out, err = runCLI(t, "", "provision", "local", "--dir", state, "--list", "--json")
	if err != nil || strings.TrimSpace(out) != "[]" {
		t.Errorf("--list --json of an empty dir: %q, %v", out, err)
	}
	out, err = runCLI(t, "", "provision", "local", "--dir", state, "--stop-all")
	if err != nil || strings.TrimSpace(out) != "{}" {
		t.Errorf("--stop-all of an empty dir: %q, %v", out, err)
	}
}
