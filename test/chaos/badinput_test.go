//go:build linux

package chaos

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	"github.com/quic-go/quic-go/http3"

	"github.com/loadmesh/loadmesh/test/retry"
)

// probe is one bad input sent to one port of a running agent. run sends it
// and describes what the agent answered; it returns an error when the
// answer is not a clear refusal.
type probe struct {
	port string // ingress, api, quic, raft or gossip
	name string
	run  func(t *testing.T, b *badInput) (string, error)
	// changes is true for the few probes whose input is valid and must be
	// stored (a hostile but well-formed audit reason); the state is
	// snapshotted again after them.
	changes bool
	// known, when set, describes a known product finding: the probe's
	// error is then reported as a FINDING instead of failing the test. A
	// crash or a changed state fails the test all the same.
	known string
}

// badInput is the state the probes share: the cluster, the node under
// attack, and what must not change.
type badInput struct {
	c      *testCluster
	target *node
	pids   map[string]int
	before replicated
	// readToken is a token with role read; revoked one revoked.
	readToken, revoked string
	// probe certificates: a cluster certificate naming no member, and a
	// node certificate from another CA.
	stranger, foreign tls.Certificate
	// trap is a listener that no request from the mesh may reach.
	trap     net.Listener
	trapHits atomic.Int64
	findings []string
}

// testBadInput sends every probe to one follower (the API carries writes
// to the leader, so the leader's code paths are crossed too) and, after
// each one, checks that every process is still the same one, that the
// target answers /healthz and serves a normal request, and that its plan,
// audit log and tokens are unchanged. The list of probes, with what the
// agent answered to each, is logged (and kept in README.md).
func testBadInput(t *testing.T, c *testCluster) {
	c.waitHealthy("before the bad input", 60*time.Second)
	leader := c.leader()
	b := &badInput{c: c, target: c.without(leader)[0], pids: map[string]int{}}
	for _, n := range c.nodes {
		b.pids[n.name] = n.proc.pid()
	}
	b.readToken, _ = createToken(t, b.target, "chaos-reader", "read", "")
	b.revoked, _ = createToken(t, b.target, "chaos-revoked", "operator", "")
	if code, body, err := apiDo(http.MethodDelete, b.target.api, "/v1/tokens/chaos-revoked", nil, chaosToken); err != nil || code != http.StatusOK {
		t.Fatalf("revoke token: %d %s %v", code, body, err)
	}
	b.stranger = loadCert(t, nodeTLS(t, "cluster", "chaos-stranger"))
	b.foreign = loadCert(t, nodeTLS(t, "foreign", b.target.name))
	var err error
	if b.trap, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer b.trap.Close()
	go func() {
		for {
			conn, err := b.trap.Accept()
			if err != nil {
				return
			}
			b.trapHits.Add(1)
			conn.Close()
		}
	}()
	retry.Run(t, func(r *retry.R) {
		var err error
		b.before, err = c.sameState(c.nodes)
		r.Check(err)
	})
	rssBefore := rss(b.target.proc.pid())

	var list []string
	for _, p := range b.probes() {
		obs, err := p.run(t, b)
		line := fmt.Sprintf("%-7s | %-62s | %s", p.port, p.name, oneLine(obs))
		list = append(list, line)
		switch {
		case err != nil && p.known != "":
			b.findings = append(b.findings, fmt.Sprintf("%s: %s: %v. %s", p.port, p.name, err, p.known))
		case err != nil:
			t.Errorf("%s: %s: %v", p.port, p.name, err)
		case p.known != "":
			t.Logf("%s: %s: the known finding no longer reproduces (%s); remove its mark: %s", p.port, p.name, obs, p.known)
		}
		if err := b.check(p); err != nil {
			t.Fatalf("after %s: %s (%s): %v", p.port, p.name, obs, err)
		}
	}
	t.Logf("bad inputs sent to %s (port | input | what the agent did):\n%s", b.target.name, strings.Join(list, "\n"))
	addReport(fmt.Sprintf("bad input: %d probes against %s; every process stayed up, answered /healthz and served; plan, audit log and tokens unchanged", len(list), b.target.name), nil)
	t.Logf("%s resident memory: %d KiB before the probes, %d KiB after", b.target.name, rssBefore>>10, rss(b.target.proc.pid())>>10)
	for _, f := range b.findings {
		t.Log("FINDING " + f)
		addReport("    FINDING "+f, nil)
	}
	if n := b.trapHits.Load(); n > 0 {
		t.Errorf("the ingress connected %d times to a host named in a request (open proxy)", n)
	}
	// The cluster as a whole: healthy, no intruder among the members.
	c.waitHealthy("after the bad input", 60*time.Second)
	for _, n := range c.nodes {
		st, err := getStatus(n.api)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range st.Members {
			if strings.HasPrefix(m.Name, "chaos-") {
				t.Errorf("%s lists member %s", n.name, m.Name)
			}
		}
	}
}

func oneLine(s string) string {
	s = strings.ReplaceAll(strings.TrimSpace(s), "\n", " ⏎ ")
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
}

