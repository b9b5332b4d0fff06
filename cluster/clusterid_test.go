package cluster

import (
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

func TestBootstrapClusterIDIsTheSameForTheSameConfiguration(t *testing.T) {
	a := []raft.Server{{ID: "a", Address: "10.0.0.1:7948"}, {ID: "b", Address: "10.0.0.2:7948"}}
	b := []raft.Server{{ID: "b", Address: "10.0.0.2:7948"}, {ID: "a", Address: "10.0.0.1:7948"}}
	c := []raft.Server{{ID: "a", Address: "10.0.0.1:7948"}, {ID: "b", Address: "10.0.0.3:7948"}}
	if bootstrapClusterID(a) != bootstrapClusterID(b) {
		t.Error("the order of the servers changes the id")
	}
	if bootstrapClusterID(a) == bootstrapClusterID(c) {
		t.Error("another configuration gives the same id")
	}
	if id := bootstrapClusterID(a); len(id) != 16 {
		t.Errorf("id %q, want 16 hex digits", id)
	}
	if randomClusterID() == randomClusterID() {
		t.Error("two random ids are the same")
	}
}

func TestGossipKeyError(t *testing.T) {
	seeds := []string{"10.0.0.1:7946"}
	for _, tc := range []struct {
		memberlist string
		want       string
	}{
		{"1 error occurred:\n\t* failed to join 10.0.0.1:7946: remote state is encrypted and encryption is not configured", "this node has no key"},
		{"1 error occurred:\n\t* failed to join 10.0.0.1:7946: encryption is configured but remote state is not encrypted", "do not encrypt gossip"},
		{"1 error occurred:\n\t* failed to join 10.0.0.1:7946: no installed keys could decrypt the message", "another gossip key"},
	} {
		err := gossipKeyError(errors.New(tc.memberlist), seeds)
		if !errors.Is(err, ErrGossipKey) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), seeds[0]) {
			t.Errorf("%q: %v, want ErrGossipKey saying %q", tc.memberlist, err, tc.want)
		}
	}
	for _, err := range []error{nil, errors.New("dial tcp 10.0.0.1:7946: connect: connection refused")} {
		if got := gossipKeyError(err, seeds); got != nil {
			t.Errorf("%v: %v, want nil (retrying may help)", err, got)
		}
	}
}
