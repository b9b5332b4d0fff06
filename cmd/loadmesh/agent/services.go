package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/transport"
)

// maxServices bounds the TCP services of one node: each takes room in
// the node's gossip metadata, which memberlist limits to 512 bytes.
const maxServices = 4

// ParseServiceSpec parses a --service value:
//
//	name=NAME,mode=tcp[,listen=HOST:PORT][,backend=HOST:PORT]
//	[,health=tcp://HOST:PORT|http://URL|none][,proxy_protocol=v2]
//	[,balance=least-conn|consistent-hash|round-robin|random]
//	[,connect_timeout=DUR][,idle_timeout=DUR][,max_conns=N]
//	[,max_conns_per_client=N][,rate=N][,burst=N]
func ParseServiceSpec(spec string) (transport.TCPServiceConfig, error) {
	var c transport.TCPServiceConfig
	seen := map[string]bool{}
	mode := ""
	for _, kv := range strings.Split(spec, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || k == "" {
			return c, fmt.Errorf("--service %q: %q is not key=value", spec, kv)
		}
		if seen[k] {
			return c, fmt.Errorf("--service %q: %s is given twice", spec, k)
		}
		seen[k] = true
		var err error
		switch k {
		case "name":
			c.Name = v
		case "mode":
			mode = v
		case "listen":
			c.Listen = v
		case "backend":
			c.Backend = v
		case "health":
			c.Health = v
		case "proxy_protocol":
			switch v {
			case "v2":
				c.ProxyProtocol = true
			case "none", "off", "":
			default:
				err = fmt.Errorf("proxy_protocol %q: want v2 or none", v)
			}
		case "balance":
			c.Balance = v
		case "connect_timeout":
			c.ConnectTimeout, err = time.ParseDuration(v)
		case "idle_timeout":
			c.IdleTimeout, err = time.ParseDuration(v)
		case "max_conns":
			c.Limits.MaxConns, err = strconv.Atoi(v)
		case "max_conns_per_client":
			c.Limits.MaxConnsPerClient, err = strconv.Atoi(v)
		case "rate":
			c.Rate, err = strconv.ParseFloat(v, 64)
		case "burst":
			c.Burst, err = strconv.Atoi(v)
		default:
			err = fmt.Errorf("unknown key %q (want name, mode, listen, backend, health, proxy_protocol, balance, connect_timeout, idle_timeout, max_conns, max_conns_per_client, rate, burst)", k)
		}
		if err != nil {
			return c, fmt.Errorf("--service %q: %s: %v", spec, k, unwrapNum(err))
		}
	}
	switch mode {
	case "tcp":
	case "":
		return c, fmt.Errorf("--service %q: mode is missing (mode=tcp)", spec)
	case "http":
		return c, fmt.Errorf("--service %q: mode=http is the agent's own ingress (--http, --backend); a --service is mode=tcp", spec)
	default:
		return c, fmt.Errorf("--service %q: mode %q: only tcp is supported", spec, mode)
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("--service %q: %v", spec, strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return c, nil
}

// unwrapNum drops strconv's "strconv.Atoi: parsing ..." prefix.
func unwrapNum(err error) error {
	var ne *strconv.NumError
	if errors.As(err, &ne) {
		return fmt.Errorf("%q is not a number", ne.Num)
	}
	return err
}

// parseServices parses every --service and checks them together.
func parseServices(specs []string) ([]transport.TCPServiceConfig, error) {
	var out []transport.TCPServiceConfig
	var errs []error
	names := map[string]bool{}
	for _, s := range specs {
		c, err := ParseServiceSpec(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if names[c.Name] {
			errs = append(errs, fmt.Errorf("--service: %q is declared twice", c.Name))
			continue
		}
		names[c.Name] = true
		out = append(out, c)
	}
	if len(out) > maxServices {
		errs = append(errs, fmt.Errorf("--service: %d services, at most %d per node (they are gossiped in the node's metadata)", len(out), maxServices))
	}
	return out, errors.Join(errs...)
}

// serviceView places the connections of TCP services (transport.TCPPicker):
// one scheduler per service, over the live members that offer it, are
// healthy for it and take traffic in the plan, fed from gossip every
// peerRefresh by peerView.refresh.
type serviceView struct {
	self  string
	zone  string
	svcs  *transport.TCPServices
	sched map[string]*scheduler.Scheduler // by service; fixed after setup
	// cands holds each service's eligible node names, for status.
	mu    sync.Mutex
	cands map[string][]string
	// published is the last service state gossiped, to skip unchanged
	// updates.
	published atomic.Pointer[map[string]cluster.ServiceMeta]
}

var _ transport.TCPPicker = (*serviceView)(nil)

func newServiceView(self, zone string, cfgs []transport.TCPServiceConfig) (*serviceView, error) {
	v := &serviceView{self: self, zone: zone, sched: map[string]*scheduler.Scheduler{}}
	for _, c := range cfgs {
		if c.Listen == "" {
			continue // only listeners place connections
		}
		scfg := scheduler.DefaultConfig()
		scfg.Balance.Zone = zone
		switch c.Balance {
		case transport.BalanceConsistentHash:
			scfg.Policy = scheduler.PolicyConsistentHash
			// Client affinity, as HAProxy's balance source: a client
			// moves only when its node leaves the rotation (or holds 100
			// times the average), not whenever it is a little busier.
			scfg.Balance.LoadFactor = 100
		case transport.BalanceRoundRobin:
			scfg.Policy = scheduler.PolicyWeightedRoundRobin
		case transport.BalanceRandom:
			scfg.Policy = scheduler.PolicyRandom
		default: // least-conn
			scfg.Policy = scheduler.PolicyLeastInflight
		}
		// Connections are long-lived: no in-flight caps, and a retry of
		// a refused set-up is always allowed (nothing was relayed).
		scfg.Breaker.CapacityFactor = 0
		s, err := scheduler.New(scfg, scheduler.Deps{})
		if err != nil {
			return nil, fmt.Errorf("service %q: %w", c.Name, err)
		}
		v.sched[c.Name] = s
	}
	return v, nil
}

// refresh rebuilds each service's candidates from the members' gossiped
// service state and the plan.
func (v *serviceView) refresh(members []cluster.Member, state func(string) scheduler.NodeState) {
	if v == nil || len(v.sched) == 0 {
		return
	}
	local := v.svcs.Offered()
	for name, s := range v.sched {
		var peers []scheduler.Peer
		for _, m := range members {
			if m.Name == v.self || m.Status == cluster.StatusLeft || m.Status == cluster.StatusDead {
				continue
			}
			sm, ok := m.Services[name]
			if !ok {
				continue
			}
			st := state(m.Name)
			if m.Leaving {
				st = scheduler.StateDraining
			}
			peers = append(peers, scheduler.Peer{
				Name: m.Name, Zone: m.Zone, Addr: m.Addresses.Peer, State: st, Serving: true,
				Load: scheduler.Load{Version: 1, Inflight: sm.Open, Healthy: sm.Healthy},
			})
		}
		if ls, ok := local[name]; ok {
			peers = append(peers, scheduler.Peer{
				Name: v.self, Zone: v.zone, State: state(v.self), Serving: true, Local: true,
				Load: scheduler.Load{Version: 1, Inflight: ls.Open, Healthy: ls.Healthy},
			})
		}
		s.SetPeers(peers)
		var names []string
		for i := range peers {
			if peers[i].Eligible() {
				names = append(names, peers[i].Name)
			}
		}
		sort.Strings(names)
		v.mu.Lock()
		if v.cands == nil {
			v.cands = map[string][]string{}
		}
		v.cands[name] = names
		v.mu.Unlock()
	}
}

// candidates are the nodes service's connections may go to now.
func (v *serviceView) candidates(service string) []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.cands[service]
}

// PickConn implements transport.TCPPicker.
func (v *serviceView) PickConn(service string, client netip.Addr, tried []string) (transport.PeerTarget, func(error), error) {
	s := v.sched[service]
	if s == nil {
		return transport.PeerTarget{}, nil, transport.ErrNoPeer
	}
	key := ""
	if client.IsValid() {
		key = client.Unmap().String()
	}
	t, err := s.Pick(key, tried)
	if err != nil {
		return transport.PeerTarget{}, nil, transport.ErrNoPeer
	}
	var once sync.Once
	done := func(setupErr error) {
		once.Do(func() { t.Done(scheduler.Result{Err: setupErr}) })
	}
	return transport.PeerTarget{Name: t.Peer.Name, Addr: t.Peer.Addr, Local: t.Peer.Local}, done, nil
}

// gossipState is the service state to gossip, or nil when unchanged
// since the last call that returned it.
func (v *serviceView) gossipState(force bool) map[string]cluster.ServiceMeta {
	if v == nil || v.svcs == nil {
		return nil
	}
	cur := map[string]cluster.ServiceMeta{}
	for name, st := range v.svcs.Offered() {
		cur[name] = cluster.ServiceMeta{Healthy: st.Healthy, Open: st.Open}
	}
	if len(cur) == 0 {
		return nil
	}
	if p := v.published.Load(); !force && p != nil && equalServiceMeta(*p, cur) {
		return nil
	}
	v.published.Store(&cur)
	return cur
}

func equalServiceMeta(a, b map[string]cluster.ServiceMeta) bool {
	if len(a) != len(b) {
		return false
	}
	for k, x := range a {
		if y, ok := b[k]; !ok || x != y {
			return false
		}
	}
	return true
}
