package e2e

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/test/retry"
)

// TestCARotationSIGHUP rotates the CA of a 3-agent cluster of real
// processes under steady load, with the README's commands and SIGHUP:
// trust a bundle of the old and the new CA everywhere, re-issue each
// certificate from the new CA one node at a time, retire the old CA. No
// request fails, a plan change commits after every step, a premature
// retirement is refused, and at the end the Raft port refuses an old-CA
// certificate.
func TestCARotationSIGHUP(t *testing.T) {
	skipShort(t)
	t.Parallel()
	dir := t.TempDir()
	oldDir, newDir := filepath.Join(dir, "old"), filepath.Join(dir, "new")
	mustRun(t, "tls", "ca", "create", "--dir", oldDir)
	names := []string{"rot1", "rot2", "rot3"}
	files := map[string]tlsFiles{}
	for _, name := range names {
		nd := filepath.Join(dir, name)
		mustRun(t, "tls", "cert", "create", "--node", name, "--dir", nd,
			"--ca", filepath.Join(oldDir, "loadmesh-ca.pem"), "--ca-key", filepath.Join(oldDir, "loadmesh-ca-key.pem"))
		f := tlsFiles{ca: filepath.Join(nd, "ca.pem"), cert: filepath.Join(nd, name+".pem"), key: filepath.Join(nd, name+"-key.pem")}
		copyFile(t, filepath.Join(oldDir, "loadmesh-ca.pem"), f.ca)
		files[name] = f
	}
	c := &testCluster{}
	launch(t, "3-agent cluster", func() []*process {
		c.agents = make([]*agentNode, len(names))
		for i, name := range names {
			c.agents[i] = newAgentNode(t, name)
			c.agents[i].tls = files[name]
		}
		var procs []*process
		for i, a := range c.agents {
			a.bootstrapExpect = len(names)
			for j, b := range c.agents {
				if j != i {
					a.join = append(a.join, b.gossip)
				}
			}
			procs = append(procs, a.startBackend(t, fmt.Sprintf("rb%d", i+1)))
			// random sends two requests in three across the peer channel.
			a.argv = append(a.args(), "--policy", "random")
		}
		for _, a := range c.agents {
			procs = append(procs, a.start(t))
		}
		return procs
	})
	waitHealthy(t, c.agents, 3)
	l := startLoad(t, ingresses(c.agents), 50)
	planFile := filepath.Join(dir, "plan.yaml")
	if err := os.WriteFile(planFile, []byte("mode: dry-run\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	plans := 0
	step := func(what string) {
		t.Helper()
		plans++
		res := mustRun(t, "plan", "apply", planFile, "--api", c.agents[plans%3].api)
		if !strings.Contains(res.stdout, "applied") {
			t.Fatalf("plan apply after %s: %s", what, res.stdout)
		}
		from := l.sent.Load()
		retry.Run(t, func(r *retry.R) {
			if n := l.sent.Load() - from; n < 50 {
				r.Fatalf("%d requests sent since %s", n, what)
			}
		})
	}
	hup := func(a *agentNode, want ...string) {
		t.Helper()
		before := strings.Count(a.proc.log(), "configuration reloaded")
		a.proc.cmd.Process.Signal(syscall.SIGHUP)
		retry.Run(t, func(r *retry.R) {
			if strings.Count(a.proc.log(), "configuration reloaded") == before {
				r.Fatalf("%s has not reloaded yet", a.name)
			}
		})
		waitLog(t, a.proc, want...)
	}
	step("start")

	// a. The new CA and the bundle.
	mustRun(t, "tls", "ca", "create", "--dir", newDir, "--common-name", "loadmesh cluster CA 2")
	oldCA, newCA := filepath.Join(oldDir, "loadmesh-ca.pem"), filepath.Join(newDir, "loadmesh-ca.pem")
	bundle := filepath.Join(dir, "bundle.pem")
	mustRun(t, "tls", "ca", "bundle", oldCA, newCA, "--out", bundle)
	oldFP, newFP := pemFingerprint(t, oldCA), pemFingerprint(t, newCA)
	if res := mustRun(t, "tls", "ca", "inspect", bundle); !strings.Contains(res.stdout, oldFP) || !strings.Contains(res.stdout, newFP) {
		t.Fatalf("inspect of the bundle lists neither CA:\n%s", res.stdout)
	}

	// b. Trust both.
	for _, a := range c.agents {
		copyFile(t, bundle, a.tls.ca)
		hup(a, "tls-ca: trusted CAs ["+oldFP[:16]+"] → ["+oldFP[:16]+" "+newFP[:16]+"]")
	}
	for _, a := range c.agents {
		checkStatusTrust(t, a, []string{oldFP, newFP}, oldFP)
	}
	step("trust both")

	// Retiring the old CA before re-issuing is refused.
	first := c.agents[0]
	copyFile(t, newCA, first.tls.ca)
	first.proc.cmd.Process.Signal(syscall.SIGHUP)
	refusal := `--tls-ca refused, nothing changed: node certificate: certificate \"rot1\" is not issued by the cluster ca`
	waitLog(t, first.proc, "reload failed", refusal)
	for line := range strings.Lines(first.proc.log()) {
		if strings.Contains(line, refusal) {
			t.Logf("premature retirement: %s", strings.TrimSpace(line))
		}
	}
	checkStatusTrust(t, first, []string{oldFP, newFP}, oldFP)
	copyFile(t, bundle, first.tls.ca)

	// c. Re-issue, one node at a time.
	for _, a := range c.agents {
		out := filepath.Join(dir, "reissue", a.name)
		mustRun(t, "tls", "cert", "create", "--node", a.name, "--dir", out, "--ca", newCA, "--ca-key", filepath.Join(newDir, "loadmesh-ca-key.pem"))
		copyFile(t, filepath.Join(out, a.name+"-key.pem"), a.tls.key)
		copyFile(t, filepath.Join(out, a.name+".pem"), a.tls.cert)
		hup(a, "from CA "+newFP[:16])
		checkStatusTrust(t, a, []string{oldFP, newFP}, newFP)
		step("re-issued " + a.name)
	}
	args := []string{"tls", "ca", "inspect", newCA}
	for _, a := range c.agents {
		args = append(args, "--cert", a.tls.cert)
	}
	mustRun(t, args...)

	// d. Retire the old CA.
	for _, a := range c.agents {
		copyFile(t, newCA, a.tls.ca)
		hup(a, "→ ["+newFP[:16]+"]")
	}
	for _, a := range c.agents {
		checkStatusTrust(t, a, []string{newFP}, newFP)
	}
	step("old CA retired")

	// A certificate from the old CA (for a member's name) is refused on
	// the Raft port; one from the new CA is accepted.
	stale, fresh := filepath.Join(dir, "stale"), filepath.Join(dir, "fresh")
	mustRun(t, "tls", "cert", "create", "--node", "rot2", "--dir", stale, "--ca", oldCA, "--ca-key", filepath.Join(oldDir, "loadmesh-ca-key.pem"))
	mustRun(t, "tls", "cert", "create", "--node", "rot2", "--dir", fresh, "--ca", newCA, "--ca-key", filepath.Join(newDir, "loadmesh-ca-key.pem"))
	if err := raftHandshake(t, c.agents[0].raft, filepath.Join(stale, "rot2")); err == nil {
		t.Error("the raft port accepted an old-CA certificate after the old CA was retired")
	} else {
		t.Logf("old-CA certificate refused: %v", err)
	}
	if err := raftHandshake(t, c.agents[0].raft, filepath.Join(fresh, "rot2")); err != nil {
		t.Errorf("the raft port refused a new-CA certificate: %v", err)
	}
	waitLog(t, c.agents[0].proc, `certificate \"rot2\" is not issued by the cluster ca`)

	sent, failed, _ := l.finish(t)
	t.Logf("CA rotation: %d requests sent, %d failed, %d plan changes committed", sent, failed, plans)
}

// checkStatusTrust checks the trusted CAs and the node certificate's
// issuer in a's GET /v1/status, decoded from the documented JSON.
func checkStatusTrust(t *testing.T, a *agentNode, trusted []string, issuer string) {
	t.Helper()
	retry.Run(t, func(r *retry.R) {
		_, body, err := get("http://" + a.api + "/v1/status")
		r.Check(err)
		var st struct {
			TLS struct {
				TrustedCAs []struct {
					Fingerprint string `json:"fingerprint"`
				} `json:"trusted_cas"`
				NodeCertIssuer string `json:"node_cert_issuer"`
			} `json:"tls"`
		}
		r.Check(json.Unmarshal(body, &st))
		var got []string
		for _, ca := range st.TLS.TrustedCAs {
			got = append(got, ca.Fingerprint)
		}
		if strings.Join(got, ",") != strings.Join(trusted, ",") || st.TLS.NodeCertIssuer != issuer {
			r.Fatalf("%s trusts %q, its certificate is from %s; want %q and %s", a.name, got, st.TLS.NodeCertIssuer, trusted, issuer)
		}
	})
}

func pemFingerprint(t *testing.T, file string) string {
	t.Helper()
	blk, _ := pem.Decode(mustRead(t, file))
	if blk == nil {
		t.Fatalf("%s: no pem", file)
	}
	sum := sha256.Sum256(blk.Bytes)
	return hex.EncodeToString(sum[:])
}

// raftHandshake connects to a Raft port with the certificate prefix.pem
// (and prefix-key.pem). The server checks the client certificate after
// the client's side of the handshake, so a refusal arrives as an alert on
// the first read; an accepted connection reads nothing until the deadline
// (Raft waits for an RPC).
func raftHandshake(t *testing.T, addr, prefix string) error {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(prefix+".pem", prefix+"-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	conf := &tls.Config{
		Certificates:       []tls.Certificate{pair},
		NextProtos:         []string{"loadmesh-raft/1"},
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, //nolint:gosec // only the server's verdict on the client matters here
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: retry.Scale(5 * time.Second)}, "tcp", addr, conf)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(time.Second))
	_, err = conn.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	return err
}
