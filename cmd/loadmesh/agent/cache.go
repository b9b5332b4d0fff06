package agent

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode"

	"github.com/loadmesh/loadmesh/cluster"
	"github.com/loadmesh/loadmesh/scheduler"
	"github.com/loadmesh/loadmesh/store"
	"github.com/loadmesh/loadmesh/transport"
	"github.com/loadmesh/loadmesh/transport/httpcache"
)

// The response cache (--cache, --cache-size, --cache-owner-lookup): the
// httpcache.Cache sits between the ingress's Guard and the Ingress. Owners
// of cache keys come from the scheduler's consistent-hash ring over the
// active members, refreshed with the scheduler's picture (peerView); a
// purge is an audit record (store.OpRecord, kind cachePurgeKind) that every
// node applies when its replica has it.

// cachePurgeKind is the audit event kind of a purge.
const cachePurgeKind = "cache.purge"

// DefaultCacheSize is --cache-size's default, in bytes.
const DefaultCacheSize = 64 << 20

type cacheWiring struct {
	c       *httpcache.Cache
	self    string
	ring    *scheduler.ConsistentHash
	owners  atomic.Pointer[[]scheduler.Peer] // the active members, by name
	next    atomic.Pointer[transport.Ingress]
	mu      sync.Mutex
	lastSeq uint64 // newest audit event looked at for purges
}

// setupCache builds the cache (also when off: it strips the internal
// lookup header from client requests).
func (a *Agent) setupCache() error {
	cfg := httpcache.DefaultConfig()
	cfg.NodeName = a.cfg.Name
	cfg.Prefixes = a.cfg.Cache
	cfg.MaxBytes = a.cfg.CacheSize
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultCacheSize
	}
	cfg.OwnerLookup = a.cfg.CacheOwnerLookup
	cw := &cacheWiring{self: a.cfg.Name, ring: scheduler.NewConsistentHash(0, 0, nil)}
	c, err := httpcache.New(cfg, httpcache.Deps{
		Logger: a.log, Registerer: a.reg, Owner: cw.owner, Peers: lazyPeers{a},
	})
	if err != nil {
		return err
	}
	cw.c = c
	if evs := a.fsm.Events(1); len(evs) > 0 {
		cw.lastSeq = evs[0].Seq
	}
	a.cache = cw
	a.peers.onRefresh = cw.refresh
	return nil
}

// lazyPeers sends owner lookups through the peer client, which exists once
// the peer server is built.
type lazyPeers struct{ a *Agent }

func (l lazyPeers) RoundTripPeer(req *http.Request, t transport.PeerTarget) (*http.Response, error) {
	if l.a.peer == nil {
		return nil, &transport.DialError{Peer: t.Name, Err: errors.New("peer channel not started")}
	}
	return l.a.peer.Client().RoundTripPeer(req, t)
}

// cacheHandler puts the cache in front of the ingress.
func (a *Agent) cacheHandler(in *transport.Ingress) http.Handler {
	if a.cache == nil {
		return in
	}
	a.cache.next.Store(in)
	return a.cache.c.Handler(in)
}

// servePeerCache serves an owner lookup or invalidation from a peer; it
// returns false for every other request.
func (a *Agent) servePeerCache(w http.ResponseWriter, r *http.Request) bool {
	if a.cache == nil || !httpcache.IsLookup(r) {
		return false
	}
	in := a.cache.next.Load()
	if in == nil {
		return false
	}
	a.cache.c.ServePeer(w, r, in)
	return true
}

func (a *Agent) closeCache() {
	if a.cache != nil {
		a.cache.c.Close()
	}
}

// owner is the member owning key on the ring of active members.
func (cw *cacheWiring) owner(key string) (httpcache.Node, bool) {
	p := cw.owners.Load()
	if p == nil || len(*p) == 0 {
		return httpcache.Node{}, false
	}
	peers := *p
	i := cw.ring.Choose(peers, scheduler.Request{Key: key})
	if i < 0 {
		return httpcache.Node{}, false
	}
	return httpcache.Node{Name: peers[i].Name, Addr: peers[i].Addr, Self: peers[i].Local}, true
}

