package httpcache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/loadmesh/loadmesh/transport"
)

// Header names.
const (
	// HeaderLookup marks a request an ingress sends to the owner of its
	// cache key over the peer channel; its value is the ingress node. It
	// is honoured only on the mutually authenticated peer channel and
	// removed from every client request (Handler).
	HeaderLookup = "X-Loadmesh-Cache-Lookup"
	// HeaderCacheStatus is RFC 9211's Cache-Status.
	HeaderCacheStatus = "Cache-Status"
	// HeaderXCache is a one-word summary: HIT, MISS, STALE, REVALIDATED
	// or BYPASS.
	HeaderXCache = "X-Cache"
)

// Config tunes the cache.
type Config struct {
	// NodeName is this node, named in Cache-Status.
	NodeName string
	// Prefixes are the cached path prefixes ("/api/") or host-qualified
	// ones ("example.org/api/"). Empty: the cache is off (Handler only
	// strips HeaderLookup).
	Prefixes []string
	// MaxBytes bounds the stored responses, in bytes. Default 64 MiB;
	// at least 1 MiB. A response larger than a tenth of it is not stored.
	MaxBytes int64
	// OwnerLookup sends a miss to the owner of its key (Deps.Owner) before
	// any backend; false makes each node a cache of its own. Default true
	// via DefaultConfig.
	OwnerLookup bool
	// RevalidateTimeout bounds a background (stale-while-revalidate)
	// revalidation. Default 30s.
	RevalidateTimeout time.Duration
}

// DefaultConfig returns the defaults (cache off until Prefixes is set).
func DefaultConfig() Config {
	return Config{MaxBytes: 64 << 20, OwnerLookup: true, RevalidateTimeout: 30 * time.Second}
}

// Validate reports every problem with c.
func (c Config) Validate() error {
	var errs []error
	if c.MaxBytes < 1<<20 {
		errs = append(errs, fmt.Errorf("cache size %d bytes must be at least 1 MiB", c.MaxBytes))
	}
	for _, p := range c.Prefixes {
		if p == "" || strings.ContainsAny(p, " \t\r\n?#") {
			errs = append(errs, fmt.Errorf("cache prefix %q must be a path (/api/) or host and path (example.org/api/)", p))
		} else if !strings.HasPrefix(p, "/") && !strings.Contains(p, "/") {
			errs = append(errs, fmt.Errorf("cache prefix %q: a host-qualified prefix needs a path, e.g. %s/", p, p))
		}
	}
	if c.RevalidateTimeout < 0 {
		errs = append(errs, fmt.Errorf("revalidate timeout %s is negative", c.RevalidateTimeout))
	}
	if c.NodeName == "" {
		errs = append(errs, errors.New("node name is empty"))
	}
	return errors.Join(errs...)
}

// Node is the owner of a cache key.
type Node struct {
	Name, Addr string
	// Self is true when the owner is this node.
	Self bool
}

// PeerSender sends a request to a peer over the peer channel;
// transport.PeerClient is one. It must not block beyond the request.
type PeerSender interface {
	RoundTripPeer(req *http.Request, t transport.PeerTarget) (*http.Response, error)
}

// Deps are the cache's collaborators; all optional.
type Deps struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Owner returns the owner of a cache key among the active nodes, or
	// false when none is known (then this node serves alone). It is
	// called on every cacheable request and must not block.
	Owner func(key string) (Node, bool)
	// Peers carries owner lookups; without it there are none.
	Peers PeerSender
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Cache is a node's shared HTTP cache (RFC 9111) in front of the ingress.
// See the package documentation.
type Cache struct {
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	owner   func(string) (Node, bool)
	peers   PeerSender
	store   *store
	m       *metrics
	flights singleflight.Group

	ctx     context.Context // lifetime of background revalidations
	cancel  context.CancelFunc
	bg      sync.WaitGroup
	bgMu    sync.Mutex
	bgKeys  map[string]bool // keys being revalidated in the background
	closed  atomic.Bool
	lookups atomic.Int64 // owner lookups sent
	served  atomic.Int64 // owner lookups served for other nodes
}

