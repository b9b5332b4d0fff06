package httpcache

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// FuzzPolicy feeds the RFC 9111 decisions response and request header
// values as they come from the network: nothing may panic, a lifetime or
// age is never negative, and a response the policy refuses to read is
// never storable.
func FuzzPolicy(f *testing.F) {
	f.Add("max-age=60, s-maxage=30", "Thu, 01 Jan 2099 00:00:00 GMT", "10", "Accept-Encoding", "no-cache", `"e", W/"f"`)
	f.Add("private=\"Set-Cookie\", no-cache=\"X\"", "0", "-1", "*", "max-stale", "*")
	f.Add("stale-while-revalidate=abc", "", "999999999999999", "a,,b", "max-age=x", "")
	f.Fuzz(func(t *testing.T, cc, expires, age, vary, reqCC, inm string) {
		h := http.Header{}
		h.Set("Cache-Control", cc)
		h.Set("Expires", expires)
		h.Set("Age", age)
		h.Set("Vary", vary)
		h.Set("Date", "Sat, 28 Nov 2026 10:00:00 GMT")
		h.Set("ETag", `"e"`)
		r := httptest.NewRequest("GET", "http://example.org/x", nil)
		r.Header.Set("Cache-Control", reqCC)
		r.Header.Set("If-None-Match", inm)
		r.Header.Set("Accept-Encoding", inm)
		now := time.Date(2026, 11, 28, 10, 0, 5, 0, time.UTC)
		parseRequestCC(r.Header)
		d, ok := parseResponseCC(h)
		st, _ := storable(r, 200, h, d)
		if !ok && st {
			t.Fatal("an unreadable Cache-Control was storable")
		}
		if ok {
			if lt := freshnessLifetime(h, d, now); lt < 0 {
				t.Fatalf("negative lifetime %s", lt)
			}
		}
		if a := initialAge(h, now.Add(-time.Second), now); a < 0 {
			t.Fatalf("negative age %s", a)
		}
		secondaryKey(r, varyNames(h))
		notModifiedFor(r, h)
		mergeNotModified(h, h)
		storedHeader(h)
	})
}
