package agent

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/loadmesh/loadmesh/store"
)

func TestUIHandler(t *testing.T) {
	h := uiHandlerForTest(t)
	for _, tt := range []struct {
		name, method, path string
		status             int
		contentType        string
		body               string
	}{
		{"index", "GET", "/ui/", 200, "text/html; charset=utf-8", "<title>loadmesh dashboard</title>"},
		{"index by name", "GET", "/ui/index.html", 200, "text/html; charset=utf-8", "app.js"},
		{"script", "GET", "/ui/app.js", 200, "text/javascript; charset=utf-8", "'use strict'"},
		{"style", "GET", "/ui/style.css", 200, "text/css; charset=utf-8", ":root"},
		{"icon", "GET", "/ui/favicon.svg", 200, "image/svg+xml", "<svg"},
		{"head", "HEAD", "/ui/app.js", 200, "text/javascript; charset=utf-8", ""},
		{"unknown file", "GET", "/ui/nope.js", 404, "application/json", "no such dashboard file"},
		{"no directory", "GET", "/ui/img/", 404, "application/json", ""},
		{"no embed root", "GET", "/ui/ui/index.html", 404, "application/json", ""},
		{"case matters", "GET", "/ui/APP.JS", 404, "application/json", ""},
		{"no write", "POST", "/ui/", 404, "application/json", ""},
		{"bare ui redirects", "GET", "/ui", 301, "", ""},
		{"root redirects", "GET", "/", 302, "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, "http://127.0.0.1:7950"+tt.path, nil)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d; body %q", rec.Code, tt.status, rec.Body.String())
			}
			if tt.status == 301 || tt.status == 302 {
				if loc := rec.Header().Get("Location"); loc != "/ui/" {
					t.Fatalf("Location %q, want /ui/", loc)
				}
				return
			}
			if ct := rec.Header().Get("Content-Type"); ct != tt.contentType {
				t.Errorf("Content-Type %q, want %q", ct, tt.contentType)
			}
			if tt.body != "" && !strings.Contains(rec.Body.String(), tt.body) {
				t.Errorf("body does not contain %q", tt.body)
			}
			if tt.method == "HEAD" && rec.Body.Len() != 0 {
				t.Errorf("HEAD has a body of %d bytes", rec.Body.Len())
			}
			if tt.status != 200 {
				return
			}
			hdr := rec.Header()
			if csp := hdr.Get("Content-Security-Policy"); csp != uiCSP {
				t.Errorf("Content-Security-Policy %q", csp)
			}
			for k, want := range map[string]string{
				"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
				"Referrer-Policy": "no-referrer", "Cache-Control": "no-cache",
			} {
				if got := hdr.Get(k); got != want {
					t.Errorf("%s %q, want %q", k, got, want)
				}
			}
			if hdr.Get("ETag") == "" {
				t.Error("no ETag")
			}
		})
	}
}

// uiHandlerForTest is the dashboard part of the API mux.
func uiHandlerForTest(t *testing.T) http.Handler {
	t.Helper()
	mux := http.NewServeMux()
	registerUI(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint")
	})
	return mux
}

// TestUIHandlerNames: the handler knows file names, not a file system.
func TestUIHandlerNames(t *testing.T) {
	h := uiHandler(uiAssets)
	for _, name := range []string{".", "./", "..", "../api.go", "ui", "ui/", "ui/index.html", "/index.html", "index.html/", "%2e%2e/api.go", "app.js\x00"} {
		req := httptest.NewRequest("GET", "/", nil)
		req.URL.Path = name
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusNotFound {
			t.Errorf("%q: %d, want 404", name, rec.Code)
		}
	}
}

func TestUIRevalidation(t *testing.T) {
	h := http.StripPrefix("/ui/", uiHandler(uiAssets))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/ui/app.js", nil))
	etag := rec.Header().Get("ETag")
	req := httptest.NewRequest("GET", "/ui/app.js", nil)
	req.Header.Set("If-None-Match", etag)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusNotModified || rec.Body.Len() != 0 {
		t.Fatalf("If-None-Match with the current ETag: %d and %d bytes, want 304 and none", rec.Code, rec.Body.Len())
	}
}

// TestUIAccess: the page is open to anyone (it carries no data); the data
// it reads is not.
func TestUIAccess(t *testing.T) {
	for _, tt := range []struct {
		method, path string
		want         access
	}{
		{"GET", "/", access{open: true}},
		{"GET", "/ui", access{open: true}},
		{"GET", "/ui/", access{open: true}},
		{"HEAD", "/ui/app.js", access{open: true}},
		{"POST", "/ui/", access{need: store.RoleOperator}},
		{"GET", "/uix", access{need: store.RoleRead, loopbackOpen: true}},
		{"GET", "/v1/timeseries", access{need: store.RoleRead, loopbackOpen: true}},
	} {
		if got := accessFor(tt.method, tt.path); got != tt.want {
			t.Errorf("accessFor(%s %s) = %+v, want %+v", tt.method, tt.path, got, tt.want)
		}
	}
	au := &authenticator{tokens: fakeTokens{}, now: nil, log: slog.New(slog.DiscardHandler)}
	h := au.wrap(uiHandlerForTest(t))
	for path, want := range map[string]int{"/ui/": 200, "/ui/app.js": 200, "/": 302, "/v1/timeseries": 401} {
		req := httptest.NewRequest("GET", path, nil)
		req.RemoteAddr = "192.0.2.7:40000"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("remote GET %s without token: %d, want %d", path, rec.Code, want)
		}
	}
}

func TestUIAssetsLoad(t *testing.T) {
	if _, err := loadUIAssets(fstest.MapFS{"ui/index.html": {}, "ui/x.exe": {}}, "ui"); err == nil {
		t.Error("a file of unknown type was accepted")
	}
	if _, err := loadUIAssets(fstest.MapFS{"ui/app.js": {}}, "ui"); err == nil {
		t.Error("no index.html was accepted")
	}
	m, err := loadUIAssets(fstest.MapFS{"ui/index.html": {Data: []byte("x")}, "ui/img/a.png": {}}, "ui")
	if err != nil || m["img/a.png"].contentType != "image/png" || m["index.html"].etag == "" {
		t.Fatalf("%v %+v", err, m)
	}
}

// TestUISafety guards the rules the dashboard relies on: API data reaches
// the page as text only, and the CSP has nothing inline to allow.
func TestUISafety(t *testing.T) {
	js := string(uiAssets["app.js"].body)
	for _, banned := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "setAttribute('on", "localStorage"} {
		if strings.Contains(js, banned) {
			t.Errorf("app.js uses %s", banned)
		}
	}
	html := string(uiAssets["index.html"].body)
	if m := regexp.MustCompile(`<script(?:[^>]*)>\s*[^<\s]`).FindString(html); m != "" {
		t.Errorf("index.html has an inline script: %q", m)
	}
	if m := regexp.MustCompile(`(?i)\s(on[a-z]+|style)\s*=`).FindString(html); m != "" {
		t.Errorf("index.html has an inline handler or style: %q", m)
	}
	if strings.Contains(html, "http://") || strings.Contains(html, "https://") {
		t.Error("index.html loads something from elsewhere")
	}
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(uiCSP, want) {
			t.Errorf("CSP lacks %s", want)
		}
	}
	if strings.Contains(uiCSP, "unsafe") {
		t.Error("CSP allows something unsafe")
	}
}