// rss is a process's resident memory in bytes (0 if unknown).
func rss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func loadCert(t *testing.T, f tlsFiles) tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(f.cert, f.key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// check is run after every probe.
func (b *badInput) check(p probe) error {
	for _, n := range b.c.nodes {
		if n.proc.exited() || n.proc.pid() != b.pids[n.name] {
			return fmt.Errorf("%s is not the process it was (pid %d, %s):\n%s", n.name, n.proc.pid(), n.proc.exitDesc(), tail(n.log(), 8<<10))
		}
	}
	n := b.target
	if _, err := apiGet(n.api, "/healthz"); err != nil {
		return fmt.Errorf("%s /healthz: %v", n.name, err)
	}
	if err := normalGet(n); err != nil {
		return err
	}
	var now replicated
	var err error
	// A write probe's answer may arrive before the follower applied it.
	ok := retry.Until(5*time.Second, func(r *retry.R) {
		now, err = b.c.sameState([]*node{n, b.c.node(b.c.leaderOf(b.c.nodes))})
		r.Check(err)
	})
	if !ok {
		return err
	}
	if p.changes {
		if err := intact(b.before, now); err != nil {
			return err
		}
		b.before = now
		return nil
	}
	switch {
	case !bytes.Equal(now.plan, b.before.plan):
		return fmt.Errorf("plan changed: version %d → %d", b.before.pver, now.pver)
	case !bytes.Equal(now.events, b.before.events):
		return fmt.Errorf("audit log changed: %d → %d events: %s", b.before.nevent, now.nevent, now.events)
	case !bytes.Equal(now.tokens, b.before.tokens):
		return fmt.Errorf("tokens changed: %s", now.tokens)
	}
	return nil
}

// normalGet sends one ordinary request through n's ingress.
func normalGet(n *node) error {
	ctx, cancel := context.WithTimeout(context.Background(), retry.Scale(5*time.Second))
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.http+"/after-bad-input", nil)
	resp, err := apiClient.Do(req)
	if err != nil {
		return fmt.Errorf("a normal GET through %s's ingress: %v", n.name, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("a normal GET through %s's ingress: %s", n.name, resp.Status)
	}
	return nil
}

// ---------------------------------------------------------------------------
// Raw HTTP

// rawHTTP writes req to addr (then, if halfClose, closes its sending side)
// and returns the status code and line of the first answer; code 0 means
// the agent closed the connection without answering.
func rawHTTP(addr string, req []byte, halfClose bool) (int, string, error) {
	conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return 0, "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(retry.Scale(8 * time.Second)))
	// Write in the background: the agent may answer (and close) before it
	// has read everything.
	go func() {
		conn.Write(req)
		if halfClose {
			conn.(*net.TCPConn).CloseWrite()
		}
	}()
	line, err := bufio.NewReader(conn).ReadString('\n')
	line = strings.TrimSpace(line)
	if line == "" {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return 0, "no answer and connection still open after 8s", nil
		}
		return 0, "connection closed without an answer", nil
	}
	f := strings.Fields(line)
	if len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/") {
		return 0, line, fmt.Errorf("answer is not HTTP: %q", line)
	}
	code, _ := strconv.Atoi(f[1])
	return code, line, nil
}

