package scheduler

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
)

// ConsistentHash maps a request's Key to a peer by consistent hashing with
// bounded loads (Mirrokni, Thorup and Zadimoghaddam, "Consistent Hashing
// with Bounded Loads", arXiv:1608.01350, 2016; SODA 2018), the algorithm
// behind HAProxy's hash-balance-factor.
//
// Every peer has Replicas points on a hash ring. A key goes to the first
// peer clockwise from the key's hash whose load is below the bound
//
//	bound = ceil(c × (total + 1) / n)
//
// where load is Peer.Inflight, total sums it over the n usable candidates
// (the "+1" is the request being placed) and c is LoadFactor. So a key
// stays on its home peer while that peer carries at most c times the
// average load, and overflows to the next peers on the ring otherwise; no
// peer ever exceeds ceil(c × average). Removing a peer moves only the keys
// it held; a full peer sheds only its newest arrivals, which land on a
// predictable next peer rather than at random.
//
// Hashes are FNV-1a followed by a SplitMix64 finaliser: fixed across
// processes and versions, so every ingress maps a key to the same peer.
// Requests with an empty Key are spread by Random.
//
// The ring is cached and rebuilt only when the member set (the names, in
// order) changes: a new slice with the same members reuses it. A decision
// costs one O(n) pass for the load total plus an O(log(n × Replicas))
// ring search and a short walk. Safe for concurrent use.
type ConsistentHash struct {
	factor   float64
	replicas int
	fallback Policy

	rings  atomic.Pointer[[]*hashRing] // most recently used first; at most ringCache
	mu     sync.Mutex                  // serialises ring builds
	builds atomic.Uint64
}

const ringCache = 4

type hashRing struct {
	peers  []Peer // the slice this ring was looked up for (identity)
	points []ringPoint
}

type ringPoint struct {
	hash uint64
	peer int32
}

// NewConsistentHash returns the policy. loadFactor is c (1.25 if not above
// 1); replicas is the points per peer (64 if < 1); src seeds the Random
// fallback for requests without a key (nil: runtime).
func NewConsistentHash(loadFactor float64, replicas int, src rand.Source) *ConsistentHash {
	if !(loadFactor > 1) {
		loadFactor = 1.25
	}
	if replicas < 1 {
		replicas = 64
	}
	return &ConsistentHash{factor: loadFactor, replicas: replicas, fallback: NewRandom(src)}
}

// Choose implements Policy.
func (c *ConsistentHash) Choose(cands []Peer, r Request) int {
	if len(cands) == 0 {
		return -1
	}
	if r.Key == "" {
		return c.fallback.Choose(cands, r)
	}
	n, total := 0, 0
	for i := range cands {
		if p := &cands[i]; r.Usable(p) {
			n++
			total += p.Inflight()
		}
	}
	if n == 0 {
		return -1
	}
	bound := int(math.Ceil(c.factor * float64(total+1) / float64(n)))
	points := c.ring(cands).points
	h := hashString(r.Key)
	start, _ := slices.BinarySearchFunc(points, h, func(p ringPoint, h uint64) int {
		switch {
		case p.hash < h:
			return -1
		case p.hash > h:
			return 1
		}
		return 0
	})
	first := -1
	for k := range points {
		i := int(points[(start+k)%len(points)].peer)
		p := &cands[i]
		if !r.Usable(p) {
			continue
		}
		if p.Inflight()+1 <= bound {
			return i
		}
		if first < 0 {
			first = i
		}
	}
	// Only reachable when loads changed under us during the walk.
	return first
}

// ring returns the ring for cands, from the cache when possible.
func (c *ConsistentHash) ring(cands []Peer) *hashRing {
	if rs := c.rings.Load(); rs != nil {
		for _, rg := range *rs {
			if sameSlice(rg.peers, cands) {
				return rg
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var old []*hashRing
	if rs := c.rings.Load(); rs != nil {
		old = *rs
	}
	var rg *hashRing
	for _, o := range old {
		if sameSlice(o.peers, cands) {
			return o
		}
		if rg == nil && sameMembers(o.peers, cands) {
			rg = &hashRing{peers: cands, points: o.points}
		}
	}
	if rg == nil {
		rg = &hashRing{peers: cands, points: c.build(cands)}
	}
	next := make([]*hashRing, 0, ringCache)
	next = append(next, rg)
	for _, o := range old {
		if len(next) == ringCache {
			break
		}
		next = append(next, o)
	}
	c.rings.Store(&next)
	return rg
}

func (c *ConsistentHash) build(cands []Peer) []ringPoint {
	c.builds.Add(1)
	points := make([]ringPoint, 0, len(cands)*c.replicas)
	for i := range cands {
		h := hashString(cands[i].Name)
		for k := 0; k < c.replicas; k++ {
			points = append(points, ringPoint{hash: splitmix64(h + uint64(k)*0x9e3779b97f4a7c15), peer: int32(i)})
		}
	}
	slices.SortFunc(points, func(a, b ringPoint) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return int(a.peer - b.peer)
	})
	return points
}

// hashString is FNV-1a (64-bit) with a SplitMix64 finaliser, which FNV's
// weak avalanche on short, similar strings needs.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return splitmix64(h)
}

func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
