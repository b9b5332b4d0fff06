package httpcache

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// serve answers a GET or HEAD for key from the store, or fills it through
// next: RFC 9111 §4 (reuse, validation, stale responses).
func (c *Cache) serve(w http.ResponseWriter, r *http.Request, next http.Handler, key string) {
	rd := parseRequestCC(r.Header)
	if rd.noStore || r.Header.Get("Range") != "" {
		c.bypass(w, r, next, "request")
		return
	}
	now := c.now()
	e, vary := c.store.lookup(key, r)
	if e != nil && !rd.noCache && !e.noCache {
		age, stale := e.age(now), e.staleness(now)
		fresh := stale < 0 &&
			(rd.maxAge < 0 || age <= rd.maxAge) &&
			(rd.minFresh < 0 || e.lifetime-age >= rd.minFresh)
		switch {
		case fresh:
			c.m.requests.WithLabelValues(resultHit).Inc()
			c.write(w, r, e.status, e.header, e.body, now, e, "HIT",
				fmt.Sprintf("hit; ttl=%d", int64((e.lifetime-age)/time.Second)))
			return
		case !e.noStale && rd.maxStale >= 0 && stale <= rd.maxStale:
			c.m.requests.WithLabelValues(resultStale).Inc()
			c.write(w, r, e.status, e.header, e.body, now, e, "STALE",
				fmt.Sprintf("hit; ttl=%d; detail=max-stale", -int64(stale/time.Second)))
			return
		case !e.noStale && e.swr > 0 && stale <= e.swr && rd.maxAge < 0 && rd.minFresh < 0:
			c.m.requests.WithLabelValues(resultStale).Inc()
			c.revalidateLater(key, r, e, next)
			c.write(w, r, e.status, e.header, e.body, now, e, "STALE",
				fmt.Sprintf("hit; ttl=%d; detail=stale-while-revalidate", -int64(stale/time.Second)))
			return
		}
	}
	if rd.onlyIfCached {
		c.m.requests.WithLabelValues(resultBypass).Inc()
		writeStatus(w, http.StatusGatewayTimeout, c.status("fwd=miss; detail=only-if-cached"), "BYPASS")
		return
	}
	if r.Method == http.MethodHead {
		// A HEAD is answered from a stored GET response only; it does not
		// fill one.
		c.bypass(w, r, next, "method")
		return
	}
	c.fill(w, r, next, key, e, vary)
}

// bypass passes r to next, not stored, with its Cache-Status.
func (c *Cache) bypass(w http.ResponseWriter, r *http.Request, next http.Handler, why string) {
	c.m.requests.WithLabelValues(resultBypass).Inc()
	next.ServeHTTP(&statusWriter{ResponseWriter: w, status: c.status("fwd=" + why), xcache: "BYPASS"}, r)
}

// fetched is the outcome of one upstream request made for a fill.
type fetched struct {
	status  int
	header  http.Header
	body    []byte
	reqTime time.Time
	resTime time.Time
	// streamed: the response was too large to keep and went to the
	// leader's client as it came; nobody else can use it.
	streamed bool
	err      error
	leader   *http.Request
	panicked any
}

// fill gets the response for r from upstream, collapsing concurrent fills
// of the same key and variant into one (singleflight), and answers w.
// Requests with credentials (Authorization, Cookie) are not collapsed.
func (c *Cache) fill(w http.ResponseWriter, r *http.Request, next http.Handler, key string, e *entry, vary []string) {
	if e != nil {
		vary = e.vary
	}
	if hasCredentials(r) {
		f := c.fetch(w, r, next, e)
		c.finish(w, r, key, e, f, true, false)
		return
	}
	flight := key + "\x00" + secondaryKey(r, vary)
	v, _, shared := c.flights.Do(flight, func() (any, error) {
		return c.fetch(w, r, next, e), nil
	})
	f := v.(*fetched)
	if f.leader == r {
		if f.panicked != nil {
			panic(f.panicked)
		}
		c.finish(w, r, key, e, f, true, false)
		return
	}
	// A waiter: use the leader's answer if it may be shared with this
	// request, else fetch alone.
	if f.streamed || f.err != nil || f.panicked != nil || !c.shareable(r, f, e) {
		f = c.fetch(w, r, next, e)
		c.finish(w, r, key, e, f, true, false)
		return
	}
	_ = shared
	c.m.collapsed.Inc()
	c.finish(w, r, key, e, f, false, true)
}