// refused runs rawHTTP and wants a 4xx/5xx answer in want (any 4xx when
// want is empty), or the connection closed without an answer if closeOK.
func refused(addr string, req []byte, halfClose, closeOK bool, want ...int) (string, error) {
	code, line, err := rawHTTP(addr, req, halfClose)
	if err != nil {
		return line, err
	}
	switch {
	case code == 0 && closeOK:
		return line, nil
	case code == 0:
		return line, errors.New("no clear error: " + line)
	case len(want) == 0 && code >= 400 && code < 500:
		return line, nil
	}
	for _, w := range want {
		if code == w {
			return line, nil
		}
	}
	return line, fmt.Errorf("answered %q, want status %v", line, want)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// ---------------------------------------------------------------------------
// The probes

func (b *badInput) probes() []probe {
	var ps []probe
	ingress := func(name string, req string, halfClose, closeOK bool, want ...int) *probe {
		ps = append(ps, probe{port: "ingress", name: name, run: func(t *testing.T, b *badInput) (string, error) {
			return refused(b.target.http, []byte(req), halfClose, closeOK, want...)
		}})
		return &ps[len(ps)-1]
	}
	const h = "Host: chaos\r\n"
	ingress("request line that is not HTTP", "GARBAGE\r\n\r\n", false, false, 400)
	ingress("HTTP/0.9 request line (no version)", "GET /\r\n\r\n", false, true, 400, 505)
	ingress("unknown HTTP version 9.9", "GET / HTTP/9.9\r\n"+h+"\r\n", false, false, 505)
	ingress("method with forbidden characters", "G(T / HTTP/1.1\r\n"+h+"\r\n", false, false, 400)
	ingress("header line without a colon", "GET / HTTP/1.1\r\n"+h+"NoColonHere\r\n\r\n", false, false, 400)
	ingress("header name with a space", "GET / HTTP/1.1\r\n"+h+"Bad Name: v\r\n\r\n", false, false, 400)
	ingress("NUL byte in the path", "GET /a\x00b HTTP/1.1\r\n"+h+"\r\n", false, false, 400)
	ingress("bare CR inside a header value", "GET / HTTP/1.1\r\n"+h+"X-A: a\rb\r\n\r\n", false, false, 400)
	ingress("HTTP/1.1 request without Host", "GET / HTTP/1.1\r\n\r\n", false, false, 400)
	ingress("two Host headers", "GET / HTTP/1.1\r\n"+h+h+"\r\n", false, false, 400)
	ingress("2 MiB header value (over --max-header-bytes)", "GET / HTTP/1.1\r\n"+h+"X-Big: "+strings.Repeat("a", 2<<20)+"\r\n\r\n", false, true, 431)
	ingress("200 000 small headers (1.6 MB)", "GET / HTTP/1.1\r\n"+h+strings.Repeat("X-A: b\r\n", 200000)+"\r\n", false, true, 431)
	ingress("2 MiB request target", "GET /"+strings.Repeat("a", 2<<20)+" HTTP/1.1\r\n"+h+"\r\n", false, true, 431, 414)
	ingress("invalid chunk size", "POST / HTTP/1.1\r\n"+h+"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", false, true, 400, 502)
	// A body cut short, then the client half-closes (and still reads).
	// The local path answers 499 (the agent's code for a client that went
	// away); a forwarded request must not come back as a success. Each is
	// sent 8 times so that the random policy forwards most of them.
	truncatedBody := func(name, req string) {
		ps = append(ps, probe{port: "ingress", name: name + " (8 times)", run: func(t *testing.T, b *badInput) (string, error) {
			var answers []string
			var bad error
			for range 8 {
				code, line, err := rawHTTP(b.target.http, []byte(req), true)
				if err != nil {
					return line, err
				}
				answers = append(answers, line)
				if code == http.StatusOK {
					bad = fmt.Errorf("answered %q to a request whose body was cut short", line)
				}
			}
			return strings.Join(answers, ", "), bad
		}})
	}
	truncatedBody("chunked body cut short, then half-close", "POST / HTTP/1.1\r\n"+h+"Transfer-Encoding: chunked\r\n\r\n100\r\nabc")
	// RFC 9112 6.3: Transfer-Encoding overrides Content-Length; a server
	// may serve such a request (net/http does, dropping Content-Length) as
	// long as it frames the body by the chunks, and the proxy re-frames it
	// for the backend, so the two cannot disagree.
	ingress("Content-Length and Transfer-Encoding together (smuggling)",
		"POST / HTTP/1.1\r\n"+h+"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n"+h+"\r\n", false, false, 200, 400)
	ingress("two different Content-Length values", "POST / HTTP/1.1\r\n"+h+"Content-Length: 3\r\nContent-Length: 5\r\n\r\nabcde", false, false, 400)
	ingress("negative Content-Length", "POST / HTTP/1.1\r\n"+h+"Content-Length: -5\r\n\r\n", false, false, 400)
	truncatedBody("Content-Length 1000 with a 3-byte body, then half-close", "POST / HTTP/1.1\r\n"+h+"Content-Length: 1000\r\n\r\nabc")
	ingress("unsupported Transfer-Encoding gzip", "POST / HTTP/1.1\r\n"+h+"Transfer-Encoding: gzip\r\n\r\nabc", false, false, 501, 400)
	ingress("Expect: with an unknown expectation", "POST / HTTP/1.1\r\n"+h+"Expect: 100-bogus\r\nContent-Length: 3\r\n\r\nabc", false, false, 417)
	ingress("HTTP/2 connection preface and garbage frames on the HTTP/1.1 port",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"+string(randomBytes(256)), false, true, 400, 505)
	ps = append(ps, probe{port: "ingress", name: "TLS ClientHello on the plain-text port", run: func(t *testing.T, b *badInput) (string, error) {
		return refused(b.target.http, clientHello(t), false, true, 400)
	}})
	ps = append(ps, probe{port: "ingress", name: "4 KiB of random bytes", run: func(t *testing.T, b *badInput) (string, error) {
		return refused(b.target.http, randomBytes(4096), false, true, 400)
	}})
	ps = append(ps, probe{port: "ingress", name: "absolute-form URI naming another host (open proxy?)", run: func(t *testing.T, b *badInput) (string, error) {
		trap := b.trap.Addr().String()
		code, line, err := rawHTTP(b.target.http, []byte("GET http://"+trap+"/steal HTTP/1.1\r\nHost: "+trap+"\r\n\r\n"), false)
		if err != nil {
			return line, err
		}
		if b.trapHits.Load() > 0 {
			return line, errors.New("the ingress connected to the host named in the URI")
		}
		return fmt.Sprintf("%s (served by the mesh's own backends or refused; the named host was not contacted)", line), nilIf(code == 0, "no answer")
	}})
	ps = append(ps, probe{port: "ingress", name: "CONNECT tunnel to another host", run: func(t *testing.T, b *badInput) (string, error) {
		trap := b.trap.Addr().String()
		code, line, err := rawHTTP(b.target.http, []byte("CONNECT "+trap+" HTTP/1.1\r\nHost: "+trap+"\r\n\r\n"), false)
		if err != nil {
			return line, err
		}
		if b.trapHits.Load() > 0 {
			return line, errors.New("the ingress opened a tunnel to the named host (open proxy)")
		}
		if code == 200 {
			return line + " (no tunnel: the named host was not contacted)", errors.New("a 200 to CONNECT tells the client its tunnel is open")
		}
		return line, nil
	}})

	// The API.
	api := func(name, method, path, body, token string, want ...int) *probe {
		ps = append(ps, probe{port: "api", name: name, run: func(t *testing.T, b *badInput) (string, error) {
			var rd []byte
			if body != "" {
				rd = []byte(body)
			}
			code, resp, err := apiDo(method, b.target.api, path, rd, token)
			if err != nil {
				return "", err
			}
			obs := fmt.Sprintf("%d %s", code, bytes.TrimSpace(resp))
			for _, w := range want {
				if code == w {
					return obs, nil
				}
			}
			return obs, fmt.Errorf("status %d, want %v", code, want)
		}})
		return &ps[len(ps)-1]
	}
	op := chaosToken
	api("path traversal in a node name: ..%2f..%2fetc", "POST", "/v1/nodes/..%2f..%2fetc/drain", "", op, 400, 404)
	api("node name \"..\" (%2e%2e)", "POST", "/v1/nodes/%2e%2e/drain", "", op, 400, 404)
	api("NUL byte in a node name (%00)", "POST", "/v1/nodes/node1%00/cordon", "", op, 400)
	api("300-byte node name", "POST", "/v1/nodes/"+strings.Repeat("n", 300)+"/cordon", "", op, 400)
	api("shell injection in a node name: node1;rm -rf /", "POST", "/v1/nodes/node1;rm%20-rf%20%2F/cordon", "", op, 400, 404)
	api("command substitution in a node name: $(id)", "POST", "/v1/nodes/$(id)/cordon", "", op, 400, 404)
	api("SQL injection in a node name: ' OR 1=1--", "POST", "/v1/nodes/'%20OR%201=1--/cordon", "", op, 400, 404)
	api("right-to-left override and emoji in a node name", "POST", "/v1/nodes/node%E2%80%AE1%F0%9F%92%A5/cordon", "", op, 400, 404)
	api("invalid UTF-8 in a node name", "POST", "/v1/nodes/node%FF%FE/cordon", "", op, 400, 404)
	api("path traversal in a token name", "DELETE", "/v1/tokens/..%2fbootstrap", "", op, 400, 404)
	api("2 MiB query parameter", "GET", "/v1/events?limit="+strings.Repeat("9", 2<<20), "", op, 431, 400, 414)
	api("limit=-1", "GET", "/v1/events?limit=-1", "", op, 400)
	api("limit=1e9", "GET", "/v1/events?limit=1000000000", "", op, 400)
	api("since=abc", "GET", "/v1/events?since=abc", "", op, 400)
	// The catch-all "/" route answers 404 "no such endpoint: METHOD PATH"
	// where a 405 would be more precise; both are clear.
	api("wrong method: DELETE /v1/plan", "DELETE", "/v1/plan", "", op, 405, 404)
	api("wrong method: PUT /v1/status", "PUT", "/v1/status", "", op, 405, 404)
	api("wrong method: GET /v1/nodes/node1/drain", "GET", "/v1/nodes/node1/drain", "", op, 405, 404)
	api("wrong method: PATCH /v1/tokens", "PATCH", "/v1/tokens", "", op, 405, 404)
	api("unknown endpoint", "POST", "/v1/nodes/node1/explode", "", op, 404, 405)
	api("invalid JSON body: {", "POST", "/v1/nodes/node1/cordon", "{", op, 400)
	api("JSON body of the wrong type: {\"reason\": 5}", "POST", "/v1/nodes/node1/cordon", `{"reason": 5}`, op, 400)
	api("JSON body with an unknown field", "POST", "/v1/nodes/node1/cordon", `{"reason":"x","state":"active"}`, op, 400)
	api("JSON array instead of an object", "POST", "/v1/nodes/node1/cordon", `[]`, op, 400)
	// A node that is not in the plan: the body is decoded first, so 404
	// means the trailing data was accepted (and nothing is written).
	api("JSON body followed by trailing garbage", "POST", "/v1/nodes/chaos-nosuchnode/cordon", `{"reason":"a"} {"reason":"b"} garbage`, op, 400)
	api("100 000-deep nested JSON", "POST", "/v1/nodes/node1/cordon", strings.Repeat("[", 100000)+strings.Repeat("]", 100000), op, 400)
	// Raw, not through net/http's client: the agent answers 413 and closes
	// before reading 2 MiB, and the client then fails its write with a
	// broken pipe (or a reset) instead of reading the answer.
	ps = append(ps, probe{port: "api", name: "2 MiB JSON body", run: func(t *testing.T, b *badInput) (string, error) {
		body := `{"reason":"` + strings.Repeat("a", 2<<20) + `"}`
		req := fmt.Sprintf("POST /v1/nodes/node1/cordon HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", op, len(body), body)
		return refused(b.target.api, []byte(req), false, false, 413)
	}})
	api("rollback to version 2^64-1", "POST", "/v1/plan/rollback", `{"version":18446744073709551615}`, op, 404, 409)
	api("rollback to version -1", "POST", "/v1/plan/rollback", `{"version":-1}`, op, 400)
	api("token with an unknown role", "POST", "/v1/tokens", `{"name":"chaos-x","role":"root"}`, op, 400)
	api("token with a negative TTL", "POST", "/v1/tokens", `{"name":"chaos-x","role":"read","ttl":"-1h"}`, op, 400)
	api("token with a 1000-year TTL", "POST", "/v1/tokens", `{"name":"chaos-x","role":"read","ttl":"8760000h"}`, op, 400)
	api("token named ../../etc/passwd", "POST", "/v1/tokens", `{"name":"../../etc/passwd","role":"read"}`, op, 400)
	api("plan file that is not YAML", "POST", "/v1/plan", "a: [unclosed\n", op, 422, 400)
	api("plan file with negative capacities", "POST", "/v1/plan?reason=chaos", "mode: dry-run\nlimits:\n  min_active: -3\n  max_active: -1\n", op, 422, 400)
	api("plan file with min_active > max_active", "POST", "/v1/plan?reason=chaos", "mode: dry-run\nlimits:\n  min_active: 9\n  max_active: 2\n", op, 422, 400)
	api("plan file with an unknown field", "POST", "/v1/plan", "mode: dry-run\nlimitz: {}\n", op, 422, 400)
	api("plan file with an invalid cron schedule and time zone", "POST", "/v1/plan",
		"mode: dry-run\nschedules:\n  - {name: x, start: \"99 99 * * *\", duration: 1h, time_zone: Mars/Olympus, min_active: 1}\n", op, 422, 400)
	api("plan file of 1 MiB of schedules (~16 000)", "POST", "/v1/plan", hugeSchedules(), op, 422, 400)
	api("YAML alias bomb (billion laughs)", "POST", "/v1/plan", yamlBomb, op, 422, 400)
	api("write without a token", "POST", "/v1/nodes/node1/cordon", "", "", 401)
	api("malformed token", "POST", "/v1/nodes/node1/cordon", "", "lm_short", 401)
	api("unknown well-formed token", "POST", "/v1/nodes/node1/cordon", "", "lm_0123456789abcdef_"+strings.Repeat("0", 64), 401)
	api("token of another cluster, 100 KiB long", "POST", "/v1/nodes/node1/cordon", "", strings.Repeat("x", 100<<10), 401, 431)
	ps = append(ps, probe{port: "api", name: "read token on a write", run: func(t *testing.T, b *badInput) (string, error) {
		return expectCode(b.target.api, "POST", "/v1/nodes/node1/cordon", b.readToken, 403)
	}})
	ps = append(ps, probe{port: "api", name: "revoked token", run: func(t *testing.T, b *badInput) (string, error) {
		return expectCode(b.target.api, "POST", "/v1/nodes/node1/cordon", b.revoked, 401)
	}})
	ps = append(ps, probe{port: "api", name: "Basic instead of Bearer", run: func(t *testing.T, b *badInput) (string, error) {
		return rawAPI(b.target.api, "POST /v1/nodes/node1/cordon HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YWRtaW46YWRtaW4=\r\nContent-Length: 0\r\n\r\n", 401)
	}})
	ps = append(ps, probe{port: "api", name: "token in the query string instead of the header", run: func(t *testing.T, b *badInput) (string, error) {
		return rawAPI(b.target.api, "POST /v1/nodes/node1/cordon?token="+chaosToken+"&access_token="+chaosToken+" HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 401)
	}})
	ps = append(ps, probe{port: "api", name: "forged X-Loadmesh-Forwarded-By on a write without a token", run: func(t *testing.T, b *badInput) (string, error) {
		return rawAPI(b.target.api, "POST /v1/nodes/node1/cordon HTTP/1.1\r\nHost: x\r\nX-Loadmesh-Forwarded-By: node1\r\nContent-Length: 0\r\n\r\n", 401)
	}})
	ps = append(ps, probe{port: "api", name: "raw NUL byte in the path", run: func(t *testing.T, b *badInput) (string, error) {
		return rawAPI(b.target.api, "POST /v1/nodes/node1\x00/cordon HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+chaosToken+"\r\n\r\n", 400)
	}})
	ps = append(ps, probe{port: "api", name: "audit reason with terminal escapes, CR/LF and HTML (stored: valid input)", changes: true,
		run: func(t *testing.T, b *badInput) (string, error) { return b.hostileReason(t) }})

	// The QUIC peer port.
	ps = append(ps, probe{port: "quic", name: "1000 random UDP datagrams (1..1400 bytes)", run: func(t *testing.T, b *badInput) (string, error) {
		return sendUDP(b.target.peer, 1000, func(i int) []byte { return randomBytes(1 + i%1400) })
	}})
	ps = append(ps, probe{port: "quic", name: "500 QUIC long-header Initial packets with garbage payloads", run: func(t *testing.T, b *badInput) (string, error) {
		return sendUDP(b.target.peer, 500, func(int) []byte {
			p := randomBytes(1200)
			p[0] = 0xc0                                    // long header, Initial
			binary.BigEndian.PutUint32(p[1:5], 0x00000001) // QUIC v1
			p[5] = 8                                       // DCID length
			return p
		})
	}})
	h3 := func(name string, conf *tls.Config) {
		ps = append(ps, probe{port: "quic", name: name, run: func(t *testing.T, b *badInput) (string, error) {
			return h3Refused(b.target.peer, conf)
		}})
	}
	h3("QUIC handshake without a client certificate", &tls.Config{InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}})
	h3("QUIC handshake with a node certificate from another CA", &tls.Config{InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}, Certificates: []tls.Certificate{b.foreign}})
	h3("QUIC handshake with a cluster certificate of a non-member", &tls.Config{InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}, Certificates: []tls.Certificate{b.stranger}})
	h3("QUIC handshake with a wrong ALPN", &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"loadmesh-raft/1"}, Certificates: []tls.Certificate{b.stranger}})

	// The Raft port.
	raftConf := func(certs ...tls.Certificate) *tls.Config {
		return &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"loadmesh-raft/1"}, Certificates: certs}
	}
	ps = append(ps, probe{port: "raft", name: "64 KiB of random bytes over plain TCP", run: func(t *testing.T, b *badInput) (string, error) {
		return tcpClosed(b.target.raft, nil, randomBytes(64<<10))
	}})
	ps = append(ps, probe{port: "raft", name: "a Raft AppendEntries frame over plain TCP (no TLS)", run: func(t *testing.T, b *badInput) (string, error) {
		return tcpClosed(b.target.raft, nil, append([]byte{0}, msgpackAppendEntries(false)...))
	}})
	ps = append(ps, probe{port: "raft", name: "TLS without a client certificate", run: func(t *testing.T, b *badInput) (string, error) {
		return tcpClosed(b.target.raft, raftConf(), append([]byte{0}, msgpackAppendEntries(false)...))
	}})
	ps = append(ps, probe{port: "raft", name: "TLS with a node certificate from another CA", run: func(t *testing.T, b *badInput) (string, error) {
		return tcpClosed(b.target.raft, raftConf(b.foreign), append([]byte{0}, msgpackAppendEntries(false)...))
	}})
	ps = append(ps, probe{port: "raft", name: "non-member cluster certificate, then random bytes", run: func(t *testing.T, b *badInput) (string, error) {
		return tcpClosed(b.target.raft, raftConf(b.stranger), randomBytes(4096))
	}})
	ps = append(ps, probe{port: "raft", name: "non-member cluster certificate, unknown RPC type 0xff", run: func(t *testing.T, b *badInput) (string, error) {
		return tcpClosed(b.target.raft, raftConf(b.stranger), []byte{0xff, 0x80})
	}})
	ps = append(ps, probe{port: "raft", name: "non-member cluster certificate, truncated AppendEntries frame", run: func(t *testing.T, b *badInput) (string, error) {
		frame := append([]byte{0}, msgpackAppendEntries(false)...)
		return tcpClosed(b.target.raft, raftConf(b.stranger), frame[:len(frame)/2])
	}})
	ps = append(ps, probe{port: "raft", name: "non-member cluster certificate, AppendEntries claiming 2^32-1 entries", run: func(t *testing.T, b *badInput) (string, error) {
		return tcpClosed(b.target.raft, raftConf(b.stranger), append([]byte{0}, msgpackAppendEntries(true)...))
	}})
	ps = append(ps, probe{port: "raft", name: "non-member cluster certificate, well-formed TimeoutNow to the leader", run: func(t *testing.T, b *badInput) (string, error) {
		return b.raftTimeoutNow(t)
	}})

	// The gossip port.
	ps = append(ps, probe{port: "gossip", name: "1000 random UDP datagrams", run: func(t *testing.T, b *badInput) (string, error) {
		return sendUDP(b.target.gossip, 1000, func(i int) []byte { return randomBytes(1 + i%1400) })
	}})
	ps = append(ps, probe{port: "gossip", name: "500 UDP packets shaped as encrypted (version 1, nonce, garbage)", run: func(t *testing.T, b *badInput) (string, error) {
		return sendUDP(b.target.gossip, 500, func(int) []byte { p := randomBytes(200); p[0] = 1; return p })
	}})
	ps = append(ps, probe{port: "gossip", name: "64 KiB of random bytes over TCP", run: func(t *testing.T, b *badInput) (string, error) {
		return tcpClosed(b.target.gossip, nil, randomBytes(64<<10))
	}})
	ps = append(ps, probe{port: "gossip", name: "TCP encrypted-message header announcing 4 GiB", run: func(t *testing.T, b *badInput) (string, error) {
		return tcpClosed(b.target.gossip, nil, []byte{10, 0xff, 0xff, 0xff, 0xff}) // encryptMsg
	}})
	ps = append(ps, probe{port: "gossip", name: "memberlist join with a wrong key (32 bytes)", run: func(t *testing.T, b *badInput) (string, error) {
		return b.intruderJoin(t, randomBytes(32))
	}})
	ps = append(ps, probe{port: "gossip", name: "memberlist join without encryption", run: func(t *testing.T, b *badInput) (string, error) {
		return b.intruderJoin(t, nil)
	}})
	return ps
}

