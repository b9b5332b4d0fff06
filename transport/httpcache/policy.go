package httpcache

import (
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pquerna/cachecontrol/cacheobject"
)

// This file holds the RFC 9111 decisions of a shared cache, as pure
// functions of requests, responses and times: whether a response may be
// stored, how long it stays fresh, its current age, its secondary (Vary)
// key, and how a 304 updates a stored response. Cache-Control is parsed
// with github.com/pquerna/cachecontrol/cacheobject; the decisions are
// ours, because that library's own policy targets RFC 7234 and knows
// neither stale-while-revalidate nor stale-if-error as cache behaviour.

// storableStatus lists the final status codes this cache stores. They are
// the heuristically cacheable ones of RFC 9110 §15.1 plus the redirects
// 302 and 307, which are stored only with explicit freshness like every
// other response here (no heuristic freshness is computed).
var storableStatus = map[int]bool{
	200: true, 203: true, 204: true, 300: true, 301: true, 302: true, 307: true, 308: true,
	404: true, 405: true, 410: true, 414: true, 451: true, 501: true,
}

// respDirectives are the response Cache-Control directives the cache acts
// on, from the header (nil when it cannot be parsed: then the response is
// not stored).
type respDirectives struct {
	noStore, noCache, private, public bool
	mustRevalidate, proxyRevalidate   bool
	maxAge, sMaxAge                   time.Duration // -1: absent
	swr, sie                          time.Duration // -1: absent
}

func parseResponseCC(h http.Header) (*respDirectives, bool) {
	d := &respDirectives{maxAge: -1, sMaxAge: -1, swr: -1, sie: -1}
	v := strings.Join(h.Values("Cache-Control"), ", ")
	if v == "" {
		return d, true
	}
	cd, err := cacheobject.ParseResponseCacheControl(strings.ToLower(v))
	if err != nil {
		return nil, false
	}
	d.noStore = cd.NoStore
	// no-cache with field names: be conservative and revalidate always.
	d.noCache = cd.NoCachePresent
	// private with field names may be stored without those fields (RFC
	// 9111 §5.2.2.7); this cache does not store it at all.
	d.private = cd.PrivatePresent
	d.public = cd.Public
	d.mustRevalidate = cd.MustRevalidate
	d.proxyRevalidate = cd.ProxyRevalidate
	d.maxAge = secs(cd.MaxAge)
	d.sMaxAge = secs(cd.SMaxAge)
	d.swr = secs(cd.StaleWhileRevalidate)
	d.sie = secs(cd.StaleIfError)
	return d, true
}

func secs(s cacheobject.DeltaSeconds) time.Duration {
	if s < 0 {
		return -1
	}
	return time.Duration(s) * time.Second
}

// reqDirectives are the request Cache-Control directives the cache acts on.
type reqDirectives struct {
	noStore, noCache, onlyIfCached bool
	maxAge, minFresh               time.Duration // -1: absent
	maxStale                       time.Duration // -1: absent; maxStaleAny: any staleness
}

const maxStaleAny = time.Duration(1<<63 - 1)

func parseRequestCC(h http.Header) reqDirectives {
	d := reqDirectives{maxAge: -1, minFresh: -1, maxStale: -1}
	v := strings.Join(h.Values("Cache-Control"), ", ")
	if v == "" {
		// Pragma: no-cache only counts without Cache-Control (RFC 9111
		// §5.4).
		if tokenIn(h.Values("Pragma"), "no-cache") {
			d.noCache = true
		}
		return d
	}
	cd, err := cacheobject.ParseRequestCacheControl(strings.ToLower(v))
	if err != nil {
		// Unreadable request directives: go to the origin.
		d.noCache = true
		return d
	}
	d.noStore, d.noCache, d.onlyIfCached = cd.NoStore, cd.NoCache, cd.OnlyIfCached
	d.maxAge, d.minFresh = secs(cd.MaxAge), secs(cd.MinFresh)
	if cd.MaxStaleSet {
		d.maxStale = maxStaleAny
		if cd.MaxStale >= 0 {
			d.maxStale = secs(cd.MaxStale)
		}
	}
	return d
}

// storable reports whether a shared cache may store resp, the answer to
// req (RFC 9111 §3, §3.5), and why not when it may not. Conservative
// choices beyond the RFC: a request's Cookie counts as a credential like
// Authorization (§3.5: stored only with public, s-maxage or
// must-revalidate); a response with Set-Cookie is never stored
// (it would hand one client's cookie to others); a response without
// explicit freshness (s-maxage, max-age or Expires) is stored only when
// it must be revalidated anyway (no-cache) and carries a validator; the
// request must not carry Range.
func storable(req *http.Request, status int, h http.Header, d *respDirectives) (bool, string) {
	switch {
	case req.Method != http.MethodGet:
		return false, "method"
	case !storableStatus[status]:
		return false, "status"
	case d == nil:
		return false, "unreadable cache-control"
	case d.noStore:
		return false, "no-store"
	case d.private:
		return false, "private"
	case hasCredentials(req) && !d.public && !d.mustRevalidate && d.sMaxAge < 0:
		return false, "credentials"
	case len(h.Values("Set-Cookie")) > 0:
		return false, "set-cookie"
	case varyStar(h):
		return false, "vary *"
	case req.Header.Get("Range") != "" || h.Get("Content-Range") != "":
		return false, "range"
	}
	explicit := d.sMaxAge >= 0 || d.maxAge >= 0 || h.Get("Expires") != ""
	if !explicit && !(d.noCache && hasValidator(h)) {
		return false, "no explicit freshness"
	}
	return true, ""
}

