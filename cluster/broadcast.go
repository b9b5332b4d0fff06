package cluster

import (
	"errors"
	"fmt"

	"github.com/hashicorp/memberlist"
)

// MaxMessageSize bounds the payload of Broadcast, so that a message with
// its framing fits one gossip UDP packet.
const MaxMessageSize = 1024

// MessageHandler receives a payload another node sent with Broadcast under
// the topic it was registered for (Deps.Messages). from is the sending
// node's name as it states it: gossip (with Config.GossipKey) is the trust
// boundary. It runs on a memberlist goroutine: it must not block, and it
// must copy payload to keep it.
type MessageHandler func(from string, payload []byte)

// messageVersion is the first byte of every message frame.
const messageVersion = 1

// Broadcast sends payload under topic to every other live member, best
// effort: one UDP packet to each (encrypted with the gossip key when set),
// no retransmission and no relaying. It suits figures that every node
// sends again each period, where a lost copy is replaced by the next one.
// memberlist's broadcast queue would send a message to a few random nodes
// only, and relaying copies of every node's figures through every node
// costs more than sending each node's directly (see NOTES on coverage);
// direct sends cost O(N) packets per node per period.
//
// It must not be called from a memberlist callback.
func (c *Cluster) Broadcast(topic byte, payload []byte) error {
	if len(payload) > MaxMessageSize {
		return fmt.Errorf("broadcast: payload of %d bytes is over %d", len(payload), MaxMessageSize)
	}
	if c.ml == nil {
		return errors.New("broadcast: cluster not started")
	}
	msg := encodeMessage(topic, c.cfg.NodeName, payload)
	// Addresses from the member table, not memberlist.Members: the nodes
	// that returns are memberlist's own, updated in place without a lock
	// we could take.
	var to []memberlist.Address
	c.mu.Lock()
	for name, e := range c.members {
		if name != c.cfg.NodeName && (e.status == StatusAlive || e.status == StatusSuspect) && e.gossip != "" {
			to = append(to, memberlist.Address{Addr: e.gossip, Name: name})
		}
	}
	c.mu.Unlock()
	var errs []error
	for _, a := range to {
		if err := c.ml.SendToAddress(a, msg); err != nil {
			errs = append(errs, fmt.Errorf("broadcast to %s: %w", a.Name, err))
		}
	}
	return errors.Join(errs...)
}

// encodeMessage frames a message: version, topic, the sender's name
// (length byte, then the name), payload.
func encodeMessage(topic byte, from string, payload []byte) []byte {
	b := make([]byte, 0, 3+len(from)+len(payload))
	b = append(b, messageVersion, topic, byte(len(from)))
	b = append(b, from...)
	return append(b, payload...)
}

// decodeMessage undoes encodeMessage; payload aliases b.
func decodeMessage(b []byte) (topic byte, from string, payload []byte, err error) {
	if len(b) < 3 {
		return 0, "", nil, errors.New("message too short")
	}
	if b[0] != messageVersion {
		return 0, "", nil, fmt.Errorf("message version %d, want %d", b[0], messageVersion)
	}
	n := int(b[2])
	if n == 0 || len(b) < 3+n {
		return 0, "", nil, errors.New("bad sender name")
	}
	if len(b)-3-n > MaxMessageSize {
		return 0, "", nil, errors.New("message too long")
	}
	return b[1], string(b[3 : 3+n]), b[3+n:], nil
}

// handleMessage dispatches a message received by the delegate.
func (d *delegate) handleMessage(b []byte) {
	topic, from, payload, err := decodeMessage(b)
	if err != nil {
		return // not ours to log on this hot, unauthenticated path
	}
	if h := d.handlers[topic]; h != nil {
		h(from, payload)
	}
}