func nilIf(cond bool, msg string) error {
	if cond {
		return errors.New(msg)
	}
	return nil
}

func expectCode(api, method, path, token string, want int) (string, error) {
	code, body, err := apiDo(method, api, path, nil, token)
	if err != nil {
		return "", err
	}
	obs := fmt.Sprintf("%d %s", code, bytes.TrimSpace(body))
	if code != want {
		return obs, fmt.Errorf("status %d, want %d", code, want)
	}
	return obs, nil
}

func rawAPI(api, req string, want int) (string, error) {
	return refused(api, []byte(req), false, false, want)
}

// hugeSchedules is a plan file of just under 1 MiB (the API's limit), all
// schedules.
func hugeSchedules() string {
	var b strings.Builder
	b.WriteString("mode: dry-run\nschedules:\n")
	for i := 0; b.Len() < maxBody-100; i++ {
		fmt.Fprintf(&b, "  - {name: s%d, start: \"0 %d * * *\", duration: 1h, min_active: 1}\n", i, i%24)
	}
	return b.String()
}

const maxBody = 1 << 20

// yamlBomb defines nine levels of nine-fold aliases (9^9 strings once
// expanded) and uses the last under a field the decoder descends into.
const yamlBomb = `mode: dry-run
x-a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
x-b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
x-c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
x-d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
x-e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
x-f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
x-g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
x-h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
x-i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
schedules: *i
`