// refresh rebuilds the owner ring from membership and the plan (called on
// peerView's refresh tick) and applies new purges.
func (cw *cacheWiring) refresh(members []cluster.Member, state func(string) scheduler.NodeState, fsm *store.FSM) {
	peers := make([]scheduler.Peer, 0, len(members))
	for _, m := range members {
		if m.Status == cluster.StatusLeft || m.Status == cluster.StatusDead || m.Leaving || state(m.Name) != scheduler.StateActive {
			continue
		}
		self := m.Name == cw.self
		if !self && m.Addresses.Peer == "" {
			continue
		}
		peers = append(peers, scheduler.Peer{Name: m.Name, Addr: m.Addresses.Peer, State: scheduler.StateActive, Serving: true, Local: self})
	}
	slices.SortFunc(peers, func(x, y scheduler.Peer) int { return strings.Compare(x.Name, y.Name) })
	if old := cw.owners.Load(); old == nil || !slices.EqualFunc(*old, peers, func(x, y scheduler.Peer) bool { return x.Name == y.Name && x.Addr == y.Addr }) {
		cw.owners.Store(&peers)
	}
	cw.applyPurges(fsm)
}

// applyPurges applies the purge records the replica gained since the last
// look.
func (cw *cacheWiring) applyPurges(fsm *store.FSM) {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	newest := fsm.Events(1)
	if len(newest) == 0 || newest[0].Seq <= cw.lastSeq {
		return
	}
	n := int(newest[0].Seq - cw.lastSeq)
	if n > 10_000 {
		n = 0 // all that are kept
	}
	for _, ev := range fsm.Events(n) {
		if ev.Seq <= cw.lastSeq || ev.Kind != cachePurgeKind {
			continue
		}
		if what, ok := strings.CutPrefix(ev.After, "prefix="); ok {
			cw.c.Purge(what, true)
		} else if what, ok := strings.CutPrefix(ev.After, "key="); ok {
			cw.c.Purge(what, false)
		}
	}
	cw.lastSeq = newest[0].Seq
}

// CacheStats is the body of GET /v1/cache.
type CacheStats struct {
	Node string `json:"node"`
	httpcache.Stats
	// Owners are the nodes the cache keys are spread over.
	Owners []string `json:"owners,omitempty"`
}

func (a *Agent) registerCacheAPI(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/cache", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.CacheStats())
	})
	mux.HandleFunc("DELETE /v1/cache", a.leaderOnly(a.purgeCache))
}

// purgeCache records a purge (?key=URL or ?prefix=PATH) through Raft; every
// node applies it once its replica has it.
func (a *Agent) purgeCache(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	key, prefix := q.Get("key"), q.Get("prefix")
	var after string
	switch {
	case (key == "") == (prefix == ""):
		writeError(w, http.StatusBadRequest, "give exactly one of key=URL or prefix=PATH")
		return
	case key != "":
		k, err := httpcache.KeyOfURL(key)
		if err != nil || !printable(key) || len(key) > 2048 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("key %q is not a URL (http://host/path or host/path)", key))
			return
		}
		after = "key=" + k
	default:
		if !printable(prefix) || len(prefix) > 2048 || strings.ContainsAny(prefix, " ?#") {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("prefix %q must be a path (/api/) or host and path (example.org/api/)", prefix))
			return
		}
		after = "prefix=" + prefix
	}
	why := q.Get("reason")
	if why == "" {
		why = "operator purged the response cache"
	}
	ev, err := a.apply(store.Command{Op: store.OpRecord, Kind: cachePurgeKind, Node: a.cfg.Name, Time: a.now().UTC(),
		Who: actor(r), Why: why, After: after})
	if err != nil {
		writeApplyError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ev)
}

func printable(s string) bool {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// ParseByteSize reads a size in bytes with an optional unit: 1048576, 512KiB,
// 64MiB, 2GiB, 100MB, 1.5GB.
func ParseByteSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   float64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
		{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1},
	}
	mult := 1.0
	for _, u := range units {
		if strings.HasSuffix(strings.ToUpper(t), strings.ToUpper(u.suffix)) && (len(u.suffix) > 1 || !strings.HasSuffix(strings.ToUpper(t), "IB")) {
			t, mult = strings.TrimSpace(t[:len(t)-len(u.suffix)]), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v < 0 || v*mult > 1<<62 {
		return 0, fmt.Errorf("size %q: want bytes, optionally with a unit (512KiB, 64MiB, 1GiB, 100MB)", s)
	}
	return int64(v * mult), nil
}

// CacheOwner names the node owning cache key key ("host/path?query") in
// this node's view, for tests and tools; false when none is known.
func (a *Agent) CacheOwner(key string) (string, bool) {
	if a.cache == nil {
		return "", false
	}
	o, ok := a.cache.owner(key)
	return o.Name, ok
}

// CacheStats returns this node's response cache figures (GET /v1/cache).
func (a *Agent) CacheStats() CacheStats {
	st := CacheStats{Node: a.cfg.Name, Stats: a.cache.c.Stats()}
	if p := a.cache.owners.Load(); p != nil {
		for _, o := range *p {
			st.Owners = append(st.Owners, o.Name)
		}
	}
	return st
}
