package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	lmagent "github.com/loadmesh/loadmesh/cmd/loadmesh/agent"
)

// deployDir is the repository's deploy/ directory.
const deployDir = "../../deploy"

// TestDeployFilesUseRealFlags keeps the shipped deployment files in step
// with `loadmesh agent`: every --flag they pass and every key of the
// example config files must be a flag the agent knows, and the Kubernetes
// manifests must parse.
func TestDeployFilesUseRealFlags(t *testing.T) {
	agent := newAgentCmd()
	known := func(name string) bool { return agent.Flags().Lookup(name) != nil }
	flagRE := regexp.MustCompile(`--([a-z][a-z0-9-]*)`)
	check := func(file, text string) {
		t.Helper()
		n := 0
		for _, m := range flagRE.FindAllStringSubmatch(text, -1) {
			n++
			if !known(m[1]) {
				t.Errorf("%s passes --%s, which loadmesh agent does not have", file, m[1])
			}
		}
		if n == 0 {
			t.Errorf("%s passes no agent flags at all", file)
		}
	}

	// systemd: the ExecStart line.
	unit := readDeploy(t, "systemd/loadmesh.service")
	exec := regexp.MustCompile(`(?m)^ExecStart=(.*)$`).FindStringSubmatch(unit)
	if exec == nil || !strings.Contains(exec[1], "loadmesh agent") {
		t.Fatalf("systemd unit has no ExecStart running loadmesh agent")
	}
	check("systemd/loadmesh.service", exec[1])
	for _, want := range []string{"User=loadmesh", "ProtectSystem=strict", "CapabilityBoundingSet=", "NoNewPrivileges=yes", "ExecReload=/bin/kill -HUP $MAINPID"} {
		if !strings.Contains(unit, want) {
			t.Errorf("systemd unit lacks %s", want)
		}
	}

	// Kubernetes: every document parses; the agent container's args.
	dec := yaml.NewDecoder(bytes.NewReader([]byte(readDeploy(t, "k8s/loadmesh.yaml"))))
	kinds := map[string]bool{}
	for {
		var doc struct {
			Kind string `yaml:"kind"`
			Spec struct {
				ClusterIP                string `yaml:"clusterIP"`
				PublishNotReadyAddresses bool   `yaml:"publishNotReadyAddresses"`
				Template                 struct {
					Spec struct {
						Containers []struct {
							Name string   `yaml:"name"`
							Args []string `yaml:"args"`
						} `yaml:"containers"`
					} `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		}
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("k8s/loadmesh.yaml: %v", err)
		}
		kinds[doc.Kind] = true
		if doc.Kind == "Service" && doc.Spec.ClusterIP == "None" && !doc.Spec.PublishNotReadyAddresses {
			t.Errorf("the headless Service must publish not-ready addresses, or agents cannot find each other to bootstrap")
		}
		for _, c := range doc.Spec.Template.Spec.Containers {
			if c.Name == "agent" {
				check("k8s/loadmesh.yaml agent args", strings.Join(c.Args, " "))
			}
		}
	}
	for _, k := range []string{"StatefulSet", "Service", "PodDisruptionBudget"} {
		if !kinds[k] {
			t.Errorf("k8s/loadmesh.yaml has no %s", k)
		}
	}

	// Example config files: every key is a flag, and they load.
	examples, _ := filepath.Glob(filepath.Join(deployDir, "examples", "*.yaml"))
	if len(examples) < 3 {
		t.Fatalf("want at least three example config files, found %v", examples)
	}
	for _, f := range examples {
		var keys map[string]any
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, &keys); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for k := range keys {
			if !known(k) {
				t.Errorf("%s: key %q is not a loadmesh agent flag", f, k)
			}
		}
		cmd := newAgentCmd()
		if _, err := applySources(cmd.Flags(), f, nil); err != nil {
			t.Errorf("%s does not load: %v", f, err)
		}
		// Its TCP services are valid.
		specs, err := cmd.Flags().GetStringArray("service")
		if err != nil {
			t.Fatal(err)
		}
		for _, spec := range specs {
			if _, err := lmagent.ParseServiceSpec(spec); err != nil {
				t.Errorf("%s: %v", f, err)
			}
		}
		if strings.Contains(f, "xroad") && len(specs) != 2 {
			t.Errorf("%s: %d services loaded, want 2: %q", f, len(specs), specs)
		}
	}

	// Dockerfile: static, non-root.
	df := readFile(t, "../../Dockerfile")
	for _, want := range []string{"CGO_ENABLED=0", "USER 65532", "AS build"} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %s", want)
		}
	}
}

func readDeploy(t *testing.T, name string) string {
	t.Helper()
	return readFile(t, filepath.Join(deployDir, name))
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPrintableEscapesControlCharacters(t *testing.T) {
	for in, want := range map[string]string{
		"drain for kernel update":   "drain for kernel update",
		"\x1b]0;pwned\x07\x1b[2J":   `\x1b]0;pwned\a\x1b[2J`,
		"line one\rline two\nthree": `line one\rline two\nthree`,
		"zone é ✓":                  "zone é ✓",
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
}