// hostileReason stores an audit reason full of terminal escapes, CR/LF
// and HTML (valid input: an operator may write anything), then checks that
// `loadmesh events` does not pass the escapes to the terminal.
func (b *badInput) hostileReason(t *testing.T) (string, error) {
	reason := "chaos \x1b]0;pwned\x07\x1b[2J\x1b[31mred\r\nFAKE EVENT line <script>alert(1)</script>"
	body := fmt.Sprintf(`{"name":"chaos-escapes","role":"read","reason":%q}`, reason)
	body = strings.ReplaceAll(body, `\x1b`, `\u001b`)
	body = strings.ReplaceAll(body, `\a`, `\u0007`)
	code, resp, err := apiDo(http.MethodPost, b.target.api, "/v1/tokens", []byte(body), chaosToken)
	if err != nil {
		return "", err
	}
	if code != http.StatusOK {
		return fmt.Sprintf("%d %s", code, resp), fmt.Errorf("status %d, want 200", code)
	}
	out := mustRun(t, "events", "--api", "http://"+b.target.api, "--limit", "5")
	obs := "stored (200); `loadmesh events` prints it"
	switch {
	case strings.ContainsRune(out, 0x1b) || strings.ContainsRune(out, 0x07):
		b.findings = append(b.findings, "`loadmesh events` prints terminal escape sequences from an audit reason verbatim (ESC ] 0 ; ... BEL retitles the terminal, ESC [ 2 J clears it): anyone with an operator token can inject escapes into an operator's terminal; escape control characters when printing")
		obs += " WITH raw escape bytes (finding)"
	case strings.Contains(out, "\nFAKE EVENT"):
		b.findings = append(b.findings, "`loadmesh events` prints a CR/LF in an audit reason as a line break: a reason can forge what looks like another event line")
		obs += " with the CR/LF as a real line break (finding)"
	default:
		obs += " with control characters escaped"
	}
	return obs, nil
}

