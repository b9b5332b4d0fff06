package agent

import (
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/store"
	"github.com/loadmesh/loadmesh/transport"
)

// peerRefresh is how often the peer view is rebuilt from membership and
// the plan. Between refreshes a dead peer costs at most a failed dial, which
// the ingress retries elsewhere.
const peerRefresh = 100 * time.Millisecond

// peerView is the scheduler's picture of the other nodes, rebuilt from
// gossip and the plan on a timer so the request path reads one atomic
// pointer. It implements scheduler.PeerSource and transport.Picker, and
// closes the peer connection of a node that leaves.
type peerView struct {
	self string
	// localHeadroom reports whether the local backend can take one more
	// request; nil on an ingress-only node.
	localHeadroom func() bool
	client        *transport.PeerClient
	selector      *scheduler.Selector
	peers         atomic.Pointer[[]scheduler.Peer]
	// selfActive is whether the plan lets this node\'s backend take new
	// requests (a draining, standby or cordoned node forwards instead).
	selfActive atomic.Bool

	stopCh chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
}

var (
	_ scheduler.PeerSource = (*peerView)(nil)
	_ transport.Picker     = (*peerView)(nil)
)

func newPeerView(self string, client *transport.PeerClient) *peerView {
	v := &peerView{self: self, client: client, stopCh: make(chan struct{})}
	v.selector = &scheduler.Selector{Source: v, Policy: &scheduler.RoundRobin{}}
	empty := []scheduler.Peer{}
	v.peers.Store(&empty)
	return v
}

// start begins refreshing from c and plan until stop.
func (v *peerView) start(c *cluster.Cluster, plan *store.FSM) {
	v.refresh(c, plan)
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		t := time.NewTicker(peerRefresh)
		defer t.Stop()
		for {
			select {
			case <-v.stopCh:
				return
			case <-t.C:
				v.refresh(c, plan)
			}
		}
	}()
}

func (v *peerView) stop() {
	v.once.Do(func() { close(v.stopCh) })
	v.wg.Wait()
}

func (v *peerView) refresh(c *cluster.Cluster, plan *store.FSM) {
	p := plan.Plan()
	st, ok := p.StateOf(v.self)
	v.selfActive.Store(!ok || st.TakesTraffic())
	members := c.Members()
	next := make([]scheduler.Peer, 0, len(members))
	for _, m := range members {
		if m.Name == v.self {
			continue
		}
		// A suspect stays a candidate: gossip suspicion is slow and often
		// wrong under load; request-level failures are handled by retries
		// and outlier ejection, which react much faster.
		if m.Status == cluster.StatusLeft || m.Status == cluster.StatusDead {
			v.client.ClosePeer(m.Name)
			continue
		}
		state, ok := p.StateOf(m.Name)
		if !ok {
			state = scheduler.StateActive // not yet in the plan: joining
		}
		next = append(next, scheduler.Peer{
			Name: m.Name, Zone: m.Zone, Addr: m.Addresses.Peer, State: state, Serving: m.Serving,
		})
	}
	v.peers.Store(&next)
}

// Peers implements scheduler.PeerSource.
func (v *peerView) Peers() []scheduler.Peer {
	return append([]scheduler.Peer(nil), *v.peers.Load()...)
}

// Pick implements transport.Picker: the local backend while it has
// headroom, else a peer.
func (v *peerView) Pick(r *http.Request, tried []string) (transport.PeerTarget, error) {
	if v.selfActive.Load() && v.localHeadroom != nil && v.localHeadroom() && !slices.Contains(tried, v.self) {
		return transport.PeerTarget{Name: v.self, Local: true}, nil
	}
	p, err := v.selector.Pick(tried)
	if err != nil {
		return transport.PeerTarget{}, transport.ErrNoPeer
	}
	return transport.PeerTarget{Name: p.Name, Addr: p.Addr}, nil
}
