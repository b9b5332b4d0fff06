package cluster

import (
	"bytes"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
)

// MemberStatus is a member's liveness as this node sees it.
type MemberStatus string

const (
	StatusAlive   MemberStatus = "alive"
	StatusSuspect MemberStatus = "suspect"
	StatusDead    MemberStatus = "dead"
	StatusLeft    MemberStatus = "left"
)

// Member is one node of the gossip pool, as plain data.
type Member struct {
	Name   string       `json:"name"`
	Status MemberStatus `json:"status"`
	Zone   string       `json:"zone"`
	// Addresses of the member's ports, in advertised form.
	Addresses Addresses `json:"addresses"`
	// Since is when this node saw Status begin.
	Since time.Time `json:"since"`
}

// Addresses are a member's reachable service addresses.
type Addresses struct {
	Gossip string `json:"gossip"`
	HTTP   string `json:"http,omitempty"`
	Peer   string `json:"peer,omitempty"`
	Raft   string `json:"raft,omitempty"`
	API    string `json:"api,omitempty"`
}

// memberEntry is the event loop's record of one member.
type memberEntry struct {
	name   string
	gossip string
	meta   Meta
	// rawMeta is the metadata as gossiped, to detect changes cheaply.
	rawMeta []byte
	status  MemberStatus
	since   time.Time
}

func (e *memberEntry) toMember() Member {
	return Member{
		Name:   e.name,
		Status: e.status,
		Zone:   e.meta.Zone,
		Since:  e.since,
		Addresses: Addresses{
			Gossip: e.gossip, HTTP: e.meta.HTTP, Peer: e.meta.Peer, Raft: e.meta.Raft, API: e.meta.API,
		},
	}
}

// applyEvent updates the table for one memberlist event. It runs on the
// event loop only; c.mu must be held.
func (c *Cluster) applyEvent(ev memberEvent, now time.Time) {
	meta, err := DecodeMeta(ev.meta)
	if err != nil {
		c.log.Warn("ignoring member with unreadable metadata", "peer", ev.name, "error", err)
		c.metrics.badMeta.Inc()
		return
	}
	e := c.members[ev.name]
	if e == nil {
		e = &memberEntry{name: ev.name}
		c.members[ev.name] = e
	}
	e.gossip = net.JoinHostPort(ev.addr.String(), strconv.Itoa(int(ev.port)))
	prevLeaving := e.meta.Leaving
	e.meta, e.rawMeta = meta, ev.meta
	status := StatusAlive
	switch {
	case ev.kind != eventLeave:
		if ev.state == memberlist.StateSuspect {
			status = StatusSuspect
		}
	case ev.state == memberlist.StateLeft || meta.Leaving || prevLeaving:
		// memberlist's own left/dead distinction is not reliable, so a node
		// also flags its graceful departure in its metadata first.
		status = StatusLeft
	default:
		status = StatusDead
	}
	if e.status != status {
		if e.status != "" || status != StatusAlive {
			c.log.Info("member status changed", "peer", ev.name, "from", string(e.status), "to", string(status))
		} else {
			c.log.Info("member joined", "peer", ev.name, "zone", meta.Zone, "addr", e.gossip)
		}
		e.status, e.since = status, now
	}
}

// resync repairs the table against memberlist's view after dropped events:
// a member memberlist no longer lists is dead (or left, if it said so).
func (c *Cluster) resync(now time.Time) {
	live := map[string]*memberlist.Node{}
	for _, n := range c.ml.Members() {
		live[n.Name] = n
	}
	for name, n := range live {
		e := c.members[name]
		if e == nil || e.status == StatusDead || e.status == StatusLeft || !bytes.Equal(e.rawMeta, n.Meta) {
			c.applyEvent(memberEvent{kind: eventJoin, name: n.Name, addr: n.Addr, port: n.Port, meta: n.Meta, state: n.State}, now)
			continue
		}
		want := StatusAlive
		if n.State == memberlist.StateSuspect {
			want = StatusSuspect
		}
		if e.status != want {
			e.status, e.since = want, now
		}
	}
	for name, e := range c.members {
		if _, ok := live[name]; ok || e.status == StatusDead || e.status == StatusLeft {
			continue
		}
		st := StatusDead
		if e.meta.Leaving {
			st = StatusLeft
		}
		c.log.Info("member status changed", "peer", name, "from", string(e.status), "to", string(st))
		e.status, e.since = st, now
	}
	// Forget members that have been gone for a long time.
	for name, e := range c.members {
		if (e.status == StatusDead || e.status == StatusLeft) && now.Sub(e.since) > c.cfg.reapAfter() && name != c.cfg.NodeName {
			delete(c.members, name)
		}
	}
}

// reapAfter is how long dead or left members stay listed.
func (c Config) reapAfter() time.Duration {
	return max(24*time.Hour, 2*c.DeadServerGrace)
}

// Members returns every known member, sorted by name.
func (c *Cluster) Members() []Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Member, 0, len(c.members))
	for _, e := range c.members {
		out = append(out, e.toMember())
	}
	slices.SortFunc(out, func(a, b Member) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

// Member returns the named member.
func (c *Cluster) Member(name string) (Member, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.members[name]
	if !ok {
		return Member{}, false
	}
	return e.toMember(), true
}

// memberByRaftAddr finds the member advertising addr as its Raft address.
func (c *Cluster) memberByRaftAddr(addr string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, e := range c.members {
		if e.meta.Raft == addr {
			return name, true
		}
	}
	return "", false
}