// sendUDP sends n datagrams made by gen to addr.
func sendUDP(addr string, n int, gen func(i int) []byte) (string, error) {
	conn, err := net.Dial("udp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	sent := 0
	for i := range n {
		if _, err := conn.Write(gen(i)); err == nil {
			sent++
		}
	}
	// Anything sent back (a version negotiation, a stateless reset) is
	// fine; read what comes within a moment, for the record.
	conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	replies := 0
	buf := make([]byte, 2048)
	for {
		if _, err := conn.Read(buf); err != nil {
			break
		}
		replies++
	}
	return fmt.Sprintf("%d sent, %d datagrams back", sent, replies), nil
}

// h3Refused makes an HTTP/3 request to a peer port with conf; it must
// fail.
func h3Refused(addr string, conf *tls.Config) (string, error) {
	tr := &http3.Transport{TLSClientConfig: conf}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), retry.Scale(5*time.Second))
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/", nil)
	resp, err := tr.RoundTrip(req)
	if err == nil {
		resp.Body.Close()
		return resp.Status, fmt.Errorf("the peer port answered %s", resp.Status)
	}
	return "refused: " + err.Error(), nil
}

// tcpClosed connects to addr (with TLS when conf is set), writes payload
// and reports how the agent ended the connection. A connection the agent
// still holds after 3s is reported, not failed: it costs a goroutine until
// the peer gives up.
func tcpClosed(addr string, conf *tls.Config, payload []byte) (string, error) {
	raw, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return "", err
	}
	defer raw.Close()
	conn := raw
	var hs string
	if conf != nil {
		tc := tls.Client(raw, conf)
		tc.SetDeadline(time.Now().Add(3 * time.Second))
		if err := tc.Handshake(); err != nil {
			return "TLS handshake refused: " + err.Error(), nil
		}
		hs = "TLS handshake completed; "
		conn = tc
	}
	start := time.Now()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	go conn.Write(payload)
	buf := make([]byte, 512)
	for {
		_, err := conn.Read(buf)
		var ne net.Error
		switch {
		case err == nil:
			continue
		case errors.As(err, &ne) && ne.Timeout():
			return hs + "connection still open 3s later (the agent waits for more)", nil
		default:
			return fmt.Sprintf("%sclosed by the agent after %s: %v", hs, time.Since(start).Round(time.Millisecond), err), nil
		}
	}
}