// shareable: the leader's response is one the cache stores (or a 304 on
// a stored response), and varies on nothing that differs for r.
func (c *Cache) shareable(r *http.Request, f *fetched, e *entry) bool {
	if f.status == http.StatusNotModified {
		return e != nil
	}
	d, _ := parseResponseCC(f.header)
	if ok, _ := storable(f.leader, f.status, f.header, d); !ok {
		return false
	}
	names := varyNames(f.header)
	return secondaryKey(r, names) == secondaryKey(f.leader, names)
}

// fetch makes the upstream request for r through next: conditional when
// a stored response e has validators. A response larger than the store
// keeps streams to w (only the leader's w is ever written here).
func (c *Cache) fetch(w http.ResponseWriter, r *http.Request, next http.Handler, e *entry) (f *fetched) {
	out := r.Clone(r.Context())
	for _, h := range []string{"If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since", "If-Range"} {
		out.Header.Del(h)
	}
	if e != nil {
		if et := e.header.Get("ETag"); et != "" {
			out.Header.Set("If-None-Match", et)
		}
		if lm := e.header.Get("Last-Modified"); lm != "" {
			out.Header.Set("If-Modified-Since", lm)
		}
	}
	f = &fetched{leader: r, reqTime: c.now()}
	rec := &recorder{header: http.Header{}, limit: c.cfg.MaxBytes / 10, client: w}
	func() {
		defer func() {
			if p := recover(); p != nil {
				f.panicked = p
			}
		}()
		next.ServeHTTP(rec, out)
	}()
	f.resTime = c.now()
	f.status, f.header, f.body, f.streamed = rec.status, rec.header, rec.buf, rec.streamed
	if f.status == 0 && f.panicked == nil {
		f.err = errNoAnswer
	}
	return f
}

// finish stores what a fill brought when it may, and answers w unless the
// answer already streamed to it.
func (c *Cache) finish(w http.ResponseWriter, r *http.Request, key string, e *entry, f *fetched, own, collapsed bool) {
	col := ""
	if collapsed {
		col = "; collapsed"
	}
	if f.streamed {
		c.m.requests.WithLabelValues(resultMiss).Inc()
		return
	}
	now := c.now()
	if f.err != nil || f.status >= 500 {
		if e != nil && !e.noStale && e.sie > 0 && e.staleness(now) <= e.sie {
			c.m.requests.WithLabelValues(resultStale).Inc()
			c.write(w, r, e.status, e.header, e.body, now, e, "STALE",
				fmt.Sprintf("hit; ttl=%d; detail=stale-if-error", -int64(e.staleness(now)/time.Second))+col)
			return
		}
		if f.err != nil {
			c.m.requests.WithLabelValues(resultMiss).Inc()
			writeStatus(w, http.StatusBadGateway, c.status("fwd=miss; detail=no-answer"), "MISS")
			return
		}
	}
	if f.status == http.StatusNotModified && e != nil {
		merged := mergeNotModified(e.header, f.header)
		ne := c.newEntry(e.status, merged, e.body, f.reqTime, f.resTime)
		if ne != nil {
			c.store.put(key, f.leader, ne)
		} else {
			ne = e
		}
		c.m.requests.WithLabelValues(resultRevalidated).Inc()
		c.write(w, r, ne.status, ne.header, ne.body, now, ne, "REVALIDATED", "fwd=stale; fwd-status=304"+col)
		return
	}
	fwd := "miss"
	if e != nil {
		fwd = "stale"
	}
	stored := ""
	d, _ := parseResponseCC(f.header)
	if ok, _ := storable(f.leader, f.status, f.header, d); ok && !collapsed {
		if ne := c.newEntry(f.status, storedHeader(f.header), f.body, f.reqTime, f.resTime); ne != nil && c.store.put(key, f.leader, ne) {
			stored = "; stored"
		}
	} else if ok {
		stored = "; stored"
	}
	c.m.requests.WithLabelValues(resultMiss).Inc()
	c.write(w, r, f.status, f.header, f.body, now, nil, "MISS",
		"fwd="+fwd+"; fwd-status="+strconv.Itoa(f.status)+stored+col)
}

// newEntry builds the stored form of a response, or nil when its
// Cache-Control cannot be read.
func (c *Cache) newEntry(status int, h http.Header, body []byte, reqTime, respTime time.Time) *entry {
	d, ok := parseResponseCC(h)
	if !ok {
		return nil
	}
	e := &entry{
		status: status, header: h, body: body, reqTime: reqTime, respTime: respTime,
		initAge:  initialAge(h, reqTime, respTime),
		lifetime: freshnessLifetime(h, d, respTime),
		noStale:  d.mustRevalidate || d.proxyRevalidate || d.sMaxAge >= 0,
		noCache:  d.noCache,
		vary:     varyNames(h),
	}
	if d.swr > 0 {
		e.swr = d.swr
	}
	if d.sie > 0 {
		e.sie = d.sie
	}
	return e
}

