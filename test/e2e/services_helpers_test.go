//go:build unix

package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loadmesh/loadmesh/test/retry"
)

// ---------------------------------------------------------------------------
// Clusters with TCP services

// startServiceCluster starts n agents as startCluster does (no HTTP
// backends), agent i (from 0) with a --service flag for each of
// services(i) and the flags extra, and waits until every process answers.
// The agents log at debug level: the TCP relay logs why a connection
// ended with an error only there, and the logs are printed on failure.
func startServiceCluster(t *testing.T, n int, services func(i int) []string, extra ...string) *testCluster {
	t.Helper()
	c := &testCluster{}
	launch(t, fmt.Sprintf("%d-agent cluster with tcp services", n), func() []*process {
		c.agents = make([]*agentNode, n)
		for i := range c.agents {
			c.agents[i] = newAgentNode(t, fmt.Sprintf("node%d", i+1))
		}
		var procs []*process
		for i, a := range c.agents {
			a.bootstrapExpect = n
			for j, b := range c.agents {
				if j != i {
					a.join = append(a.join, b.gossip)
				}
			}
			a.argv = a.args()
			a.argv = append(append(a.argv, "--log-level", "debug"), extra...)
			for _, s := range services(i) {
				a.argv = append(a.argv, "--service", s)
			}
		}
		for _, a := range c.agents {
			procs = append(procs, a.start(t))
		}
		c.lastStart = c.agents[n-1].startedAt
		return procs
	})
	return c
}

// svcStatus is what the tests read of GET /v1/status: the node's plan
// state and its TCP services, decoded independently of the agent's types.
type svcStatus struct {
	Node struct {
		Name  string `json:"name"`
		State string `json:"state"`
	} `json:"node"`
	Services []svcEntry `json:"services"`
}

type svcEntry struct {
	Name        string            `json:"name"`
	Listen      string            `json:"listen"`
	Backend     string            `json:"backend"`
	Healthy     bool              `json:"healthy"`
	OpenClients int64             `json:"open_client_connections"`
	OpenBackend int64             `json:"open_backend_connections"`
	Accepted    uint64            `json:"accepted_total"`
	BytesUp     uint64            `json:"bytes_to_backend_total"`
	BytesDown   uint64            `json:"bytes_to_client_total"`
	Errors      map[string]uint64 `json:"errors"`
	Placed      map[string]uint64 `json:"placed_by_node"`
}

func (st svcStatus) service(name string) (svcEntry, bool) {
	for _, s := range st.Services {
		if s.Name == name {
			return s, true
		}
	}
	return svcEntry{}, false
}

// svcMember is an entry of GET /v1/members with its TCP services.
type svcMember struct {
	Name     string `json:"name"`
	Status   string `json:"status"`
	Services map[string]struct {
		Healthy bool `json:"healthy"`
		Open    int  `json:"open_connections"`
	} `json:"services"`
}

func getSvcStatus(r *retry.R, a *agentNode) svcStatus {
	var st svcStatus
	getInto(r, "http://"+a.api+"/v1/status", &st)
	return st
}

func getSvcMembers(r *retry.R, a *agentNode) map[string]svcMember {
	var ms []svcMember
	getInto(r, "http://"+a.api+"/v1/members", &ms)
	out := map[string]svcMember{}
	for _, m := range ms {
		out[m.Name] = m
	}
	return out
}

// svcWant is the health an accepting node must see a node offer a service
// with.
type svcWant struct {
	service, node string
	healthy       bool
}

// waitServices waits until every agent is active in the plan, every agent
// in accepting lists each of want as gossiped, and every service in
// listens(i) of agent i has bound its listener. It returns the bound
// listener addresses by agent name and service.
func waitServices(t *testing.T, c *testCluster, accepting []*agentNode, want []svcWant, listens func(i int) []string) map[string]map[string]string {
	t.Helper()
	addrs := map[string]map[string]string{}
	retry.RunFor(t, 60*time.Second, func(r *retry.R) {
		for i, a := range c.agents {
			st := getSvcStatus(r, a)
			if st.Node.State != "active" {
				r.Fatalf("%s is %q in the plan, want active", a.name, st.Node.State)
			}
			addrs[a.name] = map[string]string{}
			for _, name := range listens(i) {
				s, ok := st.service(name)
				if !ok || s.Listen == "" || strings.HasSuffix(s.Listen, ":0") {
					r.Fatalf("%s: service %q not listening yet: %+v", a.name, name, st.Services)
				}
				addrs[a.name][name] = s.Listen
			}
		}
		for _, a := range accepting {
			ms := getSvcMembers(r, a)
			for _, w := range want {
				m, ok := ms[w.node]
				if !ok || m.Status != "alive" {
					r.Fatalf("%s sees %s as %q, want alive", a.name, w.node, m.Status)
				}
				s, ok := m.Services[w.service]
				if !ok || s.Healthy != w.healthy {
					r.Fatalf("%s sees %s offer %q: %+v (offered %v), want healthy=%v", a.name, w.node, w.service, s, ok, w.healthy)
				}
			}
		}
	})
	return addrs
}

// ---------------------------------------------------------------------------
// In-process TCP backends

// tcpServer is a TCP backend in the test process: serve runs for every
// accepted connection, which is closed when serve returns. It never fails
// the test itself (health checks connect and hang up): what it saw goes
// back to the client, which checks it. Everything stops at test end.
type tcpServer struct {
	name string
	ln   net.Listener
	wg   sync.WaitGroup

	mu       sync.Mutex
	conns    map[net.Conn]bool
	closed   bool
	accepted int
	// tally counts what serve notes (note).
	tally map[string]int
}

func startTCPServer(t *testing.T, name string, serve func(s *tcpServer, c net.Conn)) *tcpServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skipf("cannot listen on loopback: %v", err)
	}
	s := &tcpServer{name: name, ln: ln, conns: map[net.Conn]bool{}, tally: map[string]int{}}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			if s.closed {
				s.mu.Unlock()
				c.Close()
				return
			}
			s.conns[c] = true
			s.accepted++
			s.mu.Unlock()
			s.wg.Go(func() {
				defer func() {
					c.Close()
					s.mu.Lock()
					delete(s.conns, c)
					s.mu.Unlock()
				}()
				serve(s, c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		s.closed = true
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *tcpServer) addr() string { return s.ln.Addr().String() }

func (s *tcpServer) acceptedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

// note counts one occurrence of what.
func (s *tcpServer) note(what string) {
	s.mu.Lock()
	s.tally[what]++
	s.mu.Unlock()
}

func (s *tcpServer) noted(what string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tally[what]
}

// ---------------------------------------------------------------------------
// A throwaway PKI for a TLS backend, unrelated to the cluster's

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T, cn string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// leaf issues a certificate for cn (also a DNS name when dns is set) for
// server or client authentication.
func (ca *testCA) leaf(t *testing.T, cn string, dns []string, usage x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     dns,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// ---------------------------------------------------------------------------
// Deterministic bulk data

// pattern is an endless deterministic byte stream: the same seed gives the
// same bytes, so a receiver can check a large transfer byte for byte
// without holding a copy.
type pattern struct{ r *mrand.ChaCha8 }

func newPattern(seed byte) *pattern {
	var s [32]byte
	for i := range s {
		s[i] = seed + byte(i)
	}
	return &pattern{r: mrand.NewChaCha8(s)}
}

func (p *pattern) Read(b []byte) (int, error) { return p.r.Read(b) }

// jsonString is v as JSON, for messages.
func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
