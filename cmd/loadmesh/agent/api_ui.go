package agent

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// The dashboard is plain HTML, CSS and JavaScript with no build step,
// embedded in the binary and served by every agent's API at /ui/. It reads
// the same JSON API as the CLI (/v1/status, /v1/plan, /v1/events,
// /v1/timeseries, /v1/autoscaler), polling every few seconds, so the
// access policy is the API's: the page itself is open (it holds no
// cluster data), its reads need a read token except from loopback, and its
// node actions need an operator token, which the page asks for and keeps
// in the tab's sessionStorage only.
//
//go:embed ui
var uiFiles embed.FS

// uiAsset is one embedded file, ready to serve.
type uiAsset struct {
	body        []byte
	contentType string
	etag        string
}

// uiContentTypes are the file types the dashboard may contain; an embedded
// file of another type is a programmer error (see loadUIAssets).
var uiContentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
}

// uiCSP allows the page to load its own scripts, styles and images and to
// call its own origin, and nothing else: no inline script or style, no
// framing, no form posts, no plugins.
const uiCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// uiAssets maps a file name under /ui/ ("index.html", "app.js") to its
// content.
var uiAssets = mustLoadUIAssets(uiFiles, "ui")

func mustLoadUIAssets(fsys fs.FS, root string) map[string]uiAsset {
	m, err := loadUIAssets(fsys, root)
	if err != nil {
		panic(err)
	}
	return m
}

func loadUIAssets(fsys fs.FS, root string) (map[string]uiAsset, error) {
	out := map[string]uiAsset{}
	err := fs.WalkDir(fsys, root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ct, ok := uiContentTypes[path.Ext(p)]
		if !ok {
			return fmt.Errorf("dashboard file %s: no content type for %q", p, path.Ext(p))
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		out[strings.TrimPrefix(p, root+"/")] = uiAsset{body: b, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if _, ok := out["index.html"]; !ok {
		return nil, fmt.Errorf("dashboard: %s/index.html is missing", root)
	}
	return out, nil
}

// isDashboardPage reports whether path is the dashboard's page or one of
// its static files, which anyone may load (accessFor): they are the same
// for every cluster and carry no data.
func isDashboardPage(path string) bool {
	return path == "/" || path == "/ui" || strings.HasPrefix(path, "/ui/")
}

// registerDashboard adds the dashboard and its time series to the API.
func (a *Agent) registerDashboard(mux *http.ServeMux) {
	a.registerSeriesAPI(mux)
	registerUI(mux)
}

// registerUI serves the dashboard at /ui/, and redirects / and /ui there.
func registerUI(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusFound)
	})
	mux.HandleFunc("GET /ui", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusMovedPermanently)
	})
	mux.Handle("GET /ui/", http.StripPrefix("/ui/", uiHandler(uiAssets)))
}

// uiHandler serves assets by exact name ("" is index.html). There is no
// directory listing and no file system behind it: any other name is a 404.
//
// Every answer may be cached but must be revalidated (no-cache): the URLs
// carry no version, and the ETag (a hash of the content) makes the check a
// cheap 304 until the binary changes.
func uiHandler(assets map[string]uiAsset) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", uiCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		name := r.URL.Path
		if name == "" {
			name = "index.html"
		}
		asset, ok := assets[name]
		if !ok {
			h.Set("Cache-Control", "no-store")
			writeError(w, http.StatusNotFound, "no such dashboard file: /ui/"+name)
			return
		}
		h.Set("Content-Type", asset.contentType)
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", asset.etag)
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(asset.body))
	})
}
