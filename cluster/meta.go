package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// metaVersion1 is the first byte of the gossip metadata this version writes.
const metaVersion1 byte = 1

// maxMetaSize is memberlist's limit on node metadata.
const maxMetaSize = 512

// Meta is what every node gossips about itself through memberlist node
// metadata (memberlist relays it to every member itself, and a change is
// pushed with UpdateNode). It must stay under 512 bytes encoded.
type Meta struct {
	Zone string `json:"z,omitempty"`
	// Tags are the node's --tag key=value pairs.
	Tags map[string]string `json:"t,omitempty"`
	// Service addresses in advertised form (IP:PORT).
	HTTP string `json:"h,omitempty"`
	Peer string `json:"p,omitempty"`
	Raft string `json:"r,omitempty"`
	API  string `json:"a,omitempty"`
	// Serving is true when the node has a backend and can take forwarded
	// requests.
	Serving bool `json:"s,omitempty"`
	// BootstrapExpect is the node's --bootstrap-expect, so nodes only
	// bootstrap with peers that expect the same cluster size.
	BootstrapExpect int `json:"be,omitempty"`
	// Load is the node's encoded load summary (scheduler.EncodeLoad),
	// republished several times a second.
	Load []byte `json:"ld,omitempty"`
	// Leaving is set when a graceful departure begins (the node drains,
	// then leaves), so peers stop sending it new requests and can tell a
	// departure from a failure.
	Leaving bool `json:"l,omitempty"`
	// ClusterID names the Raft cluster whose state the node holds
	// (clusterid.go); empty while it has none.
	ClusterID string `json:"c,omitempty"`
	// Services are the TCP services the node offers (has a backend for),
	// with their live state.
	Services ServiceMetas `json:"sv,omitempty"`
	// NonVoter is set by a node that must never be a Raft voter (and so
	// never the leader): a worker that holds no CA key (Config.NonVoter).
	NonVoter bool `json:"nv,omitempty"`
}

// ServiceMetas are a node's services by name. In gossip each is one
// compact string, "NAME|H|OPEN" (H is 1 when healthy), to keep the
// metadata well inside memberlist's 512 bytes.
type ServiceMetas map[string]ServiceMeta

// MarshalJSON encodes the services as sorted "NAME|H|OPEN" strings.
func (s ServiceMetas) MarshalJSON() ([]byte, error) {
	names := make([]string, 0, len(s))
	for n := range s {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]string, 0, len(s))
	for _, n := range names {
		h := 0
		if s[n].Healthy {
			h = 1
		}
		out = append(out, fmt.Sprintf("%s|%d|%d", n, h, max(s[n].Open, 0)))
	}
	return json.Marshal(out)
}

// UnmarshalJSON decodes what MarshalJSON encodes; an entry it cannot
// read is an error.
func (s *ServiceMetas) UnmarshalJSON(b []byte) error {
	var in []string
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	m := make(ServiceMetas, len(in))
	for _, e := range in {
		f := strings.Split(e, "|")
		if len(f) != 3 || f[0] == "" || (f[1] != "0" && f[1] != "1") {
			return fmt.Errorf("service entry %q is not NAME|0/1|OPEN", e)
		}
		open, err := strconv.Atoi(f[2])
		if err != nil || open < 0 {
			return fmt.Errorf("service entry %q: bad open count", e)
		}
		m[f[0]] = ServiceMeta{Healthy: f[1] == "1", Open: open}
	}
	*s = m
	return nil
}

// ServiceMeta is what a node gossips about a TCP service it offers.
type ServiceMeta struct {
	// Healthy is true when the node's backend of the service passes its
	// health check and the node is not draining.
	Healthy bool `json:"ok,omitempty"`
	// Open is the number of connections open to the node's backend.
	Open int `json:"n,omitempty"`
}

// EncodeMeta serialises m for memberlist.
func EncodeMeta(m Meta) ([]byte, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode meta: %w", err)
	}
	b := append([]byte{metaVersion1}, body...)
	if len(b) > maxMetaSize {
		return nil, fmt.Errorf("encode meta: %d bytes exceeds memberlist's limit of %d", len(b), maxMetaSize)
	}
	return b, nil
}

// DecodeMeta parses gossip metadata from a peer. It never panics on
// hostile input.
func DecodeMeta(b []byte) (Meta, error) {
	var m Meta
	if len(b) == 0 {
		return m, errors.New("decode meta: empty")
	}
	if len(b) > maxMetaSize {
		return m, fmt.Errorf("decode meta: %d bytes exceeds %d", len(b), maxMetaSize)
	}
	if b[0] != metaVersion1 {
		return m, fmt.Errorf("decode meta: unknown format version %d", b[0])
	}
	if err := json.Unmarshal(b[1:], &m); err != nil {
		return m, fmt.Errorf("decode meta: %w", err)
	}
	return m, nil
}
