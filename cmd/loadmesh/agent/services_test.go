package agent

import (
	"fmt"
	"strings"
	"testing"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/scheduler"
)

// The most services a node may have, with the longest names and large
// counts, still fit memberlist's 512-byte metadata beside the rest.
func TestMaxServicesFitGossipMetadata(t *testing.T) {
	m := cluster.Meta{
		Zone: "eu-central-1a",
		Tags: map[string]string{"cost_per_hour": "0.125", "carbon_region": "eu-central", "power_watts": "180"},
		HTTP: "203.0.113.254:8080", Peer: "203.0.113.254:7947", Raft: "203.0.113.254:7948", API: "203.0.113.254:7950",
		Serving: true, BootstrapExpect: 5, ClusterID: strings.Repeat("c", 32),
		Load:     scheduler.EncodeLoad(scheduler.Load{Version: 1 << 40, Inflight: 1 << 20, Capacity: 1 << 20, RPS: 1e6, Healthy: true}),
		Services: cluster.ServiceMetas{},
	}
	for i := range maxServices {
		name := fmt.Sprintf("s%d", i) + strings.Repeat("x", 22)
		m.Services[name] = cluster.ServiceMeta{Healthy: true, Open: 999_999}
	}
	b, err := cluster.EncodeMeta(m)
	if err != nil {
		t.Fatal(err)
	}
	back, err := cluster.DecodeMeta(b)
	if err != nil || len(back.Services) != maxServices || back.Services["s0"+strings.Repeat("x", 22)].Open != 999_999 {
		t.Fatalf("round trip: %+v, %v", back.Services, err)
	}
	t.Logf("metadata with %d services: %d bytes", maxServices, len(b))
	if len(b) > 480 {
		t.Errorf("metadata takes %d bytes; keep a margin below memberlist's 512", len(b))
	}
}

func TestParseServiceSpecDefaults(t *testing.T) {
	c, err := ParseServiceSpec("name=xroad,mode=tcp,listen=:5500,backend=127.0.0.1:5501,proxy_protocol=v2,rate=5,burst=10,max_conns_per_client=3")
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "xroad" || c.Listen != ":5500" || c.Backend != "127.0.0.1:5501" || !c.ProxyProtocol || c.Rate != 5 || c.Burst != 10 || c.Limits.MaxConnsPerClient != 3 {
		t.Errorf("parsed %+v", c)
	}
}

func TestConfigRefusesTagsTooLargeForGossip(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Name, cfg.Dev, cfg.Advertise = "n", true, "2001:db8::1"
	for i := range 8 {
		cfg.Tags = append(cfg.Tags, fmt.Sprintf("k%d=%s", i, strings.Repeat("v", 28)))
	}
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "too large for the node's gossip metadata") {
		t.Fatalf("8 tags of 256 bytes with IPv6 addresses: %v", err)
	}
	cfg.Tags = cfg.Tags[:2]
	if err := cfg.Validate(); err != nil {
		t.Fatalf("two tags: %v", err)
	}
}

func TestLoadUnchangedIgnoresCPUNoise(t *testing.T) {
	last := scheduler.Load{Version: 1, Inflight: 3, CPU: 0.4312, Mem: 0.2001, Healthy: true}
	q := last
	q.Version, q.CPU, q.Mem = 2, 0.4377, 0.2049
	if !unchanged(q, last) {
		t.Error("CPU and memory moving by less than a point count as a change")
	}
	q.CPU = 0.4512
	if unchanged(q, last) {
		t.Error("CPU moving by two points counts as no change")
	}
	q.CPU, q.Inflight = last.CPU, 4
	if unchanged(q, last) {
		t.Error("a new in-flight figure counts as no change")
	}
}
