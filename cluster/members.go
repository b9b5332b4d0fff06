package cluster

import (
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
	// Serving is true when the member has a backend for forwarded requests.
	Serving bool `json:"serving"`
	// Load is the member's encoded load summary (scheduler.DecodeLoad).
	Load []byte `json:"-"`
	// Since is when this node saw Status begin.
	Since time.Time `json:"since"`
	// Leaving is true from when the member announced a graceful departure
	// (it drains: it takes no new requests) until it is gone.
	Leaving bool `json:"leaving,omitempty"`
	// Services are the TCP services the member offers, by name.
	Services ServiceMetas `json:"-"`
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

func (e *memberEntry) toMember(status MemberStatus) Member {
	return Member{
		Name:     e.name,
		Status:   status,
		Zone:     e.meta.Zone,
		Since:    e.since,
		Serving:  e.meta.Serving,
		Services: e.meta.Services,
		Load:     e.meta.Load,
		Leaving:  e.meta.Leaving,
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
		c.metrics.statusChanges.WithLabelValues(string(status)).Inc()
		if e.status != "" || status != StatusAlive {
			c.log.Info("member status changed", "peer", ev.name, "from", string(e.status), "to", string(status))
		} else {
			c.log.Info("member joined", "peer", ev.name, "zone", meta.Zone, "addr", e.gossip)
		}
		e.status, e.since = status, now
	}
}

// resync repairs the table after dropped events: a member memberlist no
// longer lists is dead (or left, if it said so). Only node names are read
// from memberlist.Members(): the other fields of the nodes it returns are
// written by memberlist without a lock we can take.
func (c *Cluster) resync(now time.Time) {
	live := map[string]bool{}
	for _, n := range c.ml.Members() {
		live[n.Name] = true
	}
	for name := range live {
		if e := c.members[name]; e == nil || e.status == StatusDead || e.status == StatusLeft {
			// A join we missed; its next update or the next push-pull
			// brings the metadata.
			c.metrics.eventsDropped.Inc()
		}
	}
	for name, e := range c.members {
		if live[name] || e.status == StatusDead || e.status == StatusLeft {
			continue
		}
		st := StatusDead
		if e.meta.Leaving {
			st = StatusLeft
		}
		c.log.Info("member status changed", "peer", name, "from", string(e.status), "to", string(st))
		c.metrics.statusChanges.WithLabelValues(string(st)).Inc()
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
	now := time.Now()
	for _, e := range c.members {
		out = append(out, e.toMember(c.statusOf(e, now)))
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
	return e.toMember(c.statusOf(e, time.Now())), true
}

// statusOf refines an alive member to suspect when this node's failure
// detector has not had a probe answered by it for several probe rounds.
// memberlist probes one member per ProbeInterval in turn, so a round takes
// about as many intervals as there are members. c.mu must be held.
func (c *Cluster) statusOf(e *memberEntry, now time.Time) MemberStatus {
	if e.status != StatusAlive || e.name == c.cfg.NodeName {
		return e.status
	}
	// Generous on purpose: this is a hint for operators, and under CPU
	// pressure probe answers are late without anything being wrong.
	window := max(5*time.Second, time.Duration(3*(len(c.members)+1))*c.cfg.ProbeInterval)
	last := c.acks[e.name]
	if last.Before(e.since) {
		last = e.since
	}
	if now.Sub(last) > window {
		return StatusSuspect
	}
	return StatusAlive
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