// New validates cfg and returns the cache. It starts no goroutine.
func New(cfg Config, deps Deps) (*Cache, error) {
	if cfg.RevalidateTimeout == 0 {
		cfg.RevalidateTimeout = 30 * time.Second
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := deps.Now
	if now == nil {
		now = time.Now
	}
	c := &Cache{
		cfg: cfg, log: log.With("component", "httpcache"), now: now, owner: deps.Owner, peers: deps.Peers,
		store: newStore(uint64(cfg.MaxBytes)), bgKeys: map[string]bool{},
	}
	c.m = newMetrics(deps.Registerer, c.store)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// Close stops background revalidations, waits for them and drops every
// stored response. Idempotent.
func (c *Cache) Close() {
	if c.closed.Swap(true) {
		return
	}
	c.cancel()
	c.bg.Wait()
	c.store.close()
}

// Enabled reports whether any prefix is cached.
func (c *Cache) Enabled() bool { return len(c.cfg.Prefixes) > 0 }

// Key is the cache key of r: its host (lower case, without a default
// port) followed by its path and query.
func Key(r *http.Request) string {
	host := strings.ToLower(r.Host)
	if h, port, err := net.SplitHostPort(host); err == nil && (port == "80" || port == "443") {
		host = h
	}
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	if r.URL.RawQuery != "" || r.URL.ForceQuery {
		return host + path + "?" + r.URL.RawQuery
	}
	return host + path
}

// KeyOfURL is the cache key of an absolute URL ("http://host/path?q") or
// of a host and path ("host/path?q"), for purges.
func KeyOfURL(s string) (string, error) {
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	r, err := http.NewRequest(http.MethodGet, s, nil)
	if err != nil {
		return "", err
	}
	if r.Host == "" {
		return "", fmt.Errorf("url %q has no host", s)
	}
	return Key(r), nil
}

func (c *Cache) cached(key string) bool {
	for _, p := range c.cfg.Prefixes {
		if MatchPrefix(p, key) {
			return true
		}
	}
	return false
}

// Handler is the ingress side: it serves cacheable requests from the
// cache (the owner's, over the peer channel, or this node's), sending
// misses to next, and passes every other request to next. It removes
// HeaderLookup from every request.
func (c *Cache) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := r.Header[HeaderLookup]; ok {
			r.Header.Del(HeaderLookup)
		}
		if !c.Enabled() {
			next.ServeHTTP(w, r)
			return
		}
		key := Key(r)
		if !c.cached(key) {
			next.ServeHTTP(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			c.serveUnsafe(w, r, next, key)
			return
		}
		if rd := parseRequestCC(r.Header); rd.noStore || r.Header.Get("Range") != "" {
			// Not for any cache: no detour through the owner.
			c.bypass(w, r, next, "request")
			return
		}
		if c.cfg.OwnerLookup && c.owner != nil && c.peers != nil {
			if o, ok := c.owner(key); ok && !o.Self {
				if c.askOwner(w, r, o) {
					return
				}
			}
		}
		c.serve(w, r, next, key)
	})
}

// ServeOwner serves a lookup another node sent to this node as the owner
// of the request's key (a request carrying HeaderLookup on the peer
// channel): from the cache, or by one coalesced fill through next (this
// node's ingress, so the backend request may go to any node).
func (c *Cache) ServeOwner(w http.ResponseWriter, r *http.Request, next http.Handler) {
	r.Header.Del(HeaderLookup)
	c.served.Add(1)
	key := Key(r)
	if !c.Enabled() || !c.cached(key) || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		next.ServeHTTP(w, r)
		return
	}
	c.serve(w, r, next, key)
}

// IsLookup reports whether r is an owner lookup. Call it only for
// requests that came over the authenticated peer channel.
func IsLookup(r *http.Request) bool { return r.Header.Get(HeaderLookup) != "" }

// askOwner sends r to the owner o. It returns false, having written
// nothing, when the owner could not be asked; the caller then serves the
// request itself.
func (c *Cache) askOwner(w http.ResponseWriter, r *http.Request, o Node) bool {
	out := r.Clone(r.Context())
	out.Header.Set(HeaderLookup, c.cfg.NodeName)
	out.RequestURI = ""
	out.Body = nil
	out.ContentLength = 0
	setForwarded(out, r, c.cfg.NodeName)
	c.lookups.Add(1)
	resp, err := c.peers.RoundTripPeer(out, transport.PeerTarget{Name: o.Name, Addr: o.Addr})
	if err != nil {
		c.m.ownerLookups.WithLabelValues("error").Inc()
		c.log.Debug("owner lookup failed; serving without the owner", "peer", o.Name, "error", err)
		return false
	}
	defer resp.Body.Close()
	c.m.ownerLookups.WithLabelValues("ok").Inc()
	h := w.Header()
	for k, vv := range resp.Header {
		if isHop(k) {
			continue
		}
		h[k] = vv
	}
	w.WriteHeader(resp.StatusCode)
	if r.Method == http.MethodHead {
		return true
	}
	if _, err := io.Copy(w, resp.Body); err != nil && r.Context().Value(http.ServerContextKey) != nil {
		// Cut short: let the client see it.
		panic(http.ErrAbortHandler)
	}
	return true
}

// setForwarded sets what the ingress would set for the backend
// (X-Forwarded-For/Proto/Host and Via): the owner's ingress keeps them as
// they are for a request from a peer.
func setForwarded(out, in *http.Request, node string) {
	if ip, _, err := net.SplitHostPort(in.RemoteAddr); err == nil {
		xff := ip
		if prior := strings.Join(in.Header.Values("X-Forwarded-For"), ", "); prior != "" {
			xff = prior + ", " + ip
		}
		out.Header.Set("X-Forwarded-For", xff)
	}
	out.Header.Set("X-Forwarded-Host", in.Host)
	if in.TLS != nil {
		out.Header.Set("X-Forwarded-Proto", "https")
	} else {
		out.Header.Set("X-Forwarded-Proto", "http")
	}
	proto := "1.1"
	if in.ProtoMajor >= 2 {
		proto = strconv.Itoa(in.ProtoMajor)
	}
	via := proto + " " + node + " (loadmesh)"
	if prior := in.Header.Get("Via"); prior != "" {
		via = prior + ", " + via
	}
	out.Header.Set("Via", via)
}