// revalidateLater starts one background revalidation of e (none if one
// for key is under way). It is owned by the cache and stops on Close.
func (c *Cache) revalidateLater(key string, r *http.Request, e *entry, next http.Handler) {
	c.bgMu.Lock()
	if c.bgKeys[key] || c.closed.Load() {
		c.bgMu.Unlock()
		return
	}
	c.bgKeys[key] = true
	c.bg.Add(1)
	c.bgMu.Unlock()
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.RevalidateTimeout)
	out := r.Clone(ctx)
	go func() {
		defer func() {
			cancel()
			c.bgMu.Lock()
			delete(c.bgKeys, key)
			c.bgMu.Unlock()
			c.bg.Done()
		}()
		f := c.fetch(discard{}, out, next, e)
		if f.err != nil || f.panicked != nil || f.streamed {
			return
		}
		switch {
		case f.status == http.StatusNotModified:
			if ne := c.newEntry(e.status, mergeNotModified(e.header, f.header), e.body, f.reqTime, f.resTime); ne != nil {
				c.store.put(key, out, ne)
			}
		case f.status < 500:
			d, _ := parseResponseCC(f.header)
			if ok, _ := storable(out, f.status, f.header, d); ok {
				if ne := c.newEntry(f.status, storedHeader(f.header), f.body, f.reqTime, f.resTime); ne != nil {
					c.store.put(key, out, ne)
				}
			}
		}
	}()
}

// status is a Cache-Status value naming this node's cache.
func (c *Cache) status(params string) string {
	return `loadmesh; ` + params + `; node="` + c.cfg.NodeName + `"`
}

// write answers from a stored or fetched response: with Age when served
// from the store (e set), Cache-Status and X-Cache; 304 to a conditional
// request the stored response satisfies; no body to HEAD.
func (c *Cache) write(w http.ResponseWriter, r *http.Request, status int, h http.Header, body []byte, now time.Time, e *entry, xcache, cacheStatus string) {
	out := w.Header()
	for k, vv := range h {
		if isHop(k) {
			continue
		}
		out[k] = vv
	}
	if e != nil {
		out.Set("Age", strconv.FormatInt(int64(e.age(now)/time.Second), 10))
	}
	out.Set(HeaderCacheStatus, c.status(cacheStatus))
	out.Set(HeaderXCache, xcache)
	if status == http.StatusOK && notModifiedFor(r, h) {
		out.Del("Content-Length")
		w.WriteHeader(http.StatusNotModified)
		return
	}
	out.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

func writeStatus(w http.ResponseWriter, status int, cacheStatus, xcache string) {
	w.Header().Set(HeaderCacheStatus, cacheStatus)
	w.Header().Set(HeaderXCache, xcache)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, "loadmesh: %s\n", http.StatusText(status))
}

// recorder keeps an upstream answer in memory up to limit bytes; past
// that it sends what it has and the rest to client (the leader's
// ResponseWriter) and keeps nothing.
type recorder struct {
	header   http.Header
	status   int
	buf      []byte
	limit    int64
	client   http.ResponseWriter
	streamed bool
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if r.status != 0 || code < 200 {
		return // 1xx are not passed on by a cache fill
	}
	r.status = code
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.WriteHeader(http.StatusOK)
	}
	if r.streamed {
		return r.client.Write(p)
	}
	if int64(len(r.buf)+len(p)) <= r.limit {
		r.buf = append(r.buf, p...)
		return len(p), nil
	}
	// Too large to keep: hand over to the client.
	r.streamed = true
	h := r.client.Header()
	for k, vv := range r.header {
		if !isHop(k) {
			h[k] = vv
		}
	}
	h.Set(HeaderXCache, "MISS")
	h.Set(HeaderCacheStatus, `loadmesh; fwd=miss; detail=too-large`)
	r.client.WriteHeader(r.status)
	if len(r.buf) > 0 {
		if _, err := r.client.Write(r.buf); err != nil {
			return 0, err
		}
		r.buf = nil
	}
	return r.client.Write(p)
}

func (r *recorder) Flush() {
	if r.streamed {
		if f, ok := r.client.(http.Flusher); ok {
			f.Flush()
		}
	}
}

// statusWriter adds the cache's headers to an answer passed through.
type statusWriter struct {
	http.ResponseWriter
	status, xcache string
	wrote          bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote && code >= 200 {
		w.wrote = true
		w.Header().Set(HeaderCacheStatus, w.status)
		w.Header().Set(HeaderXCache, w.xcache)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// discard is the ResponseWriter of a background revalidation.
type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) WriteHeader(int)             {}
func (discard) Write(p []byte) (int, error) { return len(p), nil }
