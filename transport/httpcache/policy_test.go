package httpcache

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func TestStorable(t *testing.T) {
	get := httptest.NewRequest("GET", "http://x/a", nil)
	auth := httptest.NewRequest("GET", "http://x/a", nil)
	auth.Header.Set("Authorization", "Bearer t")
	cookie := httptest.NewRequest("GET", "http://x/a", nil)
	cookie.Header.Set("Cookie", "session=1")
	rng := httptest.NewRequest("GET", "http://x/a", nil)
	rng.Header.Set("Range", "bytes=0-1")
	post := httptest.NewRequest("POST", "http://x/a", nil)
	cases := []struct {
		name   string
		req    *http.Request
		status int
		h      http.Header
		want   bool
		why    string
	}{
		{"max-age", get, 200, hdr("Cache-Control", "max-age=60"), true, ""},
		{"s-maxage", get, 200, hdr("Cache-Control", "s-maxage=60"), true, ""},
		{"expires", get, 200, hdr("Expires", "Thu, 01 Jan 2099 00:00:00 GMT"), true, ""},
		{"upper case directives", get, 200, hdr("Cache-Control", "Max-Age=60"), true, ""},
		{"no explicit freshness", get, 200, hdr("ETag", `"a"`), false, "no explicit freshness"},
		{"no-cache with validator", get, 200, hdr("Cache-Control", "no-cache", "ETag", `"a"`), true, ""},
		{"no-cache without validator", get, 200, hdr("Cache-Control", "no-cache"), false, "no explicit freshness"},
		{"no-store", get, 200, hdr("Cache-Control", "max-age=60, no-store"), false, "no-store"},
		{"private", get, 200, hdr("Cache-Control", "private, max-age=60"), false, "private"},
		{"private with fields", get, 200, hdr("Cache-Control", `private="Set-Cookie", max-age=60`), false, "private"},
		{"authorization", auth, 200, hdr("Cache-Control", "max-age=60"), false, "credentials"},
		{"cookie", cookie, 200, hdr("Cache-Control", "max-age=60"), false, "credentials"},
		{"cookie public", cookie, 200, hdr("Cache-Control", "public, max-age=60"), true, ""},
		{"authorization public", auth, 200, hdr("Cache-Control", "public, max-age=60"), true, ""},
		{"authorization s-maxage", auth, 200, hdr("Cache-Control", "s-maxage=60"), true, ""},
		{"authorization must-revalidate", auth, 200, hdr("Cache-Control", "must-revalidate, max-age=60"), true, ""},
		{"set-cookie", get, 200, hdr("Cache-Control", "public, max-age=60", "Set-Cookie", "a=b"), false, "set-cookie"},
		{"vary star", get, 200, hdr("Cache-Control", "max-age=60", "Vary", "Accept, *"), false, "vary *"},
		{"vary", get, 200, hdr("Cache-Control", "max-age=60", "Vary", "Accept"), true, ""},
		{"status 206", get, 206, hdr("Cache-Control", "max-age=60"), false, "status"},
		{"status 500", get, 500, hdr("Cache-Control", "max-age=60"), false, "status"},
		{"status 404", get, 404, hdr("Cache-Control", "max-age=60"), true, ""},
		{"range request", rng, 200, hdr("Cache-Control", "max-age=60"), false, "range"},
		{"post", post, 200, hdr("Cache-Control", "max-age=60"), false, "method"},
		{"garbage cache-control", get, 200, hdr("Cache-Control", "max-age=abc"), false, "unreadable cache-control"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := parseResponseCC(tc.h)
			got, why := storable(tc.req, tc.status, tc.h, d)
			if got != tc.want || why != tc.why {
				t.Fatalf("storable = %v %q, want %v %q", got, why, tc.want, tc.why)
			}
		})
	}
}

func TestFreshnessLifetime(t *testing.T) {
	now := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	date := now.Format(http.TimeFormat)
	cases := []struct {
		name string
		h    http.Header
		want time.Duration
	}{
		{"s-maxage beats max-age", hdr("Cache-Control", "max-age=10, s-maxage=30"), 30 * time.Second},
		{"max-age beats expires", hdr("Cache-Control", "max-age=10", "Date", date, "Expires", now.Add(time.Hour).Format(http.TimeFormat)), 10 * time.Second},
		{"expires minus date", hdr("Date", date, "Expires", now.Add(time.Hour).Format(http.TimeFormat)), time.Hour},
		{"expires in the past", hdr("Date", date, "Expires", now.Add(-time.Hour).Format(http.TimeFormat)), 0},
		{"invalid expires", hdr("Date", date, "Expires", "0"), 0},
		{"nothing: no heuristic", hdr("Last-Modified", now.Add(-24*time.Hour).Format(http.TimeFormat)), 0},
		{"max-age zero", hdr("Cache-Control", "max-age=0"), 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, ok := parseResponseCC(tc.h)
			if !ok {
				t.Fatal("unreadable")
			}
			if got := freshnessLifetime(tc.h, d, now); got != tc.want {
				t.Fatalf("lifetime %s, want %s", got, tc.want)
			}
		})
	}
}

