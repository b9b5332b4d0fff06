package agent

import (
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/store"
	"github.com/loadmesh/loadmesh/transport"
)

// peerRefresh is how often the scheduler's candidate list is rebuilt from
// membership, gossiped load and the plan. Between refreshes the scheduler
// works from what this node measures itself (its in-flight requests and
// latencies to each peer), so decisions stay sharp.
const peerRefresh = 100 * time.Millisecond

// peerView feeds the scheduler with the cluster's live picture and is the
// ingress's transport.Picker. It also publishes this node's own load into
// gossip (loadPublisher) and closes the peer connection of a node that
// leaves.
type peerView struct {
	self      string
	zone      string
	capacity  int
	serving   bool // this node has a backend
	client    *transport.PeerClient
	sched     *scheduler.Scheduler
	loads     *scheduler.LoadTable
	meter     *scheduler.Meter
	health    func() bool
	hashKey   func(*http.Request) string
	log       *slog.Logger
	selfState atomic.Value // scheduler.NodeState
	// services places TCP service connections from the same picture.
	services *serviceView
	// onRefresh, when set, sees the same picture on every refresh (the
	// response cache's owner ring, cache.go).
	onRefresh func(members []cluster.Member, state func(string) scheduler.NodeState, plan *store.FSM)

	stopCh chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
}

var _ transport.Picker = (*peerView)(nil)

func (v *peerView) start(c *cluster.Cluster, plan *store.FSM) {
	v.stopCh = make(chan struct{})
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
	if v.stopCh == nil {
		return
	}
	v.once.Do(func() { close(v.stopCh) })
	v.wg.Wait()
}

// refresh rebuilds the candidates: every live member with its plan state,
// the newest load it gossiped, and this node itself as the Local one.
func (v *peerView) refresh(c *cluster.Cluster, plan *store.FSM) {
	p := plan.Plan()
	state := func(name string) scheduler.NodeState {
		if st, ok := p.StateOf(name); ok {
			return st
		}
		return scheduler.StateActive // not in the plan yet: joining
	}
	v.selfState.Store(state(v.self))
	members := c.Members()
	peers := make([]scheduler.Peer, 0, len(members)+1)
	for _, m := range members {
		if m.Name == v.self {
			continue
		}
		// A suspect stays a candidate: gossip suspicion is slow and often
		// wrong under load; retries and outlier ejection react faster.
		if m.Status == cluster.StatusLeft || m.Status == cluster.StatusDead || c.Refused(m.Name) {
			v.client.ClosePeer(m.Name)
			v.loads.Forget(m.Name)
			continue
		}
		if len(m.Load) > 0 {
			if l, err := scheduler.DecodeLoad(m.Load); err == nil {
				v.loads.Update(m.Name, l)
			} else {
				v.log.Debug("ignoring unreadable load summary", "peer", m.Name, "error", err)
			}
		}
		st := state(m.Name)
		if m.Leaving {
			// It is shutting down: it finishes what it has (its peer
			// connection stays open) but gets nothing new.
			st = scheduler.StateDraining
		}
		peers = append(peers, scheduler.Peer{
			Name: m.Name, Zone: m.Zone, Addr: m.Addresses.Peer, State: st, Serving: m.Serving,
		})
	}
	v.loads.Annotate(peers)
	if v.serving {
		self := scheduler.Peer{
			Name: v.self, Zone: v.zone, State: state(v.self), Serving: true, Capacity: v.capacity, Local: true,
		}
		self.Load = v.meter.Load(v.capacity, v.health(), 0, 0)
		peers = append(peers, self)
	}
	v.sched.SetPeers(peers)
	v.services.refresh(members, state)
	if v.onRefresh != nil {
		v.onRefresh(members, state, plan)
	}
}

// Pick implements transport.Picker.
func (v *peerView) Pick(r *http.Request, tried []string) (transport.PeerTarget, func(transport.Outcome), error) {
	key := ""
	if v.hashKey != nil {
		key = v.hashKey(r)
	}
	t, err := v.sched.Pick(key, tried)
	if err != nil {
		if errors.Is(err, scheduler.ErrRetryBudgetExhausted) {
			return transport.PeerTarget{}, nil, err
		}
		return transport.PeerTarget{}, nil, transport.ErrNoPeer
	}
	done := func(o transport.Outcome) {
		t.Done(scheduler.Result{Err: o.Err, Status: o.Status, RetryAfter: o.RetryAfter})
	}
	return transport.PeerTarget{Name: t.Peer.Name, Addr: t.Peer.Addr, Local: t.Peer.Local}, done, nil
}

// hashKeyFunc returns the consistent-hash key of a request: a header's
// value, else a cookie's, else the client address.
func hashKeyFunc(header, cookie string) func(*http.Request) string {
	return func(r *http.Request) string {
		if header != "" {
			if v := r.Header.Get(header); v != "" {
				return v
			}
		}
		if cookie != "" {
			if c, err := r.Cookie(cookie); err == nil {
				return c.Value
			}
		}
		return ""
	}
}

// meteredHandler measures every request the local backend serves (from
// this node's ingress and from peers) for the node's load summary.
type meteredHandler struct {
	next  http.Handler
	meter *scheduler.Meter
}

func (m meteredHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.meter.Begin()
	start := time.Now()
	rec := &transport.StatusRecorder{ResponseWriter: w}
	defer func() {
		m.meter.End(time.Since(start), rec.Status() >= 500 || rec.Status() == 0 && r.Context().Err() == nil)
	}()
	m.next.ServeHTTP(rec, r)
}
