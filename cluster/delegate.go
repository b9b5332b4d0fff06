package cluster

import (
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// delegate serves this node's gossip metadata to memberlist.
type delegate struct {
	meta atomic.Pointer[[]byte]
	// handlers receive Broadcast messages by topic (Deps.Messages).
	handlers map[byte]MessageHandler
}

var _ memberlist.Delegate = (*delegate)(nil)

func (d *delegate) NodeMeta(limit int) []byte {
	p := d.meta.Load()
	if p == nil || len(*p) > limit {
		return nil
	}
	return *p
}

func (d *delegate) NotifyMsg(b []byte)              { d.handleMessage(b) }
func (d *delegate) GetBroadcasts(int, int) [][]byte { return nil }
func (d *delegate) LocalState(bool) []byte          { return nil }
func (d *delegate) MergeRemoteState([]byte, bool)   {}

// pingDelegate records when each member last answered a probe, which the
// member table uses to report suspects (memberlist has no suspect event).
type pingDelegate struct{ c *Cluster }

var _ memberlist.PingDelegate = (*pingDelegate)(nil)

func (p *pingDelegate) AckPayload() []byte { return nil }

func (p *pingDelegate) NotifyPingComplete(other *memberlist.Node, _ time.Duration, _ []byte) {
	now := time.Now()
	p.c.mu.Lock()
	p.c.acks[other.Name] = now
	p.c.mu.Unlock()
}