func TestInitialAge(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	cases := []struct {
		name              string
		h                 http.Header
		reqTime, respTime time.Time
		want              time.Duration
	}{
		{"age header plus delay", hdr("Age", "10"), t0, t0.Add(2 * time.Second), 12 * time.Second},
		{"apparent age from date", hdr("Date", t0.Add(-30*time.Second).Format(http.TimeFormat)), t0, t0, 30 * time.Second},
		{"larger of the two", hdr("Age", "50", "Date", t0.Add(-30*time.Second).Format(http.TimeFormat)), t0, t0, 50 * time.Second},
		{"date in the future", hdr("Date", t0.Add(time.Minute).Format(http.TimeFormat)), t0, t0, 0},
		{"bad age", hdr("Age", "-3"), t0, t0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := initialAge(tc.h, tc.reqTime, tc.respTime); got != tc.want {
				t.Fatalf("initial age %s, want %s", got, tc.want)
			}
		})
	}
}

func TestSecondaryKey(t *testing.T) {
	a := httptest.NewRequest("GET", "/", nil)
	a.Header.Set("Accept-Encoding", "gzip, br")
	b := httptest.NewRequest("GET", "/", nil)
	b.Header.Set("Accept-Encoding", "gzip,br")
	c := httptest.NewRequest("GET", "/", nil)
	c.Header.Set("Accept-Encoding", "identity")
	names := varyNames(hdr("Vary", "accept-encoding", "Vary", "Accept-Encoding"))
	if len(names) != 1 || names[0] != "Accept-Encoding" {
		t.Fatalf("vary names %q", names)
	}
	if secondaryKey(a, names) != secondaryKey(b, names) {
		t.Fatal("whitespace around commas must not matter")
	}
	if secondaryKey(a, names) == secondaryKey(c, names) {
		t.Fatal("different values must give different keys")
	}
}

func TestMergeNotModified(t *testing.T) {
	stored := hdr("Content-Type", "text/plain", "Content-Length", "5", "ETag", `"1"`, "Cache-Control", "max-age=1")
	got := mergeNotModified(stored, hdr("Cache-Control", "max-age=60", "Content-Length", "0", "X-New", "y"))
	if got.Get("Cache-Control") != "max-age=60" || got.Get("Content-Length") != "5" || got.Get("X-New") != "y" || got.Get("Content-Type") != "text/plain" {
		t.Fatalf("merged %v", got)
	}
	if stored.Get("Cache-Control") != "max-age=1" {
		t.Fatal("the stored header was modified")
	}
}

func TestNotModifiedFor(t *testing.T) {
	lm := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h := hdr("ETag", `W/"v1"`, "Last-Modified", lm.Format(http.TimeFormat))
	cases := []struct {
		name string
		kv   []string
		want bool
	}{
		{"matching etag, weak comparison", []string{"If-None-Match", `"v1"`}, true},
		{"list", []string{"If-None-Match", `"v0", W/"v1"`}, true},
		{"star", []string{"If-None-Match", `*`}, true},
		{"other etag", []string{"If-None-Match", `"v2"`}, false},
		{"etag wins over date", []string{"If-None-Match", `"v2"`, "If-Modified-Since", lm.Format(http.TimeFormat)}, false},
		{"not modified since", []string{"If-Modified-Since", lm.Format(http.TimeFormat)}, true},
		{"modified since", []string{"If-Modified-Since", lm.Add(-time.Hour).Format(http.TimeFormat)}, false},
		{"unconditional", nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.Header = hdr(tc.kv...)
			if got := notModifiedFor(r, h); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestMatchPrefix(t *testing.T) {
	cases := []struct {
		prefix, key string
		want        bool
	}{
		{"/api/", "example.org/api/x", true},
		{"/api/", "other.net/api/x?y", true},
		{"/api/", "example.org/apix", false},
		{"example.org/api/", "example.org/api/x", true},
		{"example.org/api/", "other.net/api/x", false},
		{"/", "h/anything", true},
	}
	for _, tc := range cases {
		if got := MatchPrefix(tc.prefix, tc.key); got != tc.want {
			t.Errorf("MatchPrefix(%q, %q) = %v", tc.prefix, tc.key, got)
		}
	}
}

func TestKey(t *testing.T) {
	cases := []struct{ url, host, want string }{
		{"http://Example.org:80/a/b?x=1", "", "example.org/a/b?x=1"},
		{"http://example.org:8080/a", "", "example.org:8080/a"},
		{"http://example.org", "", "example.org/"},
	}
	for _, tc := range cases {
		r := httptest.NewRequest("GET", tc.url, nil)
		if got := Key(r); got != tc.want {
			t.Errorf("Key(%s) = %q, want %q", tc.url, got, tc.want)
		}
		if got, err := KeyOfURL(tc.url); err != nil || got != tc.want {
			t.Errorf("KeyOfURL(%s) = %q, %v", tc.url, got, err)
		}
	}
}