// hasCredentials: the request carries Authorization or Cookie.
func hasCredentials(req *http.Request) bool {
	return req.Header.Get("Authorization") != "" || req.Header.Get("Cookie") != ""
}

func hasValidator(h http.Header) bool { return h.Get("ETag") != "" || h.Get("Last-Modified") != "" }

// freshnessLifetime is RFC 9111 §4.2.1 for a shared cache: s-maxage, else
// max-age, else Expires minus Date; no heuristic freshness. An invalid
// Expires means already expired.
func freshnessLifetime(h http.Header, d *respDirectives, respTime time.Time) time.Duration {
	switch {
	case d.sMaxAge >= 0:
		return d.sMaxAge
	case d.maxAge >= 0:
		return d.maxAge
	}
	exp := h.Get("Expires")
	if exp == "" {
		return 0
	}
	et, err := http.ParseTime(exp)
	if err != nil {
		return 0
	}
	date := respTime
	if dt, err := http.ParseTime(h.Get("Date")); err == nil {
		date = dt
	}
	if lt := et.Sub(date); lt > 0 {
		return lt
	}
	return 0
}

// initialAge is corrected_initial_age of RFC 9111 §4.2.3: the age a
// response already had when it was received at respTime for a request
// sent at reqTime.
func initialAge(h http.Header, reqTime, respTime time.Time) time.Duration {
	apparent := time.Duration(0)
	if dt, err := http.ParseTime(h.Get("Date")); err == nil {
		apparent = max(0, respTime.Sub(dt))
	}
	ageValue := time.Duration(0)
	if v := h.Get("Age"); v != "" {
		if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && n >= 0 {
			ageValue = time.Duration(min(n, 1<<31)) * time.Second
		}
	}
	corrected := ageValue + max(0, respTime.Sub(reqTime))
	return max(apparent, corrected)
}

func varyStar(h http.Header) bool {
	for _, n := range varyNames(h) {
		if n == "*" {
			return true
		}
	}
	return false
}

// varyNames are the request header names a response varies on,
// canonicalised, sorted and without duplicates.
func varyNames(h http.Header) []string {
	var names []string
	for _, v := range h.Values("Vary") {
		for f := range strings.SplitSeq(v, ",") {
			if f = textproto.TrimString(f); f != "" {
				names = append(names, textproto.CanonicalMIMEHeaderKey(f))
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// secondaryKey is the part of the cache key taken from req's headers
// named by a response's Vary (RFC 9111 §4.1): each field's values joined
// and with whitespace around commas removed. An absent field and an empty
// one are the same.
func secondaryKey(req *http.Request, names []string) string {
	if len(names) == 0 {
		return ""
	}
	var b strings.Builder
	for _, n := range names {
		b.WriteString(n)
		b.WriteByte('=')
		first := true
		for _, v := range req.Header.Values(n) {
			for f := range strings.SplitSeq(v, ",") {
				if !first {
					b.WriteByte(',')
				}
				first = false
				b.WriteString(textproto.TrimString(f))
			}
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// mergeNotModified updates a stored response's header with a 304's (RFC
// 9111 §3.2, §4.3.4): every field of the 304 replaces the stored one,
// except the framing fields, which describe the 304 itself.
func mergeNotModified(stored, notModified http.Header) http.Header {
	out := stored.Clone()
	for k, vv := range notModified {
		switch k {
		case "Content-Length", "Content-Encoding", "Transfer-Encoding", "Content-Range", "Trailer":
			continue
		}
		out[k] = slices.Clone(vv)
	}
	return out
}

// notModifiedFor reports whether a client's conditional GET or HEAD is
// satisfied by a stored response with header h (RFC 9110 §13.2.2):
// If-None-Match (weak comparison) takes precedence over
// If-Modified-Since.
func notModifiedFor(req *http.Request, h http.Header) bool {
	if inm := req.Header.Values("If-None-Match"); len(inm) > 0 {
		etag := h.Get("ETag")
		if etag == "" {
			return false
		}
		for _, v := range inm {
			for f := range strings.SplitSeq(v, ",") {
				f = textproto.TrimString(f)
				if f == "*" || weakEqual(f, etag) {
					return true
				}
			}
		}
		return false
	}
	ims := req.Header.Get("If-Modified-Since")
	if ims == "" {
		return false
	}
	t, err := http.ParseTime(ims)
	if err != nil {
		return false
	}
	lm, err := http.ParseTime(h.Get("Last-Modified"))
	if err != nil {
		return false
	}
	return !lm.After(t)
}

func weakEqual(a, b string) bool {
	return strings.TrimPrefix(a, "W/") == strings.TrimPrefix(b, "W/")
}

func tokenIn(values []string, token string) bool {
	for _, v := range values {
		for f := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(textproto.TrimString(f), token) {
				return true
			}
		}
	}
	return false
}

// hopHeaders are not stored or replayed (RFC 9111 §3.1; RFC 9110 §7.6.1).
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// storedHeader is the header kept with a stored response.
func storedHeader(h http.Header) http.Header {
	out := h.Clone()
	for _, conn := range h.Values("Connection") {
		for f := range strings.SplitSeq(conn, ",") {
			if f = textproto.TrimString(f); f != "" {
				out.Del(f)
			}
		}
	}
	for _, k := range hopHeaders {
		out.Del(k)
	}
	out.Del("Age")
	out.Del(HeaderCacheStatus)
	out.Del(HeaderXCache)
	return out
}