// msgpackAppendEntries is a msgpack map {"Term": 1, "Entries": [...]} as
// Raft's network transport decodes an AppendEntriesRequest; with huge, the
// array header claims 2^32-1 entries and none follow.
func msgpackAppendEntries(huge bool) []byte {
	var b bytes.Buffer
	b.WriteByte(0x82) // fixmap, 2 entries
	b.WriteByte(0xa4)
	b.WriteString("Term")
	b.WriteByte(0x01)
	b.WriteByte(0xa7)
	b.WriteString("Entries")
	if huge {
		b.Write([]byte{0xdd, 0xff, 0xff, 0xff, 0xff}) // array32
		return b.Bytes()
	}
	b.WriteByte(0x91) // fixarray, 1 entry
	b.WriteByte(0x81) // fixmap
	b.WriteByte(0xa4)
	b.WriteString("Data")
	b.Write([]byte{0xc4, 0x04, 'j', 'u', 'n', 'k'})
	return b.Bytes()
}

// clientHello returns the first bytes a TLS client sends.
func clientHello(t *testing.T) []byte {
	t.Helper()
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	go tls.Client(c1, &tls.Config{InsecureSkipVerify: true, ServerName: "chaos"}).Handshake()
	buf := make([]byte, 4096)
	c2.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, _ := c2.Read(buf)
	return buf[:n]
}

