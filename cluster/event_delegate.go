package cluster

import (
	"net"

	"github.com/hashicorp/memberlist"
)

type eventKind uint8

const (
	eventJoin eventKind = iota
	eventLeave
	eventUpdate
)

// memberEvent is a copy of what memberlist reported; the callback never
// blocks and never touches the member table itself.
type memberEvent struct {
	kind  eventKind
	name  string
	addr  net.IP
	port  uint16
	meta  []byte
	state memberlist.NodeStateType
}

// eventDelegate forwards memberlist callbacks into a buffered channel owned
// by the cluster's event loop. When the channel is full the event is dropped
// and counted; the periodic resync repairs the member table.
type eventDelegate struct {
	ch      chan<- memberEvent
	dropped func()
}

var _ memberlist.EventDelegate = (*eventDelegate)(nil)

func (e *eventDelegate) send(kind eventKind, n *memberlist.Node) {
	ev := memberEvent{
		kind:  kind,
		name:  n.Name,
		addr:  append(net.IP(nil), n.Addr...),
		port:  n.Port,
		meta:  append([]byte(nil), n.Meta...),
		state: n.State,
	}
	select {
	case e.ch <- ev:
	default:
		e.dropped()
	}
}

func (e *eventDelegate) NotifyJoin(n *memberlist.Node)   { e.send(eventJoin, n) }
func (e *eventDelegate) NotifyLeave(n *memberlist.Node)  { e.send(eventLeave, n) }
func (e *eventDelegate) NotifyUpdate(n *memberlist.Node) { e.send(eventUpdate, n) }
