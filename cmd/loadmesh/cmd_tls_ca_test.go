package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/loadmesh/loadmesh/transport"
)

// TestTLSCABundleAndInspect runs the CLI side of a CA rotation: two CAs,
// their bundle (checked), and inspect listing the CAs and matching node
// certificates to them.
func TestTLSCABundleAndInspect(t *testing.T) {
	dir := t.TempDir()
	oldDir, newDir := filepath.Join(dir, "old"), filepath.Join(dir, "new")
	for _, d := range []string{oldDir, newDir} {
		if _, _, err := runCLIErr(t, "tls", "ca", "create", "--dir", d); err != nil {
			t.Fatal(err)
		}
	}
	oldCA, newCA := filepath.Join(oldDir, "loadmesh-ca.pem"), filepath.Join(newDir, "loadmesh-ca.pem")
	fp := func(file string) string {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		cas, err := transport.ParseCABundle(b)
		if err != nil {
			t.Fatal(err)
		}
		return transport.Fingerprint(cas[0])
	}
	oldFP, newFP := fp(oldCA), fp(newCA)

	// To standard output: both certificates, in order, nothing else.
	out, _, err := runCLIErr(t, "tls", "ca", "bundle", oldCA, newCA)
	if err != nil {
		t.Fatal(err)
	}
	cas, err := transport.ParseCABundle([]byte(out))
	if err != nil || len(cas) != 2 || transport.Fingerprint(cas[0]) != oldFP || transport.Fingerprint(cas[1]) != newFP {
		t.Fatalf("bundle on stdout: %d cas, %v", len(cas), err)
	}
	if strings.Count(out, "-----BEGIN") != 2 {
		t.Fatalf("bundle has other blocks than the two certificates:\n%s", out)
	}

	bundle := filepath.Join(dir, "bundle.pem")
	out, _, err = runCLIErr(t, "tls", "ca", "bundle", oldCA, newCA, "--out", bundle)
	if err != nil || !strings.Contains(out, oldFP) || !strings.Contains(out, newFP) {
		t.Fatalf("bundle --out: %v\n%s", err, out)
	}
	if _, _, err := runCLIErr(t, "tls", "ca", "bundle", oldCA, newCA, "--out", bundle); err == nil || !strings.Contains(err.Error(), "not overwriting") {
		t.Fatalf("bundle over an existing file: %v", err)
	}

	// Refused: a CA twice (also through a bundle), a node certificate, a
	// private key alone.
	if _, _, err := runCLIErr(t, "tls", "cert", "create", "--node", "n1", "--dir", dir, "--ca", oldCA, "--ca-key", filepath.Join(oldDir, "loadmesh-ca-key.pem")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{oldCA, oldCA}, "twice"},
		{[]string{bundle, newCA}, "twice"},
		{[]string{oldCA, filepath.Join(dir, "n1.pem")}, "not a ca certificate"},
		{[]string{filepath.Join(oldDir, "loadmesh-ca-key.pem")}, "no pem certificate"},
	} {
		if _, _, err := runCLIErr(t, append([]string{"tls", "ca", "bundle"}, tc.args...)...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("bundle %v: %v, want an error mentioning %q", tc.args, err, tc.want)
		}
	}

	// inspect: the CAs, and which signed a node certificate.
	out, _, err = runCLIErr(t, "tls", "ca", "inspect", bundle, "--cert", filepath.Join(dir, "n1.pem"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"SHA-256 FINGERPRINT", oldFP, newFP, `node "n1"`, "signed by " + oldFP} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
	out, _, err = runCLIErr(t, "tls", "ca", "inspect", newCA, "--cert", filepath.Join(dir, "n1.pem"))
	if err == nil || !strings.Contains(out, "signed by none of these CAs") {
		t.Errorf("inspect of the new CA with an old-CA certificate: %v\n%s", err, out)
	}
}
