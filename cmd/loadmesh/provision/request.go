// Package provision runs the autoscaler's provisioner hooks (a command with
// a JSON document on stdin, or an HTTP webhook) with timeouts and retries,
// and implements the local provisioner behind `loadmesh provision local`,
// which starts and stops loadmesh agent processes on this machine.
//
// The leader's autoscaler decides (scheduler/autoscale); this package only
// carries the decision out. It knows nothing of Raft or gossip.
package provision

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// RequestVersion is the version of the Request document.
const RequestVersion = 1

// Hook kinds, as in Request.Kind.
const (
	KindScaleOut = "scale_out"
	KindScaleIn  = "scale_in"
	KindReplace  = "replace"
)

// MaxRequestSize bounds a Request document read from stdin.
const MaxRequestSize = 1 << 20

// Request is the JSON document a hook receives: on stdin for a command, as
// the POST body for a webhook. Field names are stable; new fields may be
// added in the same version.
type Request struct {
	// Version is RequestVersion.
	Version int `json:"version"`
	// ID identifies the request; it is the same on every retry, so a hook
	// can use it as an idempotency key.
	ID string `json:"id"`
	// Kind is scale_out, scale_in or replace.
	Kind string `json:"kind"`
	// Time is when the leader asked.
	Time time.Time `json:"time"`
	// Attempt counts from 1; it is set per attempt.
	Attempt int `json:"attempt"`
	// Zone and Count are set for scale_out (and replace: the zone of the
	// replaced node, and how many to start).
	Zone  string `json:"zone,omitempty"`
	Count int    `json:"count,omitempty"`
	// Nodes names the nodes to release (scale_in) or replace.
	Nodes []string `json:"nodes,omitempty"`
	// NewNodeState is the state new nodes will be given on joining:
	// standby or active.
	NewNodeState string `json:"new_node_state,omitempty"`
	// Why is the autoscaler's reason.
	Why string `json:"why"`
	// Cluster tells a provisioner how to reach the cluster.
	Cluster Cluster `json:"cluster"`
	// JoinToken, for the kinds that start nodes, is a fresh join token
	// with one use per node: a new agent started with --join-token, the
	// CACert as --tls-ca and JoinServers as --join-server gets its
	// certificate from the cluster, with no other secret. Empty when the
	// leader holds no CA key (--tls-ca-key).
	JoinToken string `json:"join_token,omitempty"`
	// JoinServers are the peer addresses (host:port) of live members,
	// which take certificate requests.
	JoinServers []string `json:"join_servers,omitempty"`
	// CACert is the cluster CA certificate (PEM) that new nodes trust.
	CACert string `json:"ca_cert,omitempty"`
}

// Cluster is how a new node finds the cluster.
type Cluster struct {
	// Leader is the name of the node that made the request.
	Leader string `json:"leader"`
	// API is the leader's status API base URL.
	API string `json:"api,omitempty"`
	// Seeds are gossip addresses (host:port) of live members to --join.
	Seeds []string `json:"seeds"`
	// Zones lists the zones the cluster has nodes in.
	Zones []string `json:"zones,omitempty"`
}

// Validate reports what is wrong with r, if anything.
func (r Request) Validate() error {
	var errs []error
	if r.Version != RequestVersion {
		errs = append(errs, fmt.Errorf("version %d: want %d", r.Version, RequestVersion))
	}
	switch r.Kind {
	case KindScaleOut:
		if r.Count < 1 || r.Count > 1000 {
			errs = append(errs, fmt.Errorf("scale_out count %d: want 1 to 1000", r.Count))
		}
	case KindScaleIn, KindReplace:
		if len(r.Nodes) == 0 {
			errs = append(errs, fmt.Errorf("%s names no nodes", r.Kind))
		}
	default:
		errs = append(errs, fmt.Errorf("kind %q: want scale_out, scale_in or replace", r.Kind))
	}
	if len(errs) == 0 {
		return nil
	}
	// One line, for a provisioner's stderr and the audit log.
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return errors.New(strings.Join(msgs, "; "))
}

// ReadRequest decodes and validates one Request from r (at most
// MaxRequestSize bytes, unknown fields allowed).
func ReadRequest(r io.Reader) (Request, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxRequestSize+1))
	if err != nil {
		return Request{}, fmt.Errorf("read hook request: %w", err)
	}
	if len(b) > MaxRequestSize {
		return Request{}, fmt.Errorf("hook request is larger than %d bytes", MaxRequestSize)
	}
	var req Request
	if err := json.Unmarshal(b, &req); err != nil {
		return Request{}, fmt.Errorf("hook request is not valid JSON: %w", err)
	}
	if err := req.Validate(); err != nil {
		return Request{}, fmt.Errorf("hook request: %w", err)
	}
	return req, nil
}
