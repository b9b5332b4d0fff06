package httpcache

import (
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
)

// entry is one stored response. It is never modified once stored; a
// revalidation stores a new entry.
type entry struct {
	status int
	header http.Header
	body   []byte
	// reqTime and respTime are request_time and response_time of RFC 9111
	// §4.2.3; initAge the corrected initial age.
	reqTime, respTime time.Time
	initAge           time.Duration
	lifetime          time.Duration // freshness lifetime
	swr, sie          time.Duration // stale-while-revalidate, stale-if-error windows; 0: none
	// noStale forbids serving it stale (must-revalidate, proxy-revalidate,
	// s-maxage), noCache forces revalidation on every use.
	noStale, noCache bool
	vary             []string // the Vary names it was stored under
}

// age is the entry's current_age at now.
func (e *entry) age(now time.Time) time.Duration {
	return e.initAge + max(0, now.Sub(e.respTime))
}

// staleness is how long past its freshness lifetime the entry is at now
// (negative while fresh).
func (e *entry) staleness(now time.Time) time.Duration { return e.age(now) - e.lifetime }

// size is what the entry costs in the store, in bytes: body, header and a
// fixed overhead for the structures around them.
func (e *entry) size(key string) int {
	n := len(key) + len(e.body) + entryOverhead
	for k, vv := range e.header {
		n += len(k)
		for _, v := range vv {
			n += len(v) + 16
		}
	}
	return n
}

const entryOverhead = 256

// item is what the store holds under a key: a stored response, or, under
// a primary key whose responses vary, the names they vary on (their
// entries are under the primary key + "\x00" + secondary key).
type item struct {
	e    *entry
	vary []string
	cost uint32
}

// store is the size-bounded map of items. Its admission and eviction
// policy is otter's W-TinyLFU: a small LRU window admits new keys, a
// count-min sketch of recent access frequency decides whether a key
// leaving the window may displace the main (segmented LRU) region's
// victim, so one scan of cold keys cannot flush the hot ones. Costs are
// bytes (entry.size), bounded by the configured maximum.
type store struct {
	c         *otter.Cache[string, *item]
	max       uint64
	evictions atomic.Uint64
}

func newStore(maxBytes uint64) *store {
	s := &store{max: maxBytes}
	s.c = otter.Must(&otter.Options[string, *item]{
		MaximumWeight: maxBytes,
		Weigher:       func(_ string, it *item) uint32 { return it.cost },
		OnDeletion: func(e otter.DeletionEvent[string, *item]) {
			if e.Cause.IsEviction() {
				s.evictions.Add(1)
			}
		},
		// Maintenance and deletion callbacks on the caller's goroutine:
		// the store starts none of its own that outlive Close.
		Executor: func(fn func()) { fn() },
	})
	return s
}

// lookup returns the entry stored for primary key key and the secondary
// key of req, with the Vary names known for the key.
func (s *store) lookup(key string, req *http.Request) (*entry, []string) {
	it, ok := s.c.GetIfPresent(key)
	if !ok {
		return nil, nil
	}
	if it.e != nil {
		return it.e, nil
	}
	v, ok := s.c.GetIfPresent(key + "\x00" + secondaryKey(req, it.vary))
	if !ok {
		return nil, it.vary
	}
	return v.e, it.vary
}

// put stores e for primary key key; req gives the secondary key. It
// reports whether the entry was kept (an entry larger than a tenth of
// the store is not).
func (s *store) put(key string, req *http.Request, e *entry) bool {
	sub := key
	if len(e.vary) > 0 {
		sub = key + "\x00" + secondaryKey(req, e.vary)
	}
	cost := e.size(sub)
	if uint64(cost) > s.max/10 {
		return false
	}
	if len(e.vary) > 0 {
		s.c.Set(key, &item{vary: e.vary, cost: uint32(len(key) + entryOverhead)})
	}
	s.c.Set(sub, &item{e: e, cost: uint32(cost)})
	return true
}

// remove deletes key and every variant of it; it returns how many stored
// items went.
func (s *store) remove(key string) int {
	n := 0
	if _, ok := s.c.Invalidate(key); ok {
		n++
	}
	for k := range s.c.Keys() {
		if strings.HasPrefix(k, key+"\x00") {
			if _, ok := s.c.Invalidate(k); ok {
				n++
			}
		}
	}
	return n
}

// removePrefix deletes every key matching prefix (MatchPrefix); it
// returns how many stored items went.
func (s *store) removePrefix(prefix string) int {
	n := 0
	for k := range s.c.Keys() {
		if MatchPrefix(prefix, k) {
			if _, ok := s.c.Invalidate(k); ok {
				n++
			}
		}
	}
	return n
}

// MatchPrefix reports whether a purge prefix covers cache key key
// ("host/path?query"): a prefix starting with "/" is a path prefix on any
// host, any other a prefix of the whole key.
func MatchPrefix(prefix, key string) bool {
	if strings.HasPrefix(prefix, "/") {
		i := strings.IndexByte(key, '/')
		return i >= 0 && strings.HasPrefix(key[i:], prefix)
	}
	return strings.HasPrefix(key, prefix)
}

// bytes and entries are the store's current totals.
func (s *store) bytes() uint64 { return s.c.WeightedSize() }
func (s *store) entries() int  { return s.c.EstimatedSize() }

func (s *store) close() {
	s.c.InvalidateAll()
	s.c.StopAllGoroutines()
}