// raftTimeoutNow sends a well-formed TimeoutNow RPC to the leader from a
// certificate that the cluster CA signed for a node that is no member. It
// records a finding when leadership moves: Raft RPCs are then accepted from
// any certificate of the CA, not only from members.
func (b *badInput) raftTimeoutNow(t *testing.T) (string, error) {
	leader := b.c.node(b.c.leaderOf(b.c.nodes))
	before, _ := getStatus(leader.api)
	stream := &probeStream{conf: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"loadmesh-raft/1"}, Certificates: []tls.Certificate{b.stranger}}}
	tr := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: stream, MaxPool: 1, Timeout: 3 * time.Second, Logger: hclog.NewNullLogger(),
	})
	defer tr.Close()
	var resp raft.TimeoutNowResponse
	err := tr.TimeoutNow(raft.ServerID(leader.name), raft.ServerAddress(leader.raft),
		&raft.TimeoutNowRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("chaos-stranger"), Addr: []byte("127.0.0.1:1")}}, &resp)
	obs := "RPC error: " + fmt.Sprint(err)
	if err == nil {
		obs = "RPC accepted"
	}
	// Did leadership move?
	var after status
	var newLeader string
	retry.RunFor(t, 30*time.Second, func(r *retry.R) {
		l, _, err := agreedLeader(b.c.nodes)
		r.Check(err)
		newLeader = l
		after, _ = getStatus(leader.api)
	})
	obs += fmt.Sprintf("; leader %s (term %d) before, %s (term %d) after", leader.name, before.Raft.Term, newLeader, after.Raft.Term)
	if after.Raft.Term != before.Raft.Term {
		b.findings = append(b.findings, fmt.Sprintf("the Raft port takes RPCs from any certificate the cluster CA signed, member or not (the QUIC peer port checks membership): a TimeoutNow from a certificate for the non-member \"chaos-stranger\" made leader %s step down and start an election (term %d → %d, leader now %s). Check the TLS peer's node name against the Raft configuration on the Raft port, as authorizePeer does on the peer port.", leader.name, before.Raft.Term, after.Raft.Term, newLeader))
	}
	return obs, nil
}

// probeStream is a raft.StreamLayer that only dials, with TLS.
type probeStream struct{ conf *tls.Config }

func (p *probeStream) Accept() (net.Conn, error) { select {} }
func (p *probeStream) Close() error              { return nil }
func (p *probeStream) Addr() net.Addr            { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (p *probeStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", string(address), p.conf)
}

// intruderJoin starts an in-process memberlist named chaos-intruder with
// key (nil: no encryption) and has it join the target; the join must fail
// and the intruder must not appear as a member.
func (b *badInput) intruderJoin(t *testing.T, key []byte) (string, error) {
	conf := memberlist.DefaultLocalConfig()
	conf.Name = "chaos-intruder"
	conf.BindAddr = "127.0.0.1"
	conf.BindPort = 0
	conf.AdvertisePort = 0
	conf.SecretKey = key
	conf.LogOutput = io.Discard
	conf.TCPTimeout = 2 * time.Second
	ml, err := memberlist.Create(conf)
	if err != nil {
		t.Fatalf("intruder memberlist: %v", err)
	}
	defer ml.Shutdown()
	n, err := ml.Join([]string{b.target.gossip})
	obs := fmt.Sprintf("join contacted %d nodes: %v", n, err)
	if err == nil || n > 0 {
		return obs, errors.New("the intruder joined")
	}
	ml.Leave(time.Second)
	for _, nd := range b.c.nodes {
		st, err := getStatus(nd.api)
		if err != nil {
			return obs, err
		}
		if s := st.memberStatus("chaos-intruder"); s != "absent" {
			return obs, fmt.Errorf("%s lists chaos-intruder as %s", nd.name, s)
		}
	}
	return obs, nil
}