// serveUnsafe passes an unsafe request on and, when it succeeds,
// invalidates its target URI (RFC 9111 §4.4) here and at the owner before
// the client sees the answer.
func (c *Cache) serveUnsafe(w http.ResponseWriter, r *http.Request, next http.Handler, key string) {
	switch r.Method {
	case http.MethodOptions, http.MethodTrace:
		next.ServeHTTP(w, r)
		return
	}
	iw := &invalidatingWriter{ResponseWriter: w, onStatus: func(status int) {
		if status < 200 || status >= 400 {
			return
		}
		c.Purge(key, false)
		if c.cfg.OwnerLookup && c.owner != nil && c.peers != nil {
			if o, ok := c.owner(key); ok && !o.Self {
				c.purgeAt(r.Context(), o, key)
			}
		}
	}}
	next.ServeHTTP(iw, r)
}

// purgeAt asks owner o to drop key, with a short bound: a failure leaves
// the entry to expire.
func (c *Cache) purgeAt(ctx context.Context, o Node, key string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+o.Addr+"/", nil)
	req.Header.Set(HeaderLookup, c.cfg.NodeName)
	req.Header.Set(headerPurgeKey, key)
	resp, err := c.peers.RoundTripPeer(req, transport.PeerTarget{Name: o.Name, Addr: o.Addr})
	if err != nil {
		c.log.Debug("invalidation at the owner failed", "peer", o.Name, "error", err)
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// headerPurgeKey, on an owner lookup, asks the owner to drop that key.
const headerPurgeKey = "X-Loadmesh-Cache-Purge-Key"

// ServePeer handles a request with HeaderLookup from the peer channel: an
// invalidation (headerPurgeKey) or an owner lookup (ServeOwner).
func (c *Cache) ServePeer(w http.ResponseWriter, r *http.Request, next http.Handler) {
	if k := r.Header.Get(headerPurgeKey); k != "" {
		n := c.Purge(k, false)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "purged %d\n", n)
		return
	}
	c.ServeOwner(w, r, next)
}

// Purge drops the responses stored under key (every variant), or, with
// prefix set, under every key key covers (MatchPrefix). It returns how
// many stored items went. Safe for concurrent use.
func (c *Cache) Purge(key string, prefix bool) int {
	var n int
	if prefix {
		n = c.store.removePrefix(key)
	} else {
		n = c.store.remove(key)
	}
	c.m.purged.Add(float64(n))
	return n
}

type invalidatingWriter struct {
	http.ResponseWriter
	onStatus func(int)
	done     bool
}

func (w *invalidatingWriter) WriteHeader(code int) {
	if !w.done && code >= 200 {
		w.done = true
		w.onStatus(code)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *invalidatingWriter) Write(p []byte) (int, error) {
	if !w.done {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

func (w *invalidatingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *invalidatingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Stats are this node's cache figures (GET /v1/cache).
type Stats struct {
	Enabled     bool     `json:"enabled"`
	Prefixes    []string `json:"prefixes,omitempty"`
	OwnerLookup bool     `json:"owner_lookup"`
	Policy      string   `json:"policy"`
	MaxBytes    int64    `json:"max_bytes"`
	Bytes       uint64   `json:"bytes"`
	Entries     int      `json:"entries"`
	Evictions   uint64   `json:"evictions"`
	// OwnerLookupsSent are the requests this ingress sent to owners;
	// OwnerLookupsServed those it answered as owner.
	OwnerLookupsSent   int64 `json:"owner_lookups_sent"`
	OwnerLookupsServed int64 `json:"owner_lookups_served"`
}

// PolicyName names the store's admission and eviction policy.
const PolicyName = "W-TinyLFU (otter v2: LRU window, count-min frequency admission, segmented-LRU main)"

// Stats returns this node's figures.
func (c *Cache) Stats() Stats {
	c.store.c.CleanUp()
	return Stats{
		Enabled: c.Enabled(), Prefixes: c.cfg.Prefixes, OwnerLookup: c.cfg.OwnerLookup, Policy: PolicyName,
		MaxBytes: c.cfg.MaxBytes, Bytes: c.store.bytes(), Entries: c.store.entries(), Evictions: c.store.evictions.Load(),
		OwnerLookupsSent: c.lookups.Load(), OwnerLookupsServed: c.served.Load(),
	}
}

func isHop(k string) bool {
	for _, h := range hopHeaders {
		if k == h {
			return true
		}
	}
	return false
}

var errNoAnswer = errors.New("upstream wrote no answer")
