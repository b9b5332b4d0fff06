package scheduler

import (
	"fmt"
	"math/bits"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// Policy chooses the peer for one request among candidates.
//
// Choose returns the index in cands of the chosen peer, or -1 when none is
// usable. It must only return an index i for which r.Usable(&cands[i]) was
// true when checked. r is passed by value so a decision allocates nothing. It is called on the request path by many goroutines
// at once, so it must be safe for concurrent use, must not block, and must
// not modify cands or keep references to its elements beyond caching
// derived data (see below).
//
// Policies may cache data derived from a candidate slice (a hash ring, the
// zone groups, the local node's index) keyed by the slice's identity (its
// first element and length). Callers must therefore not change the Name,
// Zone, Local, Capacity or order of the peers in a slice they have passed
// to Choose; the Scheduler passes immutable snapshots. Live figures (in
// flight, latency) change freely: they are read through the Peer methods.
type Policy interface {
	Choose(cands []Peer, r Request) int
}

// Request is what a Policy knows about the request it is choosing a peer
// for.
type Request struct {
	// Key is the request's affinity key for consistent-hash (a header or
	// cookie value chosen by the caller); empty means none.
	Key string
	// Tried names the peers this request was already sent to; they are
	// never chosen again.
	Tried []string
	// Now is the time of the decision, used to decay latency estimates and
	// to check ejections and Retry-After holds. The Scheduler sets it.
	Now time.Time

	nowNs int64
}

func (r *Request) nanos() int64 {
	if r.nowNs != 0 {
		return r.nowNs
	}
	return r.Now.UnixNano()
}

// Usable reports whether p may be chosen for r: it is Eligible, was not
// tried, and (inside a Scheduler) is not ejected, not holding us off with
// Retry-After and not at its in-flight cap.
func (r *Request) Usable(p *Peer) bool {
	if !p.Eligible() {
		return false
	}
	for _, t := range r.Tried {
		if t == p.Name {
			return false
		}
	}
	return p.live == nil || p.live.available(r.nanos())
}

// Policy names accepted by NewPolicy.
const (
	PolicyP2CEWMA            = "p2c-ewma"
	PolicyLeastInflight      = "least-inflight"
	PolicyWeightedRoundRobin = "weighted-round-robin"
	PolicyRandom             = "random"
	PolicyConsistentHash     = "consistent-hash"

	// DefaultPolicy is the policy used when none is configured.
	DefaultPolicy = PolicyP2CEWMA
)

// PolicyNames lists the names NewPolicy accepts, the default first.
func PolicyNames() []string {
	return []string{PolicyP2CEWMA, PolicyLeastInflight, PolicyWeightedRoundRobin, PolicyRandom, PolicyConsistentHash}
}

// NewPolicy returns the policy called name, for the --policy flag:
//
//   - p2c-ewma: LocalFirst around P2C.
//   - least-inflight: LeastInflight.
//   - weighted-round-robin: WeightedRoundRobin.
//   - random: Random.
//   - consistent-hash: ConsistentHash (Random for requests without a key).
//
// When cfg.Zone is set the policy is wrapped in ZoneAware (inside
// LocalFirst for p2c-ewma). src is the random source; nil uses the runtime's
// fast, concurrency-safe generator. A deterministic source (for tests) must
// be safe for concurrent use if Choose is called concurrently; see
// LockedSource.
func NewPolicy(name string, cfg PolicyConfig, src rand.Source) (Policy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("policy config: %w", err)
	}
	if src == nil {
		src = runtimeSource{}
	}
	zoned := func(p Policy) Policy {
		if cfg.Zone == "" {
			return p
		}
		return NewZoneAware(p, cfg.Zone, cfg.ZoneHeadroom, cfg.ZoneRecheck)
	}
	switch name {
	case PolicyP2CEWMA:
		return NewLocalFirst(zoned(NewP2C(cfg.DefaultLatency, src))), nil
	case PolicyLeastInflight:
		return zoned(NewLeastInflight(src)), nil
	case PolicyWeightedRoundRobin:
		return zoned(NewWeightedRoundRobin()), nil
	case PolicyRandom:
		return zoned(NewRandom(src)), nil
	case PolicyConsistentHash:
		return zoned(NewConsistentHash(cfg.LoadFactor, cfg.Replicas, src)), nil
	}
	return nil, fmt.Errorf("unknown policy %q (want %s)", name, strings.Join(PolicyNames(), ", "))
}

// runtimeSource is math/rand/v2's global generator: per-thread state, no
// locks, safe for concurrent use.
type runtimeSource struct{}

func (runtimeSource) Uint64() uint64 { return rand.Uint64() }

// LockedSource makes src safe for concurrent use with a mutex, for
// deterministic simulations that call a policy from several goroutines.
func LockedSource(src rand.Source) rand.Source { return &lockedSource{src: src} }

type lockedSource struct {
	mu  sync.Mutex
	src rand.Source
}

func (l *lockedSource) Uint64() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.src.Uint64()
}

// randN returns a number in [0, n) (n > 0) by Lemire's multiply-shift; the
// bias is at most n/2^64.
func randN(src rand.Source, n int) int {
	hi, _ := bits.Mul64(src.Uint64(), uint64(n))
	return int(hi)
}

// sameSlice reports whether a and b are the same slice: same first element
// and length. Caches hold a reference to the slice they were built from,
// so its array cannot be freed and reused while the identity is in use.
func sameSlice(a, b []Peer) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// sameMembers reports whether a and b list the same names in the same
// order.
func sameMembers(a, b []Peer) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name {
			return false
		}
	}
	return true
}
